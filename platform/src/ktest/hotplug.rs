//! In-guest hotplug tests: they need RAM held back with `mem=` (at least 4 memory blocks), and
//! fail (never skip) without it. `ktest.hotplug_cycles=N` sets the cycle count.

use crate::{
    boot::dtb::Platform,
    boot::layout::{self, G, PAGE_SHIFT},
    kernel::mem::hotplug::{self as hp, HELD_BACK},
    kernel::mem::{counters, kernel_pt, memmap, page_alloc, pages::Pages},
    kernel::smp,
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
        let slots = hp::stress_slots();
        if slots > 0 {
            next = (next + 1) % slots;
            match hp::stress_verify_one(next) {
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
static WORKLOAD_BUFS: [spin::Mutex<Option<Pages>>; smp::MAX_CPUS] = [const { spin::Mutex::new(None) }; smp::MAX_CPUS];

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
            h.add_memory(ops, None, start, size, MOM)
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
        let r = hp::stress_fill(STRESS_PAGES.min((2 << 20) / layout::PAGE_SIZE) * layout::PAGE_SIZE);
        for &(pa, order) in &held {
            page_alloc::free_pages(pa, order).map_err(|e| format!("cycle {c}: free held: {e:?}"))?;
        }
        let r = r.map_err(|e| format!("cycle {c}: stress: {e}"))?;
        kassert!(r.bad == 0, "cycle {c}: {} stress pages corrupt", r.bad);
        let in_range = hp::stress_pages_in(start >> PAGE_SHIFT, size >> PAGE_SHIFT);
        kassert!(in_range > 0, "cycle {c}: no stress page landed in the new blocks");
        for &id in ids.iter().rev() {
            let (pfn, nr) = ((id * bs) >> PAGE_SHIFT, bs >> PAGE_SHIFT);
            let held = hp::stress_pages_in(pfn, nr);
            let m0 = hp::HANDLES.lock().migrated_pages;
            hp::with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("cycle {c}: offline {id}: {e}"))?;
            let migrated = hp::HANDLES.lock().migrated_pages - m0;
            kassert!(
                migrated >= held && (held == 0 || migrated > 0),
                "cycle {c}: offline of block {id} holding {held} stress pages migrated {migrated}"
            );
            kassert!(
                hp::stress_pages_in(pfn, nr) == 0,
                "cycle {c}: stress pages left in offline block {id}"
            );
            moved += migrated;
        }
        let v = hp::stress_verify();
        kassert!(
            v.bad == 0 && v.verified == r.allocations,
            "cycle {c}: after offline {} of {} pages verify",
            v.verified,
            r.allocations
        );
        crate::println!("ktest: hotplug_cycles cycle={c} blocks={n} type={t:?} migrated_pages={moved}");
        hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| format!("cycle {c}: remove: {e}"))?;
        hp::stress_free();
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

/// After remove, the linear map and memmap of the range fault on every CPU, each of which read
/// them before (so a missing broadcast invalidation would leave a stale, working translation).
fn removed_memory_faults_on_every_cpu(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let ids = hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    hp::with_hotplug(|h, ops| h.online_block(ops, ids[0], OnlineType::Movable)).map_err(|e| format!("online: {e}"))?;
    let lin = layout::phys_to_virt(start + bs / 2);
    let memmap = memmap::VMEMMAP.pfn_to_page(start >> PAGE_SHIFT);
    let cpus = smp::online_count() as usize;
    for va in [lin, memmap] {
        let seen = smp::run_on_all(read_word, va);
        kassert!(
            seen.len() == cpus && seen.iter().all(|&(_, r)| r == Some(0)),
            "before remove, reads of {va:#x}: {seen:?}"
        );
    }
    hp::with_hotplug(|h, ops| h.offline_block(ops, ids[0])).map_err(|e| format!("offline: {e}"))?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}"))?;
    for va in [lin, memmap] {
        let seen = smp::run_on_all(read_word, va);
        kassert!(seen.len() == cpus, "not every CPU answered: {seen:?}");
        for (cpu, r) in seen {
            let esr = r.ok_or_else(|| format!("cpu {cpu} did not answer"))?;
            kassert!(
                arch::exception::Esr::new(esr).is_kernel_translation_fault(),
                "cpu {cpu}: read of removed {va:#x} did not take a translation fault (esr {esr:#x})"
            );
        }
        kassert!(
            kernel_pt::with_kernel_pt(|pt, t| pt.walk(t, va)).leaf.is_none(),
            "{va:#x} still in the page tables"
        );
    }
    Ok(())
}
ktest!(removed_memory_faults_on_every_cpu);

