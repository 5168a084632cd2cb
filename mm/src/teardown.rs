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

#[derive(Default, Debug)]
pub struct TeardownChecker {
    /// Valid entries by `pa_size`, then by (pa, va): the overlap search of a free is one
    /// range query per size class (a few), not a scan over every page-sized entry below a
    /// block-sized one.
    live: BTreeMap<u64, BTreeMap<(u64, u64), Mapping>>,
    pending: Vec<Mapping>,
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
        self.pending.push(m);
    }

    /// One TLBI instruction completed: retire the pending entries it covers. A local
    /// (non-broadcast) TLBI retires nothing: the other CPUs may still hold the entries.
    pub fn invalidated(&mut self, op: Tlbi) {
        self.invalidations += 1;
        if !op.broadcast() {
            return;
        }
        let shift = self.page_shift;
        self.pending.retain(|p| !op.covers(p.va, p.size, p.table, shift));
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
        self.pending
            .iter()
            .find(|p| overlaps(p.pa, p.pa_size, pa, size))
            .copied()
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
        if let Some(p) = self.pending.iter().find(|p| inside(p)).copied() {
            return self.refuse(ViolationKind::RemovedWhilePending, va, size, p);
        }
        let hit = self.live.values().flat_map(|c| c.values()).find(|m| inside(m)).copied();
        match hit {
            Some(m) => self.refuse(ViolationKind::RemovedWhileMapped, va, size, m),
            None => Ok(()),
        }
    }

    pub fn pending(&self) -> &[Mapping] {
        &self.pending
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
        assert!(c.pending().is_empty());
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
}
