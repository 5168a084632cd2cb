//! Hot-add: deferred memmap allocated page by page, the whole held-back range, injected
//! allocation faults at every step, memmap from the page allocator.

use super::*;

/// A freshly added block (`memmap_init=deferred`: no struct page written, the self-hosted
/// memmap's answered from the block), onlined movable and allocated page by page down to its last page, so that every
/// deferred chunk is initialised on demand (or by an idle CPU meanwhile); the pages counted,
/// the invariants checked with all of them allocated, then everything given back.
fn deferred_block_allocates_every_page(_: &Platform) -> Result<(), String> {
    use mm::buddy::{DeferredState, MemmapInit, PageLookup};
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let (pfn0, nr) = (start >> PAGE_SHIFT, bs >> PAGE_SHIFT);
    let before = snapshot();
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let uninit = page_alloc::with_page_alloc(|a| a.uninit_pages(pfn0, nr));
    let last = page_alloc::with_page_alloc(|a| a.lookup(pfn0 + nr - 1));
    let first = page_alloc::with_page_alloc(|a| a.lookup(pfn0));
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
            uninit == nr,
            "after add: {uninit} of {nr} struct pages deferred (self-hosted memmap: {self_hosted})"
        );
        kassert!(
            first == PageLookup::Deferred(DeferredState::SelfHosted { zone: None }),
            "the first page of an offline block with memmap on memory: {first:?}"
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
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, size, MOM)).map_err(|e| format!("probe: {e}"))?;
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
                let r = hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, size, flags));
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
            let r = hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, size, flags));
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
    hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, ram, size, MOM)).map_err(|e| format!("add: {e}"))?;
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
            0,
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
