//! The hotplug accounting checker: a recount over the blocks against the recorded zone and
//! group accounting (run after every operation by the test builds).

use super::{BlockId, BlockState, GroupId, GroupKind, Hotplug, MemoryGroup, ZonePresent};
use crate::{
    numa::{NodeId, MAX_NUMNODES},
    page::ZoneId,
};
use alloc::collections::BTreeMap;

impl Hotplug {
    /// Check the hotplug accounting against a recount over the blocks: no block left in a
    /// transient state, zones set exactly on online blocks, every block of a group on the
    /// group's node, each node's zone present pages and the group present pages and block counts
    /// equal to the recount, and every static group (a DIMM) in one zone.
    pub fn check(&self) -> Result<(), AccountingViolation> {
        let mut present = [ZonePresent::default(); MAX_NUMNODES];
        let mut groups: BTreeMap<GroupId, MemoryGroup> = BTreeMap::new();
        let mut group_zone: BTreeMap<GroupId, ZoneId> = BTreeMap::new();
        for b in self.blocks.values() {
            let online = b.state == BlockState::Online;
            if !matches!(b.state, BlockState::Online | BlockState::Offline) || online != b.zone.is_some() {
                return Err(AccountingViolation::BlockState(b.id));
            }
            if let Some(id) = b.group {
                if self.groups.get(&id).is_some_and(|g| g.nid != b.node) {
                    return Err(AccountingViolation::GroupNode { group: id, block: b.id });
                }
            }
            let g = b.group.map(|id| {
                let (kind, nid) = self
                    .groups
                    .get(&id)
                    .map_or((GroupKind::Static { max_pages: 0 }, b.node), |g| (g.kind, g.nid));
                let g = groups.entry(id).or_insert(MemoryGroup::empty(kind, nid));
                g.nr_blocks += 1;
                g
            });
            let Some(present) = present.get_mut(usize::from(b.node)) else {
                return Err(AccountingViolation::NoSuchNode {
                    block: b.id,
                    node: b.node,
                });
            };
            if b.early {
                present.kernel_early += b.nr_pages;
            }
            let (zone_pages, group_pages) = match b.zone {
                None => (None, None),
                Some(ZoneId::Normal) => (Some(&mut present.normal), g.map(|g| &mut g.present_kernel_pages)),
                Some(ZoneId::Movable) => (Some(&mut present.movable), g.map(|g| &mut g.present_movable_pages)),
            };
            for p in zone_pages.into_iter().chain(group_pages) {
                *p += b.nr_pages;
            }
            let Some(zone) = b.zone else { continue };
            if let Some(id) = b
                .group
                .filter(|id| matches!(self.groups.get(id).map(|g| g.kind), Some(GroupKind::Static { .. })))
            {
                if *group_zone.entry(id).or_insert(zone) != zone {
                    return Err(AccountingViolation::GroupSplit { group: id, block: b.id });
                }
            }
        }
        for (nid, (&recorded, &recount)) in (0..).zip(self.recorded_present().iter().zip(&present)) {
            if recorded != recount {
                return Err(AccountingViolation::Present {
                    node: nid,
                    recorded,
                    recount,
                });
            }
        }
        for (&id, g) in &self.groups {
            let recount = groups.remove(&id).unwrap_or(MemoryGroup::empty(g.kind, g.nid));
            if recount != *g {
                return Err(AccountingViolation::Group {
                    group: id,
                    recorded: *g,
                    recount,
                });
            }
        }
        match groups.keys().next() {
            Some(&id) => Err(AccountingViolation::NoSuchGroup(id)),
            None => Ok(()),
        }
    }
}

/// A hotplug accounting invariant broken (see [`Hotplug::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountingViolation {
    /// A block in a transient state, or with a zone while offline (or none while online).
    BlockState(BlockId),
    /// A block of a node at or beyond `MAX_NUMNODES`.
    NoSuchNode { block: BlockId, node: NodeId },
    /// A block of another node than its group's.
    GroupNode { group: GroupId, block: BlockId },
    /// Node `node`'s present pages differ from the recount.
    Present {
        node: NodeId,
        recorded: ZonePresent,
        recount: ZonePresent,
    },
    Group {
        group: GroupId,
        recorded: MemoryGroup,
        recount: MemoryGroup,
    },
    /// A block names a group that is not registered.
    NoSuchGroup(GroupId),
    /// A static group (one DIMM) with blocks online in two zones.
    GroupSplit { group: GroupId, block: BlockId },
}

impl core::fmt::Display for AccountingViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use AccountingViolation::*;
        match self {
            BlockState(b) => write!(f, "memory block {b}: state and zone disagree (or transient)"),
            NoSuchNode { block, node } => write!(f, "memory block {block} is on node {node}, which does not exist"),
            GroupNode { group, block } => {
                write!(f, "memory block {block} is not on the node of its memory group {group}")
            }
            Present {
                node,
                recorded,
                recount,
            } => write!(f, "node {node}: present pages {recorded:?}, recount gives {recount:?}"),
            Group {
                group,
                recorded,
                recount,
            } => {
                write!(f, "memory group {group}: {recorded:?}, recount gives {recount:?}")
            }
            NoSuchGroup(g) => write!(f, "a block names memory group {g}, which does not exist"),
            GroupSplit { group, block } => {
                write!(
                    f,
                    "memory group {group} (static) is split across zones at block {block}"
                )
            }
        }
    }
}