/// Pages in the base-page window (fewer than a softmmu TLB holds).
const WINDOW_PAGES: u64 = 8;

/// A removal TCG cannot paper over: a small window of base pages only (no blocks, no contiguous
/// runs) at the top of the ioremap window, mapped onto buddy pages; every CPU reads every page,
/// the window's leaves are unmapped (clear → broadcast leaf TLBI), every CPU must then fault on
/// every page, and only then is the emptied table page freed (after a walk-cache TLBI). A
/// dropped or mis-addressed leaf TLBI leaves a stale, working translation on some CPU unless
/// something else flushes its whole TLB (TCG does for a TLBI near a large page it caches).
fn base_page_window_removal_faults_on_every_cpu(_: &Platform) -> Result<(), String> {
    use arch::descriptor::Attrs;
    use mm::pgtable::MapFlags;
    let page = layout::PAGE_SIZE;
    let size = WINDOW_PAGES * page;
    let va = layout::IOREMAP_START + layout::IOREMAP_SIZE - size;
    let order = WINDOW_PAGES.trailing_zeros();
    // Quiet CPUs: an idle CPU busy with background struct page initialisation evicts its own
    // TLB entries, and a stale window entry must stay for a broken TLBI to show.
    page_alloc::deferred_init_complete();
    // Empty TLBs to start from: TCG turns a page TLBI inside a vCPU's large-page region (one
    // span merging every block or contiguous leaf it cached since its last full flush) into a
    // full flush, which would hide a TLBI one page off (about half the runs, before this).
    arch::tlb::TlbInvalidate::flush_all(&mut crate::kernel::mem::teardown::KernelTlb);
    let mut block = Pages::alloc(order).ok_or_else(|| String::from("no memory for the window"))?;
    let pa = block.pa();
    for i in 0..WINDOW_PAGES {
        block.store((i * page / 8) as usize, 0x5a5a_0000 + i);
    }
    kernel_pt::with_kernel_pt(|pt, t| pt.map(t, va, pa, size, Attrs::NORMAL_RW, MapFlags::PAGES))
        .map_err(|e| format!("map: {e:?}"))?;
    let cpus = smp::online_count() as usize;
    for i in 0..WINDOW_PAGES {
        let seen = smp::run_on_all(read_word, va + i * page);
        kassert!(
            seen.len() == cpus && seen.iter().all(|&(_, r)| r == Some(0)),
            "before unmap, reads of page {i}: {seen:?}"
        );
    }
    // First the leaves only (floor/ceiling = the window, so no table page is freed and the
    // only TLBIs are the leaf invalidations under test: a walk-cache TLBI of the table page
    // would make TCG flush a vCPU's whole TLB and hide a dropped leaf TLBI). One page per
    // call, the even pages first, checked before the odd ones go: a TLBI one page off then
    // misses every page of the half (it hits a neighbour still mapped), not only the first,
    // so a stale translation survives even when a CPU's own accesses evict some entries.
    let mut stale = Vec::new();
    for half in [0, 1] {
        for i in (half..WINDOW_PAGES).step_by(2) {
            let p = va + i * page;
            let st = kernel_pt::with_kernel_pt(|pt, t| {
                pt.unmap_within(t, &mut crate::kernel::mem::teardown::KernelTlb, p, page, va, va + size)
            })
            .map_err(|e| format!("unmap of page {i}: {e:?}"))?;
            kassert!(
                st.leaves == 1 && st.cont_leaves == 0 && st.tables_freed == 0,
                "window was not base pages only: {st:?}"
            );
        }
        for i in (half..WINDOW_PAGES).step_by(2) {
            for (cpu, r) in smp::run_on_all(read_word, va + i * page) {
                let esr = r.ok_or_else(|| format!("cpu {cpu} did not answer"))?;
                if !arch::exception::Esr::new(esr).is_kernel_translation_fault() {
                    stale.push((cpu, i));
                }
            }
        }
    }
    // Reported before the pages are freed, so this QEMU-visible check speaks first (the
    // run-time checker would stop the kernel at the free).
    kassert!(
        stale.is_empty(),
        "(cpu, page) still translating the removed window: {stale:?}"
    );
    // Then the emptied page-table page: floor/ceiling = the ioremap window, in whose last
    // page-table page the window is alone (its span is 2 MiB / 32 MiB / 512 MiB, the devices
    // sit at the start), so it is freed after its walk-cache invalidation.
    let (lo, hi) = (layout::IOREMAP_START, layout::IOREMAP_START + layout::IOREMAP_SIZE);
    let st = kernel_pt::with_kernel_pt(|pt, t| {
        pt.unmap_within(t, &mut crate::kernel::mem::teardown::KernelTlb, va, size, lo, hi)
    })
    .map_err(|e| format!("unmap of the table: {e:?}"))?;
    kassert!(
        st.leaves == 0 && st.tables_freed >= 1,
        "no page-table page freed: {st:?}"
    );
    block.free().map_err(|e| format!("free: {e:?}"))?;
    Ok(())
}
ktest!(base_page_window_removal_faults_on_every_cpu);

