//! DIMM hotplug policy over the GED driver ([`crate::drivers::ged`]): a DIMM that appears
//! is added (memmap on memory) and onlined by the online policy; one asked out is offlined,
//! removed and ejected only once nothing maps it, and only then answered (`_OST` success).
//!
//! Slot count: the registers cannot tell it (an absent slot reads like an empty one), so it
//! comes from QEMU's own ACPI tables (`Name (MDNR, n)`, read at boot through fw_cfg DMA): every
//! event scans exactly the slots QEMU has, two MMIO accesses each, for any QEMU command line.
//! Without the tables (no fw_cfg DMA) every possible slot is scanned (256, QEMU's maximum:
//! 512 accesses, about 0.25 ms under TCG).
//!
//! The interrupt's top half only latches the event bits; the work (add/online, offline/remove/
//! eject) runs in thread context, as deferred work ([`crate::kernel::deferred`]).

use crate::{
    boot::layout::{self, G},
    drivers::{
        ged::{self, ctrl, ost, report_ost, select, GED_EVENT, SLOT_CONTROL, SLOT_FLAGS},
        gic, psci,
    },
    kernel::mem::device::{Buses, MemoryDevice, View},
    kernel::{deferred, irq, mem::hotplug::with_hotplug, mem::kernel_pt, mem::memmap},
    memory_device, println,
};
use alloc::{collections::BTreeMap, format, string::String, vec::Vec};
use arch::mutant::{self, Mutant};
use mm::hotplug::{AddFlags, BlockId, GroupId, HotplugError};
use mm::numa::NodeId;

memory_device!(MemoryDevice {
    name: "dimm",
    init,
    online_filter: None,
    check: None,
    views: &[View {
        name: "dimms",
        help: "DIMMs in use (ACPI GED memory hotplug, firmware mode)",
        show: print_dimms,
    }],
});

/// A DIMM in use.
#[derive(Clone, Debug)]
pub struct Dimm {
    pub base: u64,
    pub size: u64,
    /// Its NUMA node (the slot's proximity domain).
    pub node: NodeId,
    pub group: GroupId,
    pub blocks: Vec<BlockId>,
}

static DIMMS: crate::kernel::sync::Mutex<BTreeMap<u32, Dimm>> =
    crate::kernel::sync::Mutex::new("dimms", BTreeMap::new());

/// Map the registers and find out whether QEMU created them (firmware mode); if so, register
/// the interrupt's top half and our bottom half, enable the edge-triggered interrupt, then scan
/// every slot (cold-plugged DIMMs raise no event).
fn init(_: &mut Buses) {
    let (Ok(m), Ok(g)) = (
        kernel_pt::ioremap(ged::MEMHP_PA, 0x18),
        kernel_pt::ioremap(ged::GED_PA, 4),
    ) else {
        println!("ged: cannot map the registers; DIMM hotplug disabled");
        return;
    };
    // SAFETY: both were just mapped as device memory over QEMU's fixed GED addresses, for good.
    if !unsafe { ged::probe(m, g) } {
        println!("ged: absent (QEMU creates it only when booted as firmware): DIMM hotplug unavailable, probe works");
        return;
    }
    if let Err(e) = deferred::register(process_pending) {
        println!("ged: cannot register the deferred work: {e:?}; DIMM hotplug disabled");
        return;
    }
    if let Err(e) = irq::register(ged::INTID, |_, _| ged::handle_irq()) {
        println!("ged: cannot register the interrupt: {e:?}; DIMM hotplug disabled");
        return;
    }
    gic::enable_spi(ged::INTID, gic::Trigger::Edge);
    // Anything already latched (including a powerdown) is handled by the scan below.
    let t0 = arch::cpu::counter();
    ged::latch(GED_EVENT::MEM_HOTPLUG::SET);
    process_pending();
    println!(
        "ged: present memhp={:#x} selector={:#x} intid={} slots_scanned={} scan_cycles={}",
        ged::MEMHP_PA,
        ged::GED_PA,
        ged::INTID,
        ged::slots(),
        arch::cpu::counter() - t0
    );
}

/// Run latched events (the bottom half: thread context, from the deferred-work registry).
fn process_pending() {
    let ev = ged::take_pending();
    if ev.is_set(GED_EVENT::MEM_HOTPLUG) {
        scan();
    }
    if ev.is_set(GED_EVENT::POWER_DOWN) {
        println!("ged: powerdown");
        psci::system_off();
    }
}

/// Look at every slot: INSERT → add; enabled but unknown (cold-plugged, or plugged before a
/// reset) → add; REMOVE → remove and eject.
fn scan() {
    for slot in 0..ged::slots() {
        select(slot);
        let flags = ged::flags();
        if flags.is_set(SLOT_FLAGS::INSERT) {
            ctrl(SLOT_CONTROL::CLEAR_INSERT::SET);
            add(slot, "insert");
        } else if flags.is_set(SLOT_FLAGS::ENABLED)
            && !DIMMS.lock().contains_key(&slot)
            && !REFUSED.lock().contains(&slot)
        {
            add(slot, "coldplug");
        }
        if flags.is_set(SLOT_FLAGS::REMOVE) {
            remove(slot);
        }
    }
}

