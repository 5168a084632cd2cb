//! Host tests of the page-table engine, run for every configuration of `Geometry::MATRIX`.
//!
//! The oracle is an independent traversal of the tables (`dump`) plus a model of what is
//! mapped (`Model`, a set of intervals); `check` asserts the invariants after every operation:
//! every reachable table is live and every live table reachable, no stray entries, leaves
//! aligned, contiguous runs complete, the census agrees, the walker agrees, and the leaves
//! translate exactly what the model says.

use std::collections::{BTreeMap, BTreeSet};

use mm::geometry::*;
use mm::pgtable::testing::{Event, EventLog, HostTables, RecordingTlb};
use mm::pgtable::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

// Every test below runs in every configuration of the build matrix.
mm::matrix_tests!(
    shapes_match_greedy_oracle,
    shapes_by_hand,
    no_block_where_not_allowed,
    cont_run_over_existing_table,
    round_trip_restores_tables,
    noop_remap,
    reshape_changes_nothing,
    walker_reports_steps,
    unmap_never_splits,
    frees_follow_flushes,
    floor_ceiling,
    no_memory_rolls_back,
    populate_tables_then_map_allocates_nothing,
    random_operations,
);

// ---------------------------------------------------------------------------------------------
// Geometry helpers.

fn geo<C: Config>() -> Geometry {
    C::GEOM
}

fn page<C: Config>() -> u64 {
    geo::<C>().page_size()
}

/// Largest leaf level size or contiguous run size of the configuration.
fn biggest<C: Config>() -> u64 {
    ladder::<C>().into_iter().max().unwrap()
}

/// Every leaf and contiguous-run size the configuration can produce, ascending.
fn ladder<C: Config>() -> Vec<u64> {
    let g = geo::<C>();
    let mut v = BTreeSet::new();
    for l in g.start_level()..=3 {
        if l == 3 || g.block_allowed(l) {
            v.insert(g.level_size(l));
            if let Some(c) = g.cont_size(l) {
                v.insert(c);
            }
        }
    }
    v.into_iter().collect()
}

/// A VA base in the low (TTBR0) or high (TTBR1) half, aligned far beyond `biggest`.
fn va_base<C: Config>(high: bool) -> u64 {
    let g = geo::<C>();
    let off = 1u64 << (g.va_bits - 2);
    assert!(off >= 4 * biggest::<C>());
    if high {
        g.ttbr1_base() + off
    } else {
        off
    }
}

const PA_BASE: u64 = 1 << 40;

fn attrs_of(i: u8) -> Attrs {
    [Attrs::NORMAL_RW, Attrs::NORMAL_RO, Attrs::NORMAL_RX, Attrs::DEVICE_RW][i as usize % 4]
}

fn is_high<C: Config>(va: u64) -> bool {
    va >= geo::<C>().ttbr1_base()
}

