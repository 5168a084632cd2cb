//! `bench migrate`: migration of used memory at copy speed, against the practical limit.
//!
//! For each size: hot-add that much held-back memory rounded up to memory blocks (range A),
//! online it movable and fill `size` of it with movable window pages (each written, as
//! `stress` does), hot-add as much again (B, movable: the migration target), then time the offline of A, which migrates every page
//! to B (the path DIMM unplug and virtio-mem shrink take too). Reported: MiB/s, µs per page,
//! and `mig/lim` = time / (bytes moved / in-guest memset bandwidth), the copy being the one
//! cost migration cannot avoid. Each size runs twice: `cold`, the target memory never touched
//! (the host backs it on first write, a cost of QEMU's), then `warm`, the same memory again. Each size runs with the migration batch given (`batch=`, pages;
//! 1 = block by block, one invalidation each) and the full-flush threshold (`full=`, TLBI
//! instructions above which a batch is one `TLBI VMALLE1IS`). Output: a row and a
//! `bench-json:` line per size.

use crate::{
    boot::layout::{self, G, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::hotplug::{with_hotplug, HELD_BACK},
    kernel::mem::movable::{self, HANDLES},
    println,
};
use alloc::{format, string::String};
use core::sync::atomic::Ordering::Relaxed;
use mm::hotplug::{AddFlags, OnlineType};

/// What one migration run measured.
struct Migrated {
    pages: u64,
    cycles: u64,
    tlbi_va: u64,
    tlbi_range: u64,
    tlbi_all: u64,
}

/// The knobs of one run: pages per batch and the full-flush threshold.
#[derive(Clone, Copy)]
pub struct Knobs {
    pub batch: u64,
    pub full_above: u64,
}

/// Run `bench migrate` for every size (each a multiple of the memory block size).
pub fn run(sizes: &[u64], knobs: Knobs) -> Result<(), String> {
    let held = HELD_BACK
        .lock()
        .first()
        .copied()
        .ok_or_else(|| String::from("no RAM held back (boot with mem=)"))?;
    let start = held.base.next_multiple_of(G.section_size());
    let bw =
        super::bench::memset_bandwidth(8 << 20).ok_or_else(|| String::from("no memory for the memset measurement"))?;
    println!(
        "bench-migrate: granule={} batch={} full_above={} memset_bandwidth_mib_s={:.0} tlbi_range={}",
        G.granule_name(),
        knobs.batch,
        knobs.full_above,
        bw / (1 << 20) as f64,
        crate::kernel::mem::teardown::tlbi_range()
    );
    println!(
        "bench-migrate: {:>9} {:>4} {:>8} {:>10} {:>9} {:>8} {:>8} {:>7} {:>6} {:>6}",
        "size", "run", "pages", "offline_us", "MiB/s", "us/page", "mig/lim", "tlbi_va", "range", "all"
    );
    let saved = (
        HANDLES.lock().batch_pages,
        movable::BATCH_FULL_FLUSH_ABOVE.load(Relaxed),
    );
    HANDLES.lock().batch_pages = knobs.batch;
    movable::BATCH_FULL_FLUSH_ABOVE.store(knobs.full_above, Relaxed);
    let mut result = Ok(());
    for &size in sizes {
        let span = size.next_multiple_of(G.section_size());
        if start + 2 * span > held.end() {
            println!(
                "bench-migrate: size={} skipped: needs {} held back, {} are",
                layout::Size(size),
                layout::Size(2 * span),
                layout::Size(held.end() - start)
            );
            continue;
        }
        for run in ["cold", "warm"] {
            match migrate_round(start, span, size) {
                Ok(m) => report(size, run, &m, bw, knobs),
                Err(e) => result = Err(e),
            }
        }
        if result.is_err() {
            break;
        }
    }
    HANDLES.lock().batch_pages = saved.0;
    movable::BATCH_FULL_FLUSH_ABOVE.store(saved.1, Relaxed);
    result
}

/// Add A (`span` bytes) and fill `used` bytes of it, add B, time A's offline, then free
/// everything and remove both.
fn migrate_round(start: u64, span: u64, used: u64) -> Result<Migrated, String> {
    let size = span;
    let add_movable = |base: u64| {
        let ids = with_hotplug(|h, ops| {
            h.add_memory(
                ops,
                crate::kernel::numa::boot_node_of(base),
                None,
                base,
                size,
                AddFlags {
                    memmap_on_memory: false,
                },
            )
        })
        .map_err(|e| format!("add: {e}"))?;
        for &id in &ids {
            with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable)).map_err(|e| format!("online: {e}"))?;
        }
        Ok::<_, String>(ids)
    };
    let a = add_movable(start)?;
    let filled = fill(start, size, used >> PAGE_SHIFT);
    let b = add_movable(start + size)?;
    let (v0, r0, a0) = (
        arch::tlb::stats::va(),
        arch::tlb::stats::range(),
        arch::tlb::stats::all(),
    );
    let m0 = movable::migrated_pages();
    let t = arch::cpu::counter();
    for &id in &a {
        with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("offline: {e}"))?;
    }
    let m = Migrated {
        cycles: arch::cpu::counter() - t,
        pages: movable::migrated_pages() - m0,
        tlbi_va: arch::tlb::stats::va() - v0,
        tlbi_range: arch::tlb::stats::range() - r0,
        tlbi_all: arch::tlb::stats::all() - a0,
    };
    if m.pages < filled {
        println!("bench-migrate: warning: {filled} pages filled, {} migrated", m.pages);
    }
    movable::free_all();
    with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| format!("remove: {e}"))?;
    for &id in &b {
        with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("offline: {e}"))?;
    }
    with_hotplug(|h, ops| h.remove_memory(ops, start + size, size)).map_err(|e| format!("remove: {e}"))?;
    Ok(m)
}

