//! Zone-aware buddy page allocator whose state lives in the memmap.
//!
//! Free blocks are linked through their head `struct page` (`next`/`prev` PFNs), one list per
//! node, zone and order, like Linux's `free_area` in each node's `pglist_data`. Every page of a
//! free block carries the block's node and zone, and buddies merge only within one node and
//! zone, so a block never spans two nodes. Allocation walks a node's zonelist
//! ([`zonelist`]: its own zones, then the other nodes' by distance). Isolation is what makes offlining safe: once a
//! range is isolated its free blocks leave the lists, and blocks freed into it are parked
//! (`BUDDY | ISOLATED` heads on no list), so nothing in the range can be handed out again until
//! it is either taken offline or unisolated.

use crate::numa::{Distances, NodeId, NodeMask, MAX_NUMNODES};
use crate::page::{flags, Memmap, Page, ZoneId, NO_PFN, POISON_CHECKS};

mod check;
mod deferred;
mod isolate;
pub use isolate::BusyPage;
mod zonelist;
pub use check::{NodeCensus, Rule, Violation, ZoneCensus};
pub use deferred::{
    background_after, deferred_init_step, idle_may_take, wait_for_chunks, DeferredChunk, DeferredRange, DeferredState,
    MemmapInit, PageLookup,
};

/// Orders 0..=13 (64K's MAX_PAGE_ORDER is 13).
pub const NR_ORDERS: usize = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FreeList {
    head: u64,
    len: u64,
    /// No block on the list starts below this PFN: lowered by every push, raised to the exact
    /// minimum by a search that walked the whole list ([`NO_PFN`] when that found it empty).
    /// An allocation below a limit skips, in O(1), every list with nothing there, which is
    /// all of them but one for each page an offline moves below the memory it takes away.
    low: u64,
}

/// Per-zone counters, in pages (of one node's zone, or summed over the nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneCounters {
    /// Pages handed to this zone's allocator (online, not self-hosted memmap).
    pub managed: u64,
    /// Pages on the free lists.
    pub free: u64,
    /// Free pages parked in isolated ranges (deferred ranges being offlined included).
    pub isolated: u64,
    /// Pages on the zone's deferred lists (or being initialised): present, free by
    /// definition, `struct page`s not written yet. Allocation initialises them as needed.
    pub deferred: u64,
}

impl ZoneCounters {
    /// Field-wise sum (a zone's counters over the nodes).
    const fn add(self, o: ZoneCounters) -> ZoneCounters {
        ZoneCounters {
            managed: self.managed + o.managed,
            free: self.free + o.free,
            isolated: self.isolated + o.isolated,
            deferred: self.deferred + o.deferred,
        }
    }

    /// Pages an allocation can still get: on the free lists or deferred.
    pub const fn available(&self) -> u64 {
        self.free + self.deferred
    }
}

#[derive(Clone, Copy, Debug)]
struct Zone {
    free_area: [FreeList; NR_ORDERS],
    counters: ZoneCounters,
}

const EMPTY_ZONE: Zone = Zone {
    free_area: [FreeList {
        head: NO_PFN,
        len: 0,
        low: NO_PFN,
    }; NR_ORDERS],
    counters: ZoneCounters {
        managed: 0,
        free: 0,
        isolated: 0,
        deferred: 0,
    },
};

/// Who the memory is for: kernel allocations come from NORMAL only; movable ones prefer
/// MOVABLE and fall back to NORMAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocKind {
    Kernel,
    Movable,
}

