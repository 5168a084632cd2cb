//! Deferred struct page initialisation (Linux `CONFIG_DEFERRED_STRUCT_PAGE_INIT`, here for
//! hot-added memory too).
//!
//! With [`MemmapInit::Deferred`] the memmap of new memory is mapped at add time but its
//! `struct page`s are not written. The allocator knows which memmap is not initialised through
//! one bit per pageblock (the O(1) [`PageAlloc::is_initialised`] test every PFN walker uses
//! before it reads a `struct page`), and each zone keeps the not-yet-initialised part of its
//! memory as a sorted list of pageblock-aligned [`DeferredRange`]s (no per-page state):
//!
//! - **online** hands a range over by inserting it in the zone's list (O(1) per run);
//! - **allocation** initialises one max-order chunk when the zone's free lists cannot serve a
//!   request (Linux `deferred_grow_zone`);
//! - **background completion** ([`deferred_init_step`]) takes a chunk off a list under the
//!   allocator lock, initialises it outside, and hands it over under the lock again;
//! - **offline** of a deferred range needs no per-page work: isolation marks the list range
//!   isolated (it is free by definition), taking it offline drops it from the list, leaving
//!   the memmap uninitialised (the bit stays set); onlining it again puts it back;
//! - **removal** forgets the bits ([`PageAlloc::memmap_removed`]) without touching the memmap.

use super::{BuddyError, PageAlloc};
use crate::geometry::Geometry;
use crate::page::{flags, Memmap, Page, ZoneId, POISON_CHECKS};
use alloc::vec::Vec;

/// How the memmap of new memory is initialised (the kernel's `memmap_init=eager|deferred`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemmapInit {
    /// Every `struct page` written at add time (and again at online).
    #[default]
    Eager,
    /// Only the self-hosted memmap pages at add; the rest when first needed.
    Deferred,
}

impl MemmapInit {
    pub const fn name(self) -> &'static str {
        match self {
            MemmapInit::Eager => "eager",
            MemmapInit::Deferred => "deferred",
        }
    }
}

/// A pageblock-aligned range `[start, end)` of a zone whose `struct page`s are not initialised.
/// Its pages are free by definition; `isolated` while an offline of it is in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredRange {
    pub start: u64,
    pub end: u64,
    pub node: u8,
    pub isolated: bool,
}

impl DeferredRange {
    pub const fn nr_pages(&self) -> u64 {
        self.end - self.start
    }
}

/// A chunk taken off a zone's deferred list by [`PageAlloc::deferred_take`]: at most one
/// max-order block, initialised by its holder outside the allocator lock
/// ([`init`](Self::init)) and handed over with [`PageAlloc::deferred_finish`]. Not `Clone`:
/// whoever holds it owns the chunk's `struct page`s until it is handed over.
#[derive(Debug, PartialEq, Eq)]
pub struct DeferredChunk {
    pub zone: ZoneId,
    pub start: u64,
    pub end: u64,
    pub node: u8,
    block_shift: u32,
}

impl DeferredChunk {
    pub const fn nr_pages(&self) -> u64 {
        self.end - self.start
    }

    /// Write the chunk's `struct page`s: free pages of its zone, node and memory block, not yet
    /// on a list. Needs no lock (the chunk is owned by this token); `memmap` must be the memmap
    /// of the allocator the chunk came from.
    pub fn init<M: Memmap>(&self, memmap: &M) {
        init_pages(memmap, self.start, self.end, self.block_shift, |block| Page {
            block,
            flags: 0,
            zone: self.zone as u8,
            node: self.node,
            ..Page::INIT
        });
    }
}

/// Write `make(block)` to the struct pages of `[start, end)`.
fn init_pages<M: Memmap>(memmap: &M, start: u64, end: u64, block_shift: u32, make: impl Fn(u32) -> Page) {
    let mut pfn = start;
    while pfn < end {
        let block = pfn >> block_shift;
        let stop = end.min((block + 1) << block_shift);
        let page = make(block as u32);
        for p in pfn..stop {
            // SAFETY: `p` has a populated memmap (the allocator's bit for it was set while it
            // was present), and the caller owns these struct pages: the allocator lock is held,
            // or they belong to a `DeferredChunk` no one else may touch until it is handed over.
            unsafe { memmap.page(p).write(page) };
        }
        pfn = stop;
    }
}