// ---------------------------------------------------------------------------------------------
// Oracle: independent traversal.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LeafInfo {
    va: u64,
    level: u32,
    size: u64,
    index: usize,
    table: u64,
    desc: Descriptor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TableInfo {
    level: u32,
    /// First VA the table translates.
    base: u64,
    /// Bytes it spans.
    span: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Dump {
    tables: BTreeMap<u64, TableInfo>,
    raw: BTreeMap<u64, Vec<u64>>,
    leaves: Vec<LeafInfo>,
    bad: Vec<u64>,
}

fn dump<C: Config>(a: &HostTables, root: u64, high: bool) -> Dump {
    let g = geo::<C>();
    let mut d = Dump::default();
    let base = if high { g.ttbr1_base() } else { 0 };
    visit::<C>(a, root, g.start_level(), base, &mut d);
    d
}

fn visit<C: Config>(a: &HostTables, table: u64, level: u32, base: u64, d: &mut Dump) {
    let g = geo::<C>();
    let shift = g.level_shift(level);
    let n = g.entries(level);
    let info = TableInfo {
        level,
        base,
        span: (n as u64) << shift,
    };
    assert!(d.tables.insert(table, info).is_none(), "table {table:#x} reached twice");
    let p = a.table_ptr(table); // panics unless live
    let entries: Vec<u64> = (0..n)
        .map(|i| {
            let e = p.wrapping_add(i);
            // SAFETY: an entry of a live table page (`table_ptr`, the `TableAlloc` contract),
            // index below the table's `n` entries.
            unsafe { e.read() }
        })
        .collect();
    d.raw.insert(table, entries.clone());
    let last = level == 3;
    for (i, &raw) in entries.iter().enumerate() {
        if raw == 0 {
            continue;
        }
        let va = base + ((i as u64) << shift);
        let desc = Descriptor::from_raw(raw);
        if desc.is_table(last) {
            visit::<C>(a, desc.output_address(), level + 1, va, d);
        } else if desc.is_leaf(last) && (last || g.block_allowed(level)) {
            d.leaves.push(LeafInfo {
                va,
                level,
                size: 1 << shift,
                index: i,
                table,
                desc,
            });
        } else {
            d.bad.push(raw);
        }
    }
}

/// Non-overlapping mapped intervals: start -> (size, pa, attribute bits).
#[derive(Clone, Debug, Default)]
struct Model(BTreeMap<u64, (u64, u64, u64)>);

impl Model {
    fn overlaps(&self, va: u64, size: u64) -> Vec<(u64, u64, u64, u64)> {
        let last = va + (size - 1);
        self.0
            .iter()
            .filter(|(&s, &(sz, _, _))| s <= last && s + (sz - 1) >= va)
            .map(|(&s, &(sz, pa, at))| (s, sz, pa, at))
            .collect()
    }

    fn remove(&mut self, va: u64, size: u64) {
        let last = va + (size - 1);
        for (s, sz, pa, at) in self.overlaps(va, size) {
            self.0.remove(&s);
            let e = s + (sz - 1);
            if s < va {
                self.0.insert(s, (va - s, pa, at));
            }
            if e > last {
                self.0.insert(last + 1, (e - last, pa + (last + 1 - s), at));
            }
        }
    }

    fn insert(&mut self, va: u64, size: u64, pa: u64, at: u64) {
        self.remove(va, size);
        self.0.insert(va, (size, pa, at));
    }

    fn bytes(&self) -> u64 {
        self.0.values().map(|v| v.0).sum()
    }
}

/// Every invariant of a tree that this test alone built, against `model`.
fn check<C: Config>(a: &HostTables, pt: &PageTable<C>, high: bool, model: &Model) -> Dump {
    let g = geo::<C>();
    let d = dump::<C>(a, pt.root(), high);
    assert!(d.bad.is_empty(), "stray entries {:x?}", d.bad);
    // Reachable == live: nothing leaked, nothing freed still linked.
    let reach: BTreeSet<u64> = d.tables.keys().copied().collect();
    assert_eq!(&reach, a.live_set(), "reachable tables differ from live tables");
    // Census agrees with the independent traversal.
    let c = pt.count(a);
    let mut want = Census {
        tables: d.tables.len() as u64,
        ..Default::default()
    };
    for t in d.tables.values() {
        want.tables_at[t.level as usize] += 1;
    }
    for l in &d.leaves {
        want.leaves[l.level as usize] += 1;
        want.cont[l.level as usize] += l.desc.is_contiguous() as u64;
        want.bytes += l.size;
    }
    assert_eq!(c, want);
    // Leaves: aligned output, contiguous runs complete, translation as modelled.
    for l in &d.leaves {
        assert_eq!(l.desc.output_address() % l.size, 0, "misaligned leaf {l:?}");
        assert!(l.desc.attrs().is_some());
        if l.desc.is_contiguous() {
            let s = g.cont_shift(l.level).expect("CONT where no run size exists");
            let n = 1usize << s;
            let first = l.index & !(n - 1);
            let raw = &d.raw[&l.table];
            let head = Descriptor::from_raw(raw[first]);
            assert_eq!(head.output_address() % (l.size << s), 0, "run not aligned {l:?}");
            for k in 0..n {
                let e = Descriptor::from_raw(raw[first + k]);
                assert!(e.is_leaf(l.level == 3) && e.is_contiguous(), "broken run {l:?}");
                assert_eq!(e.attr_bits(), head.attr_bits());
                assert_eq!(e.output_address(), head.output_address() + k as u64 * l.size);
            }
        }
        let (&s, &(sz, pa, at)) = model.0.range(..=l.va).next_back().expect("leaf outside model");
        assert!(l.va + (l.size - 1) <= s + (sz - 1), "leaf {l:?} beyond model interval");
        assert_eq!(l.desc.output_address(), pa + (l.va - s), "wrong translation {l:?}");
        assert_eq!(l.desc.attr_bits(), at, "wrong attributes {l:?}");
        // The walker agrees at both ends of the leaf.
        for va in [l.va, l.va + (l.size - 1)] {
            let w = pt.walk(a, va);
            let leaf = w.leaf.expect("walk found no leaf");
            assert_eq!(leaf.pa, l.desc.output_address() + (va - l.va));
            assert_eq!((leaf.level, leaf.size), (l.level, l.size));
            assert_eq!(leaf.contiguous, l.desc.is_contiguous());
            assert_eq!(w.steps().last().unwrap().desc, l.desc);
        }
    }
    // Leaves are disjoint by construction (one tree); equal byte sums mean equal coverage.
    assert_eq!(want.bytes, model.bytes(), "mapped bytes differ from the model");
    // Just outside each modelled interval nothing is mapped (unless another interval is).
    for (&s, &(sz, _, _)) in &model.0 {
        for probe in [s.wrapping_sub(1), s.wrapping_add(sz)] {
            let in_half = if high {
                is_high::<C>(probe)
            } else {
                probe >> g.va_bits == 0
            };
            let covered = model
                .0
                .range(..=probe)
                .next_back()
                .is_some_and(|(&s2, &(sz2, _, _))| probe <= s2 + (sz2 - 1));
            if in_half && !covered {
                assert_eq!(pt.walk(a, probe).leaf, None, "unmodelled mapping at {probe:#x}");
            }
        }
    }
    d
}

/// Leaf counts, contiguous counts and table count a fresh tree must show after one `map`:
/// greedy largest-leaf-first, computed without the engine.
fn greedy<C: Config>(va0: u64, pa0: u64, size: u64, f: MapFlags) -> ([u64; 4], [u64; 4], u64) {
    let g = geo::<C>();
    let last = va0 + (size - 1);
    let pa_of = |va: u64| pa0 + (va - va0);
    let mut leaves = [0; 4];
    let mut cont = [0; 4];
    let mut tables = BTreeSet::new();
    let mut va = va0;
    while va <= last && va >= va0 {
        let mut chosen = None;
        for l in g.start_level()..=3 {
            let ls = g.level_size(l);
            let leaf_ok = l == 3 || (f.block && g.block_allowed(l));
            if leaf_ok && va.is_multiple_of(ls) && pa_of(va).is_multiple_of(ls) && va + (ls - 1) <= last {
                chosen = Some(l);
                break;
            }
        }
        let l = chosen.unwrap();
        let ls = g.level_size(l);
        leaves[l as usize] += 1;
        if f.cont {
            if let Some(run) = g.cont_size(l) {
                let rb = va & !(run - 1);
                if rb >= va0 && rb + (run - 1) <= last && pa_of(rb) % run == 0 {
                    cont[l as usize] += 1;
                }
            }
        }
        for k in g.start_level() + 1..=l {
            tables.insert((k, va >> g.level_shift(k - 1)));
        }
        va = va.wrapping_add(ls);
    }
    (leaves, cont, tables.len() as u64 + 1)
}

/// One successful unmap call: the trees before and after, the events it caused, its
/// arguments (floor and ceiling those `unmap` implies when it was not `unmap_within`) and its
/// result.
struct UnmapCall<'a> {
    before: &'a Dump,
    after: &'a Dump,
    events: &'a [Event],
    root: u64,
    va: u64,
    size: u64,
    floor: u64,
    ceiling: u64,
    stats: &'a UnmapStats,
}