impl AllocKind {
    /// The zones of one node this kind is served from, in order.
    const fn zones(self) -> &'static [ZoneId] {
        match self {
            AllocKind::Kernel => &[ZoneId::Normal],
            AllocKind::Movable => &[ZoneId::Movable, ZoneId::Normal],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuddyError {
    /// The PFN has no memmap, or is not the head of an allocated block of that order.
    NotAllocated { pfn: u64 },
    /// A range that is not aligned to the largest block, or not populated.
    BadRange { start: u64, nr: u64 },
    /// The range holds an allocated page: it cannot go offline now.
    Busy { pfn: u64 },
    /// A deferred chunk at `pfn` is being initialised (by an idle CPU): try again shortly.
    InitInProgress { pfn: u64 },
    /// The deferred-range bookkeeping could not grow (kernel heap exhausted).
    NoBookkeeping,
    /// The allocated order-`order` block at `pfn` straddles the range's edge: move it first.
    Straddles { pfn: u64, order: u32 },
    /// A node id at or above [`MAX_NUMNODES`].
    BadNode { nid: NodeId },
}

impl core::fmt::Display for BuddyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BuddyError::NotAllocated { pfn } => write!(f, "pfn {pfn:#x} is not an allocated block of that order"),
            BuddyError::BadRange { start, nr } => {
                write!(f, "pfn range {start:#x}+{nr:#x} has no memmap or splits a block")
            }
            BuddyError::Busy { pfn } => write!(f, "pfn {pfn:#x} is in use"),
            BuddyError::InitInProgress { pfn } => {
                write!(
                    f,
                    "the struct pages at pfn {pfn:#x} are being initialised (deferred init)"
                )
            }
            BuddyError::NoBookkeeping => write!(f, "no memory for the deferred memmap bookkeeping"),
            BuddyError::Straddles { pfn, order } => {
                write!(
                    f,
                    "the allocated order-{order} block at pfn {pfn:#x} straddles the range's edge"
                )
            }
            BuddyError::BadNode { nid } => write!(f, "node {nid} is not below MAX_NUMNODES ({MAX_NUMNODES})"),
        }
    }
}

/// Per node, the order in which its allocations try the nodes (the node order of its zonelist).
type Zonelists = [([NodeId; MAX_NUMNODES], usize); MAX_NUMNODES];

pub struct PageAlloc<M: Memmap> {
    memmap: M,
    /// `zones[node][zone]`.
    zones: [[Zone; 2]; MAX_NUMNODES],
    distances: Distances,
    /// Built from `distances` (Linux `build_zonelists`), rebuilt when they change.
    zonelists: Zonelists,
    max_order: u32,
    deferred: Option<deferred::Deferred>,
}

impl<M: Memmap> PageAlloc<M> {
    pub const fn new(memmap: M, max_order: u32) -> Self {
        assert!((max_order as usize) < NR_ORDERS);
        PageAlloc {
            memmap,
            zones: [[EMPTY_ZONE; 2]; MAX_NUMNODES],
            distances: Distances::uniform(),
            zonelists: zonelist::build(&Distances::uniform()),
            max_order,
            deferred: None,
        }
    }

    pub fn memmap(&self) -> &M {
        &self.memmap
    }

    pub fn max_order(&self) -> u32 {
        self.max_order
    }

    fn pg(&mut self, pfn: u64) -> &mut Page {
        debug_assert!(self.memmap.valid(pfn));
        if POISON_CHECKS {
            assert!(
                self.is_initialised(pfn),
                "write to the deferred struct page of pfn {pfn:#x}"
            );
        }
        // SAFETY: callers only pass PFNs with a populated memmap (checked by the public entry
        // points), and `&mut self` makes this the only live reference into the memmap.
        let p = unsafe { self.memmap.page_mut(pfn) };
        if POISON_CHECKS {
            assert!(
                !p.is_poison(),
                "access to the uninitialised struct page of pfn {pfn:#x}"
            );
        }
        p
    }

    /// Copy of the `struct page` of `pfn`, if it has a memmap and it is initialised (see
    /// [`lookup`](Self::lookup) for the reason when not).
    pub fn page(&self, pfn: u64) -> Option<Page> {
        self.page_ref(pfn).copied()
    }

    /// [`page`](Self::page) without the copy (a `Page` is 64-byte aligned: copies of one inside
    /// an `Option` or a tuple are `memcpy` calls, the cost of a PFN walk).
    pub fn page_ref(&self, pfn: u64) -> Option<&Page> {
        if !self.memmap.valid(pfn) || !self.is_initialised(pfn) {
            return None;
        }
        // SAFETY: `valid` checked just above, so the struct page is live and aligned (the
        // `Memmap` contract); every writer of an initialised struct page holds the allocator
        // exclusively, which this `&self` borrow excludes while the reference lives.
        let p = unsafe { &*self.memmap.page(pfn) };
        if POISON_CHECKS {
            assert!(!p.is_poison(), "read of the uninitialised struct page of pfn {pfn:#x}");
        }
        Some(p)
    }

    /// Whether `[start, start + nr)` has a memmap: every PFN, or, once deferral is enabled
    /// (which knows the memory block size), every memory block's first and the last PFN.
    fn range_valid(&self, start: u64, nr: u64) -> bool {
        let end = start + nr;
        match &self.deferred {
            Some(d) => {
                let step = 1u64 << d.block_shift();
                let mut p = start;
                while p < end {
                    if !self.memmap.valid(p) {
                        return false;
                    }
                    p = (p / step + 1) * step;
                }
                nr == 0 || self.memmap.valid(end - 1)
            }
            None => (start..end).all(|p| self.memmap.valid(p)),
        }
    }

