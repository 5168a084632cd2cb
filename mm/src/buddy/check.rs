//! The page allocator's invariant checker: free lists vs memmap flags vs zone counters vs a full
//! recount (the kind of check Linux spreads over `CONFIG_DEBUG_VM` asserts, done in one pass),
//! per node and zone: every page of a free block carries the node of the list it is on, and
//! each node's zone counters match that node's recount.
//!
//! It reads every initialised `struct page` of the ranges it is given (deferred ones are
//! skipped by the O(1) initialised test and accounted from the zones' deferred lists), so it
//! costs O(initialised pages); the test
//! builds run it after every hotplug operation, and the shell runs it on demand
//! (`meminfo check`). A violation names the PFN and the rule it broke.

use super::{PageAlloc, NR_ORDERS};
use crate::numa::{NodeId, MAX_NUMNODES};
use crate::page::{flags, Memmap, ZoneId, NO_PFN};
use alloc::collections::BTreeSet;

/// Which invariant a [`Violation`] broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A free-list link points at a PFN without memmap, a `prev` link disagrees, or the list is
    /// longer than its recorded length (a cycle).
    ListLink { zone: ZoneId, order: u32 },
    /// A listed PFN is not a free (`BUDDY`, not isolated) head of the list's order and zone.
    ListedNotFree { zone: ZoneId, order: u32 },
    /// A listed block below the list's lower bound (an allocation below a limit would skip it).
    ListBelowLow { zone: ZoneId, order: u32 },
    /// A free head of this order and zone that is on no free list.
    FreeNotListed { zone: ZoneId, order: u32 },
    /// A block head whose order exceeds the maximum or whose PFN is not aligned to it.
    Misaligned { order: u32 },
    /// A block reaching past the populated memmap of the range.
    BlockOutOfRange { order: u32 },
    /// A page inside a block (not its head) carrying `BUDDY` or `HEAD`.
    TailFlagged { head: u64 },
    /// A free head with flags that exclude being free (head, reserved, offline, self-hosted),
    /// or a parked (isolated) free head still linked to a list.
    BadFreeHead,
    /// A head whose zone byte names no zone.
    BadZone,
    /// A head whose node byte is not below `MAX_NUMNODES`.
    BadNode,
    /// A page of a free block (or a listed head) whose node is not `node`, the node of the
    /// list it is on (or of its block's head): a block spanning two nodes.
    WrongNode { node: NodeId },
    /// A node's zone counter disagreeing with that node's recount.
    Counter {
        node: NodeId,
        zone: ZoneId,
        counter: &'static str,
        recorded: u64,
        recount: u64,
    },
    /// A page left isolated while no offline is in progress.
    LeftIsolated,
    /// A zone's deferred list is not sorted, disjoint, pageblock-aligned and non-empty, or
    /// holds a range whose memmap is marked initialised (or one left isolated when quiescent).
    DeferredList { zone: ZoneId },
    /// A block reaching into memmap that is not initialised.
    UninitInBlock { head: u64 },
    /// A page inside a block that the allocator does not manage (offline, reserved or
    /// self-hosted memmap) or that belongs to another zone than the block's head: a free block
    /// straddling memory that went offline (or was never online).
    TailNotManaged { head: u64 },
    /// An online page (not reserved, offline or self-hosted) in no block: leaked, and
    /// counted by nobody.
    Orphan,
    /// Memmap marked not initialised (deferred) where there is no memmap: a removal that left
    /// its bits behind.
    DeferredWithoutMemmap { pages: u64 },
    /// A self-hosted memmap answered from its block (never initialised) whose pageblock is
    /// marked initialised, on a deferred list or in flight, or has no memmap.
    SelfHostedState,
}

