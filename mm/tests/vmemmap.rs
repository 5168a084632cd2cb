//! Host tests of `vmemmap_populate` / `vmemmap_free` for every configuration: the section and
//! base-page paths, altmap (memmap on memory) accounting and exhaustion rollback, the two Linux
//! regressions (sub-section populate, table-PMD reuse), and the teardown order (clear →
//! invalidate → free) checked by `TeardownChecker`, including a deliberately wrong order.

use std::cell::RefCell;
use std::rc::Rc;

use arch::tlb::{Mapping, TlbInvalidate};
use mm::altmap::Altmap;
use mm::geometry::*;
use mm::pgtable::testing::{Checker, HostTables, ModelTlb};
use mm::pgtable::*;
use mm::teardown::{TeardownChecker, ViolationKind};
use mm::testing::BumpSource;
use mm::vmemmap::{PageSource, Vmemmap, VmemmapError};

/// The checker is fed by the doubles: `HostTables` (entries made valid, table frees),
/// `ModelTlb` (clears, and every TLBI decoded from its operand), `BumpSource` (backing frees).
type CheckedTables = HostTables;
type CheckedTlb = ModelTlb;

struct Rig<C: Config> {
    pt: PageTable<C>,
    tables: CheckedTables,
    source: BumpSource,
    tlb: CheckedTlb,
    checker: Checker,
    region: (u64, u64),
    baseline_tables: usize,
}

impl<C: Config> Rig<C> {
    fn new() -> Self {
        let g = C::GEOM;
        let checker: Checker = Rc::new(RefCell::new(TeardownChecker::with_config(g.page_shift, (0, 0))));
        let mut tables = HostTables::new(g.page_size());
        tables.checker = Some(checker.clone());
        let pt = PageTable::<C>::new(&mut tables).unwrap();
        // The vmemmap region as the kernel lays it out: after a linear map of half the VA space.
        let start = g.ttbr1_base() + (1 << (g.va_bits - 1));
        let size = ((1u64 << (g.va_bits - 1)) >> g.page_shift) * 64;
        let mut rig = Rig {
            pt,
            tables,
            source: BumpSource::new(g.page_size(), 1 << 40, checker.clone()),
            tlb: {
                let mut t = ModelTlb::new(g.page_shift, true, 1);
                t.checker = Some(checker.clone());
                t
            },
            checker,
            region: (start, start + size),
            baseline_tables: 0,
        };
        // Upper tables whose span is larger than the vmemmap region are shared with the rest
        // of the address space and never freed (floor/ceiling rule): one populate + free cycle
        // creates them, and the baseline is measured after it, as in the running kernel.
        let (s, e) = rig.section(0);
        rig.vmemmap().populate(s, e, None).unwrap();
        rig.vmemmap().free(s, e, None).unwrap();
        rig.baseline_tables = rig.tables.live();
        assert!(rig.source.live.is_empty());
        rig
    }

    fn vmemmap(&mut self) -> Vmemmap<'_, C, CheckedTables, BumpSource, CheckedTlb> {
        Vmemmap {
            pt: &mut self.pt,
            tables: &mut self.tables,
            source: &mut self.source,
            tlb: &mut self.tlb,
            region: self.region,
        }
    }

    /// Memmap VA range of section `nr`.
    fn section(&self, nr: u64) -> (u64, u64) {
        let m = C::GEOM.memmap_per_section();
        (self.region.0 + nr * m, self.region.0 + (nr + 1) * m)
    }

    fn assert_baseline(&self) {
        assert_eq!(self.tables.live(), self.baseline_tables, "table pages not at baseline");
        assert!(
            self.source.live.is_empty(),
            "backing pages leaked: {:?}",
            self.source.live
        );
        let c = self.checker.borrow();
        assert!(c.violations.is_empty(), "teardown order violated: {}", c.violations[0]);
    }
}

