//! The teardown-order checker: "freed while still mapped or not yet invalidated" detected at
//! run time.
//!
//! Rule (docs/teardown.md): an entry is cleared, then the TLB is invalidated
//! (broadcast, with barriers, by an instruction that covers it: a last-level TLBI for a leaf,
//! a walk-cache TLBI for a table entry), and only then may the page it pointed at — a leaf's
//! backing page or a table page — be freed. The checker sees both directions of every entry
//! change of the page-table engine (made valid: [`TeardownChecker::made_valid`]; cleared:
//! [`TeardownChecker::cleared`]), every TLBI instruction decoded from its real operand
//! ([`TeardownChecker::invalidated`]), and every free, and keeps
//!
//! - the **live** entries (valid now) and
//! - the **pending** entries (cleared, not yet covered by an invalidation).
//!
//! It refuses ([`Violation`]):
//! - freeing a page to an allocator ([`TeardownChecker::freeing`]) that a pending entry points
//!   at, or that a live entry maps or points at — except the linear map's own alias of RAM
//!   (every allocator page is mapped there, by design);
//! - releasing a range to the hypervisor ([`TeardownChecker::released`]) while *any* entry,
//!   the linear alias included, still maps it or is pending;
//! - ending a removal ([`TeardownChecker::quiescent`]) while a leaf of the removed VA range
//!   (linear map, vmemmap) is live or pending.
//!
//! A leaf-only TLBI (`VAALE1IS`, `RVAALE1IS`) never retires a pending **table** entry: it
//! does not clean walk caches. A per-VA TLBI retires only the entries translating that VA, so
//! a per-leaf flush at block stride over page leaves leaves most of them pending.
//!
//! Host tests use it with recording doubles; the kernel's test build runs it on every
//! page-table change and every free; the release kernel does not build it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
pub use arch::tlb::{Mapping, Tlbi};

/// What was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A page was freed while a cleared entry pointing at it was not yet invalidated.
    FreedWhilePending,
    /// A page was freed while a valid entry still maps it (or points at it as a table).
    FreedWhileMapped,
    /// Removed memory still has a valid or a pending entry (VA or PA overlap).
    RemovedWhileMapped,
    /// Removed memory still has a pending entry: its invalidation was dropped.
    RemovedWhilePending,
    /// Entries were made valid and the engine never published them (`DSB ISHST; ISB`).
    Unpublished,
}

/// A refused free or removal, with the entry that made it unsafe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The PA range freed, or the VA range removed.
    pub addr: u64,
    pub size: u64,
    pub entry: Mapping,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let e = &self.entry;
        let what = if e.table { "table entry" } else { "leaf" };
        let (verb, state) = match self.kind {
            ViolationKind::FreedWhilePending => ("page pa", "was cleared but not yet invalidated"),
            ViolationKind::FreedWhileMapped => ("page pa", "is still valid (freed before unmap)"),
            ViolationKind::RemovedWhileMapped => ("removed range", "is still valid"),
            ViolationKind::RemovedWhilePending => ("removed range", "was cleared but never invalidated"),
            ViolationKind::Unpublished => ("at pa", "was made valid but never published with DSB ISHST; ISB"),
        };
        write!(
            f,
            "{verb}={:#x} size={:#x}: the {what} for va={:#x} size={:#x} (-> pa={:#x}) {state}",
            self.addr, self.size, e.va, e.size, e.pa
        )
    }
}

/// `n` cleared entries back to back: entry `i` is `first` moved by `i` entries in VA and in
/// PA. Clearing a range entry by entry extends one run, so the checker's memory stays small
/// however much is cleared before one flush (a 128 MiB window of 4K leaves is one run, not
/// 32768 entries).
#[derive(Clone, Copy, Debug)]
struct Run {
    first: Mapping,
    n: u64,
}

impl Run {
    fn entry(&self, i: u64) -> Mapping {
        let f = self.first;
        Mapping {
            va: f.va.wrapping_add(i * f.size),
            pa: f.pa.wrapping_add(i * f.pa_size),
            ..f
        }
    }

    /// Whether `m` is the entry right after the run's last.
    fn continued_by(&self, m: &Mapping) -> bool {
        let next = self.entry(self.n);
        m.table == next.table && m.size == next.size && m.pa_size == next.pa_size && m.va == next.va && m.pa == next.pa
    }

    /// The run's entry translating `va`, if any (VA arithmetic modulo 2^64: a run may end at
    /// the top of the address space).
    fn index_of_va(&self, va: u64) -> Option<u64> {
        let i = va.wrapping_sub(self.first.va) / self.first.size;
        (i < self.n).then_some(i)
    }