/// A kernel (unmovable) page in a block makes offline fail with Busy; the block stays online
/// and usable; once the page is freed, offline succeeds.
fn offline_with_unmovable_page_is_busy(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let (s_pfn, e_pfn) = (start >> PAGE_SHIFT, (start + bs) >> PAGE_SHIFT);
    let ids = hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let id = ids[0];
    hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Kernel)).map_err(|e| format!("online: {e}"))?;
    // Kernel allocations until one lands in the new block.
    let mut others = Vec::new();
    let mut pinned = None;
    while let Some(pa) = page_alloc::alloc_pages(0) {
        if (s_pfn..e_pfn).contains(&(pa >> PAGE_SHIFT)) {
            pinned = Some(pa);
            break;
        }
        others.push(pa);
    }
    for pa in others {
        page_alloc::free_pages(pa, 0).map_err(|e| format!("{e:?}"))?;
    }
    let pinned = pinned.ok_or_else(|| String::from("no kernel page landed in the new block"))?;
    let before = snapshot();
    let r = hp::with_hotplug(|h, ops| h.offline_block(ops, id));
    kassert!(
        matches!(r, Err(HotplugError::Busy { block, pfn }) if block == id && pfn == pinned >> PAGE_SHIFT),
        "offline with a pinned page: {r:?}"
    );
    let state = hp::with_hotplug(|h, _| h.block(id).map(|b| b.state));
    kassert!(
        state == Some(mm::hotplug::BlockState::Online),
        "block state after veto: {state:?}"
    );
    kassert!(snapshot() == before, "the veto changed counters");
    // Still usable.
    let extra = page_alloc::alloc_pages(0).ok_or_else(|| String::from("allocation after veto failed"))?;
    page_alloc::free_pages(extra, 0).map_err(|e| format!("{e:?}"))?;
    page_alloc::free_pages(pinned, 0).map_err(|e| format!("{e:?}"))?;
    hp::with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("offline after free: {e}"))?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}"))?;
    Ok(())
}
ktest!(offline_with_unmovable_page_is_busy);