mm::matrix_tests!(
    full_section_uses_the_expected_path,
    populate_then_free_restores_everything,
    altmap_backs_every_leaf_and_returns_to_zero,
    altmap_exhaustion_rolls_back_completely,
    no_memory_rolls_back_completely,
    subsection_then_full_section_uses_base_pages,
    existing_block_is_reused,
    neighbouring_sections_keep_their_tables,
    out_of_range_requests_are_rejected,
    multi_section_populate_uses_blocks_for_whole_pmds,
);

fn full_section_uses_the_expected_path<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let (s, e) = r.section(3);
    let st = r.vmemmap().populate(s, e, None).unwrap();
    let census = r.pt.count(&r.tables);
    if g.page_shift == 12 {
        // Section path: one 2 MiB PMD block is one section's memmap.
        assert_eq!((st.blocks, st.pages), (1, 0));
        assert_eq!((census.leaves[2], census.leaves[3]), (1, 0));
    } else {
        // 16K: 32 pages, 64K: 8 pages (CONT_PTE runs are 2 MiB: larger than a section's memmap).
        assert_eq!((st.blocks, st.pages), (0, g.memmap_per_section() / g.page_size()));
        assert_eq!(census.blocks(), 0);
        assert_eq!(census.leaves[3], g.memmap_per_section() / g.page_size());
        assert_eq!(census.cont[3], 0);
    }
    assert_eq!(st.bytes, g.memmap_per_section());
    // The walker sees every struct page of the section.
    for va in (s..e).step_by(4096) {
        assert!(r.pt.walk(&r.tables, va).leaf.is_some(), "{va:#x} not populated");
    }
}

fn populate_then_free_restores_everything<C: Config>() {
    let mut r = Rig::<C>::new();
    for nr in [0, 1, 7] {
        let (s, e) = r.section(nr);
        r.vmemmap().populate(s, e, None).unwrap();
    }
    for nr in [1, 0, 7] {
        let (s, e) = r.section(nr);
        r.vmemmap().free(s, e, None).unwrap();
    }
    assert_eq!(r.pt.count(&r.tables).bytes, 0);
    r.assert_baseline();
    assert!(r.checker.borrow().frees_checked > 0);
}

fn altmap_backs_every_leaf_and_returns_to_zero<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let pages = g.memmap_per_section() / g.page_size();
    // The hot-added section's own first pages (memmap on memory).
    let base_pfn = (5 * g.section_size()) >> g.page_shift;
    let mut alt = Altmap::new(base_pfn, base_pfn + g.pages_per_section() - 1, 0, pages);
    let (s, e) = r.section(5);
    let barriers = arch::barrier::host::published();
    let st = r.vmemmap().populate(s, e, Some(&mut alt)).unwrap();
    // The whole memmap is one piece of the altmap mapped by one `map` (a hot-add of a 16K
    // section is then one walk and one barrier, not 32).
    assert_eq!(
        arch::barrier::host::published() - barriers,
        1,
        "maps of one section's memmap"
    );
    assert_eq!(st.altmap_pages, pages);
    assert_eq!(alt.alloc, pages);
    assert!(alt.alloc + alt.align <= alt.free);
    assert!(r.source.live.is_empty(), "no backing from ordinary memory");
    for (i, va) in (s..e).step_by(g.page_size() as usize).enumerate() {
        let l = r.pt.walk(&r.tables, va).leaf.unwrap();
        assert!(
            alt.contains(l.pa >> g.page_shift),
            "leaf {va:#x} -> {:#x} not from the altmap",
            l.pa
        );
        assert_eq!(
            l.pa,
            (base_pfn << g.page_shift) + i as u64 * g.page_size(),
            "leaf {va:#x}"
        );
    }
    // Page-table pages never come from the altmap.
    for &t in r.tables.live_set() {
        assert!(!alt.contains(t >> g.page_shift));
    }
    let f = r.vmemmap().free(s, e, Some(&mut alt)).unwrap();
    assert_eq!(f.altmap_pages, pages);
    assert_eq!((alt.alloc, alt.align), (0, 0));
    r.assert_baseline();
}

