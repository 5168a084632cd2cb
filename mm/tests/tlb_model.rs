//! The page-table engine against the per-CPU TLB model and the teardown checker, in every
//! configuration: new mappings are published (`DSB ISHST; ISB`) before use; a removal of a
//! window of base pages (no blocks, no contiguous runs) leaves no CPU able to translate it,
//! with and without FEAT_TLBIRANGE; table pages are freed only once no walk cache holds them;
//! migration through a movable window leaves no CPU translating the old frame.

use std::cell::RefCell;
use std::rc::Rc;

use mm::geometry::*;
use mm::pgtable::testing::{Checker, HostTables, ModelTlb};
use mm::pgtable::*;
use mm::teardown::TeardownChecker;

const NCPUS: usize = 4;

struct Rig<C: Config> {
    pt: PageTable<C>,
    tables: HostTables,
    tlb: ModelTlb,
    checker: Checker,
}

impl<C: Config> Rig<C> {
    fn new(range: bool) -> Self {
        let g = C::GEOM;
        let checker: Checker = Rc::new(RefCell::new(TeardownChecker::with_config(g.page_shift, (0, 0))));
        let mut tables = HostTables::new(g.page_size());
        tables.checker = Some(checker.clone());
        let pt = PageTable::<C>::new(&mut tables).unwrap();
        let mut tlb = ModelTlb::new(g.page_shift, range, NCPUS);
        tlb.checker = Some(checker.clone());
        Rig {
            pt,
            tables,
            tlb,
            checker,
        }
    }

    fn touch_all(&mut self, va: u64, size: u64) {
        let page = C::GEOM.page_size();
        for cpu in 0..NCPUS {
            for v in (va..va + size).step_by(page as usize) {
                assert!(
                    self.tlb.touch(cpu, &self.pt, &self.tables, v).is_some(),
                    "{v:#x} faults"
                );
            }
        }
    }

    fn assert_clean(&self, va: u64, size: u64) {
        if let Some((cpu, e)) = self.tlb.stale_leaf(va, size) {
            panic!(
                "TLB model: cpu {cpu} can still translate removed va {:#x} (range {va:#x}+{size:#x}) after {:x?}",
                e.va, self.tlb.executed
            );
        }
        for (cpu, c) in self.tlb.cpus.iter().enumerate() {
            if let Some(e) = c
                .entries
                .iter()
                .find(|e| e.table && !self.tables.live_set().contains(&e.pa))
            {
                panic!("TLB model: cpu {cpu} can still walk freed table page {:#x}", e.pa);
            }
        }
        if let Some(v) = self.checker.borrow().violations.first() {
            panic!("teardown order violated: {v}");
        }
    }
}

/// A window in the kernel half, away from the top.
fn window<C: Config>() -> u64 {
    let g = C::GEOM;
    g.ttbr1_base() + 7 * g.pmd_size() + 3 * g.page_size()
}

mm::matrix_tests!(
    map_publishes_new_entries_before_use,
    base_page_window_removal_with_range_tlbi,
    base_page_window_removal_without_range_tlbi,
    freed_tables_leave_no_walk_cache_entry,
    window_migration_moves_every_translation,
    window_batch_migration_moves_every_translation,
);

/// Every successful `map` issues exactly one `DSB ISHST; ISB` after its last descriptor write;
/// a failed one needs none (nothing became valid).
fn map_publishes_new_entries_before_use<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new(true);
    let va = window::<C>();
    let before = arch::barrier::host::published();
    r.pt.map(
        &mut r.tables,
        va,
        1 << 40,
        5 * g.page_size(),
        Attrs::NORMAL_RW,
        MapFlags::PAGES,
    )
    .unwrap();
    assert_eq!(
        arch::barrier::host::published(),
        before + 1,
        "map made entries valid without DSB ISHST; ISB"
    );
    assert!(r.tables.all_published());
    // Every CPU can use the new entries at once (the model refuses unpublished ones).
    r.touch_all(va, 5 * g.page_size());
    // A refused map (reshape) publishes nothing and changes nothing.
    let n = arch::barrier::host::published();
    assert!(r
        .pt
        .map(
            &mut r.tables,
            va,
            2 << 40,
            g.page_size(),
            Attrs::NORMAL_RW,
            MapFlags::PAGES
        )
        .is_err());
    assert_eq!(arch::barrier::host::published(), n);
    assert!(r.checker.borrow().made_valid >= 5);
}