/// Bad requests get typed errors and change nothing; boot memory can never go.
fn bad_hotplug_requests_change_nothing(plat: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let before = snapshot();
    let boot = plat.memory[0].base;
    let limit = memmap::sparse().max_pa();
    let cases: [(u64, u64); 5] = [
        (start + layout::PAGE_SIZE, bs),
        (start, bs / 2),
        (start, 0),
        (boot, bs),
        (limit, bs),
    ];
    for (s, l) in cases {
        let r = hp::with_hotplug(|h, ops| h.add_memory(ops, None, s, l, MOM));
        kassert!(r.is_err(), "add {s:#x}+{l:#x} accepted");
    }
    let boot_block = boot / bs;
    kassert!(
        hp::with_hotplug(|h, ops| h.offline_block(ops, boot_block)) == Err(HotplugError::EarlyMemory(boot_block)),
        "boot block offlined"
    );
    kassert!(
        hp::with_hotplug(|h, ops| h.remove_memory(ops, boot, bs)).is_err(),
        "boot memory removed"
    );
    kassert!(
        hp::with_hotplug(|h, ops| h.online_block(ops, 1 << 40, OnlineType::Auto)).is_err(),
        "nonexistent block onlined"
    );
    kassert!(snapshot() == before, "a refused request changed counters");
    Ok(())
}
ktest!(bad_hotplug_requests_change_nothing);

/// An offline that runs out of memory to migrate into after moving some pages. All
/// memory is filled with stress data except room for a quarter of a block; the offline moves
/// that much, fails, and un-isolates a range full of parked, migrated-from pages next to parked
/// free blocks. The allocator must come back exactly consistent (`debug_vm`, on in this build,
/// checks it after the operation and stops the kernel if not), the data must verify, and the
/// offline must succeed once the data is freed.
fn failed_offline_rolls_back_cleanly(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let ids = hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let id = ids[0];
    hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable)).map_err(|e| format!("online: {e}"))?;
    // The block full of stress data (movable allocations prefer ZONE_MOVABLE), then ZONE_NORMAL
    // taken by kernel allocations (not written, so cheap) down to room for a quarter block.
    let movable_free = page_alloc::with_page_alloc(|a| a.counters(ZoneId::Movable).available());
    hp::stress_fill(movable_free << PAGE_SHIFT).map_err(|e| format!("stress: {e:?}"))?;
    let room = G.pages_per_section() / 4;
    let mut held = Vec::new();
    for order in (0..=G.max_order()).rev() {
        while page_alloc::free_page_count() >= room + (1 << order) {
            match page_alloc::alloc_pages(order) {
                Some(pa) => held.push((pa, order)),
                None => break,
            }
        }
    }
    let r = hp::with_hotplug(|h, ops| h.offline_block(ops, id));
    let census = hp::with_hotplug(|h, _| hp::check_invariants(h));
    let v = hp::stress_verify();
    for (pa, order) in held {
        page_alloc::free_pages(pa, order).map_err(|e| format!("free: {e:?}"))?;
    }
    hp::stress_free();
    // Retry and remove before judging, so a failed check leaves the held-back range free for
    // the next test (a broken migration then fails every test that migrates, not just this).
    let retry = hp::with_hotplug(|h, ops| h.offline_block(ops, id))
        .map_err(|e| format!("offline after stress free: {e}"))
        .and_then(|_| hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}")));
    let census = census.map_err(|e| format!("after the failed offline: {e}"))?;
    let moved = match r {
        Err(HotplugError::NoMigrationTarget { moved, left, .. }) if left > 0 => moved,
        other => return Err(format!("offline of a full block with room for {room} pages: {other:?}")),
    };
    kassert!(moved == room, "{moved} pages moved, room was {room}");
    kassert!(
        census.iter().all(|c| c.isolated == 0),
        "pages left isolated: {census:?}"
    );
    kassert!(
        v.bad == 0 && v.verified == v.allocations,
        "stress data after the rollback: {v:?}"
    );
    retry
}
ktest!(failed_offline_rolls_back_cleanly);

