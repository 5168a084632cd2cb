//! The deferred-init bookkeeping of the page allocator: one bit per pageblock (set = memmap
//! not initialised) and, per zone, the sorted list of [`DeferredRange`]s still to initialise,
//! plus the chunks being initialised; every list operation keeps the lists normal (sorted,
//! disjoint, equal neighbours merged) and changes nothing when the list cannot grow.

use super::DeferredRange;
use crate::buddy::BuddyError;
use crate::geometry::Geometry;
use crate::numa::{NodeId, MAX_NUMNODES};
use crate::page::ZoneId;
use alloc::vec::Vec;

/// [`Deferred`]'s state byte of a self-hosted memmap whose block is offline.
pub(in crate::buddy) const VMEMMAP_OFFLINE: u8 = 1;
/// [`Deferred`]'s state byte of a self-hosted memmap whose block is online: this plus the zone.
pub(in crate::buddy) const VMEMMAP_ONLINE: u8 = 2;

/// The allocator's deferred-init state (present once [`PageAlloc::enable_deferred`] ran).
pub(in crate::buddy) struct Deferred {
    pageblock_order: u32,
    /// log2 of the pages in a memory block (the `block` field of a struct page).
    block_shift: u32,
    /// One bit per pageblock of `[0, nr_pfns)`: set = memmap not initialised.
    uninit: Vec<u64>,
    /// One byte per memory block whose self-hosted memmap (its first pageblock) is not
    /// initialised: [`VMEMMAP_OFFLINE`], or [`VMEMMAP_ONLINE`] plus the zone the block is online
    /// in; 0 for every other block. The struct pages of those PFNs are never written: what a
    /// reader would find there is answered from this byte.
    vmemmap: Vec<u8>,
    /// Per zone, sorted, disjoint, never adjacent with equal node and isolation (each range
    /// on one node: ranges of different nodes never merge).
    pub(in crate::buddy) lists: [Vec<DeferredRange>; 2],
    /// Chunks handed out by `deferred_take` and not finished yet.
    pub(in crate::buddy) in_flight: Vec<(ZoneId, u64, u64, NodeId)>,
}

impl Deferred {
    /// The state for a geometry, with a bitmap for the PFNs below `nr_pfns` allocated here,
    /// fallibly (memory deferred above it grows the bitmap).
    pub(super) fn new(geom: Geometry, nr_pfns: u64) -> Result<Self, BuddyError> {
        let pageblock_order = geom.pageblock_order();
        let words = (nr_pfns >> pageblock_order).div_ceil(64) as usize;
        let mut uninit = Vec::new();
        uninit.try_reserve_exact(words).map_err(|_| BuddyError::NoBookkeeping)?;
        uninit.resize(words, 0);
        Ok(Deferred {
            pageblock_order,
            block_shift: geom.section_shift() - geom.page_shift,
            uninit,
            vmemmap: Vec::new(),
            lists: [Vec::new(), Vec::new()],
            in_flight: Vec::new(),
        })
    }

