//! The nodes of memory hotplug (Linux `pglist_data` as the hotplug core sees it): each node's
//! present pages per zone and in total, which nodes have memory, and the kernel-early pages the
//! auto-movable policy counts per node.
//!
//! A node has memory (Linux `N_MEMORY`) while any of its pages is present, i.e. online: onlining
//! the first block of a node with none brings it online, offlining or removing its last one
//! leaves it memory-less, and nothing else about the node changes (it can get memory again). A
//! node has blocks (Linux onlines a node at `add_memory`) from the add of its first block to the
//! removal of its last.

use super::{Hotplug, HotplugError, ZonePresent};
use crate::numa::{NodeId, MAX_NUMNODES};

impl Hotplug {
    /// A node the hotplug core can hold memory of (`nid < MAX_NUMNODES`), or why not.
    pub(super) fn check_node(nid: NodeId) -> Result<(), HotplugError> {
        if usize::from(nid) < MAX_NUMNODES {
            Ok(())
        } else {
            Err(HotplugError::NoSuchNode(nid))
        }
    }

    /// The present pages of node `nid`: a block's node, checked by
    /// [`check_node`](Self::check_node) before the block was created.
    pub(super) fn node_present_mut(&mut self, nid: NodeId) -> &mut ZonePresent {
        &mut self.present[usize::from(nid)]
    }

    /// The recorded present pages of every node, for the checker's recount.
    pub(super) fn recorded_present(&self) -> &[ZonePresent; MAX_NUMNODES] {
        &self.present
    }

    /// Present pages per zone of node `nid` (none for a node beyond `MAX_NUMNODES`); its
    /// `kernel_early` is what [`assume_kernel_early`](Self::assume_kernel_early) set, if it did.
    pub fn present_node(&self, nid: NodeId) -> ZonePresent {
        let i = usize::from(nid);
        let Some(&p) = self.present.get(i) else {
            return ZonePresent::default();
        };
        ZonePresent {
            kernel_early: self.assumed_early[i].unwrap_or(p.kernel_early),
            ..p
        }
    }

    /// Present pages per zone over all nodes.
    pub fn present(&self) -> ZonePresent {
        (0..MAX_NUMNODES as NodeId).fold(ZonePresent::default(), |t, nid| {
            let p = self.present_node(nid);
            ZonePresent {
                normal: t.normal + p.normal,
                movable: t.movable + p.movable,
                kernel_early: t.kernel_early + p.kernel_early,
            }
        })
    }

    /// The nodes with present (online) pages, in order (Linux `N_MEMORY`).
    pub fn nodes_with_memory(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..MAX_NUMNODES as NodeId).filter(|&nid| self.present_node(nid).total() > 0)
    }

    /// The nodes with memory blocks in any state, in order.
    pub fn nodes_with_blocks(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..MAX_NUMNODES as NodeId).filter(|&nid| self.blocks.values().any(|b| b.node == nid))
    }

    /// Count `pages` of kernel-zone memory present since boot on node `nid` (the auto-movable
    /// ratio's base) as if the boot had brought them, in place of the node's boot blocks: a VM
    /// whose early memory is larger than the blocks this `Hotplug` was given (tests of the
    /// ratio policy).
    pub fn assume_kernel_early(&mut self, nid: NodeId, pages: u64) -> Result<(), HotplugError> {
        Self::check_node(nid)?;
        self.assumed_early[usize::from(nid)] = Some(pages);
        Ok(())
    }
}
