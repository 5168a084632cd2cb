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

use crate::boot::dtb::PciHost;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// Buses mapped and scanned (QEMU virt has no bridges unless asked for: bus 0 is enough).
pub const MAX_BUSES: u64 = 4;
/// ECAM bytes per bus.
pub const ECAM_BUS_BYTES: u64 = 1 << 20;

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
        Some(bus << 20 | (df.device as u64) << 15 | (df.function as u64) << 12 | (reg as u64 & 0xffc))
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
