//! Which zone a block is onlined into (Linux `zone_for_pfn_range`): the online types, the
//! `contig-zones` policy (the `auto-movable` one is `auto_movable.rs`), and memory groups (a
//! DIMM is onlined into one zone; a virtio-mem unit's blocks share one zone kind). The zones are
//! those of the block's node.

use super::{BlockId, GroupId, GroupKind, Hotplug, HotplugError, MemoryGroup, OnlinePolicy, OnlineType};
use crate::{numa::NodeId, page::ZoneId};

impl Hotplug {
    /// Linux `memory_group_register_static(nid, max_pages)`: one device of node `nid` whose
    /// memory is added and removed as a whole (a DIMM).
    pub fn register_static_group(&mut self, nid: NodeId, max_pages: u64) -> Result<GroupId, HotplugError> {
        Self::check_node(nid)?;
        Ok(self.register(GroupKind::Static { max_pages }, nid))
    }

    /// Linux `memory_group_register_dynamic(nid, unit_pages)`: one device of node `nid` whose
    /// memory comes and goes in units (virtio-mem). `unit_pages` must be a power-of-two
    /// multiple of the block size.
    pub fn register_dynamic_group(&mut self, nid: NodeId, unit_pages: u64) -> Result<GroupId, HotplugError> {
        Self::check_node(nid)?;
        if !unit_pages.is_power_of_two() || unit_pages < self.block_pages() {
            return Err(HotplugError::Misaligned {
                start: 0,
                size: unit_pages << self.geom.page_shift,
                block_size: self.block_size(),
            });
        }
        Ok(self.register(GroupKind::Dynamic { unit_pages }, nid))
    }

    fn register(&mut self, kind: GroupKind, nid: NodeId) -> GroupId {
        let id = self.next_group;
        self.next_group += 1;
        self.groups.insert(id, MemoryGroup::empty(kind, nid));
        id
    }

    pub fn unregister_group(&mut self, id: GroupId) -> Result<(), HotplugError> {
        match self.groups.get(&id) {
            None => Err(HotplugError::NoSuchGroup(id)),
            Some(g) if g.nr_blocks > 0 => Err(HotplugError::GroupInUse(id)),
            Some(_) => {
                self.groups.remove(&id);
                Ok(())
            }
        }
    }

    /// The zone `online_type` resolves to for block `id` (Linux `zone_for_pfn_range`).
    pub fn zone_for(&self, id: BlockId, online_type: OnlineType) -> ZoneId {
        if online_type == OnlineType::Auto {
            if let Some((_, zone)) = self.static_group_zone(id) {
                return zone; // a DIMM is onlined into one zone
            }
        }
        match online_type {
            OnlineType::Kernel => ZoneId::Normal,
            OnlineType::Movable => ZoneId::Movable,
            OnlineType::Auto => match self.policy {
                OnlinePolicy::ContigZones => self.contig_zone(id),
                OnlinePolicy::AutoMovable => self.auto_movable_zone(id),
            },
        }
    }

    /// For a block of a static group (a DIMM) that has other blocks online: the group and
    /// their zone.
    pub(super) fn static_group_zone(&self, id: BlockId) -> Option<(GroupId, ZoneId)> {
        let gid = self.blocks.get(&id)?.group?;
        if !matches!(self.groups.get(&gid)?.kind, GroupKind::Static { .. }) {
            return None;
        }
        self.blocks
            .values()
            .filter(|o| o.id != id && o.group == Some(gid))
            .find_map(|o| o.zone)
            .map(|z| (gid, z))
    }

    /// The first block of `[start, start + size)` that belongs to a static group (a DIMM).
    pub fn static_group_block(&self, start: u64, size: u64) -> Option<(BlockId, GroupId)> {
        let bs = self.block_size();
        let (first, end) = (start / bs, start.saturating_add(size).div_ceil(bs));
        self.blocks.range(first..end).map(|(_, b)| b).find_map(|b| {
            let g = b.group?;
            matches!(self.groups.get(&g)?.kind, GroupKind::Static { .. }).then_some((b.id, g))
        })
    }

    /// Linux `default_zone_for_pfn`: the zone of the node's online neighbours and of the
    /// block's group when that is one zone, otherwise the kernel zone.
    fn contig_zone(&self, id: BlockId) -> ZoneId {
        let b = self.blocks.get(&id);
        let group = b.and_then(|b| b.group);
        let node = b.map(|b| b.node);
        let mut zones = self
            .blocks
            .values()
            .filter(|o| o.id != id && Some(o.node) == node)
            .filter(|o| o.id + 1 == id || o.id == id + 1 || (group.is_some() && o.group == group))
            .filter_map(|o| o.zone);
        match (zones.next(), zones.all(|z| z == ZoneId::Movable)) {
            (Some(ZoneId::Movable), true) => ZoneId::Movable,
            _ => ZoneId::Normal,
        }
    }
}