/// The host analogue of the in-guest base-page window test: fewer pages than a softmmu TLB
/// holds, base pages only, every CPU touches every page, then the window is removed.
fn base_page_window<C: Config>(range: bool) {
    let g = C::GEOM;
    for pages in [1u64, 2, 3, 17, 33, 100] {
        let mut r = Rig::<C>::new(range);
        let va = window::<C>();
        let size = pages * g.page_size();
        r.pt.map(&mut r.tables, va, 1 << 40, size, Attrs::NORMAL_RW, MapFlags::PAGES)
            .unwrap();
        // Neighbours on both sides, which must stay usable.
        r.pt.map(
            &mut r.tables,
            va - g.page_size(),
            (1 << 40) - g.page_size(),
            g.page_size(),
            Attrs::NORMAL_RW,
            MapFlags::PAGES,
        )
        .unwrap();
        r.pt.map(
            &mut r.tables,
            va + size,
            (1 << 40) + size,
            g.page_size(),
            Attrs::NORMAL_RW,
            MapFlags::PAGES,
        )
        .unwrap();
        r.touch_all(va - g.page_size(), size + 2 * g.page_size());
        r.pt.unmap(&mut r.tables, &mut r.tlb, va, size).unwrap();
        r.assert_clean(va, size);
        assert_eq!(r.checker.borrow().pending_count(), 0, "{pages} pages: pending left");
        for cpu in 0..NCPUS {
            assert!(
                r.tlb.touch(cpu, &r.pt, &r.tables, va).is_none(),
                "removed page still mapped"
            );
        }
    }
}

fn base_page_window_removal_with_range_tlbi<C: Config>() {
    base_page_window::<C>(true);
}

fn base_page_window_removal_without_range_tlbi<C: Config>() {
    base_page_window::<C>(false);
}

/// Unmapping a whole PMD's worth of pages frees its pte table: every CPU walked through it, so
/// the free must wait for a walk-cache invalidation (the checker and the model both see it).
fn freed_tables_leave_no_walk_cache_entry<C: Config>() {
    let g = C::GEOM;
    for range in [true, false] {
        let mut r = Rig::<C>::new(range);
        let va = g.ttbr1_base() + 5 * g.pmd_size();
        let pages = 40.min(g.pmd_size() / g.page_size());
        // Base pages over one pte table only (the rest of the PMD is empty), so the unmap
        // below empties the table and frees it.
        r.pt.map(
            &mut r.tables,
            va,
            1 << 40,
            pages * g.page_size(),
            Attrs::NORMAL_RW,
            MapFlags::PAGES,
        )
        .unwrap();
        r.touch_all(va, pages * g.page_size());
        let live = r.tables.live();
        let s =
            r.pt.unmap_within(&mut r.tables, &mut r.tlb, va, pages * g.page_size(), g.ttbr1_base(), 0)
                .unwrap();
        assert!(s.tables_freed >= 1 && r.tables.live() < live, "no table freed");
        r.assert_clean(va, pages * g.page_size());
    }
}

/// Migration of blocks reached through a movable window (as the kernel's `stress` pages are):
/// every CPU has the old translation cached; after `move_window_block` none may still reach
/// the old frame, the old frame is freeable (no live or pending entry maps it), and every CPU
/// reaches the new frame at the same VA. Orders 0..=2, with and without FEAT_TLBIRANGE.
fn window_migration_moves_every_translation<C: Config>() {
    let g = C::GEOM;
    for range in [true, false] {
        let mut r = Rig::<C>::new(range);
        let base = window::<C>();
        let (old, new) = (1u64 << 40, 2u64 << 40);
        for order in 0..=2u32 {
            let size = g.page_size() << order;
            let va = base + (order as u64) * 8 * g.page_size();
            let src = old + (va - base);
            let dst = new + (va - base);
            r.pt.map(&mut r.tables, va, src, size, Attrs::NORMAL_RW, MapFlags::PAGES)
                .unwrap();
            r.touch_all(va, size);
            let mut copied = false;
            mm::migrate::move_window_block(&mut r.pt, &mut r.tables, &mut r.tlb, va, size, dst, || copied = true)
                .unwrap();
            assert!(copied);
            for cpu in 0..NCPUS {
                for v in (va..va + size).step_by(g.page_size() as usize) {
                    if let Some(pa) = r.tlb.translate(cpu, v) {
                        panic!("TLB model: cpu {cpu} still translates {v:#x} to the old frame {pa:#x}");
                    }
                    assert_eq!(
                        r.tlb.touch(cpu, &r.pt, &r.tables, v),
                        Some(dst + (v - va)),
                        "cpu {cpu}: {v:#x} does not reach the new frame"
                    );
                }
            }
            // Only now may the old frame go back to the allocator.
            if let Err(v) = r.checker.borrow_mut().freeing(src, size) {
                panic!("migrated-from frame not freeable: {v}");
            }
        }
        assert_eq!(r.checker.borrow().pending_count(), 0);
    }
}

