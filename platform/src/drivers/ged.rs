//! The ACPI GED event selector and the memory-hotplug register block of QEMU `virt`, driven
//! directly (no ACPI interpreter: the registers are the contract), and the GED interrupt's top
//! half. The DIMM policy that uses them (add/online, offline/remove/eject) is
//! [`crate::kernel::mem::dimm`].
//!
//! QEMU creates them only in firmware mode (`-bios`); they are at fixed addresses (absent from
//! the DTB, like the DIMMs themselves). The interrupt (INTID 41) is only *pulsed*, so it is
//! configured edge-triggered; events that arrive before the interrupt is enabled stay latched
//! in the slot flags, so every slot is scanned at boot and on every interrupt.
//!
//! The interrupt handler ([`handle_irq`]) only latches the event bits; [`take_pending`] hands
//! them to the bottom half in thread context.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_structs,
    registers::{ReadOnly, ReadWrite},
};

/// Memory hotplug registers (QEMU `VIRT_PCDIMM_ACPI`).
pub const MEMHP_PA: u64 = 0x0907_0000;
/// GED event selector (QEMU `VIRT_ACPI_GED`).
pub const GED_PA: u64 = 0x0908_0000;
/// SPI 9.
pub const INTID: u32 = 41;
pub const MAX_SLOTS: u32 = 256;

register_structs! {
    /// Reads and writes mean different things at the same offsets.
    MemhpRegs {
        /// Read: base address low. Write: slot selector.
        (0x00 => addr_lo_or_select: ReadWrite<u32>),
        /// Read: base address high. Write: _OST event code.
        (0x04 => addr_hi_or_ost_event: ReadWrite<u32>),
        /// Read: size low. Write: _OST status (QEMU emits the QMP ACPI_DEVICE_OST event).
        (0x08 => size_lo_or_ost_status: ReadWrite<u32>),
        (0x0c => size_hi: ReadOnly<u32>),
        (0x10 => proximity: ReadOnly<u32>),
        /// Read: flags (ENABLED, INSERT, REMOVE). Write: one control action per write.
        (0x14 => flags_or_control: ReadWrite<u8>),
        (0x15 => _reserved),
        (0x18 => @END),
    }
}

register_structs! {
    GedRegs {
        /// Event bits, read-to-clear; 4-byte reads only.
        (0x00 => selector: ReadOnly<u32>),
        (0x04 => @END),
    }
}

pub mod slot_flags {
    pub const ENABLED: u8 = 1 << 0;
    pub const INSERT: u8 = 1 << 1;
    pub const REMOVE: u8 = 1 << 2;
}

pub mod control {
    pub const CLEAR_INSERT: u8 = 0x2;
    pub const CLEAR_REMOVE: u8 = 0x4;
    pub const EJECT: u8 = 0x8;
}

pub mod ged_event {
    pub const MEM_HOTPLUG: u32 = 1 << 0;
    pub const POWER_DOWN: u32 = 1 << 1;
}

/// _OST source events and status codes (ACPI: Device Check = 1, Eject Request = 3).
pub mod ost {
    pub const EVENT_INSERT: u32 = 1;
    pub const EVENT_EJECT: u32 = 3;
    pub const SUCCESS: u32 = 0;
    /// Insertion: "not supported by OSPM"; ejection: "device busy".
    pub const FAILURE: u32 = 0x82;
}

static MEMHP_VA: AtomicU64 = AtomicU64::new(0);
static GED_VA: AtomicU64 = AtomicU64::new(0);
static PRESENT: AtomicBool = AtomicBool::new(false);
/// Event bits latched by the interrupt handler, consumed by [`take_pending`].
static PENDING: AtomicU32 = AtomicU32::new(0);

fn memhp() -> &'static MemhpRegs {
    // SAFETY: set once in `probe` to a device mapping of the memory-hotplug registers; only read
    // after `PRESENT` says so.
    unsafe { &*(MEMHP_VA.load(Ordering::Relaxed) as *const MemhpRegs) }
}

fn ged() -> &'static GedRegs {
    // SAFETY: as above, for the GED selector.
    unsafe { &*(GED_VA.load(Ordering::Relaxed) as *const GedRegs) }
}

pub fn present() -> bool {
    PRESENT.load(Ordering::Acquire)
}

/// Take the device mappings of the memory-hotplug registers (`memhp_va`) and the GED selector
/// (`ged_va`) and find out whether QEMU created them (firmware mode). Without firmware QEMU
/// has no device there and the access aborts: expected, not fatal.
pub fn probe(memhp_va: u64, ged_va: u64) -> bool {
    MEMHP_VA.store(memhp_va, Ordering::Relaxed);
    GED_VA.store(ged_va, Ordering::Relaxed);
    if matches!(
        arch::exception::probe_read32(memhp_va + 0x10),
        arch::exception::Probe::Fault { .. }
    ) {
        return false;
    }
    PRESENT.store(true, Ordering::Release);
    true
}

/// Latch what the selector holds now (read-to-clear) plus `extra` event bits, for the bottom
/// half (boot: anything already latched, and a full scan).
pub fn latch(extra: u32) {
    PENDING.fetch_or(ged().selector.get() | extra, Ordering::Relaxed);
}

/// Interrupt handler (top half): latch the event bits (read-to-clear register) for thread
/// context.
pub fn handle_irq() {
    if present() {
        PENDING.fetch_or(ged().selector.get(), Ordering::Release);
    }
}

/// The event bits latched since the last call ([`ged_event`]).
pub fn take_pending() -> u32 {
    PENDING.swap(0, Ordering::Acquire)
}

/// Select a slot for the reads and writes that follow.
pub fn select(slot: u32) {
    memhp().addr_lo_or_select.set(slot);
}

/// The selected slot's flags ([`slot_flags`]).
pub fn flags() -> u8 {
    memhp().flags_or_control.get()
}

/// The selected slot's DIMM: `(base, size)`.
pub fn slot_range() -> (u64, u64) {
    let r = memhp();
    let base = (r.addr_hi_or_ost_event.get() as u64) << 32 | r.addr_lo_or_select.get() as u64;
    let size = (r.size_hi.get() as u64) << 32 | r.size_lo_or_ost_status.get() as u64;
    (base, size)
}

/// One control action on the selected slot ([`control`]).
pub fn ctrl(action: u8) {
    memhp().flags_or_control.set(action);
}

/// Report an _OST event and status for the selected slot ([`ost`]).
pub fn report_ost(event: u32, status: u32) {
    memhp().addr_hi_or_ost_event.set(event);
    memhp().size_lo_or_ost_status.set(status);
}