/// What [`PageAlloc::lookup`] knows about a PFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageLookup {
    /// No memmap (Linux `!pfn_valid`).
    NoMemmap,
    /// An initialised `struct page` (a copy).
    Page(Page),
    /// The memmap is there but not initialised yet (deferred).
    Deferred(DeferredState),
}

/// Where a deferred (not initialised) PFN stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeferredState {
    /// In no zone: its memory block is offline (added with deferred init, or offlined before
    /// it was ever used).
    Offline,
    /// On a zone's deferred list: free by definition (`isolated` while going offline).
    Zone { zone: ZoneId, isolated: bool },
    /// Being initialised right now by a [`DeferredChunk`] holder.
    InFlight { zone: ZoneId },
}

/// The allocator's deferred-init state (present once [`PageAlloc::enable_deferred`] ran).
pub(super) struct Deferred {
    pageblock_order: u32,
    /// log2 of the pages in a memory block (the `block` field of a struct page).
    block_shift: u32,
    /// One bit per pageblock of `[0, nr_pfns)`: set = memmap not initialised.
    uninit: Vec<u64>,
    /// Per zone, sorted, disjoint, never adjacent with equal node and isolation.
    pub(super) lists: [Vec<DeferredRange>; 2],
    /// Chunks handed out by `deferred_take` and not finished yet.
    pub(super) in_flight: Vec<(ZoneId, u64, u64, u8)>,
}