/// A freshly added block (`memmap_init=deferred`: no struct page written but the self-hosted
/// memmap's), onlined movable and allocated page by page down to its last page, so that every
/// deferred chunk is initialised on demand (or by an idle CPU meanwhile); the pages counted,
/// the invariants checked with all of them allocated, then everything given back.
fn deferred_block_allocates_every_page(_: &Platform) -> Result<(), String> {
    use mm::buddy::{DeferredState, MemmapInit, PageLookup};
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let (pfn0, nr) = (start >> PAGE_SHIFT, bs >> PAGE_SHIFT);
    let before = snapshot();
    let ids = hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let uninit = page_alloc::with_page_alloc(|a| a.uninit_pages(pfn0, nr));
    let last = page_alloc::with_page_alloc(|a| a.lookup(pfn0 + nr - 1));
    let r = hp::with_hotplug(|h, ops| h.online_block(ops, ids[0], OnlineType::Movable))
        .map_err(|e| format!("online: {e}"))
        .and_then(|_| allocate_every_movable_page(pfn0, nr));
    let back = hp::with_hotplug(|h, ops| h.offline_block(ops, ids[0]))
        .map_err(|e| format!("offline: {e}"))
        .and_then(|_| hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}")));
    let got = r?;
    back?;
    let self_hosted = G.memmap_pages_per_block();
    if page_alloc::memmap_init() == MemmapInit::Deferred {
        kassert!(
            uninit + self_hosted >= nr && uninit < nr,
            "after add: {uninit} of {nr} struct pages deferred (self-hosted memmap: {self_hosted})"
        );
        kassert!(
            last == PageLookup::Deferred(DeferredState::Offline),
            "the last page of an offline deferred block: {last:?}"
        );
    } else {
        kassert!(
            uninit == 0,
            "memmap_init=eager left {uninit} struct pages uninitialised"
        );
    }
    kassert!(
        got == nr - self_hosted,
        "{got} pages allocated from a {nr}-page block with {self_hosted} self-hosted memmap pages"
    );
    let after = snapshot();
    kassert!(after == before, "counters before {before:?}, after {after:?}");
    Ok(())
}
ktest!(deferred_block_allocates_every_page);

/// Allocate order-0 movable pages until one comes from outside `[pfn0, pfn0 + nr)` (the block
/// is the only movable memory, so then it is full), check every page was handed out once and
/// is initialised, check the allocator's invariants while all are held, free them; returns
/// how many came from the block.
fn allocate_every_movable_page(pfn0: u64, nr: u64) -> Result<u64, String> {
    use mm::buddy::{AllocKind, PageLookup};
    let mut pfns: Vec<u64> = Vec::new();
    pfns.try_reserve_exact(nr as usize)
        .map_err(|_| String::from("no heap for the PFN list"))?;
    let mut outside = None;
    while let Ok(pfn) = page_alloc::with_page_alloc_waiting(|a| a.alloc(0, AllocKind::Movable).ok_or(())) {
        if !(pfn0..pfn0 + nr).contains(&pfn) {
            outside = Some(pfn);
            break;
        }
        pfns.push(pfn);
    }
    let mut sorted = pfns.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let uninit = page_alloc::with_page_alloc(|a| {
        pfns.iter()
            .filter(|&&p| !matches!(a.lookup(p), PageLookup::Page(pg) if pg.refcount > 0 || pg.flags & mm::page::flags::HEAD != 0))
            .count()
    });
    let census = hp::with_hotplug(|h, _| hp::check_invariants(h));
    for p in outside.into_iter().chain(pfns.iter().copied()) {
        page_alloc::free_pages(p << PAGE_SHIFT, 0).map_err(|e| format!("free pfn {p:#x}: {e:?}"))?;
    }
    kassert!(
        sorted.len() == pfns.len(),
        "{} pages handed out twice",
        pfns.len() - sorted.len()
    );
    kassert!(
        uninit == 0,
        "{uninit} allocated pages do not read as allocated struct pages"
    );
    let census = census.map_err(|e| format!("with the block full: {e}"))?;
    let movable = census[ZoneId::Movable as usize];
    kassert!(
        movable.allocated >= pfns.len() as u64 && movable.deferred == 0,
        "movable zone with the block full: {movable:?}"
    );
    Ok(pfns.len() as u64)
}

