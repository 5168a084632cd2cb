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

use core::sync::atomic::{AtomicU32, Ordering};
use tock_registers::{
    fields::FieldValue,
    interfaces::{Readable, Writeable},
    register_bitfields, register_structs,
    registers::{Aliased, ReadOnly, ReadWrite},
    LocalRegisterCopy,
};

/// Memory hotplug registers (QEMU `VIRT_PCDIMM_ACPI`).
pub const MEMHP_PA: u64 = 0x0907_0000;
/// GED event selector (QEMU `VIRT_ACPI_GED`).
pub const GED_PA: u64 = 0x0908_0000;
/// SPI 9.
pub const INTID: u32 = 41;
/// QEMU's most DIMM slots (`ACPI_MAX_RAM_SLOTS`).
pub const MAX_SLOTS: u32 = 256;

/// The DIMM slots QEMU has (its ACPI tables' `MDNR`), [`MAX_SLOTS`] when unknown.
static SLOTS: AtomicU32 = AtomicU32::new(MAX_SLOTS);

/// Set the slot count found in QEMU's ACPI tables (`None`: not found, every possible slot is
/// scanned). Boot only, before the GED is initialised.
pub fn set_slots(n: Option<u32>) {
    SLOTS.store(n.unwrap_or(MAX_SLOTS).min(MAX_SLOTS), Ordering::Relaxed);
}

/// The slots a scan looks at.
pub fn slots() -> u32 {
    SLOTS.load(Ordering::Relaxed)
}

register_bitfields! {u8,
    /// The selected slot's state (read at 0x14; QEMU `MEMORY_SLOT_*` bits).
    pub SLOT_FLAGS [
        /// The guest was asked to remove the DIMM.
        REMOVE OFFSET(2) NUMBITS(1) [],
        /// A DIMM was plugged and not yet acknowledged.
        INSERT OFFSET(1) NUMBITS(1) [],
        /// A DIMM is in the slot.
        ENABLED OFFSET(0) NUMBITS(1) []
    ],
    /// One control action on the selected slot (written at 0x14).
    pub SLOT_CONTROL [
        /// Eject the DIMM (QEMU unplugs it).
        EJECT OFFSET(3) NUMBITS(1) [],
        CLEAR_REMOVE OFFSET(2) NUMBITS(1) [],
        CLEAR_INSERT OFFSET(1) NUMBITS(1) []
    ]
}

register_bitfields! {u32,
    /// GED event selector bits (QEMU `ACPI_GED_*_EVT`).
    pub GED_EVENT [
        POWER_DOWN OFFSET(1) NUMBITS(1) [],
        MEM_HOTPLUG OFFSET(0) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// A 64-bit value the block exposes as two 32-bit registers (base address, size).
    SPLIT64 [
        HI OFFSET(32) NUMBITS(32) [],
        LO OFFSET(0) NUMBITS(32) []
    ]
}

/// The selected slot's flags, as read.
pub type SlotFlags = LocalRegisterCopy<u8, SLOT_FLAGS::Register>;
/// GED event bits (latched selector values).
pub type Events = LocalRegisterCopy<u32, GED_EVENT::Register>;

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
        (0x14 => flags_or_control: Aliased<u8, SLOT_FLAGS::Register, SLOT_CONTROL::Register>),
        (0x15 => _reserved),
        (0x18 => @END),
    }
}

register_structs! {
    GedRegs {
        /// Event bits, read-to-clear; 4-byte reads only.
        (0x00 => selector: ReadOnly<u32, GED_EVENT::Register>),
        (0x04 => @END),
    }
}

/// _OST source events and status codes (ACPI: Device Check = 1, Eject Request = 3).
pub mod ost {
    pub const EVENT_INSERT: u32 = 1;
    pub const EVENT_EJECT: u32 = 3;
    pub const SUCCESS: u32 = 0;
    /// Insertion: "not supported by OSPM"; ejection: "device busy".
    pub const FAILURE: u32 = 0x82;
}