    /// Changes the `struct page` of `pfn` (which must have a memmap) under the allocator's
    /// exclusive borrow: for its owner's fields (`private` of an allocated block) and for pages
    /// the allocator does not manage (self-hosted memmap, offline pages). The allocator's own
    /// fields of the pages it manages are changed only by its operations.
    pub fn update_page<R>(&mut self, pfn: u64, f: impl FnOnce(&mut Page) -> R) -> Result<R, BuddyError> {
        if !self.memmap.valid(pfn) {
            return Err(BuddyError::BadRange { start: pfn, nr: 1 });
        }
        Ok(f(self.pg(pfn)))
    }

    fn zone(&self, nid: NodeId, zone: ZoneId) -> &Zone {
        &self.zones[nid as usize][zone as usize]
    }

    fn zone_mut(&mut self, nid: NodeId, zone: ZoneId) -> &mut Zone {
        &mut self.zones[nid as usize][zone as usize]
    }

    /// A zone's counters, summed over the nodes.
    pub fn counters(&self, zone: ZoneId) -> ZoneCounters {
        self.zones
            .iter()
            .fold(ZoneCounters::default(), |c, z| c.add(z[zone as usize].counters))
    }

    /// Free blocks per order in a zone, summed over the nodes.
    pub fn free_blocks(&self, zone: ZoneId) -> [u64; NR_ORDERS] {
        let mut n = [0; NR_ORDERS];
        for nid in 0..MAX_NUMNODES as NodeId {
            for (t, b) in n.iter_mut().zip(self.node_free_blocks(nid, zone)) {
                *t += b;
            }
        }
        n
    }

    /// The counters of one node's zone (all zero for a node id at or above `MAX_NUMNODES`).
    pub fn node_counters(&self, nid: NodeId, zone: ZoneId) -> ZoneCounters {
        self.zones
            .get(nid as usize)
            .map_or(ZoneCounters::default(), |z| z[zone as usize].counters)
    }

    /// Free blocks per order in one node's zone.
    pub fn node_free_blocks(&self, nid: NodeId, zone: ZoneId) -> [u64; NR_ORDERS] {
        self.zones
            .get(nid as usize)
            .map_or([0; NR_ORDERS], |z| z[zone as usize].free_area.map(|l| l.len))
    }

    /// The nodes with managed pages in some zone (Linux `N_MEMORY`).
    pub fn nodes_with_memory(&self) -> NodeMask {
        let mut m = NodeMask::empty();
        for (nid, z) in self.zones.iter().enumerate() {
            if z.iter().any(|z| z.counters.managed > 0) {
                m.set(nid as NodeId);
            }
        }
        m
    }

    fn list_push(&mut self, nid: NodeId, zone: ZoneId, order: u32, pfn: u64) {
        let head = self.zone(nid, zone).free_area[order as usize].head;
        let p = self.pg(pfn);
        p.flags = (p.flags | flags::BUDDY) & !(flags::HEAD | flags::MOVABLE);
        p.order = order as u8;
        p.zone = zone as u8;
        p.node = nid;
        p.refcount = 0;
        p.next = head;
        p.prev = NO_PFN;
        if head != NO_PFN {
            self.pg(head).prev = pfn;
        }
        let z = self.zone_mut(nid, zone);
        let l = &mut z.free_area[order as usize];
        l.head = pfn;
        l.len += 1;
        if !arch::mutant::on(arch::mutant::Mutant::FreeListLowStale) {
            l.low = l.low.min(pfn);
        }
        z.counters.free += 1 << order;
    }

    fn list_remove(&mut self, nid: NodeId, zone: ZoneId, order: u32, pfn: u64) {
        let (next, prev) = {
            let p = self.pg(pfn);
            p.flags &= !flags::BUDDY;
            (
                core::mem::replace(&mut p.next, NO_PFN),
                core::mem::replace(&mut p.prev, NO_PFN),
            )
        };
        if prev != NO_PFN {
            self.pg(prev).next = next;
        } else {
            self.zone_mut(nid, zone).free_area[order as usize].head = next;
        }
        if next != NO_PFN {
            self.pg(next).prev = prev;
        }
        let z = self.zone_mut(nid, zone);
        z.free_area[order as usize].len -= 1;
        z.counters.free -= 1 << order;
    }

