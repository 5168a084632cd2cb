//! Hotplug under fire: the `torture` workload on every other CPU (random allocations from every
//! zone, per-CPU patterns written through the movable window and the linear map, verified)
//! while this CPU adds, onlines, offlines (migrating the pages the workers are writing) and
//! removes held-back memory; `debug_vm` checks every invariant after each operation.

use super::*;
use crate::kernel::mem::movable::OwnedPage;
use crate::workload::torture::{self, TortureError};
use core::sync::atomic::{AtomicBool, AtomicU64};

/// Add+online / offline+remove cycles of the torture case with 4 CPUs or more (one with
/// fewer: every boot of the matrix runs it, the 4-CPU boots of each granule run it in full).
const CYCLES: u32 = 3;

fn smp_torture(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let size = G.section_size();
    if smp::online_count() < 2 {
        // Nobody to run the workers: the command says so and changes nothing.
        kassert!(
            torture::start() == Err(TortureError::NoSecondaryCpu) && !torture::running(),
            "torture started without a secondary CPU"
        );
        return Ok(());
    }
    let workers = torture::start().map_err(|e| format!("start: {e}"))?;
    let migrated0 = movable::migrated_pages();
    let mut cycles = Ok(());
    let cycles_wanted = if smp::online_count() >= 4 { CYCLES } else { 1 };
    for cycle in 0..cycles_wanted {
        cycles = torture_cycle(start, size);
        if let Err(e) = &cycles {
            cycles = Err(format!("cycle {cycle}: {e}"));
            break;
        }
    }
    let r = torture::stop().map_err(|e| format!("stop: {e}"))?;
    let migrated = movable::migrated_pages() - migrated0;
    crate::println!(
        "ktest: torture workers={} ops={} window_writes={} migrated_pages={migrated} migration_waits={} lost_writes={} kernel_bad={}",
        r.workers,
        r.ops,
        r.window_writes,
        r.migration_waits,
        r.lost_writes,
        r.kernel_bad
    );
    cycles?;
    kassert!(
        r.violations() == 0,
        "{} lost writes, {} bad kernel words",
        r.lost_writes,
        r.kernel_bad
    );
    kassert!(r.workers == workers, "{} of {workers} workers did anything", r.workers);
    kassert!(
        migrated > 0,
        "no worker page was ever migrated: the case tested nothing"
    );
    hp::with_hotplug(|h, _| hp::check_invariants(h)).map_err(|e| format!("after the torture: {e}"))?;
    Ok(())
}
ktest!(smp_torture);

/// Add and online `[start, start + size)` movable, wait until the workers hold pages in it (at
/// most a second), then offline and remove it under them.
fn torture_cycle(start: u64, size: u64) -> Result<(), String> {
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, size, MOM)).map_err(|e| format!("add: {e}"))?;
    for &id in &ids {
        hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable))
            .map_err(|e| format!("online {id}: {e}"))?;
    }
    let (pfn, nr) = (start >> PAGE_SHIFT, size >> PAGE_SHIFT);
    let deadline = arch::cpu::counter() + arch::cpu::counter_freq();
    while movable::pages_in(pfn, nr) < 8 && arch::cpu::counter() < deadline {
        core::hint::spin_loop();
    }
    hp::with_hotplug(|h, ops| h.offline_and_remove(ops, start, size)).map_err(|e| format!("offline+remove: {e}"))
}

/// The page the writer of [`writer_waits_for_migration`] writes, handed to it and back.
static WRITER_PAGE: crate::kernel::sync::Mutex<Option<OwnedPage>> =
    crate::kernel::sync::Mutex::new("writer page", None);
static WRITER_STOP: AtomicBool = AtomicBool::new(false);
/// Whole passes the writer finished.
static WRITER_PASSES: AtomicU64 = AtomicU64::new(0);

/// Write pass after pass over the page (every word = the pass number) until told to stop;
/// returns the number of the last pass.
fn writer(_: u64) -> u64 {
    let Some(page) = WRITER_PAGE.lock().take() else {
        return u64::MAX;
    };
    let mut pass = 0;
    while !WRITER_STOP.load(Relaxed) {
        pass += 1;
        for i in 0..page.words() {
            page.store(i, pass);
        }
        WRITER_PASSES.store(pass, Relaxed);
    }
    *WRITER_PAGE.lock() = Some(page);
    pass
}

/// A CPU writing a page without pause while offline migrates it: its access meets the
/// migration, waits in the fault path, and carries on at the new frame; this CPU then reads
/// the writer's last pass there, whole (mutant `writer-does-not-wait`: the fault is fatal;
/// `migrate-no-tlbi`: the writer goes on writing the old frame, and its last pass is lost).
fn writer_waits_for_migration(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let size = G.section_size();
    if smp::online_count() < 2 {
        return Ok(()); // nobody to write; `smp_torture` checks the one-CPU answer
    }
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, size, MOM)).map_err(|e| format!("add: {e}"))?;
    hp::with_hotplug(|h, ops| h.online_block(ops, ids[0], OnlineType::Movable)).map_err(|e| format!("online: {e}"))?;
    let page = OwnedPage::alloc().map_err(|e| format!("alloc: {e:?}"))?;
    let pfn0 = page.pfn().unwrap_or(0);
    let in_block = (start >> PAGE_SHIFT..(start + size) >> PAGE_SHIFT).contains(&pfn0);
    *WRITER_PAGE.lock() = Some(page);
    WRITER_STOP.store(false, Relaxed);
    WRITER_PASSES.store(0, Relaxed);
    kassert!(smp::post(1, writer, 0), "cpu 1 did not take the writer");
    let waits0 = movable::MIGRATION_WAITS.load(Relaxed);
    while WRITER_PASSES.load(Relaxed) < 4 {
        core::hint::spin_loop();
    }
    // Each migration held open until the writer waits on it (at most 200 ms): it meets it however
    // its vCPU is scheduled. The
    // block is only offlined here (removed after the check): removal's own TLB flushes would
    // heal a writer left on the old frame.
    movable::MIGRATION_HOLD_US.store(200_000, Relaxed);
    let offlined = hp::with_hotplug(|h, ops| h.offline_block(ops, ids[0]));
    movable::MIGRATION_HOLD_US.store(0, Relaxed);
    let passes = WRITER_PASSES.load(Relaxed);
    while WRITER_PASSES.load(Relaxed) < passes + 4 {
        core::hint::spin_loop();
    }
    WRITER_STOP.store(true, Relaxed);
    let pass = smp::collect(1, 5000).ok_or_else(|| String::from("the writer did not stop"))?;
    let waits = movable::MIGRATION_WAITS.load(Relaxed) - waits0;
    let page = WRITER_PAGE
        .lock()
        .take()
        .ok_or_else(|| String::from("the writer kept the page"))?;
    let pfn1 = page.pfn().unwrap_or(0);
    let lost = (0..page.words()).filter(|&i| page.load_frame(i) != pass).count();
    page.free();
    crate::println!("ktest: writer pfn={pfn0:#x}->{pfn1:#x} migration_waits={waits} lost={lost}");
    offlined.map_err(|e| format!("offline: {e}"))?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| format!("remove: {e}"))?;
    kassert!(in_block, "the page {pfn0:#x} was not in the movable block");
    kassert!(pfn1 != pfn0, "the page was not migrated");
    kassert!(lost == 0, "{lost} words of the writer's last pass lost");
    kassert!(waits > 0, "the writer never met the migration: the case tested nothing");
    Ok(())
}
ktest!(writer_waits_for_migration);