    /// The state byte of the self-hosted memmap holding `pfn`: non-zero only for the first
    /// pageblock of a block registered with [`set_vmemmap`](Self::set_vmemmap).
    #[inline]
    pub(in crate::buddy) fn vmemmap_at(&self, pfn: u64) -> u8 {
        if pfn & ((1 << self.block_shift) - 1) >= self.pageblock_pages() {
            return 0;
        }
        self.vmemmap
            .get((pfn >> self.block_shift) as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Set the state byte of the self-hosted memmap of the block holding `pfn`, growing the
    /// table fallibly (nothing changed on failure).
    pub(in crate::buddy) fn set_vmemmap(&mut self, pfn: u64, val: u8) -> Result<(), BuddyError> {
        let i = (pfn >> self.block_shift) as usize;
        if i >= self.vmemmap.len() {
            if val == 0 {
                return Ok(());
            }
            self.vmemmap
                .try_reserve(i + 1 - self.vmemmap.len())
                .map_err(|_| BuddyError::NoBookkeeping)?;
            self.vmemmap.resize(i + 1, 0);
        }
        self.vmemmap[i] = val;
        Ok(())
    }

    /// The first PFN of every block whose self-hosted memmap is answered from its state byte.
    pub(in crate::buddy) fn vmemmap_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        let shift = self.block_shift;
        self.vmemmap
            .iter()
            .enumerate()
            .filter(|&(_, &v)| v != 0)
            .map(move |(i, _)| (i as u64) << shift)
    }

    #[inline]
    pub(in crate::buddy) fn test(&self, pfn: u64) -> bool {
        let i = (pfn >> self.pageblock_order) as usize;
        self.uninit.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(in crate::buddy) fn block_shift(&self) -> u32 {
        self.block_shift
    }

    pub(in crate::buddy) fn pageblock_pages(&self) -> u64 {
        1 << self.pageblock_order
    }

    /// Grow the bitmap (fallibly, nothing changed on failure) to cover PFNs below `end`: memory
    /// hot-added above the boot RAM needs bits the boot did not size for.
    pub(super) fn cover(&mut self, end: u64) -> Result<(), BuddyError> {
        let words = (end >> self.pageblock_order).div_ceil(64) as usize;
        if words > self.uninit.len() {
            // Amortised growth (not `try_reserve_exact`): one hot-add of many blocks grows the
            // bitmap once per block, and exact growth copied it each time (quadratic).
            self.uninit
                .try_reserve(words - self.uninit.len())
                .map_err(|_| BuddyError::NoBookkeeping)?;
            self.uninit.resize(words, 0);
        }
        Ok(())
    }

    /// Set or clear the bits of the pageblocks `[s, e)` (PFNs, pageblock-aligned).
    pub(super) fn set_bits(&mut self, s: u64, e: u64, val: bool) {
        for i in (s >> self.pageblock_order) as usize..(e >> self.pageblock_order) as usize {
            if let Some(w) = self.uninit.get_mut(i / 64) {
                if val {
                    *w |= 1 << (i % 64);
                } else {
                    *w &= !(1 << (i % 64));
                }
            }
        }
    }

    /// The first PFN after `pfn` (at most `end`) whose initialised state differs from `pfn`'s:
    /// a word-at-a-time bitmap scan, O(pageblocks / 64).
    pub(in crate::buddy) fn next_change(&self, pfn: u64, end: u64) -> u64 {
        let want = self.test(pfn);
        let mut i = (pfn >> self.pageblock_order) as usize + 1;
        let last = (end.saturating_sub(1) >> self.pageblock_order) as usize;
        while i <= last {
            let w = self.uninit.get(i / 64).copied().unwrap_or(0);
            let w = if want { !w } else { w } >> (i % 64);
            if w == 0 {
                i = (i / 64 + 1) * 64;
                continue;
            }
            i += w.trailing_zeros() as usize;
            break;
        }
        ((i as u64) << self.pageblock_order).min(end)
    }

    /// Pages whose bit is set anywhere (the whole bitmap).
    pub(in crate::buddy) fn count_all_uninit(&self) -> u64 {
        self.uninit.iter().map(|w| w.count_ones() as u64).sum::<u64>() << self.pageblock_order
    }

    /// Pages whose bit is set in `[s, e)`.
    pub(in crate::buddy) fn count_uninit(&self, s: u64, e: u64) -> u64 {
        let mut n = 0;
        let mut p = s;
        while p < e {
            let q = self.next_change(p, e);
            if self.test(p) {
                n += q - p;
            }
            p = q;
        }
        n
    }

    /// The index of the range of `zone` containing `pfn`.
    pub(super) fn find(&self, zone: ZoneId, pfn: u64) -> Option<usize> {
        let l = &self.lists[zone as usize];
        let i = l.partition_point(|r| r.end <= pfn);
        (i < l.len() && l[i].start <= pfn).then_some(i)
    }

    pub(super) fn in_flight_at(&self, s: u64, e: u64) -> Option<(ZoneId, u64)> {
        self.in_flight
            .iter()
            .find(|&&(_, cs, ce, _)| cs < e && s < ce)
            .map(|&(z, cs, _, _)| (z, cs.max(s)))
    }

    /// Whether any list (or chunk in flight) holds part of `[s, e)`.
    pub(in crate::buddy) fn listed(&self, s: u64, e: u64) -> bool {
        self.in_flight_at(s, e).is_some()
            || self.lists.iter().any(|l| {
                let i = l.partition_point(|r| r.end <= s);
                i < l.len() && l[i].start < e
            })
    }

    /// Insert a range into `zone`'s list, merging with equal neighbours.
    pub(super) fn insert(&mut self, zone: ZoneId, r: DeferredRange) -> Result<(), BuddyError> {
        let l = &mut self.lists[zone as usize];
        l.try_reserve(1).map_err(|_| BuddyError::NoBookkeeping)?;
        let i = l.partition_point(|x| x.start < r.start);
        l.insert(i, r);
        Self::normalise(l, i, i + 1);
        Ok(())
    }

    /// Around the entries `[lo, hi)` just changed (and one neighbour each side): drop empty
    /// ranges, merge adjacent ones with the same node and isolation. O(window + shift).
    pub(super) fn normalise(l: &mut Vec<DeferredRange>, lo: usize, hi: usize) {
        let first = lo.saturating_sub(1);
        let mut end = (hi + 1).min(l.len());
        let mut i = first;
        while i < end {
            if l[i].start >= l[i].end {
                l.remove(i);
                end -= 1;
            } else {
                i += 1;
            }
        }
        let mut i = first + 1;
        while i < end {
            let (a, b) = (l[i - 1], l[i]);
            if a.end == b.start && a.node == b.node && a.isolated == b.isolated {
                l[i - 1].end = b.end;
                l.remove(i);
                end -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Split `zone`'s ranges at `s` and `e` so each is inside or outside `[s, e)`; returns the
    /// index span of those inside. Changes nothing if the list cannot grow.
    pub(super) fn carve(&mut self, zone: ZoneId, s: u64, e: u64) -> Result<core::ops::Range<usize>, BuddyError> {
        let l = &mut self.lists[zone as usize];
        l.try_reserve(2).map_err(|_| BuddyError::NoBookkeeping)?;
        for cut in [s, e] {
            let i = l.partition_point(|r| r.end <= cut);
            if i < l.len() && l[i].start < cut {
                let mut tail = l[i];
                tail.start = cut;
                l[i].end = cut;
                l.insert(i + 1, tail);
            }
        }
        let a = l.partition_point(|r| r.end <= s);
        let b = l.partition_point(|r| r.start < e);
        Ok(a..b.max(a))
    }

    /// Set the isolation of `[s, e)` on `zone`'s list; returns the pages switched, per node.
    pub(super) fn set_isolated(
        &mut self,
        zone: ZoneId,
        s: u64,
        e: u64,
        isolated: bool,
    ) -> Result<[u64; MAX_NUMNODES], BuddyError> {
        let span = self.carve(zone, s, e)?;
        let l = &mut self.lists[zone as usize];
        let mut n = [0; MAX_NUMNODES];
        for r in &mut l[span.clone()] {
            if r.isolated != isolated {
                r.isolated = isolated;
                n[r.node as usize] += r.nr_pages();
            }
        }
        Self::normalise(l, span.start, span.end);
        Ok(n)
    }

    /// Drop the isolated ranges of `[s, e)` from `zone`'s list; returns their pages, per node.
    pub(super) fn drop_isolated(&mut self, zone: ZoneId, s: u64, e: u64) -> Result<[u64; MAX_NUMNODES], BuddyError> {
        let span = self.carve(zone, s, e)?;
        let l = &mut self.lists[zone as usize];
        let mut n = [0; MAX_NUMNODES];
        for r in &mut l[span.clone()] {
            if r.isolated {
                n[r.node as usize] += r.nr_pages();
                r.end = r.start; // dropped by normalise
            }
        }
        Self::normalise(l, span.start, span.end);
        Ok(n)
    }

    /// Take the lowest max-order chunk of `zone`'s first range that is not isolated (and is
    /// on node `nid`, if given).
    pub(super) fn take_piece(
        &mut self,
        zone: ZoneId,
        nid: Option<NodeId>,
        max_order: u32,
    ) -> Option<(u64, u64, NodeId)> {
        let l = &mut self.lists[zone as usize];
        let i = l.iter().position(|r| !r.isolated && nid.is_none_or(|n| r.node == n))?;
        let r = &mut l[i];
        let chunk = 1u64 << max_order;
        let end = r.end.min((r.start / chunk + 1) * chunk);
        let piece = (r.start, end, r.node);
        r.start = end;
        if r.start == r.end {
            l.remove(i);
        }
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deferred(bits: &[bool]) -> Deferred {
        let mut d = Deferred {
            pageblock_order: 2,
            block_shift: 6,
            uninit: alloc::vec![0; bits.len().div_ceil(64)],
            vmemmap: Vec::new(),
            lists: [Vec::new(), Vec::new()],
            in_flight: Vec::new(),
        };
        for (i, &b) in bits.iter().enumerate() {
            if b {
                d.set_bits((i as u64) << 2, (i as u64 + 1) << 2, true);
            }
        }
        d
    }

    #[test]
    fn next_change_matches_a_naive_scan() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        for round in 0..200 {
            let n = 1 + (round * 7) % 300;
            let bits: Vec<bool> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Long runs as well as short ones.
                    seed.is_multiple_of(if round % 2 == 0 { 2 } else { 97 })
                })
                .collect();
            let d = deferred(&bits);
            let end = (n as u64) << 2;
            for pfn in 0..end {
                let want = (pfn + 1..end).find(|&q| d.test(q) != d.test(pfn)).unwrap_or(end);
                assert_eq!(d.next_change(pfn, end), want, "pfn {pfn} of {bits:?}");
            }
            let naive = (0..end).filter(|&p| d.test(p)).count() as u64;
            assert_eq!(d.count_uninit(0, end), naive);
        }
    }

    #[test]
    fn carve_isolate_and_drop_keep_the_list_normal() {
        let mut d = deferred(&[true; 64]);
        let r = |start, end| DeferredRange {
            start,
            end,
            node: 0,
            isolated: false,
        };
        d.insert(ZoneId::Movable, r(64, 128)).unwrap();
        d.insert(ZoneId::Movable, r(0, 32)).unwrap();
        d.insert(ZoneId::Movable, r(32, 64)).unwrap();
        assert_eq!(d.lists[1], [r(0, 128)], "adjacent ranges merge");
        let on0 = |n: u64| {
            let mut a = [0; MAX_NUMNODES];
            a[0] = n;
            Ok(a)
        };
        assert_eq!(d.set_isolated(ZoneId::Movable, 16, 48, true), on0(32));
        assert_eq!(d.lists[1].len(), 3);
        assert!(d.lists[1][1].isolated && (d.lists[1][1].start, d.lists[1][1].end) == (16, 48));
        assert_eq!(d.set_isolated(ZoneId::Movable, 16, 48, false), on0(32));
        assert_eq!(d.lists[1], [r(0, 128)], "un-isolation merges back");
        d.set_isolated(ZoneId::Movable, 96, 200, true).unwrap();
        assert_eq!(d.drop_isolated(ZoneId::Movable, 0, 256), on0(32));
        assert_eq!(d.lists[1], [r(0, 96)]);
        assert_eq!(d.take_piece(ZoneId::Movable, None, 5), Some((0, 32, 0)));
        assert_eq!(d.take_piece(ZoneId::Movable, Some(1), 5), None);
        assert_eq!(d.take_piece(ZoneId::Movable, Some(0), 5), Some((32, 64, 0)));
        assert!(d.listed(70, 71) && !d.listed(0, 64) && !d.listed(96, 100));
    }
}
