//! Isolation and offlining of a PFN range (Linux `start_isolate_page_range`,
//! `__offline_isolated_pages`): free blocks leave the lists and blocks freed into the range are
//! parked, so nothing in it is handed out again until it goes offline or is unisolated. A free
//! block across either edge of the range is cut there first.

use super::{aligned_blocks, BuddyError, PageAlloc};
use crate::page::{flags, Memmap, Page, ZoneId};
use arch::mutant::{self, Mutant};

/// A page in use that a range walk found ([`PageAlloc::first_busy`]): the fields of its head
/// that offline and migration need, small enough to travel in registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyPage {
    pub pfn: u64,
    pub flags: u32,
    /// The block's order (an allocated head); 0 for a reserved page.
    pub order: u32,
    pub node: u8,
    /// The owner's data (a movable page's handle + 1).
    pub private: u64,
}

impl BusyPage {
    pub const fn of(pfn: u64, p: &Page) -> Self {
        BusyPage {
            pfn,
            flags: p.flags,
            order: p.order as u32,
            node: p.node,
            private: p.private,
        }
    }

    pub const fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Pages it occupies: its block when allocated, one when reserved.
    pub const fn pages(&self) -> u64 {
        if self.has(flags::HEAD) {
            1 << self.order
        } else {
            1
        }
    }
}

impl<M: Memmap> PageAlloc<M> {
    /// Ranges for isolation/offline must have a memmap. A free block may straddle an edge
    /// ([`split_free_at`](Self::split_free_at) cuts it there); an allocated one may not
    /// (`Straddles`: its owner must move it first, as Linux migrates a compound page that
    /// straddles the pageblocks it isolates).
    fn check_range(&self, start: u64, nr: u64) -> Result<(), BuddyError> {
        let populated = nr > 0 && self.memmap.valid(start) && self.memmap.valid(start + nr - 1);
        if !populated {
            return Err(BuddyError::BadRange { start, nr });
        }
        self.deferred_check_range(start, start + nr)?;
        for edge in [start, start + nr] {
            if let Some((head, p)) = self.block_across(edge) {
                if p.has(flags::HEAD) {
                    return Err(BuddyError::Straddles {
                        pfn: head,
                        order: p.order as u32,
                    });
                }
            }
        }
        Ok(())
    }

    /// The block (free or allocated) that `pfn` lies strictly inside of: its head is below
    /// `pfn` and it reaches past it. Blocks are naturally aligned, so the candidates are the
    /// `pfn` rounded down to each order.
    pub fn block_across(&self, pfn: u64) -> Option<(u64, Page)> {
        // A page that starts a block, is not managed, or has no (initialised) memmap is inside
        // no block: the common case costs one read.
        let here = self.page(pfn)?;
        if here.has(flags::BUDDY | flags::HEAD | flags::RESERVED | flags::OFFLINE | flags::VMEMMAP_SELF_HOSTED) {
            return None;
        }
        (1..=self.max_order).find_map(|o| {
            let head = pfn & !((1u64 << o) - 1);
            if head == pfn {
                return None;
            }
            let p = self.page(head)?;
            (p.has(flags::BUDDY | flags::HEAD) && head + (1u64 << p.order) > pfn).then_some((head, p))
        })
    }

    /// Cut the free block that `pfn` lies inside of (if any) into aligned blocks that end at
    /// `pfn` and start at it, so that a range starting or ending at `pfn` holds whole blocks
    /// only (Linux splits a free page straddling the pageblock it isolates the same way). A
    /// listed block's pieces go back on the lists unmerged; a parked one's stay parked.
    pub fn split_free_at(&mut self, pfn: u64) {
        if mutant::on(Mutant::IsolateHeadOnlyWalk) {
            return;
        }
        let Some((head, p)) = self.block_across(pfn) else {
            return;
        };
        if !p.has(flags::BUDDY) {
            return;
        }
        let zone = p.zone_id().unwrap_or(ZoneId::Normal);
        let nid = p.node;
        let order = p.order as u32;
        let parked = p.has(flags::ISOLATED);
        if !parked {
            self.list_remove(nid, zone, order, head);
        }
        for (s, e) in [(head, pfn), (pfn, head + (1 << order))] {
            for (q, o) in aligned_blocks(s, e, order) {
                if parked {
                    let h = self.pg(q);
                    h.flags = (h.flags | flags::BUDDY) & !(flags::HEAD | flags::MOVABLE);
                    h.order = o as u8;
                    h.zone = zone as u8;
                    h.node = nid;
                } else {
                    self.list_push(nid, zone, o, q);
                }
            }
        }
    }

