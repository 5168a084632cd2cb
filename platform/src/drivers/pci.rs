//! PCIe on QEMU `virt`: configuration access to the generic ECAM host bridge from the DTB
//! (`pci-host-ecam-generic`) and INTx routing. Enumeration and BAR placement (policy) are
//! [`crate::kernel::pci`].
//!
//! Nothing assigns BARs before hotmem (no firmware in `-kernel` boots; hotmem *is* the firmware
//! in `-bios` boots), so enumeration sizes every memory BAR and places it in the 32-bit memory
//! window of `ranges` (naturally aligned, bump allocation; 64-bit BARs too, since the window is
//! reachable by both), then enables memory decoding and bus mastering.
//!
//! Configuration access is `virtio-drivers`' [`PciRoot`] over our own [`Ecam`]
//! ([`ConfigurationAccess`]): its `MmioCam` wants the whole 256 MiB ECAM mapped, and we map only
//! the buses we scan ([`MAX_BUSES`]) in the 1 GiB ioremap region.

use crate::boot::dtb::{PciHost, PCI_PHYS_HI as PHYS_HI};
use tock_registers::{register_bitfields, LocalRegisterCopy};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

register_bitfields! {u64,
    /// An offset into ECAM space (PCIe): the function's 4 KiB configuration space and a dword
    /// in it.
    ECAM_OFFSET [
        BUS OFFSET(20) NUMBITS(8) [],
        DEVICE OFFSET(15) NUMBITS(5) [],
        FUNCTION OFFSET(12) NUMBITS(3) [],
        /// Dword index in the configuration space.
        DWORD OFFSET(2) NUMBITS(10) []
    ]
}

register_bitfields! {u32,
    /// The configuration header's dword at 0x3c.
    INTERRUPT [
        /// INTx pin: 0 = none, 1..=4 = INTA..INTD.
        PIN OFFSET(8) NUMBITS(8) [],
        LINE OFFSET(0) NUMBITS(8) []
    ]
}

/// Configuration-header offset of the interrupt line/pin dword.
const INTERRUPT_REG: u8 = 0x3c;

/// Buses mapped and scanned (QEMU virt has no bridges unless asked for: bus 0 is enough).
pub const MAX_BUSES: u64 = 4;
/// ECAM bytes per bus.
pub const ECAM_BUS_BYTES: u64 = ECAM_OFFSET::BUS.val(1).value;

/// ECAM configuration access over an ioremap of the first buses.
#[derive(Clone, Copy)]
pub struct Ecam {
    va: u64,
    bus_start: u8,
    buses: u64,
}

impl Ecam {
    /// Configuration access to `buses` buses from `bus_start`, whose ECAM is mapped at `va`.
    ///
    /// # Safety
    ///
    /// `va` maps `buses` MiB of ECAM space as device memory, for as long as the `Ecam` (and its
    /// copies) live, and nothing else accesses it as ordinary memory.
    pub unsafe fn new(va: u64, bus_start: u8, buses: u64) -> Self {
        Ecam { va, bus_start, buses }
    }

    fn offset(&self, df: DeviceFunction, reg: u8) -> Option<u64> {
        let bus = (df.bus as u64).checked_sub(self.bus_start as u64)?;
        if bus >= self.buses || df.device >= 32 || df.function >= 8 {
            return None;
        }
        Some(
            (ECAM_OFFSET::BUS.val(bus)
                + ECAM_OFFSET::DEVICE.val(df.device.into())
                + ECAM_OFFSET::FUNCTION.val(df.function.into())
                + ECAM_OFFSET::DWORD.val(u64::from(reg) / 4))
            .value,
        )
    }

    /// The function's INTx pin (0 = none, 1..=4 = INTA..INTD).
    pub fn interrupt_pin(&self, df: DeviceFunction) -> u8 {
        LocalRegisterCopy::<u32, INTERRUPT::Register>::new(self.read_word(df, INTERRUPT_REG)).read(INTERRUPT::PIN) as u8
    }
}

impl ConfigurationAccess for Ecam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        match self.offset(df, reg) {
            // SAFETY: `va` maps `buses` MiB of ECAM as device memory (the contract of `new`); the
            // offset is inside it and 4-byte aligned.
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
    let phys_hi = PHYS_HI::BUS.val(df.bus.into())
        + PHYS_HI::DEVICE.val(df.device.into())
        + PHYS_HI::FUNCTION.val(df.function.into());
    let child = [phys_hi.value, 0, 0, pin as u32];
    map.chunks_exact(ROW)
        .find(|row| (0..4).all(|i| child[i] & mask[i] == row[i]))
        .and_then(|row| match (row[7], row[8]) {
            (0, n) => Some(32 + n),
            (1, n) => Some(16 + n),
            _ => None,
        })
}
