//! Deferred struct page initialisation (Linux `CONFIG_DEFERRED_STRUCT_PAGE_INIT`, here for
//! hot-added memory too).
//!
//! With [`MemmapInit::Deferred`] the memmap of new memory is mapped at add time but its
//! `struct page`s are not written. The allocator knows which memmap is not initialised through
//! one bit per pageblock (the O(1) [`PageAlloc::is_initialised`] test every PFN walker uses
//! before it reads a `struct page`), and each zone keeps the not-yet-initialised part of its
//! memory as a sorted list of pageblock-aligned [`DeferredRange`]s, each tagged with its node
//! (no per-page state; a range never spans two nodes, and its pages are counted in, and
//! initialised for, their node's zone):
//!
//! - **online** hands a range over by inserting it in the zone's list (O(1) per run);
//! - **allocation** initialises one max-order chunk of a node's zone when that node's free
//!   lists cannot serve a request (Linux `deferred_grow_zone`);
//! - **background completion** ([`deferred_init_step`]) takes a chunk off a list under the
//!   allocator lock, initialises it outside, and hands it over under the lock again;
//! - **offline** of a deferred range needs no per-page work: isolation marks the list range
//!   isolated (it is free by definition), taking it offline drops it from the list, leaving
//!   the memmap uninitialised (the bit stays set); onlining it again puts it back;
//! - **removal** forgets the bits ([`PageAlloc::memmap_removed`]) without touching the memmap.

use super::{BuddyError, PageAlloc};
use crate::geometry::Geometry;
use crate::numa::{NodeId, MAX_NUMNODES};
use crate::page::{flags, Memmap, Page, ZoneId, POISON_CHECKS};
mod bookkeeping;
mod window;
pub(super) use bookkeeping::Deferred;
use bookkeeping::{VMEMMAP_OFFLINE, VMEMMAP_ONLINE};
pub use window::{background_after, idle_may_take};

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
    pub node: NodeId,
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
    pub node: NodeId,
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
    /// A self-hosted memmap page (memmap on memory, Linux `PageVmemmapSelfHosted`) whose struct
    /// page is never written: never in the allocator, `zone` is the zone its block is online in
    /// (`None`: offline). Answered from the block, in O(1).
    SelfHosted { zone: Option<ZoneId> },
}

/// Pages per node and zone (`[node][zone]`).
pub(super) type NodeZonePages = [[u64; 2]; MAX_NUMNODES];
const NO_PAGES: NodeZonePages = [[0; 2]; MAX_NUMNODES];

impl<M: Memmap> PageAlloc<M> {
    /// Make deferred initialisation possible, with a bitmap for the PFNs below `nr_pfns`
    /// allocated here, fallibly (memory deferred above it grows the bitmap, in `defer_memmap`).
    pub fn enable_deferred(&mut self, geom: Geometry, nr_pfns: u64) -> Result<(), BuddyError> {
        self.deferred = Some(Deferred::new(geom, nr_pfns)?);
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
            PageLookup::Deferred(DeferredState::Offline | DeferredState::SelfHosted { zone: None }) => Some(false),
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
        match d.vmemmap_at(pfn) {
            0 => {}
            VMEMMAP_OFFLINE => return PageLookup::Deferred(DeferredState::SelfHosted { zone: None }),
            v => {
                let zone = ZoneId::ALL.get(usize::from(v - VMEMMAP_ONLINE)).copied();
                return PageLookup::Deferred(DeferredState::SelfHosted { zone });
            }
        }
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

    /// [`deferred_in_flight`](Self::deferred_in_flight) with each chunk's node:
    /// `(zone, start, end, node)`.
    pub fn deferred_in_flight_nodes(&self) -> impl Iterator<Item = (ZoneId, u64, u64, NodeId)> + '_ {
        self.deferred.iter().flat_map(|d| d.in_flight.iter().copied())
    }