    /// Walk the heads of `[start, start + nr)`: free blocks (listed or parked), allocated
    /// blocks, and single unmanaged pages.
    fn for_each_head(
        &mut self,
        start: u64,
        nr: u64,
        mut f: impl FnMut(&mut Self, u64, Page) -> Result<(), BuddyError>,
    ) -> Result<(), BuddyError> {
        let mut pfn = start;
        while pfn < start + nr {
            if !self.is_initialised(pfn) {
                pfn = self.next_init_change(pfn, start + nr);
                continue;
            }
            let p = self.page(pfn).ok_or(BuddyError::BadRange { start, nr })?;
            f(self, pfn, p)?;
            pfn += if p.has(flags::BUDDY | flags::HEAD) {
                1 << p.order
            } else {
                1
            };
        }
        Ok(())
    }

    /// Apply `f` to every initialised `struct page` of `[start, start + nr)`.
    fn for_each_initialised(&mut self, start: u64, nr: u64, mut f: impl FnMut(&mut Page)) {
        let end = start + nr;
        let mut run = start;
        while run < end {
            let run_end = self.next_init_change(run, end);
            if self.is_initialised(run) {
                for pfn in run..run_end {
                    f(self.pg(pfn));
                }
            }
            run = run_end;
        }
    }

    /// Stop handing out pages of `[start, start + nr)` (Linux `start_isolate_page_range` +
    /// taking free pages off the lists). Returns the number of free pages parked.
    ///
    /// Deferred ranges inside are free by definition: they are only marked isolated on their
    /// zone's list (no per-page work).
    pub fn isolate_range(&mut self, start: u64, nr: u64) -> Result<u64, BuddyError> {
        self.check_range(start, nr)?;
        let moved = self.deferred_set_isolated(start, start + nr, true)?;
        self.split_free_at(start);
        self.split_free_at(start + nr);
        let mut parked = 0;
        for (node, moved) in self.zones.iter_mut().zip(moved) {
            for (z, m) in node.iter_mut().zip(moved) {
                z.counters.deferred -= m;
                z.counters.isolated += m;
                parked += m;
            }
        }
        self.for_each_head(start, nr, |a, pfn, p| {
            if p.has(flags::BUDDY) && !p.has(flags::ISOLATED) {
                let zone = p.zone_id().unwrap_or(ZoneId::Normal);
                a.list_remove(p.node, zone, p.order as u32, pfn);
                let q = a.pg(pfn);
                q.flags |= flags::BUDDY;
                a.zone_mut(p.node, zone).counters.isolated += 1 << p.order;
                parked += 1 << p.order;
            }
            Ok(())
        })?;
        self.for_each_initialised(start, nr, |p| p.flags |= flags::ISOLATED);
        Ok(parked)
    }