    /// Free a block, merging with free buddies of the same node and zone (a buddy across a
    /// node boundary stays apart: a block's pages are all on its node).
    fn free_merge(&mut self, nid: NodeId, zone: ZoneId, mut pfn: u64, mut order: u32) {
        while order < self.max_order {
            let buddy = pfn ^ (1 << order);
            let Some(b) = self.page_ref(buddy) else { break };
            let mergeable = b.has(flags::BUDDY)
                && !b.has(flags::ISOLATED)
                && b.order as u32 == order
                && b.zone == zone as u8
                && b.node == nid;
            if !mergeable {
                break;
            }
            self.list_remove(b.node, zone, order, buddy);
            pfn = pfn.min(buddy);
            order += 1;
        }
        self.list_push(nid, zone, order, pfn);
    }

    /// Free the initialised pages `[s, e)` of `nid`'s `zone` in maximal aligned blocks.
    fn free_run(&mut self, nid: NodeId, zone: ZoneId, s: u64, e: u64) {
        for (q, order) in aligned_blocks(s, e, self.max_order) {
            self.free_merge(nid, zone, q, order);
        }
    }

    /// Give `[start, start + nr)` to node `node`'s `zone` (Linux `online_pages` →
    /// `__free_pages_core`): every `struct page` gets the node and zone;
    /// every page that is not `VMEMMAP_SELF_HOSTED` becomes free (its `RESERVED` bit from
    /// memmap initialisation is cleared).
    /// Returns the number of pages handed over.
    ///
    /// Pages whose `struct page`s are not initialised (deferred) are handed over as a range on
    /// the zone's deferred list (tagged with the node), without touching them.
    pub fn online_range(&mut self, zone: ZoneId, node: NodeId, start: u64, nr: u64) -> Result<u64, BuddyError> {
        if node as usize >= MAX_NUMNODES {
            return Err(BuddyError::BadNode { nid: node });
        }
        if !self.range_valid(start, nr) {
            return Err(BuddyError::BadRange { start, nr });
        }
        let end = start + nr;
        self.deferred_check_online(start, end)?;
        if nr > 0 {
            // A range starting or ending inside a deferred pageblock: initialise that one.
            self.materialise_cut(start)?;
            self.materialise_cut(end)?;
        }
        let mut given = 0;
        let mut run = start;
        while run < end {
            let run_end = self.next_init_change(run, end);
            if self.is_initialised(run) {
                given += self.online_initialised(zone, node, run, run_end);
            } else {
                self.online_deferred(zone, node, run, run_end)?;
                given += run_end - run;
            }
            run = run_end;
        }
        self.zone_mut(node, zone).counters.managed += given;
        Ok(given)
    }

    /// `online_range` over initialised `struct page`s: each is written once.
    fn online_initialised(&mut self, zone: ZoneId, node: NodeId, start: u64, end: u64) -> u64 {
        let mut given = 0;
        let mut pfn = start;
        while pfn < end {
            // One pass: initialise the run of usable pages starting here (self-hosted memmap
            // pages never enter the allocator), then free it in maximal aligned chunks.
            let run_start = pfn;
            while pfn < end {
                let p = self.pg(pfn);
                if p.has(flags::VMEMMAP_SELF_HOSTED) {
                    break;
                }
                p.flags &= !(flags::OFFLINE | flags::ISOLATED | flags::RESERVED | flags::BUDDY | flags::HEAD);
                p.zone = zone as u8;
                p.node = node;
                p.refcount = 0;
                pfn += 1;
            }
            self.free_run(node, zone, run_start, pfn);
            given += pfn - run_start;
            // Skip the self-hosted page that ended the run.
            if pfn < end {
                pfn += 1;
            }
        }
        given
    }

    /// Split an allocated block of `order` into `1 << order` allocated order-0 pages, each
    /// freed on its own later (Linux `split_page`): how a run of single-page allocations is
    /// served by one search.
    pub fn split_allocated(&mut self, pfn: u64, order: u32) -> Result<(), BuddyError> {
        let p = self.page_ref(pfn).ok_or(BuddyError::NotAllocated { pfn })?;
        if !p.has(flags::HEAD) || p.order as u32 != order {
            return Err(BuddyError::NotAllocated { pfn });
        }
        let kind = p.flags & flags::MOVABLE;
        self.pg(pfn).order = 0;
        for q in pfn + 1..pfn + (1 << order) {
            let t = self.pg(q);
            t.flags |= flags::HEAD | kind;
            t.order = 0;
            t.refcount = 1;
        }
        Ok(())
    }

