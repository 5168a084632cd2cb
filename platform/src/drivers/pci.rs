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

register_bitfields! {u32,
    /// A bridge's (type 1 header) bus numbers, dword 0x18.
    BRIDGE_BUSES [
        PRIMARY OFFSET(0) NUMBITS(8) [],
        SECONDARY OFFSET(8) NUMBITS(8) [],
        SUBORDINATE OFFSET(16) NUMBITS(8) [],
        SECONDARY_LATENCY OFFSET(24) NUMBITS(8) []
    ],
    /// A bridge's I/O base and limit (address bits 15:12), dword 0x1c; the secondary status
    /// above them is write-1-to-clear, so writing it as 0 leaves it alone.
    BRIDGE_IO [
        BASE OFFSET(4) NUMBITS(4) [],
        LIMIT OFFSET(12) NUMBITS(4) []
    ],
    /// A bridge's memory (dword 0x20) or prefetchable memory (dword 0x24) window: base and
    /// limit, address bits 31:20 (1 MiB granules; the limit names the window's last MiB). Base
    /// above limit closes the window.
    BRIDGE_WINDOW [
        BASE OFFSET(4) NUMBITS(12) [],
        LIMIT OFFSET(20) NUMBITS(12) []
    ]
}

register_bitfields! {u64,
    /// A bus address as a bridge window holds it: bits 31:20 in the base/limit dword, bits
    /// 63:32 in the prefetchable window's upper dwords.
    WINDOW_ADDRESS [
        MIB OFFSET(20) NUMBITS(12) [],
        HIGH OFFSET(32) NUMBITS(32) []
    ]
}

/// Configuration-header offset of the interrupt line/pin dword.
const INTERRUPT_REG: u8 = 0x3c;
/// Type 1 header offsets: bus numbers, I/O window, memory window, prefetchable window and its
/// upper 32 bits of base and limit.
const BRIDGE_BUSES_REG: u8 = 0x18;
const BRIDGE_IO_REG: u8 = 0x1c;
const BRIDGE_MEMORY_REG: u8 = 0x20;
const BRIDGE_PREFETCHABLE_REG: u8 = 0x24;
const BRIDGE_PREFETCHABLE_BASE_UPPER_REG: u8 = 0x28;
const BRIDGE_PREFETCHABLE_LIMIT_UPPER_REG: u8 = 0x2c;

/// The granule of a bridge's memory windows.
pub const BRIDGE_WINDOW_ALIGN: u64 = 0x10_0000;

/// Buses mapped and scanned: bus 0 and up to 31 behind bridges (a root port or a switch port
/// takes one bus each; 1 MiB of ECAM mapped per bus).
pub const MAX_BUSES: u64 = 32;
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

    /// Program a bridge's bus numbers: the bus it sits on, the bus behind it, and the highest
    /// bus below it (config cycles for buses `secondary..=subordinate` are forwarded).
    pub fn set_bridge_buses(&mut self, df: DeviceFunction, primary: u8, secondary: u8, subordinate: u8) {
        let v = BRIDGE_BUSES::PRIMARY.val(primary.into())
            + BRIDGE_BUSES::SECONDARY.val(secondary.into())
            + BRIDGE_BUSES::SUBORDINATE.val(subordinate.into());
        self.write_word(df, BRIDGE_BUSES_REG, v.value);
    }

    /// Close a bridge's I/O window (hotmem assigns no I/O space).
    pub fn close_bridge_io(&mut self, df: DeviceFunction) {
        let v = BRIDGE_IO::BASE.val(BRIDGE_IO::BASE.mask) + BRIDGE_IO::LIMIT.val(0);
        self.write_word(df, BRIDGE_IO_REG, v.value);
    }

    /// Program one of a bridge's memory windows to forward `range` (bus addresses, both ends
    /// aligned to [`BRIDGE_WINDOW_ALIGN`]), or close it (`None`).
    pub fn set_bridge_window(
        &mut self,
        df: DeviceFunction,
        window: BridgeWindow,
        range: Option<core::ops::Range<u64>>,
    ) {
        let field = |a: u64, f| LocalRegisterCopy::<u64, WINDOW_ADDRESS::Register>::new(a).read(f) as u32;
        let (lo, hi) = match range {
            Some(r) if r.end > r.start => {
                let last = r.end - 1;
                let lo = BRIDGE_WINDOW::BASE.val(field(r.start, WINDOW_ADDRESS::MIB))
                    + BRIDGE_WINDOW::LIMIT.val(field(last, WINDOW_ADDRESS::MIB));
                (
                    lo.value,
                    Some((field(r.start, WINDOW_ADDRESS::HIGH), field(last, WINDOW_ADDRESS::HIGH))),
                )
            }
            _ => (
                (BRIDGE_WINDOW::BASE.val(BRIDGE_WINDOW::BASE.mask) + BRIDGE_WINDOW::LIMIT.val(0)).value,
                None,
            ),
        };
        match window {
            BridgeWindow::Memory => self.write_word(df, BRIDGE_MEMORY_REG, lo),
            BridgeWindow::Prefetchable => {
                // The low 4 bits say whether the upper dwords exist (64-bit window); on a 32-bit
                // window they read as 0 and writes to them are ignored.
                let (base_hi, limit_hi) = hi.unwrap_or((u32::MAX, 0));
                self.write_word(df, BRIDGE_PREFETCHABLE_REG, lo);
                self.write_word(df, BRIDGE_PREFETCHABLE_BASE_UPPER_REG, base_hi);
                self.write_word(df, BRIDGE_PREFETCHABLE_LIMIT_UPPER_REG, limit_hi);
            }
        }
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

/// Which memory window of a bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeWindow {
    Memory,
    Prefetchable,
}

/// The INTx pin a bridge raises on its own bus for `pin` (1..=4) of the device numbered
/// `device` behind it: the PCI-to-PCI bridge swizzle, (device + pin - 1) mod 4, as pins 1..=4.
/// Pin 0 (no interrupt) stays 0.
pub fn swizzle(device: u8, pin: u8) -> u8 {
    if pin == 0 {
        return 0;
    }
    (device % 4 + pin - 1) % 4 + 1
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
