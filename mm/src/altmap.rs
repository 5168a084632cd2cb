//! The altmap (Linux `struct vmem_altmap`): memmap backing pages taken from the hot-added range
//! itself ("memmap on memory"), so adding memory costs no existing memory.

/// A range of PFNs at the start of a hot-added block set aside for its own memmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Altmap {
    /// First PFN of the range the altmap serves.
    pub base_pfn: u64,
    /// Last PFN of that range (inclusive, like Linux).
    pub end_pfn: u64,
    /// PFNs at the start owned by someone else, never used for memmap.
    pub reserve: u64,
    /// PFNs available for memmap storage (after `reserve`).
    pub free: u64,
    /// PFNs skipped to align chunks.
    pub align: u64,
    /// PFNs currently handed out.
    pub alloc: u64,
}

/// The altmap cannot satisfy a request (it was sized too small, or is exhausted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AltmapExhausted {
    pub wanted: u64,
    pub available: u64,
}

impl Altmap {
    pub const fn new(base_pfn: u64, end_pfn: u64, reserve: u64, free: u64) -> Self {
        Altmap {
            base_pfn,
            end_pfn,
            reserve,
            free,
            align: 0,
            alloc: 0,
        }
    }

    /// Next PFN that would be handed out (Linux `vmem_altmap_next_pfn`).
    pub const fn next_pfn(&self) -> u64 {
        self.base_pfn + self.reserve + self.alloc + self.align
    }

    /// PFNs still available (Linux `vmem_altmap_nr_free`).
    pub const fn nr_free(&self) -> u64 {
        self.free.saturating_sub(self.alloc + self.align)
    }

    /// First PFN after the memmap area (Linux `vmem_altmap_offset`).
    pub const fn offset(&self) -> u64 {
        self.reserve + self.free
    }

    /// Allocate `n` PFNs naturally aligned to the largest power of two dividing `n` (so a
    /// 512-page chunk for a 2 MiB PMD block on 4K is 2 MiB aligned). Returns the first PFN.
    pub fn alloc_pfns(&mut self, n: u64) -> Result<u64, AltmapExhausted> {
        if n == 0 {
            return Err(AltmapExhausted {
                wanted: 0,
                available: self.nr_free(),
            });
        }
        let next = self.next_pfn();
        let align = 1u64 << n.trailing_zeros();
        let pad = next.next_multiple_of(align) - next;
        if n + pad > self.nr_free() {
            return Err(AltmapExhausted {
                wanted: n + pad,
                available: self.nr_free(),
            });
        }
        self.alloc += n;
        self.align += pad;
        Ok(next + pad)
    }

    /// Allocate up to `max` PFNs from the next one on, unaligned (base-page memmap backing,
    /// which needs no alignment): one request instead of one per page. Returns the first PFN
    /// and how many were taken (fewer than `max` only when the altmap runs dry).
    pub fn alloc_run(&mut self, max: u64) -> Result<(u64, u64), AltmapExhausted> {
        let n = max.min(self.nr_free());
        if n == 0 {
            return Err(AltmapExhausted {
                wanted: max,
                available: 0,
            });
        }
        let first = self.next_pfn();
        self.alloc += n;
        Ok((first, n))
    }

    /// Return `n` PFNs (Linux `vmem_altmap_free`: only the count is tracked). When everything
    /// is returned the alignment padding is dropped too, so a full teardown ends at zero.
    pub fn free_pfns(&mut self, n: u64) {
        self.alloc = self.alloc.saturating_sub(n);
        if self.alloc == 0 {
            self.align = 0;
        }
    }

    /// Whether `pfn` lies in the part of the range the altmap hands out.
    pub const fn contains(&self, pfn: u64) -> bool {
        pfn >= self.base_pfn + self.reserve && pfn < self.base_pfn + self.reserve + self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_run_takes_what_is_left_unaligned() {
        let mut a = Altmap::new(100, 199, 2, 10);
        assert_eq!(a.alloc_pfns(1), Ok(102));
        // No padding to a power of two: the run starts at the next PFN.
        assert_eq!(a.alloc_run(4), Ok((103, 4)));
        assert_eq!(a.alloc_run(100), Ok((107, 5)), "the rest only");
        assert_eq!((a.alloc, a.align, a.nr_free()), (10, 0, 0));
        assert_eq!(a.alloc_run(1).unwrap_err().available, 0);
        a.free_pfns(10);
        assert_eq!((a.alloc, a.align), (0, 0));
    }

    #[test]
    fn natural_alignment_and_accounting() {
        let mut a = Altmap::new(1000, 1000 + 32767, 3, 1024);
        assert_eq!(a.alloc_pfns(1), Ok(1003));
        // 512 pages: aligned to 512 → pad from 1004 to 1024.
        assert_eq!(a.alloc_pfns(512), Ok(1024));
        assert_eq!(a.alloc, 513);
        assert_eq!(a.align, 1024 - 1004);
        assert!(a.alloc + a.align <= a.free);
        let before = a;
        assert!(a.alloc_pfns(512).is_err());
        assert_eq!(a, before, "failed allocation changes nothing");
        a.free_pfns(512);
        a.free_pfns(1);
        assert_eq!((a.alloc, a.align), (0, 0));
    }

    #[test]
    fn contains_only_the_free_area() {
        let a = Altmap::new(100, 199, 2, 8);
        assert!(!a.contains(101) && a.contains(102) && a.contains(109) && !a.contains(110));
        assert_eq!(a.offset(), 10);
    }
}
