//! The teardown-order checker: "freed before invalidated" detected at run time.
//!
//! Rule (DESIGN §7): an entry is cleared, then the TLB is invalidated (broadcast, with
//! barriers), and only then may the page it pointed at — a leaf's backing page or a table
//! page — be freed. The checker sees every clear (`cleared`, called by the page-table engine
//! through [`arch::tlb::TlbInvalidate::cleared`]), every invalidation, and every free, and
//! reports a [`Violation`] when a page is freed while an entry that pointed at it is cleared
//! but not yet invalidated. Host tests use it with recording doubles; the kernel's test build
//! runs it on every page-table change.

use alloc::vec::Vec;

/// An entry cleared but not yet invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// VA range the entry translated.
    pub va: u64,
    pub size: u64,
    /// PA range it pointed at (the backing of a leaf, or the next-level table page).
    pub pa: u64,
    pub pa_size: u64,
}

/// A page was freed while a stale translation of it could still be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub freed_pa: u64,
    pub freed_size: u64,
    pub stale: Pending,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "page pa={:#x} size={:#x} freed while the entry for va={:#x} size={:#x} (-> pa={:#x}) was cleared but not yet invalidated",
            self.freed_pa, self.freed_size, self.stale.va, self.stale.size, self.stale.pa
        )
    }
}

#[derive(Default, Debug)]
pub struct TeardownChecker {
    pending: Vec<Pending>,
    /// Violations seen (kept so a test can assert on them after the fact).
    pub violations: Vec<Violation>,
    /// Counters, for reports.
    pub clears: u64,
    pub invalidations: u64,
    pub frees_checked: u64,
}

impl TeardownChecker {
    pub const fn new() -> Self {
        TeardownChecker {
            pending: Vec::new(),
            violations: Vec::new(),
            clears: 0,
            invalidations: 0,
            frees_checked: 0,
        }
    }

    /// An entry translating `[va, va + size)` to `[pa, pa + pa_size)` was cleared.
    pub fn cleared(&mut self, va: u64, size: u64, pa: u64, pa_size: u64) {
        self.clears += 1;
        self.pending.push(Pending { va, size, pa, pa_size });
    }

    /// Leaf (or walk-cache) entries of `[start, end)` were invalidated on all CPUs.
    pub fn invalidated(&mut self, start: u64, end: u64) {
        self.invalidations += 1;
        self.pending
            .retain(|p| !(p.va >= start && p.va.wrapping_add(p.size) <= end));
    }

    /// The walk cache for the table entry covering `va` was invalidated: drop the pending
    /// table entries covering `va` (VAAE1IS invalidates every level's entry for `va`).
    pub fn invalidated_pgtable(&mut self, va: u64) {
        self.invalidations += 1;
        self.pending.retain(|p| !(va >= p.va && va < p.va.wrapping_add(p.size)));
    }

    pub fn invalidated_all(&mut self) {
        self.invalidations += 1;
        self.pending.clear();
    }

    /// `[pa, pa + size)` is about to be freed: fine unless a pending entry points into it.
    pub fn freeing(&mut self, pa: u64, size: u64) -> Result<(), Violation> {
        self.frees_checked += 1;
        let hit = self
            .pending
            .iter()
            .find(|p| p.pa < pa + size && pa < p.pa + p.pa_size)
            .copied();
        match hit {
            None => Ok(()),
            Some(stale) => {
                let v = Violation {
                    freed_pa: pa,
                    freed_size: size,
                    stale,
                };
                self.violations.push(v);
                Err(v)
            }
        }
    }

    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_after_invalidate_is_fine_free_before_is_caught() {
        let mut c = TeardownChecker::new();
        c.cleared(0xffff_0000_0000_0000, 4096, 0x4000_0000, 4096);
        let v = c.freeing(0x4000_0000, 4096).unwrap_err();
        assert_eq!(v.freed_pa, 0x4000_0000);
        c.invalidated(0xffff_0000_0000_0000, 0xffff_0000_0000_1000);
        assert_eq!(c.freeing(0x4000_0000, 4096), Ok(()));
        assert!(c.pending().is_empty());
    }

    #[test]
    fn table_entries_need_a_walk_cache_invalidation() {
        let mut c = TeardownChecker::new();
        // A PMD entry covering 2 MiB pointing at a 4K table page.
        c.cleared(0xffff_0000_0020_0000, 2 << 20, 0x5000_0000, 4096);
        assert!(c.freeing(0x5000_0000, 4096).is_err());
        c.invalidated_pgtable(0xffff_0000_0020_0000);
        assert!(c.freeing(0x5000_0000, 4096).is_ok());
    }

    #[test]
    fn partial_invalidation_does_not_count() {
        let mut c = TeardownChecker::new();
        c.cleared(0x1000, 0x2000, 0x9000, 0x2000);
        c.invalidated(0x1000, 0x2000);
        assert!(
            c.freeing(0x9000, 0x1000).is_err(),
            "half of the entry's range is not enough"
        );
        c.invalidated_all();
        assert!(c.freeing(0x9000, 0x2000).is_ok());
    }
}