/// Slots holding a DIMM we refused (not used, safe to eject when asked).
static REFUSED: crate::kernel::sync::Mutex<Vec<u32>> = crate::kernel::sync::Mutex::new("refused dimms", Vec::new());

fn add(slot: u32, event: &str) {
    select(slot);
    let (base, size) = ged::slot_range();
    // QEMU's proximity domain of a DIMM is its `node=`; a node the kernel cannot describe is
    // refused by `add_memory` (typed error, _OST failure).
    let pxm = ged::slot_proximity();
    let nid = match mutant::on(Mutant::DimmNodeIgnored) {
        true => 0,
        false => NodeId::try_from(pxm).unwrap_or(NodeId::MAX),
    };
    let t0 = arch::cpu::counter();
    let result = with_hotplug(|hp, ops| {
        let group = hp.register_static_group(nid, size >> layout::PAGE_SHIFT)?;
        match hp.add_memory(ops, nid, Some(group), base, size, AddFlags { memmap_on_memory: true }) {
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
                "dimm: slot={slot} base={base:#x} size={size:#x} node={nid} event={event} blocks={blocks:?} zones={names:?} ost={:#x} cycles={}",
                ost::SUCCESS,
                arch::cpu::counter() - t0
            );
            DIMMS.lock().insert(
                slot,
                Dimm {
                    base,
                    size,
                    node: nid,
                    group,
                    blocks,
                },
            );
        }
        Err(e) => {
            report_ost(ost::EVENT_INSERT, ost::FAILURE);
            REFUSED.lock().push(slot);
            println!(
                "dimm: slot={slot} base={base:#x} size={size:#x} node={pxm} event={event} refused: {} ost={:#x}",
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
            memmap::VMEMMAP.pfn_to_page(b >> layout::PAGE_SHIFT),
        ]
    });
    let probes: Vec<u64> = probes.collect();
    kernel_pt::with_kernel_pt(|pt, t| probes.iter().all(|&va| pt.walk(t, va).leaf.is_none()))
}

fn remove(slot: u32) {
    let dimm = DIMMS.lock().get(&slot).cloned();
    let Some(d) = dimm else {
        // A DIMM we never used (refused, or unknown): nothing maps it; let it go.
        select(slot);
        ctrl(SLOT_CONTROL::CLEAR_REMOVE::SET);
        ctrl(SLOT_CONTROL::EJECT::SET);
        report_ost(ost::EVENT_EJECT, ost::SUCCESS);
        REFUSED.lock().retain(|&s| s != slot);
        println!("dimm: slot={slot} event=remove ejected (was not in use)");
        return;
    };
    let t0 = arch::cpu::counter();
    // Mutant: the success answer given before the memory is offline and removed.
    let early_ost = mutant::on(Mutant::DimmOstBeforeRemove);
    if early_ost {
        select(slot);
        report_ost(ost::EVENT_EJECT, ost::SUCCESS);
    }
    let migrated0 = crate::kernel::mem::movable::migrated_pages();
    let r = with_hotplug(|hp, ops| {
        hp.offline_and_remove(ops, d.base, d.size)?;
        let _ = hp.unregister_group(d.group);
        Ok::<(), HotplugError>(())
    });
    select(slot);
    // Clear REMOVE first in every case (a stale REMOVE would make the next DIMM in this slot
    // look like it is being removed), then eject only what is unmapped and invalidated.
    ctrl(SLOT_CONTROL::CLEAR_REMOVE::SET);
    match r {
        Ok(()) if unmapped(d.base, d.size) => {
            DIMMS.lock().remove(&slot);
            ctrl(SLOT_CONTROL::EJECT::SET);
            // Success is answered only after the eject, as an ACPI OSPM evaluates `_OST` after
            // `_EJ0`: QEMU deletes the DIMM inside the EJECT write, so on QMP the answer follows
            // `DEVICE_DELETED` and cannot claim a removal that has not happened. The slot stays
            // selected; QEMU reports the answer for the (now empty) slot.
            if !early_ost {
                report_ost(ost::EVENT_EJECT, ost::SUCCESS);
            }
            println!(
                "dimm: slot={slot} event=remove ejected base={:#x} size={:#x} cycles={} migrated_pages={}",
                d.base,
                d.size,
                arch::cpu::counter() - t0,
                crate::kernel::mem::movable::migrated_pages() - migrated0
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

/// The `dimms` view.
fn print_dimms() {
    if !ged::present() {
        println!("dimms: none (no GED: boot in firmware mode for DIMM hotplug)");
        return;
    }
    let dimms = DIMMS.lock();
    println!("dimms: count={} refused_slots={:?}", dimms.len(), *REFUSED.lock());
    for (slot, d) in dimms.iter() {
        println!(
            "dimm: slot={} base={:#x} size={:#x} node={} blocks={:?} group={}",
            slot, d.base, d.size, d.node, d.blocks, d.group
        );
    }
}
