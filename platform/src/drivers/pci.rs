//! PCIe on QEMU `virt`: the generic ECAM host bridge from the DTB (`pci-host-ecam-generic`).
//!
//! Nothing assigns BARs before hotmem (no firmware in `-kernel` boots; hotmem *is* the firmware
//! in `-bios` boots), so enumeration sizes every memory BAR and places it in the 32-bit memory
//! window of `ranges` (naturally aligned, bump allocation; 64-bit BARs too, since the window is
//! reachable by both), then enables memory decoding and bus mastering.
//!
//! Configuration access is `virtio-drivers`' [`PciRoot`] over our own [`Ecam`]
//! ([`ConfigurationAccess`]): its `MmioCam` wants the whole 256 MiB ECAM mapped, and we map only
//! the buses we scan ([`MAX_BUSES`]) in the 1 GiB ioremap region.

use crate::{
    boot::dtb::{PciHost, PciSpace},
    kernel::mem::memory,
    println,
};
use alloc::vec::Vec;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
};

/// Buses mapped and scanned (QEMU virt has no bridges unless asked for: bus 0 is enough).
pub const MAX_BUSES: u64 = 4;
const ECAM_BUS_BYTES: u64 = 1 << 20;

/// ECAM configuration access over an ioremap of the first buses.
#[derive(Clone, Copy)]
pub struct Ecam {
    va: u64,
    bus_start: u8,
    buses: u64,
}

impl Ecam {
    fn offset(&self, df: DeviceFunction, reg: u8) -> Option<u64> {
        let bus = (df.bus as u64).checked_sub(self.bus_start as u64)?;
        if bus >= self.buses || df.device >= 32 || df.function >= 8 {
            return None;
        }
        Some(bus << 20 | (df.device as u64) << 15 | (df.function as u64) << 12 | (reg as u64 & 0xffc))
    }
}

impl ConfigurationAccess for Ecam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        match self.offset(df, reg) {
            // SAFETY: `va` maps `buses` MiB of ECAM as device memory (set up in `init`, never
            // unmapped); the offset is inside it and 4-byte aligned.
            Some(o) => unsafe { core::ptr::read_volatile((self.va + o) as *const u32) },
            None => u32::MAX,
        }
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        if let Some(o) = self.offset(df, reg) {
            // SAFETY: as in `read_word`.
            unsafe { core::ptr::write_volatile((self.va + o) as *mut u32, data) }
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        *self
    }
}

/// A bump allocator over one window of `ranges` (CPU addresses).
struct Window {
    next: u64,
    end: u64,
}

impl Window {
    fn alloc(&mut self, size: u64) -> Option<u64> {
        let align = size.max(memory_page());
        let a = self.next.checked_add(align - 1)? & !(align - 1);
        let end = a.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            a
        })
    }
}

fn memory_page() -> u64 {
    crate::boot::layout::PAGE_SIZE
}

/// One function found on the bus, BARs assigned.
#[derive(Clone, Debug)]
pub struct PciFunction {
    pub df: DeviceFunction,
    pub info: DeviceFunctionInfo,
    /// The GIC INTID of its `interrupt-pin` through the host bridge's `interrupt-map`.
    pub intid: Option<u32>,
}

/// INTx routing through `interrupt-map` (+ `interrupt-map-mask`): the map lists, per masked
/// child unit address (device number) and pin, the parent interrupt, so the PCI swizzle
/// (device d, pin p → host pin (d + p - 1) mod 4) is already in its rows. Each row is
/// 3 address cells + 1 pin cell + phandle + the GIC's 2 address cells + 3 interrupt cells (the
/// layout QEMU virt uses for both GICv2 and GICv3); another layout gives `None` (polling).
pub fn intx_intid(host: &PciHost, df: DeviceFunction, pin: u8) -> Option<u32> {
    const ROW: usize = 10;
    let map = &host.interrupt_map;
    let mask = &host.interrupt_map_mask;
    if pin == 0 || mask.len() != 4 || map.is_empty() || !map.len().is_multiple_of(ROW) {
        return None;
    }
    let child = [
        (df.bus as u32) << 16 | (df.device as u32) << 11 | (df.function as u32) << 8,
        0,
        0,
        pin as u32,
    ];
    map.chunks_exact(ROW)
        .find(|row| (0..4).all(|i| child[i] & mask[i] == row[i]))
        .and_then(|row| match (row[7], row[8]) {
            (0, n) => Some(32 + n),
            (1, n) => Some(16 + n),
            _ => None,
        })
}

