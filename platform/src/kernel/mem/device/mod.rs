//! Memory devices: the one place the generic kernel meets device types (ACPI DIMMs, virtio-mem,
//! and whatever comes next). A device type is a driver (`drivers/`) and a policy file that
//! registers a [`MemoryDevice`] with [`memory_device!`]; the boot path, the online/offline code
//! of [`super::hotplug`], the invariant checker and the shell reach it only through the
//! registration, so adding a device type changes none of them (docs/design.md, "Adding a
//! memory device").
//!
//! Registration is by linker section (`.memdevs`, like the in-guest tests' `.ktests`): a
//! policy file's static is collected at link time, in link order.

pub mod dimm;
pub mod virtio_mem;

use crate::kernel::pci::Pci;
use alloc::vec::Vec;
use mm::hotplug::Hotplug;

/// Linux's online page callback: call `keep(pfn, nr)` for each part of `[pfn, pfn + nr)` that
/// may reach the allocator when its memory block goes online (or leaves it when the block goes
/// offline); the rest stays fake-offline.
pub type OnlineFilter = fn(u64, u64, &mut dyn FnMut(u64, u64));

/// A device type's own invariant.
pub type Check = fn(&Hotplug) -> Result<(), DeviceViolation>;

/// What a device type gives the generic code.
pub struct MemoryDevice {
    /// Its name in boot lines and checker reports (`dimm`, `virtio-mem`).
    pub name: &'static str,
    /// Bring the type up at boot, after the buses: find its devices, register their interrupts
    /// and bottom halves, take the memory they hold.
    pub init: fn(&mut Buses),
    /// Which parts of a block going online may reach the allocator; `None`: all of it.
    pub online_filter: Option<OnlineFilter>,
    /// The type's own invariants, checked with the allocator's whenever no operation is
    /// half-way (`meminfo check`, the end of each device operation under `debug_vm`).
    pub check: Option<Check>,
    /// Shell views of the type's state (each a command without arguments).
    pub views: &'static [View],
}

/// A shell view of a device type (`dimms`, `vmem`).
pub struct View {
    pub name: &'static str,
    pub help: &'static str,
    pub show: fn(),
}

/// The buses device types find their devices on.
pub struct Buses<'a> {
    /// The PCIe host bridge, if the machine has one.
    pub pci: Option<&'a mut Pci>,
}

/// A page whose state contradicts a device type's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceViolation {
    pub device: &'static str,
    pub pfn: u64,
    /// The rule, said of the page (`of an unplugged device block is online`).
    pub rule: &'static str,
}

impl core::fmt::Display for DeviceViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} invariant broken: pfn {:#x} {}", self.device, self.pfn, self.rule)
    }
}

/// Every registered device type, in link order.
pub fn registered() -> &'static [MemoryDevice] {
    extern "C" {
        static __memdevs_start: u8;
        static __memdevs_end: u8;
    }
    let start = core::ptr::addr_of!(__memdevs_start).cast::<MemoryDevice>();
    let end = core::ptr::addr_of!(__memdevs_end).cast::<MemoryDevice>();
    let n = (end as usize - start as usize) / core::mem::size_of::<MemoryDevice>();
    // SAFETY: the linker script collects exactly the `MemoryDevice` statics of `.memdevs`
    // between the two symbols (8-byte aligned, same type), and they live for the whole run.
    unsafe { core::slice::from_raw_parts(start, n) }
}

/// Register a device type: `memory_device!(MemoryDevice { .. })` in its policy file.
#[macro_export]
macro_rules! memory_device {
    ($dev:expr) => {
        const _: () = {
            // The one unsafe attribute of a registration, owned here: `registered` reads the
            // section.
            #[allow(unsafe_code)]
            #[link_section = ".memdevs"]
            #[used]
            static DEVICE: $crate::kernel::mem::device::MemoryDevice = $dev;
        };
    };
}

/// Bring every device type up (boot, after the buses), in name order: link order is not
/// stable across builds, and the boot lines should be.
pub fn init_all(buses: &mut Buses) {
    let mut types: Vec<&MemoryDevice> = registered().iter().collect();
    types.sort_by_key(|d| d.name);
    for d in types {
        (d.init)(buses);
    }
}

/// The parts of `[pfn, pfn + nr)` every device type lets online (each filter applied to what
/// the previous ones kept), as maximal runs.
pub fn online_runs(pfn: u64, nr: u64) -> Vec<(u64, u64)> {
    let mut runs = alloc::vec![(pfn, nr)];
    for f in registered().iter().filter_map(|d| d.online_filter) {
        let mut kept: Vec<(u64, u64)> = Vec::new();
        for &(p, n) in &runs {
            f(p, n, &mut |q, m| match kept.last_mut() {
                Some((s, len)) if *s + *len == q => *len += m,
                _ => kept.push((q, m)),
            });
        }
        runs = kept;
    }
    runs
}

/// Every device type's own invariants.
pub fn check_all(hp: &Hotplug) -> Result<(), DeviceViolation> {
    registered().iter().filter_map(|d| d.check).try_for_each(|c| c(hp))
}

/// The shell view called `name`, if a device type has one.
pub fn view(name: &str) -> Option<&'static View> {
    registered().iter().flat_map(|d| d.views).find(|v| v.name == name)
}

/// Every device type's shell views.
pub fn views() -> impl Iterator<Item = &'static View> {
    registered().iter().flat_map(|d| d.views)
}