/// The whole held-back range (whole blocks) in one hot-add with memmap on memory, onlined
/// movable block by block, 1 GiB (at most half of it) allocated from it in large blocks and
/// freed, offlined and removed; the invariants checked once at the end, the counters back
/// where they were. Guest cycles per step are printed. `cargo test` runs it on the default 2 GiB,
/// and alone (`ktest.only=`) on 256 GiB (4K) and 1 TiB (64K) behind a lazily allocated QEMU
/// backend (tests/tests/hotplug.rs), where deferred struct page init is what makes it cheap.
fn held_back_range_add_allocate_offline_remove(_: &Platform) -> Result<(), String> {
    use mm::buddy::AllocKind;
    let (start, blocks) = held_back(1)?;
    let size = blocks * G.section_size();
    let before = snapshot();
    let t = arch::cpu::counter();
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, size, MOM)).map_err(|e| format!("probe: {e}"))?;
    let add = arch::cpu::counter() - t;
    let t = arch::cpu::counter();
    let mut r = Ok(());
    let mut onlined = Vec::new();
    for &id in &ids {
        match hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable)) {
            Ok(_) => onlined.push(id),
            Err(e) => {
                r = Err(format!("online {id}: {e}"));
                break;
            }
        }
    }
    let online = arch::cpu::counter() - t;
    // 1 GiB (at most half the range) in the largest blocks a block with memmap on memory can
    // hold (its first pages are its memmap: on 64K a max-order block is a whole memory block),
    // each checked to come from the range.
    let order = G.max_order().min(G.pages_per_section().trailing_zeros() - 1);
    let want = ((1u64 << 30).min(size / 2) >> PAGE_SHIFT) >> order;
    let mut got = Vec::new();
    let t = arch::cpu::counter();
    while r.is_ok() && (got.len() as u64) < want {
        match page_alloc::with_page_alloc_waiting(|a| a.alloc(order, AllocKind::Movable).ok_or(())) {
            Ok(pfn) => got.push(pfn),
            Err(()) => r = Err(format!("allocation {} of {want} (order {order}) failed", got.len())),
        }
    }
    let allocate = arch::cpu::counter() - t;
    let outside = got
        .iter()
        .filter(|&&p| !(start..start + size).contains(&(p << PAGE_SHIFT)))
        .count();
    for &pfn in &got {
        page_alloc::free_pages(pfn << PAGE_SHIFT, order).map_err(|e| format!("free: {e:?}"))?;
    }
    let t = arch::cpu::counter();
    for &id in onlined.iter().rev() {
        if let Err(e) = hp::with_hotplug(|h, ops| h.offline_block(ops, id)) {
            r = r.and(Err(format!("offline {id}: {e}")));
        }
    }
    let offline = arch::cpu::counter() - t;
    let t = arch::cpu::counter();
    let removed = hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| format!("remove: {e}"));
    let remove = arch::cpu::counter() - t;
    let us = |c: u64| crate::drivers::timer::cycles_to_us(c);
    crate::println!(
        "ktest: held_back_range size={} blocks={} memmap_init={} add_us={} online_us={} alloc_us={} offline_us={} remove_us={}",
        layout::Size(size),
        ids.len(),
        page_alloc::memmap_init().name(),
        us(add),
        us(online),
        us(allocate),
        us(offline),
        us(remove)
    );
    r?;
    removed?;
    kassert!(
        outside == 0,
        "{outside} of {} blocks allocated outside the range",
        got.len()
    );
    hp::with_hotplug(|h, _| hp::check_invariants(h)).map_err(|e| format!("after the cycle: {e}"))?;
    let after = snapshot();
    kassert!(after == before, "counters before {before:?}, after {after:?}");
    Ok(())
}
ktest!(held_back_range_add_allocate_offline_remove);

/// The kernel page table's leaf at `va`.
fn leaf_at(va: u64) -> Option<mm::pgtable::Leaf> {
    kernel_pt::with_kernel_pt(|pt, t| pt.walk(t, va).leaf)
}

