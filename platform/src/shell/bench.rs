//! `bench`: hotplug latency and cost inside the guest, against the practical limit.
//!
//! For each size, `reps` rounds of add (probe) → online (movable) → offline → remove on memory
//! held back by `mem=`, timed with CNTVCT; the median is reported in cycles and microseconds.
//! The practical limit is the memmap each operation must write (64 bytes per page) at the
//! measured in-guest memset bandwidth: `ratio = time / (memmap bytes / bandwidth)`.
//! Also: bytes of pre-existing memory consumed per GiB added (memmap, page-table pages) with and
//! without memmap on memory, and TLBI instructions per removal.
//! Output: a table and one JSON object per line (`bench-json: {...}`).

use crate::{
    boot::layout::{self, G},
    drivers::timer,
    kernel::mem::hotplug::{with_hotplug, HELD_BACK},
    kernel::mem::{counters, page_alloc, pages::Pages},
    println,
};
use alloc::{string::String, vec::Vec};
use core::sync::atomic::Ordering::Relaxed;
use mm::hotplug::{AddFlags, OnlineType};

fn cycles_to_us(c: u64) -> f64 {
    c as f64 * 1e6 / arch::cpu::counter_freq() as f64
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// In-guest memset bandwidth (bytes/s) over `bytes` of freshly allocated memory, with the
/// widest stores there are ([`arch::memops::fill`]; `memcpy`'s word loop is 2-4x slower).
pub fn memset_bandwidth(bytes: u64) -> Option<f64> {
    let order = (bytes >> layout::PAGE_SHIFT)
        .next_power_of_two()
        .trailing_zeros()
        .min(G.max_order());
    let mut block = Pages::alloc(order)?;
    let chunk = block.size();
    let mut samples = Vec::new();
    for i in 0..5u8 {
        let t0 = arch::cpu::counter();
        block.fill_bytes(i);
        samples.push(arch::cpu::counter() - t0);
    }
    let _ = block.free();
    let c = median(&mut samples).max(1);
    Some(chunk as f64 * arch::cpu::counter_freq() as f64 / c as f64)
}

#[derive(Default, Clone, Copy)]
struct Round {
    add: u64,
    online: u64,
    /// One page from the new memory right after online (a deferred chunk initialised first
    /// when nothing is free there yet).
    first_alloc: u64,
    /// From the first allocation until no struct page of the new memory is left uninitialised
    /// (this CPU and the idle ones working on it; 0 with `memmap_init=eager`).
    complete: u64,
    offline: u64,
    remove: u64,
    tlbi_va: u64,
    tlbi_range: u64,
    tlbi_all: u64,
    pre_existing_bytes: u64,
}

fn round(start: u64, size: u64, mom: bool) -> Result<Round, String> {
    let mut r = Round::default();
    let free0 = page_alloc::free_page_count();
    let t = arch::cpu::counter();
    // The memory joins the node of its boot range (node 1 of `hotmem-bench`'s remote-node
    // machine, whose CPUs are all on node 0).
    let nid = crate::kernel::numa::boot_node_of(start);
    let ids = with_hotplug(|h, ops| h.add_memory(ops, nid, None, start, size, AddFlags { memmap_on_memory: mom }))
        .map_err(|e| alloc::format!("add: {e}"))?;
    r.add = arch::cpu::counter() - t;
    // Pre-existing memory the add consumed (memmap from the allocator, page-table pages).
    r.pre_existing_bytes = free0.saturating_sub(page_alloc::free_page_count()) << layout::PAGE_SHIFT;
    let t = arch::cpu::counter();
    for &id in &ids {
        with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable))
            .map_err(|e| alloc::format!("online: {e}"))?;
    }
    r.online = arch::cpu::counter() - t;
    let (first, nr) = (start >> layout::PAGE_SHIFT, size >> layout::PAGE_SHIFT);
    let t = arch::cpu::counter();
    let pfn = page_alloc::with_page_alloc(|a| a.alloc(0, mm::buddy::AllocKind::Movable));
    r.first_alloc = arch::cpu::counter() - t;
    if let Some(pfn) = pfn {
        page_alloc::free_pages(pfn << layout::PAGE_SHIFT, 0).map_err(|e| alloc::format!("free: {e:?}"))?;
    }
    let t = arch::cpu::counter();
    // Self-hosted memmap pages stay uninitialised for good: wait for the rest.
    while page_alloc::with_page_alloc(|a| a.uninit_pages(first, nr) - a.vmemmap_pages(first, nr)) > 0 {
        if !page_alloc::deferred_init_now() {
            core::hint::spin_loop(); // the last chunks are in other CPUs' hands
        }
    }
    r.complete = arch::cpu::counter() - t;
    let t = arch::cpu::counter();
    for &id in ids.iter().rev() {
        with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| alloc::format!("offline: {e}"))?;
    }
    r.offline = arch::cpu::counter() - t;
    let (v0, r0, a0) = (
        arch::tlb::stats::va(),
        arch::tlb::stats::range(),
        arch::tlb::stats::all(),
    );
    let t = arch::cpu::counter();
    with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| alloc::format!("remove: {e}"))?;
    r.remove = arch::cpu::counter() - t;
    r.tlbi_va = arch::tlb::stats::va() - v0;
    r.tlbi_range = arch::tlb::stats::range() - r0;
    r.tlbi_all = arch::tlb::stats::all() - a0;
    Ok(r)
}