/// The addresses of the memory-hotplug registers and the GED selector, set by [`probe`] once it
/// has seen the device there: no register reference exists otherwise (a use without the GED is
/// a panic, not a read of address 0).
static REGS: spin::Once<(u64, u64)> = spin::Once::new();
/// Event bits latched by the interrupt handler, consumed by [`take_pending`].
static PENDING: AtomicU32 = AtomicU32::new(0);

fn memhp() -> &'static MemhpRegs {
    let &(memhp_va, _) = REGS.get().expect("the GED is present");
    // SAFETY: `probe`'s caller promised a permanent device mapping of the memory-hotplug
    // registers there, and `probe` saw the device answer.
    unsafe { &*(memhp_va as *const MemhpRegs) }
}

fn ged() -> &'static GedRegs {
    let &(_, ged_va) = REGS.get().expect("the GED is present");
    // SAFETY: as above, for the GED selector.
    unsafe { &*(ged_va as *const GedRegs) }
}

pub fn present() -> bool {
    REGS.get().is_some()
}

/// Take the device mappings of the memory-hotplug registers (`memhp_va`) and the GED selector
/// (`ged_va`) and find out whether QEMU created them (firmware mode). Without firmware QEMU
/// has no device there and the access aborts: expected, not fatal.
///
/// # Safety
/// `memhp_va` maps the memory-hotplug register block (0x18 bytes) and `ged_va` the GED event
/// selector as device memory, for the life of the kernel; called once.
pub unsafe fn probe(memhp_va: u64, ged_va: u64) -> bool {
    if matches!(
        arch::exception::probe_read32(memhp_va + core::mem::offset_of!(MemhpRegs, proximity) as u64),
        arch::exception::Probe::Fault { .. }
    ) {
        return false;
    }
    REGS.call_once(|| (memhp_va, ged_va));
    true
}

/// Latch what the selector holds now (read-to-clear) plus `extra` event bits, for the bottom
/// half (boot: anything already latched, and a full scan).
pub fn latch(extra: FieldValue<u32, GED_EVENT::Register>) {
    PENDING.fetch_or(ged().selector.get() | extra.value, Ordering::Relaxed);
}

/// Interrupt handler (top half): latch the event bits (read-to-clear register) for thread
/// context.
pub fn handle_irq() {
    if present() {
        PENDING.fetch_or(ged().selector.get(), Ordering::Release);
    }
}

/// The event bits latched since the last call.
pub fn take_pending() -> Events {
    Events::new(PENDING.swap(0, Ordering::Acquire))
}

/// Select a slot for the reads and writes that follow.
pub fn select(slot: u32) {
    memhp().addr_lo_or_select.set(slot);
}

/// The selected slot's flags.
pub fn flags() -> SlotFlags {
    memhp().flags_or_control.extract()
}

/// The selected slot's DIMM: `(base, size)`.
pub fn slot_range() -> (u64, u64) {
    let r = memhp();
    let join = |hi: u32, lo: u32| (SPLIT64::HI.val(hi.into()) + SPLIT64::LO.val(lo.into())).value;
    let base = join(r.addr_hi_or_ost_event.get(), r.addr_lo_or_select.get());
    let size = join(r.size_hi.get(), r.size_lo_or_ost_status.get());
    (base, size)
}

/// The selected slot's proximity domain: the DIMM's NUMA node (QEMU numbers proximity
/// domains like its `-numa node,nodeid=N` ids).
pub fn slot_proximity() -> u32 {
    memhp().proximity.get()
}

/// One control action on the selected slot.
pub fn ctrl(action: FieldValue<u8, SLOT_CONTROL::Register>) {
    memhp().flags_or_control.write(action);
}

/// Report an _OST event and status for the selected slot ([`ost`]).
pub fn report_ost(event: u32, status: u32) {
    memhp().addr_hi_or_ost_event.set(event);
    memhp().size_lo_or_ost_status.set(status);
}