/// The events of one unmap call check out: leaves flushed before any free; each table freed
/// only after its parent entry's walk-cache flush, and only if inside the floor/ceiling; no
/// allocation; afterwards no empty table inside the bounds is left on the range's path.
fn check_unmap_events(call: &UnmapCall) {
    let &UnmapCall {
        before,
        after,
        events,
        root,
        va,
        size,
        floor,
        ceiling,
        stats,
    } = call;
    let last = va + (size - 1);
    let ceil_last = ceiling.wrapping_sub(1);
    let first_free = events
        .iter()
        .position(|e| matches!(e, Event::Free(_)))
        .unwrap_or(events.len());
    assert!(!events.iter().any(|e| matches!(e, Event::Alloc(_))), "unmap allocated");
    let gone: Vec<&LeafInfo> = before
        .leaves
        .iter()
        .filter(|l| l.va <= last && l.va + (l.size - 1) >= va)
        .collect();
    assert_eq!(stats.leaves, gone.len() as u64);
    assert_eq!(stats.bytes, gone.iter().map(|l| l.size).sum::<u64>());
    for l in &gone {
        let covered = events[..first_free].iter().any(|e| match *e {
            Event::FlushRange {
                start,
                end,
                stride_shift,
            } => start <= l.va && l.va + (l.size - 1) <= end.wrapping_sub(1) && (1u64 << stride_shift) <= l.size,
            _ => false,
        });
        assert!(covered, "leaf {l:?} not invalidated before the first free");
    }
    let frees: Vec<(usize, u64)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| if let Event::Free(pa) = e { Some((i, *pa)) } else { None })
        .collect();
    assert_eq!(stats.tables_freed, frees.len() as u64);
    for (i, pa) in frees {
        assert_ne!(pa, root, "root freed");
        let t = before.tables.get(&pa).expect("freed a page that was not a table");
        assert!(!after.tables.contains_key(&pa), "freed table still reachable");
        assert!(
            t.base >= floor && t.base + (t.span - 1) <= ceil_last,
            "freed outside floor/ceiling"
        );
        let flushed = events[..i]
            .iter()
            .any(|e| matches!(*e, Event::FlushPgtable(v) if v >= t.base && v <= t.base + (t.span - 1)));
        assert!(flushed, "table {pa:#x} freed before its walk-cache invalidation");
    }
    for (pa, t) in &after.tables {
        let empty = after.raw[pa].iter().all(|&e| e == 0);
        let inside = t.base >= floor && t.base + (t.span - 1) <= ceil_last;
        let on_path = t.base <= last && t.base + (t.span - 1) >= va;
        assert!(
            *pa == root || !(empty && inside && on_path),
            "empty table {pa:#x} {t:?} kept"
        );
    }
}

/// Runs `unmap` or `unmap_within` with a recording TLB and checks the events.
fn unmap_checked<C: Config>(
    a: &mut HostTables,
    pt: &mut PageTable<C>,
    high: bool,
    va: u64,
    size: u64,
    bounds: Option<(u64, u64)>,
) -> Result<UnmapStats, MapError> {
    let before = dump::<C>(a, pt.root(), high);
    let log: EventLog = a.log();
    let start = log.borrow().len();
    let mut tlb = RecordingTlb::with_log(log.clone());
    let r = match bounds {
        None => pt.unmap(a, &mut tlb, va, size),
        Some((f, c)) => pt.unmap_within(a, &mut tlb, va, size, f, c),
    };
    let after = dump::<C>(a, pt.root(), high);
    let events: Vec<Event> = log.borrow()[start..].to_vec();
    match r {
        Ok(stats) => {
            let (f, c) = bounds.unwrap_or((va, va.wrapping_add(size)));
            check_unmap_events(&UnmapCall {
                before: &before,
                after: &after,
                events: &events,
                root: pt.root(),
                va,
                size,
                floor: f,
                ceiling: c,
                stats: &stats,
            });
        }
        Err(_) => {
            assert_eq!(before, after, "failed unmap changed the tables");
            assert!(events.is_empty(), "failed unmap had side effects: {events:?}");
        }
    }
    r
}

fn new_table<C: Config>() -> (HostTables, PageTable<C>) {
    let mut a = HostTables::new(page::<C>());
    let pt = PageTable::<C>::new(&mut a).unwrap();
    (a, pt)
}

/// The whole-half region bounds for `unmap_within`.
fn region<C: Config>(high: bool) -> (u64, u64) {
    let g = geo::<C>();
    if high {
        (g.ttbr1_base(), 0)
    } else {
        (0, 1 << g.va_bits)
    }
}

// ---------------------------------------------------------------------------------------------
// Directed tests.

const ALL_FLAGS: [MapFlags; 4] = [
    MapFlags::PAGES,
    MapFlags::BLOCKS,
    MapFlags::LARGEST,
    MapFlags {
        block: false,
        cont: true,
    },
];

/// Blocks and contiguous runs appear exactly where alignment allows.
fn shapes_match_greedy_oracle<C: Config>() {
    let p = page::<C>();
    let lad = ladder::<C>();
    for high in [false, true] {
        let base = va_base::<C>(high);
        for f in ALL_FLAGS {
            for skew in [0, p] {
                // Ranges [base + head, base + 2 * top - tail) with heads and tails on every
                // ladder step below `top`; PA congruent to VA, or skewed by one page. Shapes
                // made of base pages use a smaller `top` (the checks visit every leaf).
                let few_pages = |s: &u64| *s / p <= 1 << 11;
                let top = if f.block && skew == 0 {
                    biggest::<C>()
                } else {
                    lad.iter().copied().filter(few_pages).max().unwrap()
                };
                let mut cuts: Vec<u64> = vec![0, p];
                cuts.extend(lad.iter().flat_map(|&s| [s, s + p, s.saturating_sub(p)]));
                cuts.retain(|&c| c < top);
                cuts.sort();
                cuts.dedup();
                for (i, &head) in cuts.iter().enumerate() {
                    let tail = cuts[(i * 7 + 3) % cuts.len()];
                    let va = base + head;
                    let size = 2 * top - head - tail;
                    let pa = PA_BASE + head + skew;
                    let (mut a, mut pt) = new_table::<C>();
                    pt.map(&mut a, va, pa, size, Attrs::NORMAL_RW, f).unwrap();
                    let c = pt.count(&a);
                    let (leaves, cont, tables) = greedy::<C>(va, pa, size, f);
                    let ctx = format!("va={va:#x} pa={pa:#x} size={size:#x} {f:?}");
                    assert_eq!(c.leaves, leaves, "{ctx}");
                    assert_eq!(c.cont, cont, "{ctx}");
                    assert_eq!(c.tables, tables, "{ctx}");
                    assert_eq!(c.bytes, size);
                    if !f.block {
                        assert_eq!(c.blocks(), 0);
                    }
                    if !f.cont {
                        assert_eq!(c.cont, [0; 4]);
                    }
                    let mut m = Model::default();
                    m.insert(va, size, pa, Attrs::NORMAL_RW.bits());
                    check::<C>(&a, &pt, high, &m);
                }
            }
        }
    }
}