/// Why PCI is not available.
#[derive(Debug)]
pub enum PciInitError {
    NoHostBridge,
    NoMem32Window,
    Map,
}

impl core::fmt::Display for PciInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PciInitError::NoHostBridge => write!(f, "no pci-host-ecam-generic node in the device tree"),
            PciInitError::NoMem32Window => write!(f, "the host bridge has no 32-bit memory window in `ranges`"),
            PciInitError::Map => write!(f, "cannot map the ECAM space"),
        }
    }
}

/// The host bridge after enumeration.
pub struct Pci {
    pub root: PciRoot<Ecam>,
    pub functions: Vec<PciFunction>,
}

/// Map the ECAM of the first buses, enumerate, assign BARs, enable decoding + bus mastering.
pub fn init(host: Option<&PciHost>) -> Result<Pci, PciInitError> {
    let host = host.ok_or(PciInitError::NoHostBridge)?;
    let buses = (host.bus_end as u64 + 1 - host.bus_start as u64)
        .min(MAX_BUSES)
        .min(host.ecam.size / ECAM_BUS_BYTES);
    let va = memory::ioremap(host.ecam.base, buses * ECAM_BUS_BYTES).map_err(|_| PciInitError::Map)?;
    let w = host
        .windows
        .iter()
        .find(|w| w.space == PciSpace::Mem32)
        .ok_or(PciInitError::NoMem32Window)?;
    // BARs hold PCI bus addresses (on virt the windows are identity: pci == cpu).
    let mut win = Window {
        next: w.pci,
        end: w.pci + w.size,
    };
    let ecam = Ecam {
        va,
        bus_start: host.bus_start,
        buses,
    };
    let mut root = PciRoot::new(ecam);
    let mut functions = Vec::new();
    for bus in host.bus_start as u64..host.bus_start as u64 + buses {
        for (df, info) in root.enumerate_bus(bus as u8) {
            if info.header_type != HeaderType::Standard {
                continue;
            }
            let (_, cmd) = root.get_status_command(df);
            root.set_command(df, cmd & !(Command::MEMORY_SPACE | Command::IO_SPACE));
            let mut bar = 0u8;
            while bar < 6 {
                let Ok(Some(b)) = root.bar_info(df, bar) else {
                    bar += 1;
                    continue;
                };
                let two = b.takes_two_entries();
                if let BarInfo::Memory { size, .. } = b {
                    match win.alloc(size) {
                        Some(pci_addr) if two => root.set_bar_64(df, bar, pci_addr),
                        Some(pci_addr) => root.set_bar_32(df, bar, pci_addr as u32),
                        None => println!(
                            "pci: {df} BAR{bar} of {size:#x} bytes does not fit the 32-bit window: left unassigned"
                        ),
                    }
                }
                bar += if two { 2 } else { 1 };
            }
            root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
            let pin = (ecam.read_word(df, 0x3c) >> 8) as u8;
            println!(
                "pci: {df} vendor={:#06x} device={:#06x} class={:#04x} int_pin={pin} intid={}",
                info.vendor_id,
                info.device_id,
                info.class,
                intx_intid(host, df, pin).map_or("-".into(), |i| alloc::format!("{i}"))
            );
            let intid = intx_intid(host, df, pin);
            functions.push(PciFunction { df, info, intid });
        }
    }
    println!(
        "pci: ecam={:#x} buses={}-{} (scanned {buses}) mem32={:#x}+{:#x} functions={}",
        host.ecam.base,
        host.bus_start,
        host.bus_end,
        w.cpu,
        w.size,
        functions.len()
    );
    Ok(Pci { root, functions })
}