impl Deferred {
    #[inline]
    pub(super) fn test(&self, pfn: u64) -> bool {
        let i = (pfn >> self.pageblock_order) as usize;
        self.uninit.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(super) fn block_shift(&self) -> u32 {
        self.block_shift
    }

    pub(super) fn pageblock_pages(&self) -> u64 {
        1 << self.pageblock_order
    }

    /// Grow the bitmap (fallibly, nothing changed on failure) to cover PFNs below `end`: memory
    /// hot-added above the boot RAM needs bits the boot did not size for.
    fn cover(&mut self, end: u64) -> Result<(), BuddyError> {
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
    fn set_bits(&mut self, s: u64, e: u64, val: bool) {
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
    pub(super) fn next_change(&self, pfn: u64, end: u64) -> u64 {
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

    /// Pages whose bit is set in `[s, e)`.
    pub(super) fn count_uninit(&self, s: u64, e: u64) -> u64 {
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
    fn find(&self, zone: ZoneId, pfn: u64) -> Option<usize> {
        let l = &self.lists[zone as usize];
        let i = l.partition_point(|r| r.end <= pfn);
        (i < l.len() && l[i].start <= pfn).then_some(i)
    }

    fn in_flight_at(&self, s: u64, e: u64) -> Option<(ZoneId, u64)> {
        self.in_flight
            .iter()
            .find(|&&(_, cs, ce, _)| cs < e && s < ce)
            .map(|&(z, cs, _, _)| (z, cs.max(s)))
    }

    /// Whether any list (or chunk in flight) holds part of `[s, e)`.
    fn listed(&self, s: u64, e: u64) -> bool {
        self.in_flight_at(s, e).is_some()
            || self.lists.iter().any(|l| {
                let i = l.partition_point(|r| r.end <= s);
                i < l.len() && l[i].start < e
            })
    }

    /// Insert a range into `zone`'s list, merging with equal neighbours.
    fn insert(&mut self, zone: ZoneId, r: DeferredRange) -> Result<(), BuddyError> {
        let l = &mut self.lists[zone as usize];
        l.try_reserve(1).map_err(|_| BuddyError::NoBookkeeping)?;
        let i = l.partition_point(|x| x.start < r.start);
        l.insert(i, r);
        Self::normalise(l, i, i + 1);
        Ok(())
    }

    /// Around the entries `[lo, hi)` just changed (and one neighbour each side): drop empty
    /// ranges, merge adjacent ones with the same node and isolation. O(window + shift).
    fn normalise(l: &mut Vec<DeferredRange>, lo: usize, hi: usize) {
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
    fn carve(&mut self, zone: ZoneId, s: u64, e: u64) -> Result<core::ops::Range<usize>, BuddyError> {
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

    /// Pages of `[s, e)` on `zone`'s list with isolation `from`, switched to `!from`.
    fn set_isolated(&mut self, zone: ZoneId, s: u64, e: u64, isolated: bool) -> Result<u64, BuddyError> {
        let span = self.carve(zone, s, e)?;
        let l = &mut self.lists[zone as usize];
        let mut n = 0;
        for r in &mut l[span.clone()] {
            if r.isolated != isolated {
                r.isolated = isolated;
                n += r.nr_pages();
            }
        }
        Self::normalise(l, span.start, span.end);
        Ok(n)
    }

    /// Drop the isolated ranges of `[s, e)` from `zone`'s list; returns their pages.
    fn drop_isolated(&mut self, zone: ZoneId, s: u64, e: u64) -> Result<u64, BuddyError> {
        let span = self.carve(zone, s, e)?;
        let l = &mut self.lists[zone as usize];
        let mut n = 0;
        for r in &mut l[span.clone()] {
            if r.isolated {
                n += r.nr_pages();
                r.end = r.start; // dropped by normalise
            }
        }
        Self::normalise(l, span.start, span.end);
        Ok(n)
    }

    /// Take the lowest max-order chunk of `zone`'s first range that is not isolated.
    fn take_piece(&mut self, zone: ZoneId, max_order: u32) -> Option<(u64, u64, u8)> {
        let l = &mut self.lists[zone as usize];
        let i = l.iter().position(|r| !r.isolated)?;
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

impl<M: Memmap> PageAlloc<M> {
    /// Make deferred initialisation possible, with a bitmap for the PFNs below `nr_pfns`
    /// allocated here, fallibly (memory deferred above it grows the bitmap, in `defer_memmap`).
    pub fn enable_deferred(&mut self, geom: Geometry, nr_pfns: u64) -> Result<(), BuddyError> {
        let pageblock_order = geom.pageblock_order();
        let words = (nr_pfns >> pageblock_order).div_ceil(64) as usize;
        let mut uninit = Vec::new();
        uninit.try_reserve_exact(words).map_err(|_| BuddyError::NoBookkeeping)?;
        uninit.resize(words, 0);
        self.deferred = Some(Deferred {
            pageblock_order,
            block_shift: geom.section_shift() - geom.page_shift,
            uninit,
            lists: [Vec::new(), Vec::new()],
            in_flight: Vec::new(),
        });
        Ok(())
    }

    pub fn deferred_enabled(&self) -> bool {
        self.deferred.is_some()
    }

    /// Whether the `struct page` of `pfn` is initialised: one bit test, O(1). Every PFN walker
    /// asks before reading a struct page. PFNs without memmap answer `true` (ask `valid`).
    #[inline]
    pub fn is_initialised(&self, pfn: u64) -> bool {
        if arch::mutant::on(arch::mutant::Mutant::DeferredWalkReadsUninit) {
            return true;
        }
        !self.deferred.as_ref().is_some_and(|d| d.test(pfn))
    }

    /// The first PFN after `pfn`, at most `end`, where [`is_initialised`](Self::is_initialised)
    /// changes its answer.
    pub fn next_init_change(&self, pfn: u64, end: u64) -> u64 {
        match &self.deferred {
            Some(d) if !arch::mutant::on(arch::mutant::Mutant::DeferredWalkReadsUninit) => d.next_change(pfn, end),
            _ => end,
        }
    }

    /// The typed answer for `pfn`: no memmap, an initialised page, or deferred (and where).
    /// Whether `pfn`'s memory is in a zone (`Some(true)`: free, allocated, reserved or on a
    /// deferred list), offline (`Some(false)`), or has no memmap (`None`), whether or not its
    /// struct page is initialised.
    pub fn is_online(&self, pfn: u64) -> Option<bool> {
        match self.lookup(pfn) {
            PageLookup::NoMemmap => None,
            PageLookup::Page(p) => Some(!p.has(flags::OFFLINE)),
            PageLookup::Deferred(DeferredState::Offline) => Some(false),
            PageLookup::Deferred(_) => Some(true),
        }
    }

    pub fn lookup(&self, pfn: u64) -> PageLookup {
        if !self.memmap.valid(pfn) {
            return PageLookup::NoMemmap;
        }
        if let Some(p) = self.page(pfn) {
            return PageLookup::Page(p);
        }
        let Some(d) = &self.deferred else {
            return PageLookup::NoMemmap;
        };
        if let Some((zone, _)) = d.in_flight_at(pfn, pfn + 1) {
            return PageLookup::Deferred(DeferredState::InFlight { zone });
        }
        for zone in ZoneId::ALL {
            if let Some(i) = d.find(zone, pfn) {
                let isolated = d.lists[zone as usize][i].isolated;
                return PageLookup::Deferred(DeferredState::Zone { zone, isolated });
            }
        }
        PageLookup::Deferred(DeferredState::Offline)
    }

    /// The deferred ranges of a zone (sorted).
    pub fn deferred_ranges(&self, zone: ZoneId) -> &[DeferredRange] {
        self.deferred.as_ref().map_or(&[], |d| &d.lists[zone as usize])
    }

    /// Chunks taken by [`deferred_take`](Self::deferred_take) and not handed over yet:
    /// `(zone, start, end)`.
    pub fn deferred_in_flight(&self) -> impl Iterator<Item = (ZoneId, u64, u64)> + '_ {
        self.deferred
            .iter()
            .flat_map(|d| d.in_flight.iter().map(|&(z, s, e, _)| (z, s, e)))
    }

    /// Pages marked not initialised anywhere (the whole bitmap).
    pub fn uninit_pages_total(&self) -> u64 {
        self.deferred.as_ref().map_or(0, |d| {
            d.uninit.iter().map(|w| w.count_ones() as u64).sum::<u64>() << d.pageblock_order
        })
    }

    /// Pages of `[start, start + nr)` whose memmap is not initialised (O(pageblocks / 64)).
    pub fn uninit_pages(&self, start: u64, nr: u64) -> u64 {
        self.deferred.as_ref().map_or(0, |d| d.count_uninit(start, start + nr))
    }

    /// Record that the memmap of `[pfn, pfn + nr)` (just populated, offline, pageblock-aligned)
    /// is left uninitialised: nothing is written to it. Called before the range's sections are
    /// marked as having a memmap (so no reader ever sees it valid and unmarked), hence not
    /// checked against `Memmap::valid`. `Err` (nothing changed) when deferral is not enabled,
    /// the range is not pageblock-aligned, part of it is
    /// already deferred, or the bitmap cannot grow to cover it; the caller then initialises it
    /// eagerly.
    pub fn defer_memmap(&mut self, pfn: u64, nr: u64) -> Result<(), BuddyError> {
        let bad = BuddyError::BadRange { start: pfn, nr };
        let d = self.deferred.as_mut().ok_or(bad)?;
        let pb = d.pageblock_pages();
        let end = pfn + nr;
        if nr == 0 || !pfn.is_multiple_of(pb) || !nr.is_multiple_of(pb) {
            return Err(bad);
        }
        d.cover(end)?;
        if d.count_uninit(pfn, end) != 0 {
            return Err(bad);
        }
        d.set_bits(pfn, end, true);
        Ok(())
    }

    /// The memmap of `[pfn, pfn + nr)` is going away (memory removal): forget its deferred
    /// state without touching it. Refused (`Busy`, nothing changed) if part of it is still in
    /// a zone or in flight: only offline memory is removed. Returns the pages forgotten.
    pub fn memmap_removed(&mut self, pfn: u64, nr: u64) -> Result<u64, BuddyError> {
        let Some(d) = self.deferred.as_mut() else {
            return Ok(0);
        };
        let end = pfn + nr;
        if d.listed(pfn, end) {
            return Err(BuddyError::Busy { pfn });
        }
        // Only whole pageblocks are ever deferred; removal ranges are memory blocks.
        let pb = d.pageblock_pages();
        let (s, e) = (pfn.next_multiple_of(pb), end / pb * pb);
        let n = if s < e { d.count_uninit(s, e) } else { 0 };
        if s < e && !arch::mutant::on(arch::mutant::Mutant::RemoveLeavesDeferredBits) {
            d.set_bits(s, e, false);
        }
        Ok(n)
    }

    /// Initialise one max-order chunk of `zone`'s deferred memory under the lock and free it
    /// (Linux `deferred_grow_zone`). Returns whether there was one.
    pub fn deferred_grow(&mut self, zone: ZoneId) -> bool {
        let max_order = self.max_order;
        let Some(d) = self.deferred.as_mut() else {
            return false;
        };
        let Some((s, e, node)) = d.take_piece(zone, max_order) else {
            return false;
        };
        let block_shift = d.block_shift;
        DeferredChunk {
            zone,
            start: s,
            end: e,
            node,
            block_shift,
        }
        .init(&self.memmap);
        self.hand_over(zone, s, e);
        true
    }

    /// The initialised chunk `[s, e)` of `zone` joins the free lists.
    fn hand_over(&mut self, zone: ZoneId, s: u64, e: u64) {
        if let Some(d) = self.deferred.as_mut() {
            d.set_bits(s, e, false);
        }
        self.zones[zone as usize].counters.deferred -= e - s;
        self.free_run(zone, s, e);
    }

    /// Take one chunk off a deferred list (Normal first), to be initialised outside the lock.
    /// `None` when no deferred memory is left (or the in-flight record cannot grow).
    pub fn deferred_take(&mut self) -> Option<DeferredChunk> {
        let max_order = self.max_order;
        let d = self.deferred.as_mut()?;
        d.in_flight.try_reserve(1).ok()?;
        for zone in ZoneId::ALL {
            if let Some((start, end, node)) = d.take_piece(zone, max_order) {
                d.in_flight.push((zone, start, end, node));
                return Some(DeferredChunk {
                    zone,
                    start,
                    end,
                    node,
                    block_shift: d.block_shift,
                });
            }
        }
        None
    }

    /// Hand over a chunk from [`deferred_take`](Self::deferred_take) after its
    /// [`init`](DeferredChunk::init): it joins its zone's free lists. Returns its pages.
    pub fn deferred_finish(&mut self, c: DeferredChunk) -> Result<u64, BuddyError> {
        let d = self.deferred.as_mut().ok_or(BuddyError::BadRange {
            start: c.start,
            nr: c.nr_pages(),
        })?;
        let i = d
            .in_flight
            .iter()
            .position(|&(z, s, e, _)| (z, s, e) == (c.zone, c.start, c.end))
            .ok_or(BuddyError::BadRange {
                start: c.start,
                nr: c.nr_pages(),
            })?;
        d.in_flight.swap_remove(i);
        if POISON_CHECKS {
            // SAFETY: the chunk's memmap is populated (it was on a list), and we hold `&mut`.
            let first = unsafe { *self.memmap.page(c.start) };
            assert!(
                !first.is_poison(),
                "deferred chunk at pfn {:#x} handed over without init",
                c.start
            );
        }
        self.hand_over(c.zone, c.start, c.end);
        Ok(c.nr_pages())
    }

    /// Online the uninitialised run `[s, e)` (pageblock-aligned, offline) into `zone`: it goes
    /// on the zone's list, or, if the list cannot grow, is initialised and freed now.
    pub(super) fn online_deferred(&mut self, zone: ZoneId, node: u8, s: u64, e: u64) -> Result<(), BuddyError> {
        let d = self
            .deferred
            .as_mut()
            .ok_or(BuddyError::BadRange { start: s, nr: e - s })?;
        if d.listed(s, e) {
            return Err(BuddyError::BadRange { start: s, nr: e - s });
        }
        let r = DeferredRange {
            start: s,
            end: e,
            node,
            isolated: false,
        };
        self.zones[zone as usize].counters.deferred += e - s;
        if d.insert(zone, r).is_err() {
            let block_shift = d.block_shift;
            DeferredChunk {
                zone,
                start: s,
                end: e,
                node,
                block_shift,
            }
            .init(&self.memmap);
            self.hand_over(zone, s, e);
        }
        Ok(())
    }

    /// If the range boundary `pfn` cuts an offline, uninitialised pageblock, initialise that
    /// pageblock as offline reserved pages (what an eager add writes), so a range can start or
    /// end inside it.
    pub(super) fn materialise_cut(&mut self, pfn: u64) -> Result<(), BuddyError> {
        let Some(d) = self.deferred.as_mut() else {
            return Ok(());
        };
        if pfn.is_multiple_of(d.pageblock_pages()) || !d.test(pfn) {
            return Ok(());
        }
        let pb = d.pageblock_pages();
        let s = pfn / pb * pb;
        if d.listed(s, s + pb) {
            return Err(BuddyError::BadRange { start: pfn, nr: 1 });
        }
        init_pages(&self.memmap, s, s + pb, d.block_shift, |block| Page {
            block,
            flags: flags::RESERVED | flags::OFFLINE,
            ..Page::INIT
        });
        d.set_bits(s, s + pb, false);
        Ok(())
    }

    /// Refuse onlining `[s, e)` (changing nothing) if deferred memory in it is already in a
    /// zone or in flight.
    pub(super) fn deferred_check_online(&self, s: u64, e: u64) -> Result<(), BuddyError> {
        match &self.deferred {
            Some(d) if d.listed(s, e) => Err(BuddyError::BadRange { start: s, nr: e - s }),
            _ => Ok(()),
        }
    }

    /// Refuse isolating/offlining `[s, e)` if a chunk in it is being initialised, or an edge
    /// cuts a deferred pageblock.
    pub(super) fn deferred_check_range(&self, s: u64, e: u64) -> Result<(), BuddyError> {
        let Some(d) = &self.deferred else {
            return Ok(());
        };
        if let Some((_, pfn)) = d.in_flight_at(s, e) {
            return Err(BuddyError::InitInProgress { pfn });
        }
        let pb = d.pageblock_pages();
        let cut = |p: u64| !p.is_multiple_of(pb) && d.test(p);
        if cut(s) || cut(e) {
            return Err(BuddyError::BadRange { start: s, nr: e - s });
        }
        Ok(())
    }

    /// Isolate (or un-isolate) the deferred ranges in `[s, e)`; per-zone pages switched.
    pub(super) fn deferred_set_isolated(&mut self, s: u64, e: u64, isolated: bool) -> Result<[u64; 2], BuddyError> {
        let Some(d) = self.deferred.as_mut() else {
            return Ok([0; 2]);
        };
        // Reserve for both zones first, so a failure changes nothing.
        for l in &mut d.lists {
            l.try_reserve(2).map_err(|_| BuddyError::NoBookkeeping)?;
        }
        let mut n = [0; 2];
        for zone in ZoneId::ALL {
            n[zone as usize] = d.set_isolated(zone, s, e, isolated)?;
        }
        Ok(n)
    }

    /// Drop the isolated deferred ranges in `[s, e)` from the lists (offline).
    pub(super) fn deferred_drop_isolated(&mut self, s: u64, e: u64) -> Result<[u64; 2], BuddyError> {
        let Some(d) = self.deferred.as_mut() else {
            return Ok([0; 2]);
        };
        for l in &mut d.lists {
            l.try_reserve(2).map_err(|_| BuddyError::NoBookkeeping)?;
        }
        let mut n = [0; 2];
        for zone in ZoneId::ALL {
            n[zone as usize] = d.drop_isolated(zone, s, e)?;
        }
        Ok(n)
    }
}

/// One step of background completion, for an idle CPU: take up to `budget_pages` worth of
/// chunks (at least one) off the deferred lists, one at a time, each under the allocator lock
/// only for the take and the hand-over; the `struct page`s are written with the lock dropped.
/// `with_alloc` runs its argument under the allocator lock. Returns the pages initialised
/// (0: nothing left).
pub fn deferred_init_step<M: Memmap>(
    memmap: &M,
    budget_pages: u64,
    mut with_alloc: impl FnMut(&mut dyn FnMut(&mut PageAlloc<M>)),
) -> u64 {
    let mut done = 0;
    loop {
        let mut chunk = None;
        with_alloc(&mut |a| chunk = a.deferred_take());
        let Some(c) = chunk else { break };
        c.init(memmap);
        let (mut c, mut r) = (Some(c), Ok(0));
        with_alloc(&mut |a| {
            if let Some(c) = c.take() {
                r = a.deferred_finish(c);
            }
        });
        done += r.unwrap_or(0);
        if done >= budget_pages {
            break;
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deferred(bits: &[bool]) -> Deferred {
        let mut d = Deferred {
            pageblock_order: 2,
            block_shift: 6,
            uninit: alloc::vec![0; bits.len().div_ceil(64)],
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
        assert_eq!(d.set_isolated(ZoneId::Movable, 16, 48, true), Ok(32));
        assert_eq!(d.lists[1].len(), 3);
        assert!(d.lists[1][1].isolated && (d.lists[1][1].start, d.lists[1][1].end) == (16, 48));
        assert_eq!(d.set_isolated(ZoneId::Movable, 16, 48, false), Ok(32));
        assert_eq!(d.lists[1], [r(0, 128)], "un-isolation merges back");
        d.set_isolated(ZoneId::Movable, 96, 200, true).unwrap();
        assert_eq!(d.drop_isolated(ZoneId::Movable, 0, 256), Ok(32));
        assert_eq!(d.lists[1], [r(0, 96)]);
        assert_eq!(d.take_piece(ZoneId::Movable, 5), Some((0, 32, 0)));
        assert_eq!(d.take_piece(ZoneId::Movable, 5), Some((32, 64, 0)));
        assert!(d.listed(70, 71) && !d.listed(0, 64) && !d.listed(96, 100));
    }
}