/// A few shapes written out by hand per granule.
fn shapes_by_hand<C: Config>() {
    let g = geo::<C>();
    let base = va_base::<C>(true);
    let (mut a, mut pt) = new_table::<C>();
    let rw = Attrs::NORMAL_RW;
    match g.page_shift {
        12 => {
            // 1 GiB + 32 MiB + 2 MiB + 64 KiB + 4 KiB.
            let size = (1 << 30) + (32 << 20) + (2 << 20) + (64 << 10) + 4096;
            pt.map(&mut a, base, PA_BASE, size, rw, MapFlags::LARGEST).unwrap();
            let c = pt.count(&a);
            assert_eq!(c.leaves, [0, 1, 17, 17]);
            assert_eq!(c.cont, [0, 0, 16, 16]);
        }
        14 => {
            // 1 GiB (a CONT_PMD run of 32 blocks) + 32 MiB + 2 MiB (CONT_PTE) + 16 KiB.
            let size = (1 << 30) + (32 << 20) + (2 << 20) + (16 << 10);
            pt.map(&mut a, base, PA_BASE, size, rw, MapFlags::LARGEST).unwrap();
            let c = pt.count(&a);
            assert_eq!(c.leaves, [0, 0, 33, 129]);
            assert_eq!(c.cont, [0, 0, 32, 128]);
            // Same without the hint and without blocks.
            let (mut a, mut pt) = new_table::<C>();
            pt.map(&mut a, base, PA_BASE, 64 << 20, rw, MapFlags::PAGES).unwrap();
            assert_eq!(pt.count(&a).leaves, [0, 0, 0, 4096]);
        }
        _ => {
            // 512 MiB block + 2 MiB CONT_PTE run + 64 KiB; PA skewed by 64 KiB: pages only.
            let size = (512 << 20) + (2 << 20) + (64 << 10);
            pt.map(&mut a, base, PA_BASE, size, rw, MapFlags::LARGEST).unwrap();
            let c = pt.count(&a);
            assert_eq!(c.leaves, [0, 0, 1, 33]);
            assert_eq!(c.cont, [0, 0, 0, 32]);
            let (mut a, mut pt) = new_table::<C>();
            pt.map(&mut a, base, PA_BASE + (64 << 10), 512 << 20, rw, MapFlags::LARGEST)
                .unwrap();
            let c = pt.count(&a);
            assert_eq!((c.leaves, c.cont), ([0, 0, 0, 8192], [0; 4]));
        }
    }
    // Blocks only at levels the configuration allows, never above.
    let c = pt.count(&a);
    for l in 0..3 {
        if !g.block_allowed(l) {
            assert_eq!(c.leaves[l as usize], 0);
        }
    }
    assert_eq!(c.tables_at[g.start_level() as usize], 1);
    for l in 0..g.start_level() {
        assert_eq!(c.tables_at[l as usize], 0, "table at a folded level");
    }
}

/// Mapping one whole entry of a level without blocks (16K/64K level 1, 4K level 0) gives
/// leaves of the next level down, never a block at that level.
fn no_block_where_not_allowed<C: Config>() {
    let g = geo::<C>();
    let mut tested = 0;
    for l in g.start_level()..3 {
        let below = (l + 1..=3).find(|&k| k == 3 || g.block_allowed(k)).unwrap();
        if g.block_allowed(l) || g.level_size(l) / g.level_size(below) > 1 << 13 {
            continue;
        }
        let size = g.level_size(l);
        let base = va_base::<C>(true) & !(size - 1);
        if base < g.ttbr1_base() || base.checked_add(size - 1).is_none() {
            continue;
        }
        let (mut a, mut pt) = new_table::<C>();
        pt.map(&mut a, base, PA_BASE, size, Attrs::NORMAL_RW, MapFlags::LARGEST)
            .unwrap();
        let c = pt.count(&a);
        assert_eq!(c.leaves[l as usize], 0, "block at level {l}");
        assert_eq!(c.bytes, size);
        tested += 1;
    }
    // Every configuration has such a level except those whose levels all allow blocks.
    assert!(tested > 0 || matches!((g.page_shift, g.va_bits), (12, 39) | (14, 36) | (16, 42)));
}

/// A contiguous run whose span holds an existing table is mapped without CONT (replacing the
/// table would need break-before-make); the rest of the range keeps its runs.
fn cont_run_over_existing_table<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let run = g.cont_size(2).unwrap();
    let pmd = g.pmd_size();
    let base = va_base::<C>(true);
    let (mut a, mut pt) = new_table::<C>();
    // An empty pte table inside the second run: left by unmapping one page (its span is
    // larger than the range, so plain unmap keeps it).
    let at = base + run + 3 * pmd;
    pt.map(&mut a, at, PA_BASE, p, Attrs::NORMAL_RW, MapFlags::PAGES)
        .unwrap();
    pt.unmap(&mut a, &mut RecordingTlb::default(), at, p).unwrap();
    pt.map(&mut a, base, PA_BASE, 2 * run, Attrs::NORMAL_RW, MapFlags::LARGEST)
        .unwrap();
    let c = pt.count(&a);
    let n = run / pmd;
    assert_eq!(c.leaves[2], 2 * n - 1);
    assert_eq!(c.cont[2], n, "only the first run is contiguous");
    assert_eq!(
        (c.leaves[3], c.cont[3]),
        (pmd / p, pmd / p),
        "the table is filled with pte runs"
    );
    let mut m = Model::default();
    m.insert(base, 2 * run, PA_BASE, Attrs::NORMAL_RW.bits());
    check::<C>(&a, &pt, true, &m);
}