/// A broken invariant at `pfn` ([`NO_PFN`] for a zone-wide counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub pfn: u64,
    pub rule: Rule,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use Rule::*;
        if self.pfn != NO_PFN {
            write!(f, "pfn {:#x}: ", self.pfn)?;
        }
        match self.rule {
            ListLink { zone, order } => write!(f, "broken link in the {} order-{order} free list", zone.name()),
            ListedNotFree { zone, order } => {
                write!(
                    f,
                    "on the {} order-{order} free list but not a free head of it",
                    zone.name()
                )
            }
            ListBelowLow { zone, order } => write!(
                f,
                "on the {} order-{order} free list below the list's lower bound",
                zone.name()
            ),
            FreeNotListed { zone, order } => {
                write!(f, "free {} order-{order} head on no free list", zone.name())
            }
            Misaligned { order } => write!(f, "order-{order} block head not aligned (or order too large)"),
            BlockOutOfRange { order } => write!(f, "order-{order} block reaches past the memmap"),
            TailFlagged { head } => write!(f, "page inside the block at pfn {head:#x} is flagged buddy/head"),
            BadFreeHead => write!(f, "free head with conflicting flags or stale list links"),
            BadZone => write!(f, "head with an invalid zone"),
            BadNode => write!(f, "head with an invalid node"),
            WrongNode { node } => write!(f, "page of a free block on node {node} carries another node"),
            Counter {
                node,
                zone,
                counter,
                recorded,
                recount,
            } => write!(
                f,
                "node {node} zone {} {counter} is {recorded}, recount gives {recount}",
                zone.name()
            ),
            LeftIsolated => write!(f, "page left isolated with no offline in progress"),
            DeferredList { zone } => write!(f, "bad range on the {} deferred list", zone.name()),
            TailNotManaged { head } => write!(
                f,
                "page inside the block at pfn {head:#x} is offline, reserved, self-hosted or in another zone"
            ),
            Orphan => write!(f, "online page in no block (leaked)"),
            DeferredWithoutMemmap { pages } => {
                write!(
                    f,
                    "{pages} pages marked deferred (uninitialised memmap) where there is no memmap"
                )
            }
            SelfHostedState => write!(
                f,
                "self-hosted memmap answered from its block is initialised, listed or without memmap"
            ),
            UninitInBlock { head } => {
                write!(
                    f,
                    "page inside the block at pfn {head:#x} is not initialised (deferred)"
                )
            }
        }
    }
}

/// The violation of `rule` at `pfn`.
const fn v(pfn: u64, rule: Rule) -> Violation {
    Violation { pfn, rule }
}

/// Pages the allocator does not manage: never in a block.
const UNMANAGED: u32 = flags::RESERVED | flags::OFFLINE | flags::VMEMMAP_SELF_HOSTED;

/// What the checker counted, per zone (pages): of one node, or summed over the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneCensus {
    /// On the free lists.
    pub free: u64,
    /// Parked in isolated ranges.
    pub isolated: u64,
    /// In allocated blocks.
    pub allocated: u64,
    /// Free blocks per order (listed).
    pub blocks: [u64; NR_ORDERS],
    /// On the deferred lists (not isolated) or being initialised.
    pub deferred: u64,
}

impl ZoneCensus {
    fn add(&mut self, o: &ZoneCensus) {
        self.free += o.free;
        self.isolated += o.isolated;
        self.allocated += o.allocated;
        self.deferred += o.deferred;
        for (b, ob) in self.blocks.iter_mut().zip(o.blocks) {
            *b += ob;
        }
    }
}

/// The census of every node's zones (`[node][zone]`).
pub type NodeCensus = [[ZoneCensus; 2]; MAX_NUMNODES];

impl<M: Memmap> PageAlloc<M> {
    /// [`check_nodes`](Self::check_nodes), with each zone's census summed over the nodes.
    pub fn check(&self, ranges: &[(u64, u64)], quiescent: bool) -> Result<[ZoneCensus; 2], Violation> {
        let nodes = self.check_nodes(ranges, quiescent)?;
        let mut census = [ZoneCensus::default(); 2];
        for node in &nodes {
            for (c, n) in census.iter_mut().zip(node) {
                c.add(n);
            }
        }
        Ok(census)
    }

    /// Check every invariant of the allocator over the PFN ranges `(start, nr)`, which must
    /// cover every page the allocator manages (all populated memmap). With `quiescent`, no
    /// offline is in progress, so no page may be isolated. Returns the census per node and zone.
    pub fn check_nodes(&self, ranges: &[(u64, u64)], quiescent: bool) -> Result<NodeCensus, Violation> {
        // 1. The lists: links consistent, every entry a free head of the list's order and zone.
        self.check_free_lists()?;
        // 2. The deferred lists: sane ranges over memmap marked uninitialised; counted as
        // deferred (isolated ones as isolated).
        let mut census = self.check_deferred(ranges, quiescent)?;
        // 3. The memmap: walk the initialised heads, recount, check flags.
        for &(start, nr) in ranges {
            self.check_memmap(start, start + nr, quiescent, &mut census)?;
        }
        // 4. Lists vs recount: the lists hold only free heads (1), so equal counts mean equal
        // sets; on a mismatch, name a free head that no list holds.
        self.check_counters(ranges, &census)?;
        Ok(census)
    }

