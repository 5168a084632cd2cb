//! Node-ordered allocation (Linux's node-ordered zonelists, `build_zonelists` and
//! `get_page_from_freelist`): an allocation for node `nid` tries, for each node of
//! `nid`'s fallback order ([`Distances::fallback_order`]: itself, then the others by distance),
//! the zones of its [`AllocKind`] on that node (Movable then Normal for movable memory, Normal
//! for kernel memory). So a node's allocations come from its own memory while it has any, then
//! from the nearest node that has some; a node without memory allocates from its nearest.

use super::{AllocKind, PageAlloc, Zonelists};
use crate::numa::{Distances, NodeId, MAX_NUMNODES};
use crate::page::{flags, Memmap, ZoneId, NO_PFN};

/// Every node's fallback order under `d`.
pub(super) const fn build(d: &Distances) -> Zonelists {
    let mut z = [([0; MAX_NUMNODES], 0); MAX_NUMNODES];
    let mut nid = 0;
    while nid < MAX_NUMNODES {
        z[nid] = d.fallback_order(nid as NodeId);
        nid += 1;
    }
    z
}

/// Why one node's zone could not serve an allocation.
enum Miss {
    /// No free block of the order, and no deferred memory left to initialise.
    Empty,
    /// Its deferred memory is being initialised by an idle CPU: free, not handed over yet.
    InFlight,
}

impl<M: Memmap> PageAlloc<M> {
    /// Use the distance table `d`: every node's fallback order is rebuilt from it.
    pub fn set_distances(&mut self, d: Distances) {
        self.distances = d;
        self.zonelists = build(&d);
    }

    pub fn distances(&self) -> Distances {
        self.distances
    }

    /// The nodes `nid`'s allocations try, in order (empty for a node id at or above
    /// `MAX_NUMNODES`).
    pub fn fallback_nodes(&self, nid: NodeId) -> &[NodeId] {
        self.zonelists
            .get(nid as usize)
            .map_or(&[], |(order, len)| &order[..*len])
    }

    /// Allocate 2^order pages with no node preference (the first node's zonelist); returns
    /// the head PFN.
    pub fn alloc(&mut self, order: u32, kind: AllocKind) -> Option<u64> {
        self.alloc_node(order, kind, 0)
    }

    /// Allocate 2^order pages for node `nid`: its zonelist, node by node (see the module
    /// documentation). `None` when no node can serve, or when a zone that would be tried has
    /// memory being initialised in the background: the caller waits for it
    /// (`deferred_in_flight`) rather than taking memory further down the list, so placement does
    /// not depend on how far background initialisation got.
    pub fn alloc_node(&mut self, order: u32, kind: AllocKind, nid: NodeId) -> Option<u64> {
        if order > self.max_order || nid as usize >= MAX_NUMNODES {
            return None;
        }
        let (nodes, len) = self.zonelists[nid as usize];
        for &n in &nodes[..len] {
            for &zone in kind.zones() {
                match self.alloc_from(n, zone, order, kind) {
                    Ok(pfn) => return Some(pfn),
                    Err(Miss::InFlight) => return None,
                    Err(Miss::Empty) => {}
                }
            }
        }
        None
    }

    /// [`alloc_node`](Self::alloc_node) on node `nid` alone (Linux `__GFP_THISNODE`).
    pub fn alloc_this_node(&mut self, order: u32, kind: AllocKind, nid: NodeId) -> Option<u64> {
        if order > self.max_order || nid as usize >= MAX_NUMNODES {
            return None;
        }
        kind.zones()
            .iter()
            .find_map(|&zone| self.alloc_from(nid, zone, order, kind).ok())
    }