/// map + unmap restores the table count exactly.
fn round_trip_restores_tables<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    for high in [false, true] {
        let base = va_base::<C>(high);
        let (f, c) = region::<C>(high);
        for flags in ALL_FLAGS {
            // Arbitrary ranges, region bounds: back to the root alone.
            let (mut a, mut pt) = new_table::<C>();
            for (off, size) in [(p, p), (3 * p, 40 * p), (0, g.pmd_size() + 5 * p)] {
                pt.map(&mut a, base + off, PA_BASE + off, size, Attrs::NORMAL_RW, flags)
                    .unwrap();
                assert!(pt.count(&a).tables > 1);
                unmap_checked::<C>(&mut a, &mut pt, high, base + off, size, Some((f, c))).unwrap();
                assert_eq!(
                    pt.count(&a),
                    Census {
                        tables: 1,
                        tables_at: root_only::<C>(),
                        ..Default::default()
                    }
                );
                assert_eq!(a.live(), 1);
            }
            // Plain unmap of whole pte-table spans: tables below the pmd level come back.
            let (mut a, mut pt) = new_table::<C>();
            let keep = base + 8 * g.pmd_size();
            pt.map(&mut a, keep, PA_BASE, p, Attrs::NORMAL_RW, flags).unwrap();
            let c0 = pt.count(&a);
            let span = 3 * g.pmd_size(); // three pte tables' worth
            pt.map(&mut a, base, PA_BASE, span, Attrs::NORMAL_RW, flags).unwrap();
            unmap_checked::<C>(&mut a, &mut pt, high, base, span, None).unwrap();
            assert_eq!(pt.count(&a), c0, "{flags:?}");
            assert_eq!(a.live() as u64, c0.tables);
        }
    }
}

fn root_only<C: Config>() -> [u64; 4] {
    let mut t = [0; 4];
    t[geo::<C>().start_level() as usize] = 1;
    t
}

/// Mapping over an identical mapping changes nothing and allocates nothing.
fn noop_remap<C: Config>() {
    let p = page::<C>();
    let big = biggest::<C>();
    let base = va_base::<C>(true);
    for flags in ALL_FLAGS {
        let size = if flags.block { 2 * big + 3 * p } else { 300 * p };
        let (mut a, mut pt) = new_table::<C>();
        pt.map(&mut a, base + p, PA_BASE + p, size, Attrs::NORMAL_RX, flags)
            .unwrap();
        let d0 = dump::<C>(&a, pt.root(), true);
        let allocs = a.allocs;
        pt.map(&mut a, base + p, PA_BASE + p, size, Attrs::NORMAL_RX, flags)
            .unwrap();
        assert_eq!(dump::<C>(&a, pt.root(), true), d0);
        assert_eq!(a.allocs, allocs);
        let mut m = Model::default();
        m.insert(base + p, size, PA_BASE + p, Attrs::NORMAL_RX.bits());
        if flags == MapFlags::PAGES {
            // With plain pages a sub-range is identical too, and a superset only adds pages.
            pt.map(&mut a, base + 2 * p, PA_BASE + 2 * p, p, Attrs::NORMAL_RX, flags)
                .unwrap();
            assert_eq!(dump::<C>(&a, pt.root(), true), d0);
            pt.map(&mut a, base, PA_BASE, size + 2 * p, Attrs::NORMAL_RX, flags)
                .unwrap();
            m.insert(base, size + 2 * p, PA_BASE, Attrs::NORMAL_RX.bits());
        } else {
            // A sub-range of a block or contiguous run would re-shape it.
            let r = pt.map(&mut a, base + 2 * p, PA_BASE + 2 * p, p, Attrs::NORMAL_RX, flags);
            assert!(r.is_ok() || r == Err(MapError::Reshape { va: base + 2 * p }));
        }
        check::<C>(&a, &pt, true, &m);
    }
    // Pages first, then the same translation asking for blocks: the tables are reused.
    let g = geo::<C>();
    let (mut a, mut pt) = new_table::<C>();
    pt.map(&mut a, base, PA_BASE, g.pmd_size(), Attrs::NORMAL_RW, MapFlags::PAGES)
        .unwrap();
    let d0 = dump::<C>(&a, pt.root(), true);
    pt.map(&mut a, base, PA_BASE, g.pmd_size(), Attrs::NORMAL_RW, MapFlags::BLOCKS)
        .unwrap();
    assert_eq!(dump::<C>(&a, pt.root(), true), d0);
}

/// Every conflicting remap is `Reshape` and leaves tables and allocations as they were, also
/// when the conflict is found after other parts of the call were already staged.
fn reshape_changes_nothing<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let pmd = g.pmd_size();
    let base = va_base::<C>(false);
    let rw = Attrs::NORMAL_RW;
    let (mut a, mut pt) = new_table::<C>();
    // A pmd block, a contiguous pte run, plain pages.
    let cont_pte = g.cont_size(3).unwrap();
    pt.map(&mut a, base, PA_BASE, pmd, rw, MapFlags::LARGEST).unwrap();
    pt.map(&mut a, base + 2 * pmd, PA_BASE, cont_pte, rw, MapFlags::LARGEST)
        .unwrap();
    pt.map(&mut a, base + 4 * pmd, PA_BASE, 4 * p, rw, MapFlags::PAGES)
        .unwrap();
    let d0 = dump::<C>(&a, pt.root(), false);
    let live = a.live();
    let b = base;
    let cases: Vec<(u64, u64, u64, Attrs, MapFlags, u64)> = vec![
        // (va, pa, size, attrs, flags, va reported)
        (b, PA_BASE + pmd, pmd, rw, MapFlags::LARGEST, b), // other output address
        (b, PA_BASE, pmd, Attrs::NORMAL_RO, MapFlags::LARGEST, b), // other attributes
        (b, PA_BASE, pmd, Attrs::DEVICE_RW, MapFlags::LARGEST, b),
        (b + p, PA_BASE + p, p, rw, MapFlags::LARGEST, b + p), // would split the block
        (b, PA_BASE, pmd, rw, MapFlags::PAGES, b),             // block -> pages
        (b + 2 * pmd, PA_BASE, cont_pte, rw, MapFlags::BLOCKS, b + 2 * pmd), // drop CONT
        (b + 4 * pmd, PA_BASE, cont_pte, rw, MapFlags::LARGEST, b + 4 * pmd), // add CONT
        // Fresh space first (staged, with new tables), conflict at the end.
        (
            b + 3 * pmd,
            PA_BASE + 7 * p,
            pmd + 2 * p,
            rw,
            MapFlags::PAGES,
            b + 4 * pmd,
        ),
        (b - 2 * pmd, PA_BASE + 4096 * p, 2 * pmd + p, rw, MapFlags::LARGEST, b),
    ];
    for (va, pa, size, at, f, at_va) in cases {
        let r = pt.map(&mut a, va, pa, size, at, f);
        assert_eq!(
            r,
            Err(MapError::Reshape { va: at_va }),
            "va={va:#x} size={size:#x} {f:?}"
        );
        assert_eq!(dump::<C>(&a, pt.root(), false), d0, "tables changed, va={va:#x}");
        assert_eq!(a.live(), live, "tables leaked, va={va:#x}");
    }
}