    /// The first entry pointing into `[pa, pa + size)`.
    fn over_pa(&self, pa: u64, size: u64) -> Option<Mapping> {
        let f = self.first;
        if !overlaps(f.pa, self.n * f.pa_size, pa, size) {
            return None;
        }
        Some(self.entry((pa.saturating_sub(f.pa) / f.pa_size).min(self.n - 1)))
    }

    /// What is left of the run once `op` has invalidated what it covers, as runs.
    fn retire(self, op: Tlbi, page_shift: u32, out: &mut Vec<Run>) {
        let covered = |i: u64| {
            let m = self.entry(i);
            op.covers(m.va, m.size, m.table, page_shift)
        };
        match op {
            Tlbi::Vmalle1is => {}
            // One VA: at most one entry goes, splitting the run in two.
            Tlbi::Vaae1is(o) | Tlbi::Vaale1is(o) => match self.index_of_va(arch::tlb::decode_va_operand(o)) {
                Some(i) if covered(i) => {
                    out.extend(
                        [
                            Run { n: i, ..self },
                            Run {
                                first: self.entry(i + 1),
                                n: self.n - i - 1,
                            },
                        ]
                        .into_iter()
                        .filter(|r| r.n > 0),
                    );
                }
                _ => out.push(self),
            },
            // Anything else: entry by entry, keeping the uncovered stretches.
            _ => {
                let mut i = 0;
                while i < self.n {
                    let start = i;
                    while i < self.n && !covered(i) {
                        i += 1;
                    }
                    if i > start {
                        out.push(Run {
                            first: self.entry(start),
                            n: i - start,
                        });
                    }
                    while i < self.n && covered(i) {
                        i += 1;
                    }
                }
            }
        }
    }
}

#[derive(Default, Debug)]
pub struct TeardownChecker {
    /// Valid entries by `pa_size`, then by (pa, va): the overlap search of a free is one
    /// range query per size class (a few), not a scan over every page-sized entry below a
    /// block-sized one.
    live: BTreeMap<u64, BTreeMap<(u64, u64), Mapping>>,
    /// Cleared entries not yet covered by an invalidation, as runs (see [`Run`]).
    pending: Vec<Run>,
    /// Granule of the TLBI operands.
    page_shift: u32,
    /// The linear map: its live leaves alias every RAM page and do not make a free unsafe.
    alias: (u64, u64),
    /// The last entry made valid since the engine last published (`None`: all published).
    unpublished: Option<Mapping>,
    /// Violations seen (kept so a test can assert on them after the fact).
    pub violations: Vec<Violation>,
    /// Counters, for reports.
    pub made_valid: u64,
    pub clears: u64,
    pub invalidations: u64,
    pub frees_checked: u64,
}

/// Whether `[a, a + a_size)` and `[b, b + b_size)` intersect (sizes > 0; a range may end at
/// the top of the address space).
fn overlaps(a: u64, a_size: u64, b: u64, b_size: u64) -> bool {
    a <= b.wrapping_add(b_size - 1) && b <= a.wrapping_add(a_size - 1)
}

impl TeardownChecker {
    pub const fn new() -> Self {
        TeardownChecker {
            live: BTreeMap::new(),
            pending: Vec::new(),
            page_shift: 12,
            alias: (0, 0),
            unpublished: None,
            violations: Vec::new(),
            made_valid: 0,
            clears: 0,
            invalidations: 0,
            frees_checked: 0,
        }
    }

    /// A checker for granule `page_shift` whose linear map is `[alias_start, alias_end)`.
    pub fn with_config(page_shift: u32, alias: (u64, u64)) -> Self {
        let mut c = Self::new();
        c.configure(page_shift, alias);
        c
    }

    pub fn configure(&mut self, page_shift: u32, alias: (u64, u64)) {
        self.page_shift = page_shift;
        self.alias = alias;
    }

    fn is_alias(&self, m: &Mapping) -> bool {
        !m.table && m.va >= self.alias.0 && m.va.wrapping_add(m.size - 1) < self.alias.1
    }

    /// The engine made `m` valid.
    pub fn made_valid(&mut self, m: Mapping) {
        self.made_valid += 1;
        self.live.entry(m.pa_size).or_default().insert((m.pa, m.va), m);
        self.unpublished = Some(m);
    }

    /// The engine issued `DSB ISHST; ISB` after making entries valid.
    pub fn published(&mut self) {
        self.unpublished = None;
    }