fn altmap_exhaustion_rolls_back_completely<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let pages = g.memmap_per_section() / g.page_size();
    let base_pfn = (5 * g.section_size()) >> g.page_shift;
    // One page short; on 4K the block needs all 512 at once.
    let mut alt = Altmap::new(base_pfn, base_pfn + g.pages_per_section() - 1, 0, pages - 1);
    let (s, e) = r.section(5);
    let err = r.vmemmap().populate(s, e, Some(&mut alt)).unwrap_err();
    assert!(matches!(err, VmemmapError::AltmapExhausted(_)), "{err:?}");
    assert_eq!((alt.alloc, alt.align), (0, 0));
    assert_eq!(r.pt.count(&r.tables).bytes, 0);
    r.assert_baseline();
}

fn no_memory_rolls_back_completely<C: Config>() {
    let g = C::GEOM;
    for budget in [0, 1, 3] {
        let mut r = Rig::<C>::new();
        r.source.budget = Some(budget);
        let (s, e) = r.section(2);
        // 4K with no memory for the block falls back to base pages and still runs out.
        let res = r.vmemmap().populate(s, e, None);
        if g.page_shift == 12 && budget >= 1 {
            assert!(res.is_ok(), "a 2 MiB block with budget {budget}");
            r.vmemmap().free(s, e, None).unwrap();
        } else {
            assert_eq!(res.unwrap_err(), VmemmapError::NoMemory);
        }
        assert_eq!(r.pt.count(&r.tables).bytes, 0);
        r.assert_baseline();
    }
}

/// Linux regressions (docs/design.md#vmemmap): a sub-section populate must use base pages, and a later
/// full-section populate over the resulting *table* PMD must add base pages, not assume the
/// PMD is populated (and must not try to install a block over the table).
fn subsection_then_full_section_uses_base_pages<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let (s, e) = r.section(4);
    let half = s + g.memmap_per_section() / 2;
    let st = r.vmemmap().populate(s, half, None).unwrap();
    assert_eq!(st.blocks, 0, "sub-section populate must not use a block");
    let st2 = r.vmemmap().populate(s, e, None).unwrap();
    assert_eq!(st2.blocks, 0, "a table PMD forces base pages");
    assert_eq!(st.bytes + st2.bytes, g.memmap_per_section());
    for va in (s..e).step_by(g.page_size() as usize) {
        assert!(
            r.pt.walk(&r.tables, va).leaf.is_some(),
            "{va:#x} missing after the full populate"
        );
    }
    r.vmemmap().free(s, e, None).unwrap();
    r.assert_baseline();
}

fn existing_block_is_reused<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let (s, e) = r.section(6);
    r.vmemmap().populate(s, e, None).unwrap();
    let live = r.source.live.len();
    let st = r.vmemmap().populate(s, e, None).unwrap();
    assert_eq!(r.source.live.len(), live, "second populate allocated memory");
    assert_eq!(st.reused_blocks, if g.page_shift == 12 { 1 } else { 0 });
    assert_eq!(st.bytes, 0);
    r.vmemmap().free(s, e, None).unwrap();
    r.assert_baseline();
}

/// Freeing one section's memmap leaves its neighbour's mappings and the shared tables alone.
fn neighbouring_sections_keep_their_tables<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let (a0, a1) = r.section(8);
    let (b0, b1) = r.section(9);
    r.vmemmap().populate(a0, a1, None).unwrap();
    r.vmemmap().populate(b0, b1, None).unwrap();
    r.vmemmap().free(a0, a1, None).unwrap();
    for va in (b0..b1).step_by(g.page_size() as usize) {
        assert!(r.pt.walk(&r.tables, va).leaf.is_some(), "neighbour lost {va:#x}");
    }
    assert!(r.pt.walk(&r.tables, a0).leaf.is_none());
    r.vmemmap().free(b0, b1, None).unwrap();
    r.assert_baseline();
}