/// The walk records each descriptor from the root down.
fn walker_reports_steps<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let base = va_base::<C>(true);
    let (mut a, mut pt) = new_table::<C>();
    pt.map(
        &mut a,
        base + 5 * p,
        PA_BASE + 5 * p,
        p,
        Attrs::NORMAL_RW,
        MapFlags::LARGEST,
    )
    .unwrap();
    let va = base + 5 * p + 123;
    let w = pt.walk(&a, va);
    assert_eq!(w.n as u32, g.levels());
    let mut table = pt.root();
    for (i, s) in w.steps().iter().enumerate() {
        assert_eq!(s.level, g.start_level() + i as u32);
        assert_eq!(s.table_pa, table);
        assert_eq!(s.index, g.index(va, s.level));
        table = s.desc.output_address();
    }
    assert_eq!(
        w.leaf,
        Some(Leaf {
            pa: PA_BASE + 5 * p + 123,
            level: 3,
            size: p,
            contiguous: false
        })
    );
    // Neighbouring page: same path, fault at the last level.
    let w = pt.walk(&a, va + p);
    assert_eq!((w.n as u32, w.leaf), (g.levels(), None));
    // Other half of the root: fault at the first step.
    if g.entries(g.start_level()) > 1 {
        let w = pt.walk(&a, base ^ g.level_size(g.start_level()));
        assert_eq!((w.n, w.leaf), (1, None));
    }
    // Before anything is mapped the walk stops at the root.
    let (a2, pt2) = new_table::<C>();
    let w = pt2.walk(&a2, base);
    assert_eq!((w.n, w.leaf, w.steps()[0].desc), (1, None, Descriptor::INVALID));
}

/// unmap refuses to split a block or a contiguous run, and changes nothing when it does.
fn unmap_never_splits<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let pmd = g.pmd_size();
    let cont = g.cont_size(3).unwrap();
    let base = va_base::<C>(true);
    let (mut a, mut pt) = new_table::<C>();
    pt.map(&mut a, base, PA_BASE, pmd, Attrs::NORMAL_RW, MapFlags::LARGEST)
        .unwrap();
    pt.map(&mut a, base + pmd, PA_BASE, cont, Attrs::NORMAL_RW, MapFlags::LARGEST)
        .unwrap();
    pt.map(
        &mut a,
        base + 2 * pmd,
        PA_BASE,
        2 * p,
        Attrs::NORMAL_RW,
        MapFlags::PAGES,
    )
    .unwrap();
    for (va, size) in [
        (base, p),               // inside the block
        (base + pmd - p, 2 * p), // block tail + run head
        (base + pmd + p, p),     // inside the run
        (base + pmd, cont - p),  // run minus its last page
        (base - p, 2 * p),       // crossing into the block from below
    ] {
        let r = unmap_checked::<C>(&mut a, &mut pt, true, va, size, None);
        assert_eq!(r, Err(MapError::Misaligned), "va={va:#x} size={size:#x}");
    }
    // Exactly the run, then exactly the block, then one of two pages: fine.
    let s = unmap_checked::<C>(&mut a, &mut pt, true, base + pmd, cont, None).unwrap();
    assert_eq!((s.leaves, s.cont_leaves), (cont / p, cont / p));
    let s = unmap_checked::<C>(&mut a, &mut pt, true, base, pmd, None).unwrap();
    assert_eq!((s.leaves, s.bytes), (1, pmd));
    let s = unmap_checked::<C>(&mut a, &mut pt, true, base + 2 * pmd, p, None).unwrap();
    assert_eq!((s.leaves, s.tables_freed), (1, 0));
    let mut m = Model::default();
    m.insert(base + 2 * pmd + p, p, PA_BASE + p, Attrs::NORMAL_RW.bits());
    check::<C>(&a, &pt, true, &m);
}

/// Every table free comes after the leaf flush and after the walk-cache flush of its span.
fn frees_follow_flushes<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    for high in [false, true] {
        let base = va_base::<C>(high);
        let (mut a, mut pt) = new_table::<C>();
        // Pages under several pte tables plus a block.
        let size = 3 * g.pmd_size();
        pt.map(&mut a, base, PA_BASE, size, Attrs::NORMAL_RW, MapFlags::PAGES)
            .unwrap();
        pt.map(
            &mut a,
            base + size,
            PA_BASE,
            g.pmd_size(),
            Attrs::NORMAL_RW,
            MapFlags::LARGEST,
        )
        .unwrap();
        let s = unmap_checked::<C>(
            &mut a,
            &mut pt,
            high,
            base,
            size + g.pmd_size(),
            Some(region::<C>(high)),
        )
        .unwrap();
        assert_eq!(s.leaves, size / p + 1);
        assert_eq!(s.tables_freed as usize, g.levels() as usize - 2 + 3);
        // The recorded order, spelled out: one range flush, then (pgtable flush, free) pairs.
        let log = a.log();
        let ev = log.borrow();
        let first = ev.iter().position(|e| matches!(e, Event::FlushRange { .. })).unwrap();
        let tail = &ev[first..];
        assert_eq!(tail.iter().filter(|e| matches!(e, Event::FlushRange { .. })).count(), 1);
        for pair in tail[1..].chunks(2) {
            assert!(matches!(pair, [Event::FlushPgtable(_), Event::Free(_)]), "{pair:?}");
        }
        match tail[0] {
            Event::FlushRange {
                start,
                end,
                stride_shift,
            } => {
                assert_eq!(
                    (start, end, stride_shift),
                    (base, base + size + g.pmd_size(), g.page_shift)
                );
            }
            _ => unreachable!(),
        }
        assert_eq!(a.live(), 1);
    }
}

