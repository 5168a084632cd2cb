//! DIMM hotplug on QEMU `virt`: the ACPI GED event selector and the memory-hotplug register
//! block, driven directly (no ACPI interpreter: the registers are the contract).
//!
//! QEMU creates them only in firmware mode (`-bios`); they are at fixed addresses (absent from
//! the DTB, like the DIMMs themselves). The interrupt (INTID 41) is only *pulsed*, so it is
//! configured edge-triggered; events that arrive before the interrupt is enabled stay latched
//! in the slot flags, so every slot is scanned at boot and on every interrupt.
//!
//! Slot count: a bounded scan of all 256 slots (`ACPI_MAX_RAM_SLOTS`, QEMU's maximum): the
//! registers cannot tell the count (an absent slot reads like an empty one), and the scan works
//! for any QEMU command line, including ones a user types by hand; it costs 512 MMIO accesses
//! per event.
//!
//! The interrupt handler only latches the event bits; the work (add/online, offline/remove/
//! eject) runs in thread context from the shell's idle loop ([`process_pending`]).

use crate::{
    boot::layout::{self, G},
    drivers::gic,
    drivers::psci,
    kernel::mem::hotplug::with_hotplug,
    kernel::mem::memory,
    println,
};
use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use mm::hotplug::{AddFlags, BlockId, GroupId, HotplugError};
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_structs,
    registers::{ReadOnly, ReadWrite},
};

/// Memory hotplug registers (QEMU `VIRT_PCDIMM_ACPI`).
const MEMHP_PA: u64 = 0x0907_0000;
/// GED event selector (QEMU `VIRT_ACPI_GED`).
const GED_PA: u64 = 0x0908_0000;
/// SPI 9.
pub const INTID: u32 = 41;
const MAX_SLOTS: u32 = 256;

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

mod slot_flags {
    pub const ENABLED: u8 = 1 << 0;
    pub const INSERT: u8 = 1 << 1;
    pub const REMOVE: u8 = 1 << 2;
}

mod control {
    pub const CLEAR_INSERT: u8 = 0x2;
    pub const CLEAR_REMOVE: u8 = 0x4;
    pub const EJECT: u8 = 0x8;
}

mod ged_event {
    pub const MEM_HOTPLUG: u32 = 1 << 0;
    pub const POWER_DOWN: u32 = 1 << 1;
}

/// _OST source events and status codes (ACPI: Device Check = 1, Eject Request = 3).
mod ost {
    pub const EVENT_INSERT: u32 = 1;
    pub const EVENT_EJECT: u32 = 3;
    pub const SUCCESS: u32 = 0;
    /// Insertion: "not supported by OSPM"; ejection: "device busy".
    pub const FAILURE: u32 = 0x82;
}

static MEMHP_VA: AtomicU64 = AtomicU64::new(0);
static GED_VA: AtomicU64 = AtomicU64::new(0);
static PRESENT: AtomicBool = AtomicBool::new(false);
/// Event bits latched by the interrupt handler, consumed by `process_pending`.
static PENDING: AtomicU32 = AtomicU32::new(0);

/// A DIMM in use.
#[derive(Clone, Debug)]
pub struct Dimm {
    pub base: u64,
    pub size: u64,
    pub group: GroupId,
    pub blocks: Vec<BlockId>,
}

pub static DIMMS: spin::Mutex<BTreeMap<u32, Dimm>> = spin::Mutex::new(BTreeMap::new());

fn memhp() -> &'static MemhpRegs {
    // SAFETY: set once in `init` to a device mapping of the memory-hotplug registers; only read
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