/// The medians of one (size, memmap on memory) case: a table row and a `bench-json:` line.
/// `node`: the node of the memory added.
fn report(size: u64, mom: bool, rounds: &[Round], reps: usize, bw: f64, freq: u64, node: u8) {
    let pick = |f: fn(&Round) -> u64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    let (add, online, first_alloc, complete, offline, remove) = (
        pick(|r| r.add),
        pick(|r| r.online),
        pick(|r| r.first_alloc),
        pick(|r| r.complete),
        pick(|r| r.offline),
        pick(|r| r.remove),
    );
    let (tlbi_va, tlbi_range, tlbi_all, pre) = (
        pick(|r| r.tlbi_va),
        pick(|r| r.tlbi_range),
        pick(|r| r.tlbi_all),
        pick(|r| r.pre_existing_bytes),
    );
    // What add and online must write at least: every struct page (64 bytes each).
    let memmap = (size >> layout::PAGE_SHIFT) * 64;
    let limit_us = memmap as f64 / bw * 1e6;
    let pre_per_gib = pre as f64 * (1u64 << 30) as f64 / size as f64;
    println!(
        "bench: {:>9} {:>4} {:>11.0} {:>11.0} {:>11.0} {:>11.0} {:>9} {:>7.1} {:>7.1} {:>7} {:>10.0}",
        alloc::format!("{}", layout::Size(size)),
        if mom { "yes" } else { "no" },
        cycles_to_us(add),
        cycles_to_us(online),
        cycles_to_us(offline),
        cycles_to_us(remove),
        alloc::format!("{}", layout::Size(memmap)),
        cycles_to_us(add) / limit_us,
        cycles_to_us(online) / limit_us,
        tlbi_va + tlbi_range + tlbi_all,
        pre_per_gib
    );
    println!(
            "bench-json: {{\"granule\":\"{}\",\"va_bits\":{},\"size\":{},\"memmap_on_memory\":{},\"reps\":{},\"add_cycles\":{},\"online_cycles\":{},\"offline_cycles\":{},\"remove_cycles\":{},\"cntfrq\":{},\"memmap_bytes\":{},\"memset_bytes_per_s\":{:.0},\"add_ratio_to_limit\":{:.2},\"online_ratio_to_limit\":{:.2},\"tlbi_va\":{},\"tlbi_range_ops\":{},\"tlbi_all\":{},\"feat_tlbirange\":{},\"preexisting_bytes_per_gib\":{:.0},\"memmap_init\":\"{}\",\"first_alloc_cycles\":{},\"complete_cycles\":{},\"load\":\"{}\",\"node\":{},\"cpu_node\":{}}}",
            G.granule_name(),
            G.va_bits,
            size,
            mom,
            reps,
            add,
            online,
            offline,
            remove,
            freq,
            memmap,
            bw,
            cycles_to_us(add) / limit_us,
            cycles_to_us(online) / limit_us,
            tlbi_va,
            tlbi_range,
            tlbi_all,
            crate::kernel::mem::teardown::tlbi_range(),
            pre_per_gib,
            page_alloc::memmap_init().name(),
            first_alloc,
            complete,
            if crate::workload::torture::running() { "torture" } else { "idle" },
            node,
            crate::kernel::numa::this_node()
        );
}