/// Put `pages` written movable window pages in `[start, start + size)`: allocate until that
/// many are in it, or one lands outside it (the range, the only movable memory, is full).
/// Returns the pages in it.
fn fill(start: u64, size: u64, pages: u64) -> u64 {
    let (first, end) = (start >> PAGE_SHIFT, (start + size) >> PAGE_SHIFT);
    let mut n = 0;
    while n < pages {
        let Ok(h) = movable::alloc_page(|h, d| d.fill(h.0 as u64)) else {
            break;
        };
        match HANDLES.lock().get(h) {
            Some((pfn, _)) if (first..end).contains(&pfn) => n += 1,
            _ => break,
        }
    }
    n
}

fn report(size: u64, run: &str, m: &Migrated, bw: f64, knobs: Knobs) {
    let us = m.cycles as f64 * 1e6 / arch::cpu::counter_freq() as f64;
    let bytes = m.pages * PAGE_SIZE;
    let mib_s = bytes as f64 / (1 << 20) as f64 / (us / 1e6).max(1e-9);
    let us_page = us / m.pages.max(1) as f64;
    let lim_us = bytes as f64 / bw * 1e6;
    let ratio = us / lim_us.max(1e-9);
    println!(
        "bench-migrate: {:>9} {run:>4} {:>8} {:>10.0} {:>9.1} {:>8.2} {:>8.1} {:>7} {:>6} {:>6}",
        alloc::format!("{}", layout::Size(size)),
        m.pages,
        us,
        mib_s,
        us_page,
        ratio,
        m.tlbi_va,
        m.tlbi_range,
        m.tlbi_all
    );
    println!(
        "bench-json: {{\"kind\":\"migrate\",\"granule\":\"{}\",\"size\":{size},\"run\":\"{run}\",\"pages\":{},\"batch\":{},\"full_above\":{},\"offline_us\":{us:.0},\"mib_s\":{mib_s:.1},\"us_per_page\":{us_page:.3},\"mig_lim\":{ratio:.2},\"memset_bytes_per_s\":{bw:.0},\"tlbi_va\":{},\"tlbi_range\":{},\"tlbi_all\":{}}}",
        G.granule_name(),
        m.pages,
        knobs.batch,
        knobs.full_above,
        m.tlbi_va,
        m.tlbi_range,
        m.tlbi_all
    );
}