/// Tables are freed only when their whole span is inside [floor, ceiling).
fn floor_ceiling<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let pmd = g.pmd_size();
    let base = va_base::<C>(false);
    let (mut a, mut pt) = new_table::<C>();
    pt.map(&mut a, base, PA_BASE, 4 * p, Attrs::NORMAL_RW, MapFlags::PAGES)
        .unwrap();
    let c0 = pt.count(&a);
    // Part of the pte table: nothing freed, entries cleared.
    let s = unmap_checked::<C>(&mut a, &mut pt, false, base, 4 * p, None).unwrap();
    assert_eq!((s.leaves, s.tables_freed), (4, 0));
    assert_eq!(pt.count(&a).tables, c0.tables);
    // Empty tables are reused by a later map (no new allocation) ...
    let allocs = a.allocs;
    pt.map(&mut a, base, PA_BASE, pmd, Attrs::NORMAL_RW, MapFlags::BLOCKS)
        .unwrap();
    assert_eq!(a.allocs, allocs);
    let c = pt.count(&a);
    assert_eq!(
        (c.blocks(), c.pages()),
        (0, pmd / p),
        "existing pte table reused, not replaced"
    );
    // ... and freed by an unmap whose bounds cover them even if the range does not.
    let s = unmap_checked::<C>(&mut a, &mut pt, false, base, p, Some((base, base + pmd))).unwrap();
    assert_eq!(s.tables_freed, 0, "pte table not empty yet");
    let s = unmap_checked::<C>(&mut a, &mut pt, false, base + p, pmd - p, Some((base, base + pmd))).unwrap();
    assert_eq!(s.tables_freed, 1);
    // Region bounds free the upper levels too.
    pt.map(&mut a, base, PA_BASE, p, Attrs::NORMAL_RW, MapFlags::PAGES)
        .unwrap();
    let s = unmap_checked::<C>(&mut a, &mut pt, false, base, p, Some(region::<C>(false))).unwrap();
    assert_eq!(s.tables_freed as u32, g.levels() - 1);
    assert_eq!(a.live(), 1);
    // The range must lie inside the bounds.
    let mut tlb = RecordingTlb::default();
    assert_eq!(
        pt.unmap_within(&mut a, &mut tlb, base, 2 * p, base + p, 0),
        Err(MapError::OutOfRange)
    );
    assert_eq!(
        pt.unmap_within(&mut a, &mut tlb, base, 2 * p, base, base + p),
        Err(MapError::OutOfRange)
    );
}

/// `populate_tables` links a pte table under every pmd entry of the range and no leaf, all or
/// nothing; base-page maps in the range then allocate nothing.
fn populate_tables_then_map_allocates_nothing<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let pmd = g.pmd_size();
    let base = va_base::<C>(true);
    let (mut a, mut pt) = new_table::<C>();
    // One pmd span of the three already has its pte table (and a page).
    pt.map(&mut a, base + pmd, PA_BASE, p, Attrs::NORMAL_RW, MapFlags::PAGES)
        .unwrap();
    let d0 = dump::<C>(&a, pt.root(), true);
    let live = a.live();
    assert_eq!(pt.populate_tables(&mut a, base, p / 2), Err(MapError::Misaligned));
    let mut n = 0;
    loop {
        a.set_budget(Some(n));
        match pt.populate_tables(&mut a, base, 3 * pmd) {
            Err(MapError::NoMemory) => {
                assert_eq!(dump::<C>(&a, pt.root(), true), d0, "budget {n}");
                assert_eq!(a.live(), live, "budget {n}");
                n += 1;
            }
            Ok(()) => break,
            r => panic!("budget {n}: {r:?}"),
        }
    }
    assert_eq!(n as usize, a.live() - live, "every table allocated is kept");
    assert!(n >= 2, "two new pte tables at least");
    let d = dump::<C>(&a, pt.root(), true);
    assert_eq!(d.leaves, d0.leaves, "no leaf created");
    assert!(d.bad.is_empty());
    for i in 0..3 {
        let w = pt.walk(&a, base + i * pmd);
        let last = w.steps[w.n - 1];
        assert_eq!(last.level, 3, "pmd span {i}: the walk reaches a pte table");
        assert_eq!(w.leaf.is_some(), i == 1, "pmd span {i}");
    }
    // Populating again finds everything there.
    a.set_budget(Some(0));
    pt.populate_tables(&mut a, base, 3 * pmd).unwrap();
    // Base pages over the two new spans need no table.
    for va in [base, base + 2 * pmd] {
        pt.map(&mut a, va, PA_BASE + 2 * pmd, pmd, Attrs::NORMAL_RW, MapFlags::PAGES)
            .unwrap();
    }
    a.set_budget(None);
}