/// Most rounds `bench reps=N` runs per size: each round adds, onlines, offlines and removes
/// the memory (twice: with and without memmap on memory), so a million would run for hours.
pub const MAX_REPS: usize = 1000;

/// Run the benchmark for `sizes` (bytes), `reps` rounds each.
pub fn run(sizes: &[u64], reps: usize) -> Result<(), String> {
    let held = HELD_BACK
        .lock()
        .first()
        .copied()
        .ok_or_else(|| String::from("no RAM held back (boot with mem=)"))?;
    let start = held.base.next_multiple_of(G.section_size());
    let bw = memset_bandwidth(8 << 20).ok_or_else(|| String::from("no memory for the memset measurement"))?;
    let freq = arch::cpu::counter_freq();
    println!(
        "bench: granule={} va_bits={} block={} cntfrq={} memset_bandwidth_mib_s={:.0} tlbi_range={} node={} cpu_node={} distance={}",
        G.granule_name(),
        G.va_bits,
        layout::Size(G.section_size()),
        freq,
        bw / (1 << 20) as f64,
        crate::kernel::mem::teardown::tlbi_range(),
        crate::kernel::numa::boot_node_of(start),
        crate::kernel::numa::this_node(),
        crate::kernel::numa::distance(crate::kernel::numa::this_node(), crate::kernel::numa::boot_node_of(start))
    );
    println!(
        "bench: {:>9} {:>4} {:>11} {:>11} {:>11} {:>11} {:>9} {:>7} {:>7} {:>7} {:>10}",
        "size",
        "mom",
        "add_us",
        "online_us",
        "offline_us",
        "remove_us",
        "memmap",
        "add/lim",
        "onl/lim",
        "tlbi",
        "preexist/G"
    );
    // Every (size, memmap on memory) case, each with its rounds. The repetitions go round the
    // cases (rep 1 of every case, then rep 2, ...) rather than case by case, so a slow spell of
    // the host lands on every size alike and the sizes compare side by side.
    let mut cases: Vec<(u64, bool, Vec<Round>)> = Vec::new();
    for &size in sizes {
        if start + size > held.end() {
            println!(
                "bench: size={} skipped: only {} held back",
                layout::Size(size),
                layout::Size(held.end() - start)
            );
            continue;
        }
        for mom in [true, false] {
            let mut rounds = Vec::new();
            rounds
                .try_reserve_exact(reps)
                .map_err(|_| String::from("no kernel heap for the results of every rep"))?;
            cases.push((size, mom, rounds));
        }
    }
    for _ in 0..reps {
        for (size, mom, rounds) in cases.iter_mut() {
            let first = rounds.is_empty();
            match round(start, *size, *mom) {
                Ok(r) => rounds.push(r),
                // Without memmap on memory the memmap comes from boot RAM, which a large size
                // can exceed: that case is dropped (nothing was changed), not the run.
                Err(e) if !*mom && first => {
                    println!("bench: size={} mom=no skipped: {e}", layout::Size(*size));
                    *size = 0;
                }
                Err(e) => return Err(e),
            }
        }
        cases.retain(|&(size, _, _)| size > 0);
    }
    for (size, mom, rounds) in cases {
        report(
            size,
            mom,
            &rounds,
            reps,
            bw,
            freq,
            crate::kernel::numa::boot_node_of(start),
        );
    }
    println!(
        "bench: done pt_pages={} free_pages={} boot_memmap_cycles={}",
        counters::PT_PAGES.load(Relaxed),
        page_alloc::free_page_count(),
        counters::BOOT_MEMMAP_CYCLES.load(Relaxed)
    );
    let _ = timer::HZ;
    Ok(())
}