/// Migration of a batch (`move_window_batch`): every block's PTE cleared, one invalidation
/// for the whole batch, copy, every new frame mapped. Batches of 1, 2 and a full batch of
/// [`mm::migrate::MIGRATE_BATCH_PAGES`] blocks (runs of adjacent window pages with gaps, so
/// some ranges merge and some do not), with and without FEAT_TLBIRANGE, below the full-flush
/// threshold and past it: afterwards no CPU translates an old frame, every old frame is
/// freeable, every CPU reaches the new frames, and the invalidation is the batch plan.
fn window_batch_migration_moves_every_translation<C: Config>() {
    use arch::tlb::{kernel_batch_ops, Tlbi, MAX_TLBI_OPS};
    use mm::migrate::{move_window_batch, Handle, Move, MIGRATE_BATCH_PAGES};
    let g = C::GEOM;
    let base = window::<C>();
    // Runs of three adjacent pages, then a one-page gap; or every page adjacent from a
    // table-aligned base (with 4K a full batch then covers a whole last-level table's span).
    let gaps = |h: Handle| base + (h.0 as u64 + h.0 as u64 / 3) * g.page_size();
    let aligned = g.ttbr1_base() + 8 * g.pmd_size();
    let dense = |h: Handle| aligned + h.0 as u64 * g.page_size();
    let (old, new) = (1u64 << 40, 2u64 << 40);
    for (range, dense_layout) in [(true, false), (false, false), (true, true), (false, true)] {
        let va = |h: Handle| if dense_layout { dense(h) } else { gaps(h) };
        for (n, full_above) in [
            (1, MAX_TLBI_OPS),
            (2, MAX_TLBI_OPS),
            (MIGRATE_BATCH_PAGES, u64::MAX),
            (MIGRATE_BATCH_PAGES, MAX_TLBI_OPS),
            (MIGRATE_BATCH_PAGES, 0),
        ] {
            let mut r = Rig::<C>::new(range);
            let moves: Vec<Move> = (0..n as u32)
                .map(|i| Move {
                    handle: Handle(i),
                    src: (old >> g.page_shift) + i as u64,
                    dst: (new >> g.page_shift) + i as u64,
                    order: 0,
                })
                .collect();
            for m in &moves {
                let v = va(m.handle);
                r.pt.map(
                    &mut r.tables,
                    v,
                    m.src << g.page_shift,
                    g.page_size(),
                    Attrs::NORMAL_RW,
                    MapFlags::PAGES,
                )
                .unwrap();
                r.touch_all(v, g.page_size());
            }
            let (before, live) = (r.tlb.executed.len(), r.tables.live());
            let mut copied = false;
            move_window_batch(&mut r.pt, &mut r.tables, &mut r.tlb, &moves, va, full_above, || {
                copied = true
            })
            .unwrap();
            assert!(copied);
            let case = format!("batch of {n}, range={range}, full above {full_above}, dense={dense_layout}");
            assert_eq!(r.tables.live(), live, "a window table was freed or allocated ({case})");
            for m in &moves {
                let v = va(m.handle);
                for cpu in 0..NCPUS {
                    if let Some(pa) = r.tlb.translate(cpu, v) {
                        panic!("TLB model: cpu {cpu} still translates {v:#x} to the old frame {pa:#x} ({case})");
                    }
                    assert_eq!(
                        r.tlb.touch(cpu, &r.pt, &r.tables, v),
                        Some(m.dst << g.page_shift),
                        "cpu {cpu}: {v:#x} does not reach the new frame ({case})"
                    );
                }
            }
            // The invalidation is the batch plan, nothing per block on top.
            let mut ranges = Vec::new();
            for m in &moves {
                let v = va(m.handle);
                match ranges.last_mut() {
                    Some((_, e)) if *e == v => *e = v + g.page_size(),
                    _ => ranges.push((v, v + g.page_size())),
                }
            }
            let mut plan = Vec::new();
            kernel_batch_ops(
                ranges.iter().copied(),
                g.page_shift,
                g.page_shift,
                range,
                full_above,
                |o| plan.push(o),
            );
            assert_eq!(r.tlb.executed[before..], plan[..], "{case}");
            if full_above == 0 {
                assert_eq!(plan, [Tlbi::Vmalle1is], "{case}");
            }
            for m in &moves {
                if let Err(v) = r.checker.borrow_mut().freeing(m.src << g.page_shift, g.page_size()) {
                    panic!("migrated-from frame not freeable ({case}): {v}");
                }
            }
            assert_eq!(r.checker.borrow().pending_count(), 0, "{case}");
        }
    }
}