    /// Free a block returned by [`alloc`](Self::alloc) with the same order.
    pub fn free(&mut self, pfn: u64, order: u32) -> Result<(), BuddyError> {
        let p = self.page_ref(pfn).ok_or(BuddyError::NotAllocated { pfn })?;
        if !p.has(flags::HEAD) || p.order as u32 != order {
            return Err(BuddyError::NotAllocated { pfn });
        }
        let zone = p.zone_id().ok_or(BuddyError::NotAllocated { pfn })?;
        let nid = p.node;
        if nid as usize >= MAX_NUMNODES {
            return Err(BuddyError::NotAllocated { pfn });
        }
        if p.has(flags::ISOLATED) {
            // Park it: the range is going offline; it must not be handed out again.
            let p = self.pg(pfn);
            p.flags = (p.flags | flags::BUDDY) & !(flags::HEAD | flags::MOVABLE);
            p.refcount = 0;
            self.zone_mut(nid, zone).counters.isolated += 1 << order;
        } else {
            // The head may end up inside a merged block: it must not keep `HEAD` (a stale
            // `HEAD` on a tail page would let a double free of it through).
            let p = self.pg(pfn);
            p.flags &= !(flags::HEAD | flags::MOVABLE);
            p.refcount = 0;
            self.free_merge(nid, zone, pfn, order);
        }
        Ok(())
    }
}

