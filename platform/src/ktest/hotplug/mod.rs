//! In-guest hotplug tests: they need RAM held back with `mem=` (at least 4 memory blocks), and
//! fail (never skip) without it. `ktest.hotplug_cycles=N` sets the cycle count. This file holds
//! the shared helpers and the hotplug cycles with every CPU busy; `removal.rs` the TLB cases
//! (removed memory faults on every CPU), `offline.rs` the refusals and rollbacks of offline,
//! `add.rs` hot-add (deferred memmap, the whole held-back range, injected faults, memmap from
//! the page allocator), `inflight.rs` an offline meeting a deferred chunk in flight.

use crate::{
    boot::dtb::Platform,
    boot::layout::{self, G, PAGE_SHIFT},
    kernel::mem::hotplug::{self as hp, HELD_BACK},
    kernel::mem::movable,
    kernel::mem::{counters, kernel_pt, memmap, page_alloc, pages::Pages},
    kernel::smp,
    workload::stress,
};
use alloc::{format, string::String, vec::Vec};
use arch::exception::{probe_read, Probe};
use core::sync::atomic::Ordering::Relaxed;
use mm::hotplug::{AddFlags, HotplugError, OnlinePolicy, OnlineType};
use mm::page::ZoneId;

const MOM: AddFlags = AddFlags { memmap_on_memory: true };

/// First held-back address and how many whole blocks follow it.
fn held_back(min_blocks: u64) -> Result<(u64, u64), String> {
    let bs = G.section_size();
    let r = HELD_BACK
        .lock()
        .first()
        .copied()
        .ok_or_else(|| String::from("no RAM held back: boot with mem= (e.g. -m 3G, mem=1G)"))?;
    let start = r.base.next_multiple_of(bs);
    let blocks = (r.end() - start) / bs;
    kassert!(
        blocks >= min_blocks,
        "only {blocks} blocks held back, need {min_blocks}"
    );
    Ok((start, blocks))
}

fn snapshot() -> (u64, u64, u64, u64) {
    (
        page_alloc::free_page_count(),
        counters::PT_PAGES.load(Relaxed),
        counters::MEMMAP_BYTES.load(Relaxed),
        counters::MEMMAP_SELF_HOSTED_BYTES.load(Relaxed),
    )
}

fn read_word(va: u64) -> u64 {
    match probe_read(va) {
        Probe::Value(_) => 0,
        Probe::Fault { esr } => esr, // never 0: the exception class of an abort is not 0
    }
}

/// Stress pages each secondary CPU verified through the movable window (indexed by CPU).
static WINDOW_READS: [core::sync::atomic::AtomicU64; smp::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; smp::MAX_CPUS];
/// Window pages found corrupt or unmapped by the secondary CPUs.
static WINDOW_BAD: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Secondary-CPU workload: fill and verify a private 64 KiB buffer, and verify one stress
/// page per round through the movable window (while CPU 0 offlines blocks, so migration re-points the
/// window under it), until told to stop; returns iterations in the low 32 bits and corrupt
/// words in the high 32. `arg` = CPU index; its buffer waits in `WORKLOAD_BUFS[cpu]`.
fn checksum_workload(arg: u64) -> u64 {
    let cpu = arg as usize;
    let Some(mut buf) = WORKLOAD_BUFS[cpu].lock().take() else {
        return 0;
    };
    let words = buf.words().min((64 << 10) / 8);
    let (mut iters, mut bad) = (0u64, 0u64);
    let mut next = 0usize;
    while !WORKLOAD_STOP.load(Relaxed) {
        // One window page per round keeps the handles lock from dominating the run.
        let slots = stress::slots();
        if slots > 0 {
            next = (next + 1) % slots;
            match stress::verify_one(next) {
                Some(true) => {
                    WINDOW_READS[cpu].fetch_add(1, Relaxed);
                }
                Some(false) => {
                    WINDOW_BAD.fetch_add(1, Relaxed);
                }
                None => {}
            }
        }
        for i in 0..words {
            buf.store(i, i as u64 ^ iters);
        }
        for i in 0..words {
            if buf.load(i) != i as u64 ^ iters {
                bad += 1;
            }
        }
        iters += 1;
    }
    // Back to the test, which frees it after `collect`.
    *WORKLOAD_BUFS[cpu].lock() = Some(buf);
    iters | bad << 32
}