    /// Undo [`isolate_range`](Self::isolate_range): parked free blocks go back on the lists.
    ///
    /// One block at a time, in address order: a block's `ISOLATED` bits are cleared only as
    /// it is put back, so `free_merge` never takes a still-parked neighbour (a `BUDDY` head on
    /// no list) for a listed one. Blocks further on stay isolated, hence unmergeable, until
    /// their turn, when they merge with what is already back (Linux `unset_migratetype_isolate`
    /// moves whole pageblocks the same way).
    pub fn unisolate_range(&mut self, start: u64, nr: u64) -> Result<(), BuddyError> {
        self.check_range(start, nr)?;
        let back = self.deferred_set_isolated(start, start + nr, false)?;
        for (node, back) in self.zones.iter_mut().zip(back) {
            for (z, b) in node.iter_mut().zip(back) {
                z.counters.isolated -= b;
                z.counters.deferred += b;
            }
        }
        if mutant::on(Mutant::UnisolateEarlyClear) {
            self.for_each_initialised(start, nr, |p| p.flags &= !flags::ISOLATED);
        }
        self.for_each_head(start, nr, |a, pfn, p| {
            let len = if p.has(flags::BUDDY | flags::HEAD) {
                1 << p.order
            } else {
                1
            };
            for q in pfn..pfn + len {
                a.pg(q).flags &= !flags::ISOLATED;
            }
            if p.has(flags::BUDDY) {
                let zone = p.zone_id().unwrap_or(ZoneId::Normal);
                a.pg(pfn).flags &= !flags::BUDDY;
                a.zone_mut(p.node, zone).counters.isolated -= 1 << p.order;
                a.free_merge(p.node, zone, pfn, p.order as u32);
            }
            Ok(())
        })
    }

    /// The first page in use in a range (allocated, or reserved such as the kernel image).
    /// `start` must be a block boundary (a range start, or just past a block).
    pub fn first_busy(&self, start: u64, nr: u64) -> Option<BusyPage> {
        let mut pfn = start;
        while pfn < start + nr {
            // One lookup for the common case, an initialised page.
            let Some(p) = self.page_ref(pfn) else {
                if self.is_initialised(pfn) {
                    return None;
                }
                // Deferred: free by definition.
                pfn = self.next_init_change(pfn, start + nr);
                continue;
            };
            if p.has(flags::HEAD | flags::RESERVED) {
                return Some(BusyPage::of(pfn, p));
            }
            pfn += if p.has(flags::BUDDY) { 1 << p.order } else { 1 };
        }
        None
    }

    /// Pages in use in `[start, start + nr)` (allocated blocks and reserved pages), from a block
    /// boundary as for [`first_busy`](Self::first_busy).
    pub fn busy_pages(&self, start: u64, nr: u64) -> u64 {
        let (mut pfn, mut n) = (start, 0);
        while let Some(b) = self.first_busy(pfn, start + nr - pfn) {
            let len = b.pages();
            n += len;
            pfn = b.pfn + len;
        }
        n
    }

    /// Take an isolated range out of the allocator for good (Linux `__offline_isolated_pages`):
    /// fails with `Busy` (changing nothing) unless every managed page in it is free.
    /// Returns the number of pages that left the zone.
    pub fn offline_isolated(&mut self, start: u64, nr: u64) -> Result<u64, BuddyError> {
        self.check_range(start, nr)?;
        if let Some(b) = self.first_busy(start, nr) {
            return Err(BuddyError::Busy { pfn: b.pfn });
        }
        // Deferred ranges (isolated with the range) leave their lists: no struct page is
        // written, their memmap stays uninitialised and offline.
        let mut taken = self.deferred_drop_isolated(start, start + nr)?;
        for (node, taken) in self.zones.iter_mut().zip(taken) {
            for (z, t) in node.iter_mut().zip(taken) {
                z.counters.isolated -= t;
            }
        }
        self.for_each_head(start, nr, |a, pfn, p| {
            if p.has(flags::BUDDY) {
                let zone = p.zone_id().unwrap_or(ZoneId::Normal);
                a.zone_mut(p.node, zone).counters.isolated -= 1 << p.order;
                taken[p.node as usize][zone as usize] += 1 << p.order;
                let q = a.pg(pfn);
                q.flags &= !flags::BUDDY;
            }
            Ok(())
        })?;
        self.for_each_initialised(start, nr, |p| {
            if !p.has(flags::VMEMMAP_SELF_HOSTED | flags::RESERVED) {
                p.flags = (p.flags & !flags::ISOLATED) | flags::OFFLINE;
            } else {
                p.flags &= !flags::ISOLATED;
            }
        });
        let mut total = 0;
        for (node, taken) in self.zones.iter_mut().zip(taken) {
            for (z, t) in node.iter_mut().zip(taken) {
                z.counters.managed -= t;
                total += t;
            }
        }
        Ok(total)
    }
}