/// Allocation failure at every point of a map leaves the tree and the allocator unchanged.
fn no_memory_rolls_back<C: Config>() {
    let g = geo::<C>();
    let p = page::<C>();
    let base = va_base::<C>(true);
    let (mut a, mut pt) = new_table::<C>();
    pt.map(
        &mut a,
        base + g.pmd_size(),
        PA_BASE,
        p,
        Attrs::NORMAL_RW,
        MapFlags::PAGES,
    )
    .unwrap();
    let d0 = dump::<C>(&a, pt.root(), true);
    let live = a.live();
    // Pages over three pmd spans, half of which already has tables.
    let (va, size) = (base, 3 * g.pmd_size());
    let mut n = 0;
    loop {
        a.set_budget(Some(n));
        match pt.map(&mut a, va, PA_BASE, size, Attrs::NORMAL_RW, MapFlags::PAGES) {
            Err(MapError::NoMemory) => {
                assert_eq!(dump::<C>(&a, pt.root(), true), d0, "budget {n}");
                assert_eq!(a.live(), live, "budget {n}");
                n += 1;
            }
            Err(MapError::Reshape { va: v }) => {
                // The existing page at base + pmd has another PA: found before running out.
                assert_eq!(v, base + g.pmd_size());
                break;
            }
            r => panic!("budget {n}: {r:?}"),
        }
    }
    assert!(n >= 1);
    a.set_budget(None);
    // Without the conflict it succeeds once the budget is large enough.
    let mut n = 0;
    loop {
        a.set_budget(Some(n));
        match pt.map(
            &mut a,
            va,
            PA_BASE - g.pmd_size(),
            size,
            Attrs::NORMAL_RW,
            MapFlags::PAGES,
        ) {
            Err(MapError::NoMemory) => {
                assert_eq!(dump::<C>(&a, pt.root(), true), d0);
                assert_eq!(a.live(), live);
                n += 1;
            }
            Ok(()) => break,
            r => panic!("budget {n}: {r:?}"),
        }
    }
    assert_eq!(n, 2, "two new pte tables needed");
    a.set_budget(None);
    let mut m = Model::default();
    m.insert(va, size, PA_BASE - g.pmd_size(), Attrs::NORMAL_RW.bits());
    check::<C>(&a, &pt, true, &m);
    // The root allocation itself can fail.
    let mut empty = HostTables::new(p);
    empty.set_budget(Some(0));
    assert!(matches!(PageTable::<C>::new(&mut empty), Err(MapError::NoMemory)));
}

// ---------------------------------------------------------------------------------------------
// Property test: random sequences of maps and unmaps against the model.

#[derive(Clone, Debug)]
struct Place {
    unit: u8,
    count: u8,
    pages: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        at: Place,
        len: Place,
        slot: u8,
        skew: u8,
        attrs: u8,
        block: bool,
        cont: bool,
    },
    Unmap {
        at: Place,
        len: Place,
        region: bool,
    },
}

fn place() -> impl Strategy<Value = Place> {
    (any::<u8>(), 0u8..4, prop_oneof![3 => Just(0u8), 1 => 0u8..4]).prop_map(|(unit, count, pages)| Place {
        unit,
        count,
        pages,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (place(), place(), 0u8..2, prop_oneof![3 => Just(0u8), 1 => 0u8..3], 0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(at, len, slot, skew, attrs, block, cont)| Op::Map { at, len, slot, skew, attrs, block, cont }),
        2 => (place(), place(), any::<bool>()).prop_map(|(at, len, region)| Op::Unmap { at, len, region }),
    ]
}

fn resolve<C: Config>(pl: &Place) -> u64 {
    let lad = ladder::<C>();
    lad[pl.unit as usize % lad.len()] * pl.count as u64 + page::<C>() * pl.pages as u64
}

fn run_ops<C: Config>(high: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let p = page::<C>();
    let big = biggest::<C>();
    let base = va_base::<C>(high);
    let (mut a, mut pt) = new_table::<C>();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Map {
                at,
                len,
                slot,
                skew,
                attrs,
                block,
                cont,
            } => {
                let va = base + resolve::<C>(at);
                let mut size = resolve::<C>(len).max(p);
                let flags = MapFlags {
                    block: *block,
                    cont: *cont,
                };
                // Keep base-page mappings small: the checks visit every leaf.
                if (!flags.block || *skew != 0) && size / p > 1 << 12 {
                    size = p << 12;
                }
                let pa = PA_BASE + *slot as u64 * 8 * big + (va - base) + *skew as u64 * p;
                let at = attrs_of(*attrs);
                let before = dump::<C>(&a, pt.root(), high);
                let live = a.live();
                let overlap = model.overlaps(va, size);
                match pt.map(&mut a, va, pa, size, at, flags) {
                    Ok(()) => {
                        // Only an identical translation may have been there already.
                        for (s, sz, opa, oat) in overlap {
                            let lo = s.max(va);
                            prop_assert_eq!(opa + (lo - s), pa + (lo - va), "remapped {:#x}", lo);
                            prop_assert_eq!(oat, at.bits());
                            let _ = sz;
                        }
                        model.insert(va, size, pa, at.bits());
                    }
                    Err(MapError::Reshape { va: v }) => {
                        prop_assert!(!overlap.is_empty(), "Reshape without an overlap");
                        prop_assert!(v >= va && v < va + size);
                        prop_assert_eq!(dump::<C>(&a, pt.root(), high), before);
                        prop_assert_eq!(a.live(), live);
                    }
                    Err(e) => prop_assert!(false, "map failed: {:?}", e),
                }
            }
            Op::Unmap { at, len, region: whole } => {
                let va = base + resolve::<C>(at);
                let size = resolve::<C>(len).max(p);
                let last = va + (size - 1);
                // Expected: Misaligned iff a leaf or run overlapping the range sticks out.
                let g = geo::<C>();
                let d = dump::<C>(&a, pt.root(), high);
                let splits = d.leaves.iter().any(|l| {
                    let mut sz = l.size;
                    if l.desc.is_contiguous() {
                        sz = g.cont_size(l.level).unwrap();
                    }
                    let s = l.va & !(sz - 1);
                    l.va <= last && l.va + (l.size - 1) >= va && (s < va || s + (sz - 1) > last)
                });
                let bounds = if *whole { Some(region::<C>(high)) } else { None };
                match unmap_checked::<C>(&mut a, &mut pt, high, va, size, bounds) {
                    Ok(_) => {
                        prop_assert!(!splits);
                        model.remove(va, size);
                    }
                    Err(MapError::Misaligned) => prop_assert!(splits),
                    Err(e) => prop_assert!(false, "unmap failed: {:?}", e),
                }
            }
        }
        check::<C>(&a, &pt, high, &model);
    }
    // Tear everything down: back to the root alone.
    let (f, c) = region::<C>(high);
    let span = 16 * big;
    unmap_checked::<C>(&mut a, &mut pt, high, base, span, Some((f, c))).unwrap();
    prop_assert_eq!(pt.count(&a).tables, 1);
    prop_assert_eq!(a.live(), 1);
    Ok(())
}

fn random_operations<C: Config>() {
    let cases = std::env::var("PGTABLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let cfg = PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    };
    let mut runner = TestRunner::new(cfg);
    runner
        .run(&(any::<bool>(), prop::collection::vec(op(), 1..10)), |(high, ops)| {
            run_ops::<C>(high, &ops)
        })
        .unwrap();
}