/// `[s, e)` as maximal naturally aligned blocks of at most order `max`, in address order.
fn aligned_blocks(s: u64, e: u64, max: u32) -> impl Iterator<Item = (u64, u32)> {
    let mut q = s;
    core::iter::from_fn(move || {
        if q >= e {
            return None;
        }
        let mut o = q.trailing_zeros().min(max);
        while q + (1 << o) > e {
            o -= 1;
        }
        let block = (q, o);
        q += 1 << o;
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;

    /// A memmap for PFNs [base, base + n) in a Vec.
    struct VecMemmap {
        base: u64,
        pages: Vec<UnsafeCell<Page>>,
    }
    // SAFETY: each PFN maps to its own element; the Vec never reallocates.
    unsafe impl Memmap for VecMemmap {
        fn page(&self, pfn: u64) -> *mut Page {
            self.pages[(pfn - self.base) as usize].get()
        }
        fn valid(&self, pfn: u64) -> bool {
            pfn >= self.base && pfn < self.base + self.pages.len() as u64
        }
    }

    fn alloc_with(base: u64, n: u64, max_order: u32) -> PageAlloc<VecMemmap> {
        let pages = (0..n).map(|_| UnsafeCell::new(Page::INIT)).collect();
        PageAlloc::new(VecMemmap { base, pages }, max_order)
    }

    /// Every allocator invariant over the whole memmap (isolation may be in progress).
    fn check(a: &PageAlloc<VecMemmap>) {
        let m = a.memmap();
        if let Err(v) = a.check(&[(m.base, m.pages.len() as u64)], false) {
            panic!("allocator invariant broken: {v}");
        }
    }

    /// A device block smaller than a max-order block (virtio-mem's 2 MiB sub-blocks on 4K):
    /// isolating it cuts the free block across each edge, so taking it offline leaves no free
    /// block reaching into offline memory, and the managed count drops by exactly its pages.
    #[test]
    fn isolating_part_of_a_free_block_cuts_it_at_the_edges() {
        let base = 1 << 20;
        for (start, nr) in [
            (base + 1536, 512),
            (base + 1024, 512),
            (base + 1280, 256),
            (base + 1100, 100),
        ] {
            let mut a = alloc_with(base, 4096, 10);
            a.online_range(ZoneId::Normal, 0, base, 4096).unwrap();
            let parked = a.isolate_range(start, nr);
            check(&a);
            let taken = a.offline_isolated(start, nr);
            let m = a.memmap();
            if let Err(v) = a.check(&[(m.base, m.pages.len() as u64)], true) {
                panic!("after offlining {start:#x}+{nr:#x}: {v}");
            }
            assert_eq!((parked, taken), (Ok(nr), Ok(nr)));
            assert_eq!(a.counters(ZoneId::Normal).managed, 4096 - nr);
            // Every free page is handed out once, none of the offline range.
            let got: Vec<u64> = core::iter::from_fn(|| a.alloc(0, AllocKind::Kernel)).collect();
            assert_eq!(got.len() as u64, 4096 - nr);
            assert!(got.iter().all(|p| !(start..start + nr).contains(p)));
            // And online again, it merges back whole.
            for p in got {
                a.free(p, 0).unwrap();
            }
            a.online_range(ZoneId::Normal, 0, start, nr).unwrap();
            check(&a);
            assert_eq!(a.free_blocks(ZoneId::Normal)[10], 4);
        }
    }

    /// An allocation below a limit finds exactly what is there across searches that found
    /// nothing: a search that walks a whole list raises the list's lower bound to its true
    /// minimum, and a free below it lowers it again.
    #[test]
    fn alloc_below_skips_only_lists_with_nothing_below() {
        let base = 1 << 20;
        let limit = base + 2048;
        let mut a = alloc_with(base, 4096, 10);
        a.online_range(ZoneId::Normal, 0, base, 4096).unwrap();
        let pages: Vec<u64> = core::iter::from_fn(|| a.alloc(0, AllocKind::Kernel)).collect();
        for &p in pages.iter().filter(|&&p| p >= limit) {
            a.free(p, 0).unwrap();
        }
        for _ in 0..2 {
            assert_eq!(a.alloc_below(0, AllocKind::Kernel, limit), None);
            check(&a);
        }
        a.free(base + 100, 0).unwrap();
        check(&a);
        assert_eq!(a.alloc_below(0, AllocKind::Kernel, limit), Some(base + 100));
        // Two buddies merge into an order-1 block below the limit.
        a.free(base + 10, 0).unwrap();
        a.free(base + 11, 0).unwrap();
        check(&a);
        assert_eq!(a.alloc_below(1, AllocKind::Kernel, limit), Some(base + 10));
        assert_eq!(a.alloc_below(0, AllocKind::Kernel, limit), None);
        assert!(a.alloc(0, AllocKind::Kernel).is_some_and(|p| p >= limit));
    }

    /// Taking up to order 6 at once gets the very pages 64 single-page searches would, and
    /// split into single pages they free back into the block they came from.
    #[test]
    fn alloc_below_upto_takes_what_single_pages_would() {
        let (base, limit) = (1 << 20, (1 << 20) + 3000);
        let fresh = || {
            let mut a = alloc_with(base, 4096, 10);
            a.online_range(ZoneId::Normal, 0, base, 4096).unwrap();
            a
        };
        let mut a = fresh();
        let singles: Vec<u64> = (0..64)
            .map(|_| a.alloc_below(0, AllocKind::Kernel, limit).unwrap())
            .collect();
        let mut a = fresh();
        let (pfn, taken) = a.alloc_below_this_node_upto(0, 6, AllocKind::Kernel, limit, 0).unwrap();
        assert_eq!(taken, 6);
        a.split_allocated(pfn, 6).unwrap();
        check(&a);
        assert_eq!((pfn..pfn + 64).collect::<Vec<_>>(), singles);
        for p in pfn..pfn + 64 {
            a.free(p, 0).unwrap();
        }
        check(&a);
        assert_eq!(a.free_blocks(ZoneId::Normal)[10], 4, "merged back whole");
    }

    /// An allocated block across the edge cannot be isolated in part: `Straddles`, nothing
    /// changed.
    #[test]
    fn an_allocated_block_across_the_edge_is_refused() {
        let base = 1 << 20;
        let mut a = alloc_with(base, 2048, 10);
        a.online_range(ZoneId::Normal, 0, base, 2048).unwrap();
        let big = a.alloc(10, AllocKind::Movable).unwrap();
        assert_eq!(
            a.isolate_range(big + 512, 512),
            Err(BuddyError::Straddles { pfn: big, order: 10 })
        );
        check(&a);
        assert_eq!(a.counters(ZoneId::Normal).isolated, 0);
    }

    #[test]
    fn online_alloc_free_round_trip_all_orders() {
        let mut a = alloc_with(1 << 20, 1 << 14, 10);
        assert_eq!(a.online_range(ZoneId::Normal, 0, 1 << 20, 1 << 14), Ok(1 << 14));
        check(&a);
        assert_eq!(a.free_blocks(ZoneId::Normal)[10], 16);
        let mut held = Vec::new();
        let mut order = 0;
        while let Some(pfn) = a.alloc(order, AllocKind::Kernel) {
            held.push((pfn, order));
            order = (order + 7) % 11;
        }
        for order in (0..=10).rev() {
            while let Some(pfn) = a.alloc(order, AllocKind::Kernel) {
                held.push((pfn, order));
            }
        }
        assert_eq!(a.counters(ZoneId::Normal).free, 0);
        check(&a);
        // No overlap between allocations.
        let mut seen = std::collections::BTreeSet::new();
        for &(pfn, o) in &held {
            for q in pfn..pfn + (1 << o) {
                assert!(seen.insert(q), "pfn {q} handed out twice");
            }
        }
        assert_eq!(seen.len(), 1 << 14);
        for (pfn, o) in held {
            a.free(pfn, o).unwrap();
        }
        check(&a);
        assert_eq!(a.free_blocks(ZoneId::Normal)[10], 16, "everything merged back");
    }

    #[test]
    fn double_free_and_wrong_order_are_errors() {
        let mut a = alloc_with(0, 4096, 10);
        a.online_range(ZoneId::Normal, 0, 0, 4096).unwrap();
        let p = a.alloc(3, AllocKind::Kernel).unwrap();
        assert_eq!(a.free(p, 2), Err(BuddyError::NotAllocated { pfn: p }));
        a.free(p, 3).unwrap();
        assert_eq!(a.free(p, 3), Err(BuddyError::NotAllocated { pfn: p }));
        assert_eq!(a.free(1 << 30, 0), Err(BuddyError::NotAllocated { pfn: 1 << 30 }));
        check(&a);
    }

    #[test]
    fn reserved_and_self_hosted_pages_never_enter_the_allocator() {
        let mut a = alloc_with(0, 2048, 10);
        for pfn in 0..8 {
            a.pg(pfn).flags = flags::VMEMMAP_SELF_HOSTED;
        }
        assert_eq!(a.online_range(ZoneId::Movable, 0, 0, 1000), Ok(1000 - 8));
        assert_eq!(a.online_range(ZoneId::Movable, 0, 1001, 1047), Ok(1047));
        assert!(a.page(1000).unwrap().has(flags::RESERVED));
        check(&a);
        let mut got = Vec::new();
        while let Some(p) = a.alloc(0, AllocKind::Movable) {
            got.push(p);
        }
        assert!(!got.iter().any(|&p| p < 8 || p == 1000));
        assert_eq!(got.len(), 2048 - 9);
        for p in got {
            a.free(p, 0).unwrap();
        }
        a.isolate_range(0, 1024).unwrap();
        assert_eq!(
            a.offline_isolated(0, 1024),
            Err(BuddyError::Busy { pfn: 1000 }),
            "a reserved page pins its range"
        );
    }

    #[test]
    fn zones_kernel_never_gets_movable() {
        let mut a = alloc_with(0, 2048, 10);
        a.online_range(ZoneId::Normal, 0, 0, 1024).unwrap();
        a.online_range(ZoneId::Movable, 0, 1024, 1024).unwrap();
        let mut k = Vec::new();
        while let Some(p) = a.alloc(0, AllocKind::Kernel) {
            k.push(p);
        }
        assert!(k.iter().all(|&p| p < 1024) && k.len() == 1024);
        assert!(a.alloc(0, AllocKind::Movable).is_some_and(|p| p >= 1024));
        // No cross-zone merge: buddies across the zone boundary stay apart.
        for p in k {
            a.free(p, 0).unwrap();
        }
        check(&a);
    }

    #[test]
    fn isolate_offline_and_busy() {
        let mut a = alloc_with(0, 4096, 10);
        a.online_range(ZoneId::Movable, 0, 0, 4096).unwrap();
        let before = a.counters(ZoneId::Movable);
        // Pin a page in the second half.
        let pinned = loop {
            let p = a.alloc(0, AllocKind::Movable).unwrap();
            if p >= 2048 {
                break p;
            }
        };
        let parked = a.isolate_range(2048, 2048).unwrap();
        assert_eq!(parked, 2047);
        check(&a);
        // Nothing in the isolated range is handed out any more.
        let mut outside = Vec::new();
        while let Some(p) = a.alloc(0, AllocKind::Movable) {
            assert!(p < 2048, "isolated page {p} handed out");
            outside.push(p);
        }
        assert_eq!(a.offline_isolated(2048, 2048), Err(BuddyError::Busy { pfn: pinned }));
        // A veto changes nothing: unisolate restores the free lists.
        a.unisolate_range(2048, 2048).unwrap();
        check(&a);
        assert_eq!(a.counters(ZoneId::Movable).free, 2047);
        // Free the pin; now offline succeeds and the zone shrinks.
        a.free(pinned, 0).unwrap();
        a.isolate_range(2048, 2048).unwrap();
        assert_eq!(a.offline_isolated(2048, 2048), Ok(2048));
        check(&a);
        let c = a.counters(ZoneId::Movable);
        assert_eq!(c.managed, before.managed - 2048);
        assert_eq!(c.isolated, 0);
        assert!(a.page(3000).unwrap().has(flags::OFFLINE));
        // And back online: counters return to the first snapshot.
        for p in outside {
            a.free(p, 0).unwrap();
        }
        a.online_range(ZoneId::Movable, 0, 2048, 2048).unwrap();
        check(&a);
        assert_eq!(a.counters(ZoneId::Movable), before);
    }

    #[test]
    fn frees_into_an_isolated_range_are_parked() {
        let mut a = alloc_with(0, 2048, 10);
        a.online_range(ZoneId::Normal, 0, 0, 2048).unwrap();
        let p = a.alloc(2, AllocKind::Kernel).unwrap();
        let start = p & !1023;
        a.isolate_range(start, 1024).unwrap();
        a.free(p, 2).unwrap();
        assert_eq!(a.counters(ZoneId::Normal).isolated, 1024);
        assert_eq!(a.offline_isolated(start, 1024), Ok(1024));
        check(&a);
    }

    #[test]
    fn a_freed_head_that_merged_away_cannot_be_freed_again() {
        let mut a = alloc_with(0, 1024, 10);
        a.online_range(ZoneId::Normal, 0, 0, 1024).unwrap();
        let (p, q) = (
            a.alloc(0, AllocKind::Kernel).unwrap(),
            a.alloc(0, AllocKind::Kernel).unwrap(),
        );
        assert_eq!(p ^ 1, q, "two halves of one order-1 block");
        a.free(p, 0).unwrap();
        a.free(q, 0).unwrap();
        check(&a);
        let tail = p.max(q);
        assert_eq!(a.free(tail, 0), Err(BuddyError::NotAllocated { pfn: tail }));
        check(&a);
        assert_eq!(a.free_blocks(ZoneId::Normal)[10], 1);
    }

    /// The failed-offline rollback: pages freed into an isolated range are parked at
    /// their own order next to parked buddies; un-isolation must merge them without ever
    /// taking a parked neighbour off a list it is not on.
    #[test]
    fn unisolate_merges_parked_buddies_back() {
        let mut a = alloc_with(0, 2048, 10);
        a.online_range(ZoneId::Movable, 0, 0, 2048).unwrap();
        let before = a.counters(ZoneId::Movable);
        let held: Vec<u64> = (0..5).map(|_| a.alloc(0, AllocKind::Movable).unwrap()).collect();
        let start = held[0] & !1023;
        assert_eq!(a.isolate_range(start, 1024), Ok(1024 - 5));
        // "Migration": the pages are freed while isolated, so they are parked, not merged.
        for p in held {
            a.free(p, 0).unwrap();
        }
        check(&a);
        assert_eq!(a.counters(ZoneId::Movable).isolated, 1024);
        a.unisolate_range(start, 1024).unwrap();
        if let Err(v) = a.check(&[(0, 2048)], true) {
            panic!("after unisolate: {v}");
        }
        assert_eq!(a.counters(ZoneId::Movable), before);
        assert_eq!(a.free_blocks(ZoneId::Movable)[10], 2, "everything merged back");
        let all: Vec<u64> = std::iter::from_fn(|| a.alloc(0, AllocKind::Movable)).collect();
        assert_eq!(all.len(), 2048);
    }

    #[test]
    fn unpopulated_ranges_are_rejected() {
        let mut a = alloc_with(0, 2048, 10);
        a.online_range(ZoneId::Normal, 0, 0, 2048).unwrap();
        assert!(matches!(a.isolate_range(0, 4096), Err(BuddyError::BadRange { .. })));
        assert!(matches!(a.isolate_range(0, 0), Err(BuddyError::BadRange { .. })));
        check(&a);
    }

    #[test]
    fn isolation_after_a_self_hosted_memmap() {
        // A block whose first 8 pages back its memmap: the rest starts pageblock-aligned only.
        let mut a = alloc_with(0, 1024, 10);
        for pfn in 0..8 {
            a.pg(pfn).flags = flags::VMEMMAP_SELF_HOSTED;
        }
        a.online_range(ZoneId::Movable, 0, 0, 1024).unwrap();
        assert_eq!(a.isolate_range(8, 1016), Ok(1016));
        assert_eq!(a.offline_isolated(8, 1016), Ok(1016));
        check(&a);
        assert_eq!(a.counters(ZoneId::Movable).managed, 0);
    }
}