    /// Every free list's links are consistent and every entry is a free head of the list's
    /// order and zone, on the list's node, not below the list's lower bound.
    fn check_free_lists(&self) -> Result<(), Violation> {
        for (nid, zone) in node_zones() {
            for order in 0..NR_ORDERS as u32 {
                let list = self.zone(nid, zone).free_area[order as usize];
                let (mut pfn, mut prev, mut n) = (list.head, NO_PFN, 0);
                while pfn != NO_PFN {
                    let p = self.page_ref(pfn).ok_or(v(pfn, Rule::ListLink { zone, order }))?;
                    if p.prev != prev || n == list.len {
                        return Err(v(pfn, Rule::ListLink { zone, order }));
                    }
                    let free_head = p.has(flags::BUDDY) && !p.has(flags::ISOLATED);
                    if !free_head || p.order as u32 != order || p.zone != zone as u8 {
                        return Err(v(pfn, Rule::ListedNotFree { zone, order }));
                    }
                    if p.node != nid {
                        return Err(v(pfn, Rule::WrongNode { node: nid }));
                    }
                    if pfn < list.low {
                        return Err(v(pfn, Rule::ListBelowLow { zone, order }));
                    }
                    (prev, pfn, n) = (pfn, p.next, n + 1);
                }
                if n != list.len {
                    return Err(v(list.head, Rule::ListLink { zone, order }));
                }
            }
        }
        Ok(())
    }

    /// The deferred lists and the ranges being initialised: sane, over memmap marked
    /// uninitialised, and none outside `ranges`. Returns the census they start.
    fn check_deferred(&self, ranges: &[(u64, u64)], quiescent: bool) -> Result<NodeCensus, Violation> {
        let mut census = [[ZoneCensus::default(); 2]; MAX_NUMNODES];
        let pb = self.deferred.as_ref().map_or(1, |d| d.pageblock_pages());
        for zone in ZoneId::ALL {
            let mut prev_end = 0;
            for r in self.deferred_ranges(zone) {
                let bad = r.start >= r.end
                    || r.start < prev_end
                    || !r.start.is_multiple_of(pb)
                    || !r.end.is_multiple_of(pb)
                    || (quiescent && r.isolated)
                    || r.node as usize >= MAX_NUMNODES
                    || self.uninit_pages(r.start, r.nr_pages()) != r.nr_pages();
                if bad {
                    return Err(v(r.start, Rule::DeferredList { zone }));
                }
                prev_end = r.end;
                let c = &mut census[r.node as usize][zone as usize];
                if r.isolated {
                    c.isolated += r.nr_pages();
                } else {
                    c.deferred += r.nr_pages();
                }
            }
        }
        let inside: u64 = ranges.iter().map(|&(s, n)| self.uninit_pages(s, n)).sum();
        let total = self.uninit_pages_total();
        if inside != total {
            return Err(v(
                NO_PFN,
                Rule::DeferredWithoutMemmap {
                    pages: total.abs_diff(inside),
                },
            ));
        }
        if let Some(d) = &self.deferred {
            let pb = d.pageblock_pages();
            for s in d.vmemmap_blocks() {
                if !self.memmap.valid(s) || self.uninit_pages(s, pb) != pb || d.listed(s, s + pb) {
                    return Err(v(s, Rule::SelfHostedState));
                }
            }
        }
        for (zone, s, e, nid) in self.deferred_in_flight_nodes() {
            if self.uninit_pages(s, e - s) != e - s || nid as usize >= MAX_NUMNODES {
                return Err(v(s, Rule::DeferredList { zone }));
            }
            census[nid as usize][zone as usize].deferred += e - s;
        }
        Ok(census)
    }

