//! NUMA nodes as the page allocator sees them (Linux `pglist_data`, `node_distance`,
//! `build_zonelists`): a node id per page, a set of nodes, and the SLIT-style distance table
//! from which each node's fallback order (its zonelist's node order) is built.

/// Nodes the allocator can hold (Linux `MAX_NUMNODES`); node ids are `0..MAX_NUMNODES`.
pub const MAX_NUMNODES: usize = 8;

/// A node id (`struct page`'s `node` byte).
pub type NodeId = u8;

/// A node's distance to itself (ACPI SLIT / device-tree `distance-map` convention).
pub const LOCAL_DISTANCE: u8 = 10;
/// The distance between two nodes when nothing more is known.
pub const REMOTE_DISTANCE: u8 = 20;

/// A set of nodes (Linux `nodemask_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMask(u16);

impl NodeMask {
    pub const fn empty() -> Self {
        NodeMask(0)
    }

    pub const fn single(nid: NodeId) -> Self {
        NodeMask(1 << nid)
    }

    pub fn set(&mut self, nid: NodeId) {
        self.0 |= 1 << nid;
    }

    pub fn clear(&mut self, nid: NodeId) {
        self.0 &= !(1 << nid);
    }

    pub const fn contains(&self, nid: NodeId) -> bool {
        (nid as usize) < MAX_NUMNODES && self.0 & (1 << nid) != 0
    }

    /// The nodes in the set, in increasing id order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> {
        let mask = *self;
        (0..MAX_NUMNODES as NodeId).filter(move |&n| mask.contains(n))
    }

    pub const fn count(&self) -> u32 {
        self.0.count_ones()
    }

    /// The lowest node in the set.
    pub const fn first(&self) -> Option<NodeId> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as NodeId)
        }
    }
}

/// The node distance table (ACPI SLIT): `get(a, b)` is the relative cost of node `a` reaching
/// memory on node `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Distances([[u8; MAX_NUMNODES]; MAX_NUMNODES]);

impl Default for Distances {
    fn default() -> Self {
        Self::uniform()
    }
}

impl Distances {
    /// [`LOCAL_DISTANCE`] on the diagonal, [`REMOTE_DISTANCE`] elsewhere.
    pub const fn uniform() -> Self {
        let mut t = [[REMOTE_DISTANCE; MAX_NUMNODES]; MAX_NUMNODES];
        let mut i = 0;
        while i < MAX_NUMNODES {
            t[i][i] = LOCAL_DISTANCE;
            i += 1;
        }
        Distances(t)
    }

    /// The distance from node `a` to node `b`.
    pub const fn get(&self, a: NodeId, b: NodeId) -> u8 {
        self.0[a as usize][b as usize]
    }

    /// Set the distance from node `a` to node `b` (one direction: SLIT tables may be
    /// asymmetric).
    pub fn set(&mut self, a: NodeId, b: NodeId, d: u8) {
        self.0[a as usize][b as usize] = d;
    }

    /// The order in which node `nid`'s allocations try the nodes (the node order of Linux's
    /// zonelist): `nid` itself first, then the others by increasing distance from it, ties by
    /// increasing node id. Returns the order and its length (every node: `MAX_NUMNODES`). A
    /// node id at or above `MAX_NUMNODES` names no node: it gets the nodes in id order.
    ///
    /// The order is fixed by the table alone. Linux's `find_next_best_node` also penalises
    /// nodes that already appear as the first choice of many zonelists (spreading load among
    /// equally distant nodes); we do not, so that placement is predictable and testable.
    pub const fn fallback_order(&self, nid: NodeId) -> ([NodeId; MAX_NUMNODES], usize) {
        let mut order = [0 as NodeId; MAX_NUMNODES];
        if nid as usize >= MAX_NUMNODES {
            let mut n = 0;
            while n < MAX_NUMNODES {
                order[n] = n as NodeId;
                n += 1;
            }
            return (order, MAX_NUMNODES);
        }
        order[0] = nid;
        let mut len = 1;
        let mut n = 0;
        while n < MAX_NUMNODES {
            if n != nid as usize {
                // Insertion sort by (distance, id); ids arrive in increasing order, so a strict
                // comparison keeps ties by id.
                let d = self.get(nid, n as NodeId);
                let mut i = len;
                while i > 1 && self.get(nid, order[i - 1]) > d {
                    order[i] = order[i - 1];
                    i -= 1;
                }
                order[i] = n as NodeId;
                len += 1;
            }
            n += 1;
        }
        (order, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_mask_operations() {
        let mut m = NodeMask::empty();
        assert_eq!((m.count(), m.first()), (0, None));
        m.set(5);
        m.set(2);
        assert_eq!(m.iter().collect::<Vec<_>>(), [2, 5]);
        assert_eq!((m.count(), m.first()), (2, Some(2)));
        assert!(m.contains(5) && !m.contains(3) && !m.contains(9));
        m.clear(2);
        assert_eq!(m, NodeMask::single(5));
    }

    #[test]
    fn uniform_fallback_is_self_then_by_id() {
        let d = Distances::uniform();
        assert_eq!((d.get(3, 3), d.get(3, 4)), (LOCAL_DISTANCE, REMOTE_DISTANCE));
        assert_eq!(d.fallback_order(0), ([0, 1, 2, 3, 4, 5, 6, 7], MAX_NUMNODES));
        assert_eq!(d.fallback_order(5), ([5, 0, 1, 2, 3, 4, 6, 7], MAX_NUMNODES));
        assert_eq!(d.fallback_order(9), ([0, 1, 2, 3, 4, 5, 6, 7], MAX_NUMNODES));
    }

    #[test]
    fn fallback_follows_distance_then_id() {
        let mut d = Distances::uniform();
        // From node 1: node 3 nearest, then 0 and 2 tied, the rest farther.
        for (b, dist) in [(0, 21), (2, 21), (3, 12), (4, 30), (5, 30), (6, 30), (7, 30)] {
            d.set(1, b, dist);
        }
        assert_eq!(d.fallback_order(1).0, [1, 3, 0, 2, 4, 5, 6, 7]);
        // Only node 1's row changed.
        assert_eq!(d.fallback_order(0).0, [0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