    /// Pages marked not initialised anywhere (the whole bitmap).
    pub fn uninit_pages_total(&self) -> u64 {
        self.deferred.as_ref().map_or(0, |d| d.count_all_uninit())
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

    /// Record that the self-hosted memmap pages `[pfn, pfn + nr)` of the memory block starting
    /// at `pfn` (just populated, offline) keep struct pages that are never written: their state
    /// is the block's, answered by [`lookup`](Self::lookup) in O(1), and they stay marked not
    /// initialised, so every walker skips them. The self-hosted memmap of a block is exactly
    /// its first pageblock (see `Geometry::memmap_pages_per_block`); any other range is
    /// refused (`BadRange`). `Err` (nothing changed) as [`defer_memmap`](Self::defer_memmap).
    pub fn defer_vmemmap(&mut self, pfn: u64, nr: u64) -> Result<(), BuddyError> {
        let bad = BuddyError::BadRange { start: pfn, nr };
        let d = self.deferred.as_mut().ok_or(bad)?;
        if nr != d.pageblock_pages() || !pfn.is_multiple_of(1 << d.block_shift()) {
            return Err(bad);
        }
        d.cover(pfn + nr)?;
        if d.count_uninit(pfn, pfn + nr) != 0 {
            return Err(bad);
        }
        d.set_vmemmap(pfn, VMEMMAP_OFFLINE)?;
        d.set_bits(pfn, pfn + nr, true);
        Ok(())
    }

    /// The block whose self-hosted memmap starts at `pfn` goes online in `zone` (`None`:
    /// offline). Returns whether its memmap is one [`defer_vmemmap`](Self::defer_vmemmap)
    /// recorded, whose state this O(1) update is all there is; `false`: its struct pages are
    /// initialised and the caller writes them.
    pub fn set_vmemmap_zone(&mut self, pfn: u64, zone: Option<ZoneId>) -> bool {
        let Some(d) = self.deferred.as_mut() else {
            return false;
        };
        if d.vmemmap_at(pfn) == 0 {
            return false;
        }
        let v = zone.map_or(VMEMMAP_OFFLINE, |z| VMEMMAP_ONLINE + z as u8);
        // The block's byte exists (non-zero above): setting it cannot grow the table.
        d.set_vmemmap(pfn, v).is_ok()
    }

    /// Pages of `[start, start + nr)` that are self-hosted memmap recorded by
    /// [`defer_vmemmap`](Self::defer_vmemmap) (never initialised, never to be): O(blocks).
    pub fn vmemmap_pages(&self, start: u64, nr: u64) -> u64 {
        let Some(d) = &self.deferred else {
            return 0;
        };
        let (bs, pb) = (1u64 << d.block_shift(), d.pageblock_pages());
        let end = start + nr;
        let mut n = 0;
        let mut b = start / bs * bs;
        while b < end {
            let (lo, hi) = (b.max(start), (b + pb).min(end));
            if lo < hi && d.vmemmap_at(b) != 0 {
                n += hi - lo;
            }
            b += bs;
        }
        n
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
            let bs = 1u64 << d.block_shift();
            let mut b = s.next_multiple_of(bs);
            while b < e {
                // Clearing a byte never grows the table.
                let _ = d.set_vmemmap(b, 0);
                b += bs;
            }
        }
        Ok(n)
    }

    /// Initialise one max-order chunk of `zone`'s deferred memory (of any node: the lowest
    /// range) under the lock and free it (Linux `deferred_grow_zone`). Returns whether there
    /// was one.
    pub fn deferred_grow(&mut self, zone: ZoneId) -> bool {
        self.grow(zone, None)
    }

    /// [`deferred_grow`](Self::deferred_grow) from node `nid`'s deferred memory of `zone` only.
    pub fn deferred_grow_node(&mut self, nid: NodeId, zone: ZoneId) -> bool {
        self.grow(zone, Some(nid))
    }

    fn grow(&mut self, zone: ZoneId, nid: Option<NodeId>) -> bool {
        let max_order = self.max_order;
        let Some(d) = self.deferred.as_mut() else {
            return false;
        };
        let Some((s, e, node)) = d.take_piece(zone, nid, max_order) else {
            return false;
        };
        let block_shift = d.block_shift();
        DeferredChunk {
            zone,
            start: s,
            end: e,
            node,
            block_shift,
        }
        .init(&self.memmap);
        self.hand_over(node, zone, s, e);
        true
    }