fn out_of_range_requests_are_rejected<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let (s, _) = r.section(1);
    let bad = [
        (s + 8, s + g.page_size()),
        (r.region.0 - g.page_size(), r.region.0),
        (s, s),
    ];
    for (a, b) in bad {
        assert!(
            matches!(r.vmemmap().populate(a, b, None), Err(VmemmapError::BadRange { .. })),
            "{a:#x}..{b:#x}"
        );
    }
    // More than one section: only without an altmap (an altmap holds one block's memmap), and
    // never for free (a block leaf may be shared by the sections of a multi-section populate).
    let two = (s, s + 2 * g.memmap_per_section());
    let base_pfn = g.section_size() >> g.page_shift;
    let mut alt = Altmap::new(base_pfn, base_pfn + g.pages_per_section() - 1, 0, 1);
    assert!(matches!(
        r.vmemmap().populate(two.0, two.1, Some(&mut alt)),
        Err(VmemmapError::BadRange { .. })
    ));
    assert!(matches!(
        r.vmemmap().free(two.0, two.1, None),
        Err(VmemmapError::BadRange { .. })
    ));
    r.assert_baseline();
}

/// The boot memmap in one call over many sections: every PMD of memmap the range covers whole
/// is a block leaf (the section path) even where a section's memmap is smaller than a PMD, the
/// rest base pages; every byte mapped once.
fn multi_section_populate_uses_blocks_for_whole_pmds<C: Config>() {
    let g = C::GEOM;
    let mut r = Rig::<C>::new();
    let pmd = g.pmd_size();
    // Enough sections to cover two whole PMDs of memmap (at least two sections).
    let nr = (2 * pmd / g.memmap_per_section()).max(2) + 1;
    let (s, _) = r.section(1);
    let e = s + nr * g.memmap_per_section();
    let st = r.vmemmap().populate(s, e, None).unwrap();
    assert_eq!(st.bytes, e - s, "every byte mapped once");
    let whole = (e / pmd).saturating_sub(s.div_ceil(pmd));
    if g.block_allowed(2) {
        assert_eq!(st.blocks, whole, "{st:?}");
    }
    for va in (s..e).step_by(g.page_size() as usize) {
        assert!(r.pt.walk(&r.tables, va).leaf.is_some(), "{va:#x} not mapped");
    }
}

/// The checker catches a deliberately wrong order: backing freed before the invalidation.
#[test]
fn checker_catches_free_before_invalidate() {
    type C = Cfg4K48;
    let mut r = Rig::<C>::new();
    let (s, e) = r.section(0);
    r.vmemmap().populate(s, e, None).unwrap();
    let leaf = r.pt.walk(&r.tables, s).leaf.unwrap();
    // Wrong order by hand: clear (as the engine reports it), free, then invalidate.
    r.tlb.cleared(Mapping {
        va: s,
        size: leaf.size,
        pa: leaf.pa,
        pa_size: leaf.size,
        table: false,
    });
    let order = leaf.size.trailing_zeros() - 12;
    r.source.free_pages(leaf.pa, order);
    r.tlb.flush_kernel_range(s, e, 21);
    let v = r.checker.borrow().violations.clone();
    assert_eq!(v.len(), 1, "free before TLBI must be reported");
    assert_eq!((v[0].addr, v[0].kind), (leaf.pa, ViolationKind::FreedWhilePending));
}

/// And the real code passes it: every clear the engine reports is invalidated before the free.
#[test]
fn real_teardown_passes_the_checker_and_reports_clears() {
    type C = Cfg16K47;
    let mut r = Rig::<C>::new();
    let (s, e) = r.section(0);
    r.vmemmap().populate(s, e, None).unwrap();
    r.vmemmap().free(s, e, None).unwrap();
    let c = r.checker.borrow();
    assert!(c.violations.is_empty());
    assert!(c.clears >= 32, "the engine reported {} clears for 32 PTEs", c.clears);
    assert_eq!(c.pending_count(), 0);
}