/// Each secondary CPU's workload buffer: the test puts it here, the workload takes it for its
/// run and puts it back when told to stop.
static WORKLOAD_BUFS: [crate::kernel::sync::Mutex<Option<Pages>>; smp::MAX_CPUS] =
    [const { crate::kernel::sync::Mutex::new("workload buffers", None) }; smp::MAX_CPUS];

static WORKLOAD_STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// probe → online (each policy in turn) → stress on the new memory → offline (migrating) →
/// remove, many times, with 1 to 4 blocks, while every other CPU runs a memory workload and
/// verifies stress pages through the movable window; every checksum verified, every offline
/// of a block holding stress data migrated it (`migrated_pages` grew by at least that much),
/// and free pages, page-table pages and memmap (altmap) counters back at their first values.
fn hotplug_cycles(_: &Platform) -> Result<(), String> {
    let (start, blocks) = held_back(4)?;
    let order = (64u64 << 10).div_ceil(layout::PAGE_SIZE).trailing_zeros();
    let mut workers = Vec::new();
    WORKLOAD_STOP.store(false, Relaxed);
    WINDOW_BAD.store(0, Relaxed);
    for r in &WINDOW_READS {
        r.store(0, Relaxed);
    }
    for (cpu, slot) in WORKLOAD_BUFS.iter().enumerate().skip(1) {
        if smp::online_mask() & (1 << cpu) != 0 {
            let buf = Pages::alloc(order).ok_or_else(|| String::from("no memory for a workload buffer"))?;
            *slot.lock() = Some(buf);
            kassert!(
                smp::post(cpu, checksum_workload, cpu as u64),
                "cpu {cpu} did not take the workload"
            );
            workers.push(cpu);
        }
    }
    let result = hotplug_cycles_inner(start, blocks);
    WORKLOAD_STOP.store(true, Relaxed);
    for cpu in workers {
        let r = smp::collect(cpu, 2000).ok_or_else(|| format!("cpu {cpu} workload did not stop"))?;
        let buf = WORKLOAD_BUFS[cpu].lock().take();
        buf.ok_or_else(|| format!("cpu {cpu} kept its buffer"))?
            .free()
            .map_err(|e| format!("{e:?}"))?;
        kassert!(
            r >> 32 == 0 && r & 0xffff_ffff > 0,
            "cpu {cpu} workload: {} iterations, {} corrupt words",
            r & 0xffff_ffff,
            r >> 32
        );
        kassert!(
            result.is_err() || WINDOW_READS[cpu].load(Relaxed) > 0,
            "cpu {cpu} verified no stress page through the movable window"
        );
    }
    let bad = WINDOW_BAD.load(Relaxed);
    kassert!(
        result.is_err() || bad == 0,
        "{bad} stress pages read wrong or faulted through the movable window on other CPUs"
    );
    result
}

/// Stress pages per cycle at most (2 MiB on 16K and 64K; fewer than 2 MiB on 4K, where every
/// migrated page costs a broadcast TLBI that each vCPU must take).
const STRESS_PAGES: u64 = 128;

/// Allocate (and return) free kernel blocks until the allocator hands out one inside
/// `[pfn, pfn + nr)` (given back at once), largest order first.
fn hold_normal_outside(pfn: u64, nr: u64) -> Vec<(u64, u32)> {
    let mut held = Vec::new();
    for order in (0..=G.max_order()).rev() {
        while let Some(pa) = page_alloc::alloc_pages(order) {
            if (pfn..pfn + nr).contains(&(pa >> PAGE_SHIFT)) {
                let _ = page_alloc::free_pages(pa, order);
                break;
            }
            held.push((pa, order));
        }
    }
    held
}