/// Map the registers and find out whether QEMU created them (firmware mode); if so, enable
/// the edge-triggered interrupt, then scan every slot (cold-plugged DIMMs raise no event).
pub fn init() {
    let (Ok(m), Ok(g)) = (memory::ioremap(MEMHP_PA, 0x18), memory::ioremap(GED_PA, 4)) else {
        println!("ged: cannot map the registers; DIMM hotplug disabled");
        return;
    };
    MEMHP_VA.store(m, Ordering::Relaxed);
    GED_VA.store(g, Ordering::Relaxed);
    // Without firmware QEMU has no device there and the access aborts: expected, not fatal.
    if matches!(
        arch::exception::probe_read32(m + 0x10),
        arch::exception::Probe::Fault { .. }
    ) {
        println!("ged: absent (QEMU creates it only when booted as firmware): DIMM hotplug unavailable, probe works");
        return;
    }
    PRESENT.store(true, Ordering::Release);
    gic::enable_spi(INTID, gic::Trigger::Edge);
    // Anything already latched (including a powerdown) is handled by the scan below.
    let t0 = arch::cpu::counter();
    PENDING.fetch_or(ged().selector.get() | ged_event::MEM_HOTPLUG, Ordering::Relaxed);
    process_pending();
    println!(
        "ged: present memhp={MEMHP_PA:#x} selector={GED_PA:#x} intid={INTID} slots_scanned={MAX_SLOTS} scan_cycles={}",
        arch::cpu::counter() - t0
    );
}

/// Interrupt handler: latch the event bits (read-to-clear register) for thread context.
pub fn handle_irq() {
    if present() {
        PENDING.fetch_or(ged().selector.get(), Ordering::Release);
    }
}

/// Run latched events (thread context; called from the shell's idle loop).
pub fn process_pending() {
    let ev = PENDING.swap(0, Ordering::Acquire);
    if ev & ged_event::MEM_HOTPLUG != 0 {
        scan();
    }
    if ev & ged_event::POWER_DOWN != 0 {
        println!("ged: powerdown");
        psci::system_off();
    }
}

fn select(slot: u32) {
    memhp().addr_lo_or_select.set(slot);
}

fn ctrl(action: u8) {
    memhp().flags_or_control.set(action);
}

fn report_ost(event: u32, status: u32) {
    memhp().addr_hi_or_ost_event.set(event);
    memhp().size_lo_or_ost_status.set(status);
}

/// Look at every slot: INSERT → add; enabled but unknown (cold-plugged, or plugged before a
/// reset) → add; REMOVE → remove and eject.
fn scan() {
    for slot in 0..MAX_SLOTS {
        select(slot);
        let flags = memhp().flags_or_control.get();
        if flags & slot_flags::INSERT != 0 {
            ctrl(control::CLEAR_INSERT);
            add(slot, "insert");
        } else if flags & slot_flags::ENABLED != 0
            && !DIMMS.lock().contains_key(&slot)
            && !REFUSED.lock().contains(&slot)
        {
            add(slot, "coldplug");
        }
        if flags & slot_flags::REMOVE != 0 {
            remove(slot);
        }
    }
}

/// Slots holding a DIMM we refused (not used, safe to eject when asked).
static REFUSED: spin::Mutex<Vec<u32>> = spin::Mutex::new(Vec::new());

fn add(slot: u32, event: &str) {
    select(slot);
    let r = memhp();
    let base = (r.addr_hi_or_ost_event.get() as u64) << 32 | r.addr_lo_or_select.get() as u64;
    let size = (r.size_hi.get() as u64) << 32 | r.size_lo_or_ost_status.get() as u64;
    let t0 = arch::cpu::counter();
    let result = with_hotplug(|hp, ops| {
        let group = hp.register_static_group(size >> layout::PAGE_SHIFT);
        match hp.add_memory(ops, Some(group), base, size, AddFlags { memmap_on_memory: true }) {
            Ok(ids) => Ok((group, hp.auto_online(ops, &ids))),
            Err(e) => {
                let _ = hp.unregister_group(group);
                Err(e)
            }
        }
    });
    select(slot);
    match result {
        Ok((group, zones)) => {
            report_ost(ost::EVENT_INSERT, ost::SUCCESS);
            let blocks: Vec<BlockId> = zones.iter().map(|&(id, _)| id).collect();
            let names: Vec<&str> = zones.iter().map(|(_, z)| z.map_or("offline", |z| z.name())).collect();
            println!(
                "dimm: slot={slot} base={base:#x} size={size:#x} event={event} blocks={blocks:?} zones={names:?} ost={:#x} cycles={}",
                ost::SUCCESS,
                arch::cpu::counter() - t0
            );
            DIMMS.lock().insert(
                slot,
                Dimm {
                    base,
                    size,
                    group,
                    blocks,
                },
            );
        }
        Err(e) => {
            report_ost(ost::EVENT_INSERT, ost::FAILURE);
            REFUSED.lock().push(slot);
            println!(
                "dimm: slot={slot} base={base:#x} size={size:#x} event={event} refused: {} ost={:#x}",
                why_refused(e),
                ost::FAILURE
            );
        }
    }
}