/// After a failed add of `[start, start + blocks)`: nothing of it is mapped (linear map, each
/// block's memmap), no block exists, and the counters are what they were.
fn check_add_left_nothing(what: &str, start: u64, blocks: u64, before: (u64, u64, u64, u64)) -> Result<(), String> {
    let bs = G.section_size();
    for b in 0..blocks {
        let pa = start + b * bs;
        for va in [
            layout::phys_to_virt(pa),
            layout::phys_to_virt(pa + bs - layout::PAGE_SIZE),
            memmap::VMEMMAP.pfn_to_page(pa >> PAGE_SHIFT),
        ] {
            kassert!(
                leaf_at(va).is_none(),
                "{what}: va {va:#x} still mapped after the failed add"
            );
        }
        kassert!(
            !hp::with_hotplug(|h, _| h.block(pa / bs).is_some()),
            "{what}: block {} exists after the failed add",
            pa / bs
        );
    }
    let after = snapshot();
    kassert!(
        after == before,
        "{what}: (free pages, pt pages, memmap bytes, self-hosted bytes) {before:?} before, {after:?} after the failed add"
    );
    Ok(())
}

/// Hot-add under injected allocation failures, in every granule: the N-th page-table page and
/// the N-th memmap backing page (memmap from the page allocator) for N = the first, the second,
/// the middle and the last of the requests a clean add makes, at the top of the mappable range (where no table exists yet, so the linear map
/// and the memmap need new ones; the memory itself is never touched there), and altmaps
/// holding only N pages (none, one, half, all but one of what a block's memmap needs) on
/// held-back RAM. Each failed add must leave nothing behind (nothing
/// mapped, page-table pages, free pages and memmap counters as before; `debug_vm` checks the
/// allocator and hotplug invariants after every operation); an altmap that runs dry must fail
/// the add, never take backing from the page allocator. Then the add succeeds and is removed.
fn add_rolls_back_under_injected_faults(_: &Platform) -> Result<(), String> {
    use crate::kernel::mem::fault::{self, Fault};
    let (ram, _) = held_back(2)?;
    let size = 2 * G.section_size();
    let top = memmap::sparse().max_pa() - size;
    let before = snapshot();
    let vm_pages = G.memmap_pages_per_block();
    for kind in Fault::ALL {
        let flags = AddFlags {
            memmap_on_memory: kind == Fault::Altmap,
        };
        let start = if kind == Fault::Altmap { ram } else { top };
        let total = match kind {
            Fault::Altmap => vm_pages,
            _ => {
                // A clean add, counting the requests.
                fault::arm(kind, u32::MAX);
                let r = hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, size, flags));
                let left = fault::left(kind).unwrap_or(0);
                fault::disarm();
                r.map_err(|e| format!("{}: counting add: {e}", kind.name()))?;
                hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size))
                    .map_err(|e| format!("{}: counting remove: {e}", kind.name()))?;
                u64::from(u32::MAX) - left
            }
        };
        kassert!(total > 0, "{}: a clean add made no request", kind.name());
        let mut ns: Vec<u32> = [0, 1, total / 2, total - 1, total].iter().map(|&n| n as u32).collect();
        ns.sort_unstable();
        ns.dedup();
        let mut failures = 0;
        let mut succeeded = false;
        for &n in &ns {
            fault::arm(kind, n);
            let r = hp::with_hotplug(|h, ops| h.add_memory(ops, None, start, size, flags));
            fault::disarm();
            let what = format!("{}:{n}", kind.name());
            match r {
                Err(e) => {
                    failures += 1;
                    if kind == Fault::Altmap {
                        kassert!(
                            matches!(e, HotplugError::MemmapOnMemory(_)),
                            "{what}: the add failed with {e}, not the altmap's exhaustion"
                        );
                    }
                    check_add_left_nothing(&what, start, 2, before)?;
                }
                Ok(_) => {
                    kassert!(
                        kind != Fault::Altmap || u64::from(n) >= total,
                        "{what}: the add succeeded with an altmap of {n} of the {vm_pages} pages a block's memmap needs (backing taken from elsewhere)"
                    );
                    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size))
                        .map_err(|e| format!("{what}: remove: {e}"))?;
                    kassert!(snapshot() == before, "{what}: counters after add + remove");
                    succeeded = true;
                    break;
                }
            }
        }
        kassert!(
            failures == ns.len() - 1,
            "{}: {failures} of the adds failed with N in {ns:?} of {total} requests",
            kind.name()
        );
        kassert!(succeeded, "{}: the add never succeeded", kind.name());
        crate::println!(
            "ktest: injected {} requests={total} n={ns:?} (each fails the add but the last)",
            kind.name()
        );
    }
    // And the add works after all that.
    hp::with_hotplug(|h, ops| h.add_memory(ops, None, ram, size, MOM)).map_err(|e| format!("add: {e}"))?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, ram, size)).map_err(|e| format!("remove: {e}"))?;
    kassert!(snapshot() == before, "counters after the final add + remove");
    Ok(())
}
ktest!(add_rolls_back_under_injected_faults);