    /// Whether a chunk of `nid`'s `zone` is being initialised outside the lock.
    pub(super) fn deferred_in_flight_on(&self, nid: NodeId, zone: ZoneId) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|d| d.in_flight.iter().any(|&(z, _, _, n)| (z, n) == (zone, nid)))
    }

    /// The initialised chunk `[s, e)` of `nid`'s `zone` joins the free lists.
    fn hand_over(&mut self, nid: NodeId, zone: ZoneId, s: u64, e: u64) {
        if let Some(d) = self.deferred.as_mut() {
            d.set_bits(s, e, false);
        }
        self.zone_mut(nid, zone).counters.deferred -= e - s;
        self.free_run(nid, zone, s, e);
    }

    /// Take one chunk off a deferred list (Normal first), to be initialised outside the lock.
    /// `None` when no deferred memory is left (or the in-flight record cannot grow).
    pub fn deferred_take(&mut self) -> Option<DeferredChunk> {
        let max_order = self.max_order;
        let d = self.deferred.as_mut()?;
        d.in_flight.try_reserve(1).ok()?;
        for zone in ZoneId::ALL {
            if let Some((start, end, node)) = d.take_piece(zone, None, max_order) {
                d.in_flight.push((zone, start, end, node));
                return Some(DeferredChunk {
                    zone,
                    start,
                    end,
                    node,
                    block_shift: d.block_shift(),
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
        self.hand_over(c.node, c.zone, c.start, c.end);
        Ok(c.nr_pages())
    }

    /// Online the uninitialised run `[s, e)` (pageblock-aligned, offline) into `zone`: it goes
    /// on the zone's list, or, if the list cannot grow, is initialised and freed now.
    pub(super) fn online_deferred(&mut self, zone: ZoneId, node: NodeId, s: u64, e: u64) -> Result<(), BuddyError> {
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
        self.zones[node as usize][zone as usize].counters.deferred += e - s;
        if d.insert(zone, r).is_err() {
            let block_shift = d.block_shift();
            DeferredChunk {
                zone,
                start: s,
                end: e,
                node,
                block_shift,
            }
            .init(&self.memmap);
            self.hand_over(node, zone, s, e);
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
        init_pages(&self.memmap, s, s + pb, d.block_shift(), |block| Page {
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
            if !arch::mutant::on(arch::mutant::Mutant::HandoverNoInflight) {
                return Err(BuddyError::InitInProgress { pfn });
            }
        }
        let pb = d.pageblock_pages();
        let cut = |p: u64| !p.is_multiple_of(pb) && d.test(p);
        if cut(s) || cut(e) {
            return Err(BuddyError::BadRange { start: s, nr: e - s });
        }
        Ok(())
    }

    /// Isolate (or un-isolate) the deferred ranges in `[s, e)`; pages switched per node and
    /// zone.
    pub(super) fn deferred_set_isolated(
        &mut self,
        s: u64,
        e: u64,
        isolated: bool,
    ) -> Result<NodeZonePages, BuddyError> {
        let Some(d) = self.deferred.as_mut() else {
            return Ok(NO_PAGES);
        };
        // Reserve for both zones first, so a failure changes nothing.
        for l in &mut d.lists {
            l.try_reserve(2).map_err(|_| BuddyError::NoBookkeeping)?;
        }
        let mut n = NO_PAGES;
        for zone in ZoneId::ALL {
            for (nid, pages) in d.set_isolated(zone, s, e, isolated)?.into_iter().enumerate() {
                n[nid][zone as usize] = pages;
            }
        }
        Ok(n)
    }

    /// Drop the isolated deferred ranges in `[s, e)` from the lists (offline); pages dropped
    /// per node and zone.
    pub(super) fn deferred_drop_isolated(&mut self, s: u64, e: u64) -> Result<NodeZonePages, BuddyError> {
        let Some(d) = self.deferred.as_mut() else {
            return Ok(NO_PAGES);
        };
        for l in &mut d.lists {
            l.try_reserve(2).map_err(|_| BuddyError::NoBookkeeping)?;
        }
        let mut n = NO_PAGES;
        for zone in ZoneId::ALL {
            for (nid, pages) in d.drop_isolated(zone, s, e)?.into_iter().enumerate() {
                n[nid][zone as usize] = pages;
            }
        }
        Ok(n)
    }
}

/// `f` under the allocator lock (`with_alloc` runs its argument once, under the lock); while it
/// fails with deferred chunks in flight (free memory an idle CPU has not handed over yet), wait
/// with `wait` (the lock dropped) and try again, so an allocation never fails because background
/// initialisation holds the memory it needs. The kernel's allocation paths run through this.
pub fn wait_for_chunks<M: Memmap, R, E>(
    mut with_alloc: impl FnMut(&mut dyn FnMut(&mut PageAlloc<M>)),
    mut f: impl FnMut(&mut PageAlloc<M>) -> Result<R, E>,
    mut wait: impl FnMut(),
) -> Result<R, E> {
    loop {
        let mut out = None;
        with_alloc(&mut |a| {
            let r = f(a);
            let in_flight = r.is_err() && a.deferred_in_flight().next().is_some();
            out = Some((r, in_flight));
        });
        match out {
            Some((r, false)) => return r,
            Some((_, true)) => wait(),
            None => unreachable!("with_alloc runs its argument"),
        }
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