    /// From `nid`'s `zone`: initialised free memory first, a deferred chunk only when that
    /// cannot serve.
    fn alloc_from(&mut self, nid: NodeId, zone: ZoneId, order: u32, kind: AllocKind) -> Result<u64, Miss> {
        if self.zone(nid, zone).counters.managed == 0 {
            return Err(Miss::Empty);
        }
        loop {
            let z = self.zone(nid, zone);
            match (order..=self.max_order).find(|&o| z.free_area[o as usize].len > 0) {
                Some(found) => {
                    let pfn = z.free_area[found as usize].head;
                    return Ok(self.take(nid, zone, found, pfn, order, kind));
                }
                None if self.deferred_grow_node(nid, zone) => {}
                None if self.deferred_in_flight_on(nid, zone) => return Err(Miss::InFlight),
                None => return Err(Miss::Empty),
            }
        }
    }

    /// Take the free order-`found` block at `pfn` off its list and hand out its first
    /// 2^`order` pages (the rest go back on the lists, split).
    fn take(&mut self, nid: NodeId, zone: ZoneId, found: u32, pfn: u64, order: u32, kind: AllocKind) -> u64 {
        self.list_remove(nid, zone, found, pfn);
        let mut o = found;
        while o > order {
            o -= 1;
            self.list_push(nid, zone, o, pfn + (1 << o));
        }
        let p = self.pg(pfn);
        p.flags |= flags::HEAD;
        if kind == AllocKind::Movable {
            p.flags |= flags::MOVABLE;
        }
        p.order = order as u8;
        p.refcount = 1;
        pfn
    }

    /// [`alloc_below_node`](Self::alloc_below_node) with no node preference.
    pub fn alloc_below(&mut self, order: u32, kind: AllocKind, limit: u64) -> Option<u64> {
        self.alloc_below_node(order, kind, limit, 0)
    }

    /// [`alloc_node`](Self::alloc_node) from memory below `limit` (a PFN) if there is any:
    /// migration for a shrink takes its targets below what the same shrink will take away, so
    /// each page moves once. Node by node along `nid`'s zonelist, the free lists are searched
    /// for a head below `limit` (the first one found: splits push their remainders to the list
    /// heads, so a run of such allocations finds them at once); `None` when no free block below
    /// `limit` can serve (deferred memory is not initialised for it).
    pub fn alloc_below_node(&mut self, order: u32, kind: AllocKind, limit: u64, nid: NodeId) -> Option<u64> {
        if order > self.max_order || nid as usize >= MAX_NUMNODES {
            return None;
        }
        let (nodes, len) = self.zonelists[nid as usize];
        nodes[..len]
            .iter()
            .find_map(|&n| self.alloc_below_this_node(order, kind, limit, n))
    }

    /// [`alloc_below_node`](Self::alloc_below_node) on node `nid` alone.
    pub fn alloc_below_this_node(&mut self, order: u32, kind: AllocKind, limit: u64, nid: NodeId) -> Option<u64> {
        self.alloc_below_this_node_upto(order, order, kind, limit, nid)
            .map(|(pfn, _)| pfn)
    }

    /// [`alloc_below_this_node`](Self::alloc_below_this_node) of `order` that takes up to order
    /// `upto` of the free block the search finds: the very pages a run of `order` allocations
    /// would get, since they split that block front to back. Returns the PFN and the order
    /// taken.
    pub fn alloc_below_this_node_upto(
        &mut self,
        order: u32,
        upto: u32,
        kind: AllocKind,
        limit: u64,
        nid: NodeId,
    ) -> Option<(u64, u32)> {
        if order > self.max_order || nid as usize >= MAX_NUMNODES {
            return None;
        }
        for &zone in kind.zones() {
            for o in order..=self.max_order {
                let list = self.zone(nid, zone).free_area[o as usize];
                if list.low.saturating_add(1 << o) > limit {
                    continue;
                }
                let (mut pfn, mut low) = (list.head, NO_PFN);
                while pfn != NO_PFN && pfn + (1 << o) > limit {
                    low = low.min(pfn);
                    pfn = self.page_ref(pfn).map_or(NO_PFN, |p| p.next);
                }
                if pfn != NO_PFN {
                    let taken = o.min(upto).max(order);
                    return Some((self.take(nid, zone, o, pfn, taken, kind), taken));
                }
                self.zone_mut(nid, zone).free_area[o as usize].low = low;
            }
        }
        None
    }
}