/// Memory without memmap on memory, in every granule (16K/64K: the vmemmap base-page path,
/// with contiguous runs where they fit): a block added with its memmap from the page
/// allocator, the memmap mapped over exactly the block's slice (every page mapped, backed
/// outside the block; every contiguous run inside the slice; nothing mapped right after it),
/// onlined movable, every page allocated and freed, offlined, removed; the
/// counters back where they were.
fn memmap_from_the_page_allocator_round_trip(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(2)?;
    let bs = G.section_size();
    let size = bs;
    let before = snapshot();
    let ids = hp::with_hotplug(|h, ops| {
        h.add_memory(
            ops,
            None,
            start,
            size,
            AddFlags {
                memmap_on_memory: false,
            },
        )
    })
    .map_err(|e| format!("add: {e}"))?;
    let end = memmap::VMEMMAP.pfn_to_page((start + size) >> PAGE_SHIFT);
    kassert!(
        leaf_at(end).is_none(),
        "the vmemmap is mapped at {end:#x}, right after the added block's memmap (a run past the end)"
    );
    let page = layout::PAGE_SIZE;
    for b in 0..size / bs {
        let pa = start + b * bs;
        let s = memmap::VMEMMAP.pfn_to_page(pa >> PAGE_SHIFT);
        let e = s + G.memmap_per_section();
        let mut va = s;
        while va < e {
            let Some(l) = leaf_at(va) else {
                return Err(format!("memmap va {va:#x} of block {} not mapped", pa / bs));
            };
            kassert!(
                !(start..start + size).contains(&l.pa),
                "memmap va {va:#x} backed by pa {:#x} inside the added range",
                l.pa
            );
            let run = if l.contiguous {
                G.cont_size(l.level).unwrap_or(l.size)
            } else {
                l.size
            };
            let base = va & !(run - 1);
            kassert!(
                base >= s && base + run <= e,
                "memmap leaf at {va:#x} (level {}, {run:#x} bytes, contiguous={}) reaches outside the block's slice {s:#x}..{e:#x}",
                l.level,
                l.contiguous
            );
            va = (base + run).max(va + page);
        }
    }
    let mid = snapshot();
    kassert!(
        mid.2 == before.2 + G.memmap_per_section() && mid.3 == before.3,
        "memmap bytes {} -> {} (self-hosted {} -> {}): expected {} more, none self-hosted",
        before.2,
        mid.2,
        before.3,
        mid.3,
        G.memmap_per_section()
    );
    let mut r = Ok(());
    for &id in &ids {
        if let Err(e) = hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable)) {
            r = Err(format!("online {id}: {e}"));
        }
    }
    if r.is_ok() {
        let got = allocate_every_movable_page(start >> PAGE_SHIFT, size >> PAGE_SHIFT)?;
        kassert!(
            got == size >> PAGE_SHIFT,
            "{got} of the {} pages allocated (the memmap is elsewhere: every page is usable)",
            size >> PAGE_SHIFT
        );
    }
    for &id in ids.iter().rev() {
        if let Err(e) = hp::with_hotplug(|h, ops| h.offline_block(ops, id)) {
            r = r.and(Err(format!("offline {id}: {e}")));
        }
    }
    r?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, size)).map_err(|e| format!("remove: {e}"))?;
    check_add_left_nothing("after remove", start, size / bs, before)
}
ktest!(memmap_from_the_page_allocator_round_trip);
