//! Removed memory faults on every CPU: the broadcast TLB invalidation of teardown, seen from the
//! other CPUs.

use super::*;

/// After remove, the linear map and memmap of the range fault on every CPU, each of which read
/// them before (so a missing broadcast invalidation would leave a stale, working translation).
fn removed_memory_faults_on_every_cpu(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
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

/// Allocate one window page on the CPU this runs on (the map publishes late under
/// `PUBLISH_HOLD_US`) and free it; 1 if both worked.
fn slow_window_map(_: u64) -> u64 {
    match movable::OwnedPage::alloc() {
        Ok(p) => {
            p.free();
            1
        }
        Err(_) => 0,
    }
}

/// A removal's and a free's checks on this CPU while another CPU's map has made entries valid
/// and not yet published them (its vCPU descheduled between the two, as a loaded host does):
/// they wait for the publication instead of reporting a missing barrier. The checks are called
/// as `remove` and the allocators call them, right after the other CPU's map began: `remove`'s
/// own page-table work takes the lock that map holds, so only its check can meet the map in
/// flight (as the torture case's removals did). The map is held open 300 ms.
fn checks_wait_for_a_map_in_flight(_: &Platform) -> Result<(), String> {
    use crate::kernel::mem::teardown;
    if smp::online_count() < 2 {
        return Ok(()); // no other CPU to map
    }
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let page = Pages::alloc(0).ok_or_else(|| String::from("no page"))?;
    teardown::PUBLISH_HOLD_US.store(300_000, Relaxed);
    kassert!(smp::post(1, slow_window_map, 0), "cpu 1 did not take the map");
    let deadline = arch::cpu::counter() + 2 * arch::cpu::counter_freq();
    while teardown::map_in_flight() != Some(1) && arch::cpu::counter() < deadline {
        core::hint::spin_loop();
    }
    let met = teardown::map_in_flight() == Some(1);
    let memmap = memmap::VMEMMAP.pfn_to_page(start >> PAGE_SHIFT);
    teardown::check_removed(start, bs, layout::phys_to_virt(start), memmap, (bs >> PAGE_SHIFT) * 64);
    let after_removal = teardown::map_in_flight();
    teardown::check_free(page.pa(), layout::PAGE_SIZE);
    teardown::PUBLISH_HOLD_US.store(0, Relaxed);
    let mapped = smp::collect(1, 5000);
    page.free().map_err(|e| format!("free: {e:?}"))?;
    kassert!(met, "cpu 1's map was never in flight: the case tested nothing");
    kassert!(
        after_removal.is_none(),
        "the removal's check returned with cpu {after_removal:?}'s map in flight"
    );
    kassert!(mapped == Some(1), "cpu 1's window page: {mapped:?}");
    Ok(())
}
ktest!(checks_wait_for_a_map_in_flight);