    /// Refused if an entry was made valid and never published (checked on every free and
    /// removal, i.e. long after the `map` that should have published it returned).
    fn check_published(&mut self, addr: u64, size: u64) -> Result<(), Violation> {
        match self.unpublished {
            Some(m) => self.refuse(ViolationKind::Unpublished, addr, size, m),
            None => Ok(()),
        }
    }

    /// The engine cleared `m`: it is pending until an invalidation covers it.
    pub fn cleared(&mut self, m: Mapping) {
        self.clears += 1;
        if let Some(class) = self.live.get_mut(&m.pa_size) {
            class.remove(&(m.pa, m.va));
            if class.is_empty() {
                self.live.remove(&m.pa_size);
            }
        }
        match self.pending.last_mut() {
            Some(run) if run.continued_by(&m) => run.n += 1,
            _ => self.pending.push(Run { first: m, n: 1 }),
        }
    }

    /// One TLBI instruction completed: retire the pending entries it covers. A local
    /// (non-broadcast) TLBI retires nothing: the other CPUs may still hold the entries.
    pub fn invalidated(&mut self, op: Tlbi) {
        self.invalidations += 1;
        if !op.broadcast() {
            return;
        }
        let shift = self.page_shift;
        let mut left = Vec::with_capacity(self.pending.len());
        for run in self.pending.drain(..) {
            run.retire(op, shift, &mut left);
        }
        self.pending = left;
    }

    fn refuse(&mut self, kind: ViolationKind, addr: u64, size: u64, entry: Mapping) -> Result<(), Violation> {
        let v = Violation {
            kind,
            addr,
            size,
            entry,
        };
        self.violations.push(v);
        Err(v)
    }

    /// Live entries whose PA range overlaps `[pa, pa + size)`.
    fn live_at(&self, pa: u64, size: u64) -> impl Iterator<Item = &Mapping> {
        self.live.iter().flat_map(move |(&class, entries)| {
            let lo = pa.saturating_sub(class - 1);
            entries
                .range((lo, 0)..(pa.saturating_add(size), 0))
                .map(|(_, m)| m)
                .filter(move |m| overlaps(m.pa, m.pa_size, pa, size))
        })
    }

    /// A cleared, not yet invalidated entry pointing into `[pa, pa + size)`.
    fn pending_over(&self, pa: u64, size: u64) -> Option<Mapping> {
        self.pending.iter().find_map(|r| r.over_pa(pa, size))
    }

    /// `[pa, pa + size)` is about to go back to an allocator: refused if a pending entry points
    /// into it, or a live one other than the linear alias maps it.
    pub fn freeing(&mut self, pa: u64, size: u64) -> Result<(), Violation> {
        self.frees_checked += 1;
        self.check_published(pa, size)?;
        if let Some(p) = self.pending_over(pa, size) {
            return self.refuse(ViolationKind::FreedWhilePending, pa, size, p);
        }
        let hit = self.live_at(pa, size).find(|m| !self.is_alias(m)).copied();
        match hit {
            Some(m) => self.refuse(ViolationKind::FreedWhileMapped, pa, size, m),
            None => Ok(()),
        }
    }

    /// `[pa, pa + size)` leaves the machine (hot-remove): nothing may map it any more, the
    /// linear alias included, and no cleared entry of it may still be cached.
    pub fn released(&mut self, pa: u64, size: u64) -> Result<(), Violation> {
        self.frees_checked += 1;
        self.check_published(pa, size)?;
        if let Some(p) = self.pending_over(pa, size) {
            return self.refuse(ViolationKind::RemovedWhilePending, pa, size, p);
        }
        let hit = self.live_at(pa, size).next().copied();
        match hit {
            Some(m) => self.refuse(ViolationKind::RemovedWhileMapped, pa, size, m),
            None => Ok(()),
        }
    }

    /// The VA range `[va, va + size)` was removed: no leaf of it, and no table entry wholly
    /// inside it, may be live or pending.
    pub fn quiescent(&mut self, va: u64, size: u64) -> Result<(), Violation> {
        let inside = |m: &Mapping| {
            if m.table {
                m.va >= va && m.va.wrapping_add(m.size - 1) <= va.wrapping_add(size - 1)
            } else {
                overlaps(m.va, m.size, va, size)
            }
        };
        let pending = self.pending.iter().flat_map(|r| (0..r.n).map(|i| r.entry(i)));
        if let Some(p) = pending.clone().find(|p| inside(p)) {
            return self.refuse(ViolationKind::RemovedWhilePending, va, size, p);
        }
        let hit = self.live.values().flat_map(|c| c.values()).find(|m| inside(m)).copied();
        match hit {
            Some(m) => self.refuse(ViolationKind::RemovedWhileMapped, va, size, m),
            None => Ok(()),
        }
    }