fn hotplug_cycles_inner(start: u64, blocks: u64) -> Result<(), String> {
    let bs = G.section_size();
    let cycles = hp::KTEST_CYCLES.load(Relaxed);
    let baseline = snapshot();
    let types = [
        (OnlineType::Kernel, OnlinePolicy::AutoMovable),
        (OnlineType::Movable, OnlinePolicy::AutoMovable),
        (OnlineType::Auto, OnlinePolicy::AutoMovable),
        (OnlineType::Auto, OnlinePolicy::ContigZones),
    ];
    for c in 0..cycles {
        let n = 1 + c % blocks.min(4);
        let (size, (t, policy)) = (n * bs, types[(c % 4) as usize]);
        let mut moved = 0;
        let ids = hp::with_hotplug(|h, ops| {
            h.policy = policy;
            h.add_memory(ops, 0, None, start, size, MOM)
        })
        .map_err(|e| format!("cycle {c}: probe: {e}"))?;
        for &id in &ids {
            hp::with_hotplug(|h, ops| h.online_block(ops, id, t))
                .map_err(|e| format!("cycle {c}: online {id}: {e}"))?;
        }
        // Hold every free ZONE_NORMAL page outside the new range (kernel allocations, not
        // written, so cheap) while stress allocates: its pages then land in the new blocks
        // whatever zone they were onlined to, so every cycle's offline has data to migrate.
        let held = hold_normal_outside(start >> PAGE_SHIFT, size >> PAGE_SHIFT);
        let r = stress::fill(STRESS_PAGES.min((2 << 20) / layout::PAGE_SIZE) * layout::PAGE_SIZE);
        for &(pa, order) in &held {
            page_alloc::free_pages(pa, order).map_err(|e| format!("cycle {c}: free held: {e:?}"))?;
        }
        let r = r.map_err(|e| format!("cycle {c}: stress: {e}"))?;
        kassert!(r.bad == 0, "cycle {c}: {} stress pages corrupt", r.bad);
        let in_range = stress::pages_in(start >> PAGE_SHIFT, size >> PAGE_SHIFT);
        kassert!(in_range > 0, "cycle {c}: no stress page landed in the new blocks");
        for &id in ids.iter().rev() {
            let (pfn, nr) = ((id * bs) >> PAGE_SHIFT, bs >> PAGE_SHIFT);
            let held = if arch::mutant::on(arch::mutant::Mutant::LockInversion) {
                // Planted: counted under the kernel page table's lock (kernel_pt → handles).
                kernel_pt::with_kernel_pt(|_, _| stress::pages_in(pfn, nr))
            } else {
                stress::pages_in(pfn, nr)
            };
            let m0 = movable::migrated_pages();
            hp::with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("cycle {c}: offline {id}: {e}"))?;
            let migrated = movable::migrated_pages() - m0;
            kassert!(
                migrated >= held && (held == 0 || migrated > 0),
                "cycle {c}: offline of block {id} holding {held} stress pages migrated {migrated}"
            );
            kassert!(
                stress::pages_in(pfn, nr) == 0,
                "cycle {c}: stress pages left in offline block {id}"
            );
            moved += migrated;
        }
        let v = stress::verify();
        kassert!(
            v.bad == 0 && v.verified == r.allocations,
            "cycle {c}: after offline {} of {} pages verify",
            v.verified,
            r.allocations
        );
        crate::println!("ktest: hotplug_cycles cycle={c} blocks={n} type={t:?} migrated_pages={moved}");
        hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| format!("cycle {c}: remove: {e}"))?;
        stress::free();
        let now = snapshot();
        kassert!(
            now == baseline,
            "cycle {c}: (free, pt pages, memmap, self-hosted memmap) {now:?} != baseline {baseline:?}"
        );
    }
    hp::with_hotplug(|h, _| h.policy = OnlinePolicy::AutoMovable);
    Ok(())
}
ktest!(hotplug_cycles);

mod add;
mod inflight;
mod offline;
mod removal;
mod torture;