    /// The initialised memmap of `[start, end)`: block heads aligned and inside the range,
    /// flags consistent, tails plain; free, isolated and allocated pages counted into `census`.
    fn check_memmap(&self, start: u64, end: u64, quiescent: bool, census: &mut NodeCensus) -> Result<(), Violation> {
        let mut pfn = start;
        while pfn < end {
            if !self.is_initialised(pfn) {
                pfn = self.next_init_change(pfn, end);
                continue;
            }
            let p = self.page_ref(pfn).ok_or(v(pfn, Rule::BlockOutOfRange { order: 0 }))?;
            if quiescent && p.has(flags::ISOLATED) {
                return Err(v(pfn, Rule::LeftIsolated));
            }
            if !p.has(flags::BUDDY | flags::HEAD) {
                if !p.has(UNMANAGED) {
                    return Err(v(pfn, Rule::Orphan));
                }
                pfn += 1;
                continue;
            }
            let order = p.order as u32;
            if order > self.max_order || !pfn.is_multiple_of(1 << order) {
                return Err(v(pfn, Rule::Misaligned { order }));
            }
            if pfn + (1 << order) > end {
                return Err(v(pfn, Rule::BlockOutOfRange { order }));
            }
            let zone = p.zone_id().ok_or(v(pfn, Rule::BadZone))?;
            let c = census
                .get_mut(p.node as usize)
                .ok_or(v(pfn, Rule::BadNode))?
                .get_mut(zone as usize)
                .ok_or(v(pfn, Rule::BadZone))?;
            if p.has(flags::BUDDY) {
                let conflicting = flags::HEAD | flags::RESERVED | flags::OFFLINE | flags::VMEMMAP_SELF_HOSTED;
                let parked = p.has(flags::ISOLATED);
                if p.has(conflicting) || (parked && (p.next != NO_PFN || p.prev != NO_PFN)) {
                    return Err(v(pfn, Rule::BadFreeHead));
                }
                if parked {
                    c.isolated += 1 << order;
                } else {
                    c.free += 1 << order;
                    c.blocks[order as usize] += 1;
                }
            } else {
                c.allocated += 1 << order;
            }
            if self.next_init_change(pfn, pfn + (1 << order)) != pfn + (1 << order) {
                return Err(v(pfn, Rule::UninitInBlock { head: pfn }));
            }
            for q in pfn + 1..pfn + (1 << order) {
                let t = self.page_ref(q).ok_or(v(q, Rule::BlockOutOfRange { order }))?;
                if t.has(flags::BUDDY | flags::HEAD) {
                    return Err(v(q, Rule::TailFlagged { head: pfn }));
                }
                if t.has(UNMANAGED) || t.zone != p.zone {
                    return Err(v(q, Rule::TailNotManaged { head: pfn }));
                }
                if t.node != p.node {
                    return Err(v(q, Rule::WrongNode { node: p.node }));
                }
                if quiescent && t.has(flags::ISOLATED) {
                    return Err(v(q, Rule::LeftIsolated));
                }
            }
            pfn += 1 << order;
        }
        Ok(())
    }

    /// The free lists' lengths and the zone counters against the recount, per node.
    fn check_counters(&self, ranges: &[(u64, u64)], census: &NodeCensus) -> Result<(), Violation> {
        for (nid, zone) in node_zones() {
            let c = census[nid as usize][zone as usize];
            for order in 0..NR_ORDERS as u32 {
                if c.blocks[order as usize] != self.zone(nid, zone).free_area[order as usize].len {
                    let pfn = self.unlisted_head(ranges, nid, zone, order).unwrap_or(NO_PFN);
                    return Err(v(pfn, Rule::FreeNotListed { zone, order }));
                }
            }
            let k = self.zone(nid, zone).counters;
            let counter = |counter, recorded, recount| {
                (recorded != recount).then_some(v(
                    NO_PFN,
                    Rule::Counter {
                        node: nid,
                        zone,
                        counter,
                        recorded,
                        recount,
                    },
                ))
            };
            let managed = c.free + c.isolated + c.allocated + c.deferred;
            if let Some(e) = counter("free", k.free, c.free)
                .or(counter("isolated", k.isolated, c.isolated))
                .or(counter("deferred", k.deferred, c.deferred))
                .or(counter("managed", k.managed, managed))
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// A free head of `nid`'s `zone`/`order` in `ranges` that its free list does not hold.
    fn unlisted_head(&self, ranges: &[(u64, u64)], nid: NodeId, zone: ZoneId, order: u32) -> Option<u64> {
        let mut listed = BTreeSet::new();
        let mut pfn = self.zone(nid, zone).free_area[order as usize].head;
        while pfn != NO_PFN && listed.insert(pfn) {
            pfn = self.page_ref(pfn)?.next;
        }
        ranges.iter().flat_map(|&(s, n)| s..s + n).find(|&pfn| {
            self.page_ref(pfn).is_some_and(|p| {
                p.has(flags::BUDDY)
                    && !p.has(flags::ISOLATED)
                    && p.order as u32 == order
                    && p.zone == zone as u8
                    && p.node == nid
                    && pfn % (1 << order) == 0
                    && !listed.contains(&pfn)
            })
        })
    }
}

/// Every (node, zone) pair.
fn node_zones() -> impl Iterator<Item = (NodeId, ZoneId)> {
    (0..MAX_NUMNODES as NodeId).flat_map(|n| ZoneId::ALL.map(|z| (n, z)))
}