    /// Cleared entries not yet invalidated.
    pub fn pending_count(&self) -> u64 {
        self.pending.iter().map(|r| r.n).sum()
    }

    /// Valid entries the checker knows of.
    pub fn live(&self) -> usize {
        self.live.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arch::tlb::{va_operand, RangeOp, RangeOperand};

    const VA: u64 = 0xffff_8000_0000_0000;

    fn leaf(va: u64, size: u64, pa: u64) -> Mapping {
        Mapping {
            va,
            size,
            pa,
            pa_size: size,
            table: false,
        }
    }

    fn table(va: u64, size: u64, pa: u64) -> Mapping {
        Mapping {
            va,
            size,
            pa,
            pa_size: 4096,
            table: true,
        }
    }

    #[test]
    fn free_after_invalidate_is_fine_free_before_is_caught() {
        let mut c = TeardownChecker::new();
        c.made_valid(leaf(VA, 4096, 0x4000_0000));
        assert_eq!(
            c.freeing(0x5000_0000, 4096).unwrap_err().kind,
            ViolationKind::Unpublished
        );
        c.published();
        assert_eq!(c.freeing(0x5000_0000, 4096), Ok(()));
        let v = c.freeing(0x4000_0000, 4096).unwrap_err();
        assert_eq!(v.kind, ViolationKind::FreedWhileMapped, "freed before unmap");
        c.cleared(leaf(VA, 4096, 0x4000_0000));
        let v = c.freeing(0x4000_0000, 4096).unwrap_err();
        assert_eq!(v.kind, ViolationKind::FreedWhilePending);
        c.invalidated(Tlbi::Vaale1is(va_operand(VA)));
        assert_eq!(c.freeing(0x4000_0000, 4096), Ok(()));
        assert_eq!(c.pending_count(), 0);
    }

    #[test]
    fn table_entries_need_a_walk_cache_invalidation() {
        let mut c = TeardownChecker::new();
        // A PMD entry covering 2 MiB pointing at a 4K table page.
        let t = table(VA + (2 << 20), 2 << 20, 0x5000_0000);
        c.made_valid(t);
        c.published();
        assert_eq!(
            c.freeing(0x5000_0000, 4096).unwrap_err().kind,
            ViolationKind::FreedWhileMapped
        );
        c.cleared(t);
        assert!(c.freeing(0x5000_0000, 4096).is_err());
        // Leaf-only invalidations do not clean walk caches, per-VA or range.
        c.invalidated(Tlbi::Vaale1is(va_operand(VA + (2 << 20))));
        let r = RangeOperand::for_op(
            RangeOp {
                base: (VA + (2 << 20)) >> 12,
                scale: 1,
                num: 7,
                pages: 512,
            },
            12,
        );
        c.invalidated(Tlbi::Rvaale1is(r.encode()));
        assert!(
            c.freeing(0x5000_0000, 4096).is_err(),
            "a leaf-only TLBI retired a table entry"
        );
        c.invalidated(Tlbi::Vaae1is(va_operand(VA + (2 << 20))));
        assert!(c.freeing(0x5000_0000, 4096).is_ok());
    }

    #[test]
    fn block_stride_over_page_leaves_covers_only_one() {
        let mut c = TeardownChecker::new();
        for i in 0..4 {
            c.cleared(leaf(VA + i * 4096, 4096, 0x9000 + i * 4096));
        }
        // One per-VA TLBI at 2 MiB stride: only the first page is covered.
        c.invalidated(Tlbi::Vaale1is(va_operand(VA)));
        assert!(c.freeing(0x9000, 4096).is_ok());
        assert!(c.freeing(0xa000, 4096).is_err());
        c.invalidated(Tlbi::Vmalle1is);
        assert!(c.freeing(0x9000, 0x4000).is_ok());
    }

    #[test]
    fn linear_alias_allows_frees_but_not_removal() {
        let mut c = TeardownChecker::with_config(12, (VA, VA + (1 << 40)));
        let m = leaf(VA + (1 << 30), 1 << 30, 1 << 30);
        c.made_valid(m);
        c.published();
        assert!(
            c.freeing((1 << 30) + 4096, 4096).is_ok(),
            "the linear alias is not a user"
        );
        assert_eq!(
            c.released(1 << 30, 1 << 30).unwrap_err().kind,
            ViolationKind::RemovedWhileMapped
        );
        c.cleared(m);
        assert_eq!(
            c.released(1 << 30, 1 << 30).unwrap_err().kind,
            ViolationKind::RemovedWhilePending
        );
        assert!(c.quiescent(VA + (1 << 30), 1 << 30).is_err());
        c.invalidated(Tlbi::Vaale1is(va_operand(VA + (1 << 30) + 4096)));
        assert!(c.released(1 << 30, 1 << 30).is_ok());
        assert!(c.quiescent(VA + (1 << 30), 1 << 30).is_ok());
    }

    #[test]
    fn partial_invalidation_does_not_count() {
        let mut c = TeardownChecker::new();
        c.cleared(leaf(0x1000, 0x2000, 0x9000));
        c.invalidated(Tlbi::Vaale1is(va_operand(0x3000)));
        assert!(
            c.freeing(0x9000, 0x1000).is_err(),
            "a TLBI of the next VA does not count"
        );
        c.invalidated(Tlbi::Vmalle1is);
        assert!(c.freeing(0x9000, 0x2000).is_ok());
    }

    #[test]
    fn a_long_clear_is_one_run_and_retires_entry_by_entry() {
        let mut c = TeardownChecker::new();
        let n = 100_000u64;
        for i in 0..n {
            c.cleared(leaf(VA + i * 4096, 4096, 0x4000_0000 + i * 4096));
        }
        assert_eq!((c.pending.len(), c.pending_count()), (1, n), "one run");
        // A per-VA TLBI in the middle splits it; the neighbours stay pending.
        c.invalidated(Tlbi::Vaale1is(va_operand(VA + 500 * 4096)));
        assert_eq!((c.pending.len(), c.pending_count()), (2, n - 1));
        assert!(c.freeing(0x4000_0000 + 500 * 4096, 4096).is_ok());
        let v = c.freeing(0x4000_0000 + 499 * 4096, 2 * 4096).unwrap_err();
        assert_eq!(
            (v.kind, v.entry.va),
            (ViolationKind::FreedWhilePending, VA + 499 * 4096)
        );
        let v = c.freeing(0x4000_0000 + 500 * 4096, 2 * 4096).unwrap_err();
        assert_eq!(
            v.entry.va,
            VA + 501 * 4096,
            "the first pending entry of the freed range"
        );
        // A local TLBI retires nothing; a range TLBI retires exactly its pages.
        c.invalidated(Tlbi::Vaale1(va_operand(VA)));
        assert_eq!(c.pending_count(), n - 1);
        let r = RangeOperand::for_op(
            RangeOp {
                base: (VA >> 12) + 1000,
                scale: 0,
                num: 31,
                pages: 64,
            },
            12,
        );
        c.invalidated(Tlbi::Rvaale1is(r.encode()));
        assert_eq!((c.pending.len(), c.pending_count()), (3, n - 65));
        assert!(c.freeing(0x4000_0000 + 1000 * 4096, 64 * 4096).is_ok());
        assert!(c.freeing(0x4000_0000 + 1064 * 4096, 4096).is_err());
        assert!(c.quiescent(VA + 1000 * 4096, 64 * 4096).is_ok());
        assert_eq!(c.quiescent(VA, 4096).unwrap_err().entry.va, VA);
        let deep = VA + 2000 * 4096;
        assert_eq!(c.quiescent(deep, 4096).unwrap_err().entry.va, deep);
        c.invalidated(Tlbi::Vmalle1is);
        assert_eq!(c.pending_count(), 0);
    }

    #[test]
    fn runs_join_only_entries_back_to_back() {
        let mut c = TeardownChecker::new();
        c.cleared(leaf(VA, 4096, 0x9000));
        c.cleared(leaf(VA + 4096, 4096, 0x1_0000)); // PA not next
        c.cleared(leaf(VA + 2 * 4096, 4096, 0x1_1000));
        c.cleared(table(VA + 3 * 4096, 4096, 0x1_2000)); // a table, not a leaf
        c.cleared(leaf(VA + 5 * 4096, 4096, 0x1_4000)); // VA not next
        assert_eq!((c.pending.len(), c.pending_count()), (4, 5));
        // The last page of the address space and the run does not wrap into nonsense.
        let top = 0u64.wrapping_sub(2 * 4096);
        let mut c = TeardownChecker::new();
        c.cleared(leaf(top, 4096, 0x9000));
        c.cleared(leaf(top + 4096, 4096, 0xa000));
        assert_eq!(c.pending.len(), 1);
        c.invalidated(Tlbi::Vaale1is(va_operand(top + 4096)));
        assert!(c.freeing(0xa000, 4096).is_ok());
        assert!(c.freeing(0x9000, 4096).is_err());
    }
}