fn why_refused(e: HotplugError) -> String {
    match e {
        HotplugError::Misaligned { block_size, .. } => {
            format!(
                "{e} (the {} granule uses {} memory blocks)",
                G.granule_name(),
                layout::Size(block_size)
            )
        }
        e => format!("{e}"),
    }
}

/// The linear map and memmap of `[base, base + size)` have no translation left.
fn unmapped(base: u64, size: u64) -> bool {
    let bs = G.section_size();
    let probes = (base..base + size).step_by(bs as usize).flat_map(|b| {
        [
            layout::phys_to_virt(b),
            layout::phys_to_virt(b + bs - layout::PAGE_SIZE),
            memory::VMEMMAP.pfn_to_page(b >> layout::PAGE_SHIFT),
        ]
    });
    let probes: Vec<u64> = probes.collect();
    memory::with_kernel_pt(|pt, t| probes.iter().all(|&va| pt.walk(t, va).leaf.is_none()))
}

fn remove(slot: u32) {
    let dimm = DIMMS.lock().get(&slot).cloned();
    let Some(d) = dimm else {
        // A DIMM we never used (refused, or unknown): nothing maps it; let it go.
        select(slot);
        ctrl(control::CLEAR_REMOVE);
        report_ost(ost::EVENT_EJECT, ost::SUCCESS);
        ctrl(control::EJECT);
        REFUSED.lock().retain(|&s| s != slot);
        println!("dimm: slot={slot} event=remove ejected (was not in use)");
        return;
    };
    let t0 = arch::cpu::counter();
    let r = with_hotplug(|hp, ops| {
        hp.offline_and_remove(ops, d.base, d.size)?;
        let _ = hp.unregister_group(d.group);
        Ok::<(), HotplugError>(())
    });
    select(slot);
    // Clear REMOVE first in every case (a stale REMOVE would make the next DIMM in this slot
    // look like it is being removed), then eject only what is unmapped and invalidated.
    ctrl(control::CLEAR_REMOVE);
    match r {
        Ok(()) if unmapped(d.base, d.size) => {
            report_ost(ost::EVENT_EJECT, ost::SUCCESS);
            DIMMS.lock().remove(&slot);
            ctrl(control::EJECT);
            println!(
                "dimm: slot={slot} event=remove ejected base={:#x} size={:#x} cycles={}",
                d.base,
                d.size,
                arch::cpu::counter() - t0
            );
        }
        Ok(()) => {
            // Cannot happen if remove_memory is right; never eject memory that is still mapped.
            report_ost(ost::EVENT_EJECT, ost::FAILURE);
            println!(
                "dimm: slot={slot} event=remove refused: a translation of the range survived removal ost={:#x}",
                ost::FAILURE
            );
        }
        Err(e) => {
            report_ost(ost::EVENT_EJECT, ost::FAILURE);
            println!(
                "dimm: slot={slot} event=remove refused: {e} ost={:#x} (the DIMM stays usable; retry device_del)",
                ost::FAILURE
            );
        }
    }
}

/// `dimms` shell command.
pub fn print_dimms() {
    if !present() {
        println!("dimms: none (no GED: boot in firmware mode for DIMM hotplug)");
        return;
    }
    let dimms = DIMMS.lock();
    println!("dimms: count={} refused_slots={:?}", dimms.len(), *REFUSED.lock());
    for (slot, d) in dimms.iter() {
        println!(
            "dimm: slot={} base={:#x} size={:#x} blocks={:?} group={}",
            slot, d.base, d.size, d.blocks, d.group
        );
    }
}
