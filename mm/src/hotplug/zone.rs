//! Which zone a block is onlined into (Linux `zone_for_pfn_range`): the online types, the
//! `contig-zones` and `auto-movable` policies, and memory groups (a DIMM is onlined into one
//! zone; a virtio-mem unit's blocks share one zone kind).

use super::{BlockId, BlockState, GroupId, GroupKind, Hotplug, HotplugError, MemoryGroup, OnlinePolicy, OnlineType};
use crate::page::ZoneId;

impl Hotplug {
    pub fn register_static_group(&mut self, max_pages: u64) -> GroupId {
        self.register(GroupKind::Static { max_pages })
    }

    /// `unit_pages` must be a power-of-two multiple of the block size.
    pub fn register_dynamic_group(&mut self, unit_pages: u64) -> Result<GroupId, HotplugError> {
        if !unit_pages.is_power_of_two() || unit_pages < self.block_pages() {
            return Err(HotplugError::Misaligned {
                start: 0,
                size: unit_pages << self.geom.page_shift,
                block_size: self.block_size(),
            });
        }
        Ok(self.register(GroupKind::Dynamic { unit_pages }))
    }

    fn register(&mut self, kind: GroupKind) -> GroupId {
        let id = self.next_group;
        self.next_group += 1;
        self.groups.insert(id, MemoryGroup::empty(kind));
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

    fn contig_zone(&self, id: BlockId) -> ZoneId {
        let b = self.blocks.get(&id);
        let group = b.and_then(|b| b.group);
        let mut zones = self
            .blocks
            .values()
            .filter(|o| o.id != id && (o.id + 1 == id || o.id == id + 1 || (group.is_some() && o.group == group)))
            .filter_map(|o| o.zone);
        match (zones.next(), zones.all(|z| z == ZoneId::Movable)) {
            (Some(ZoneId::Movable), true) => ZoneId::Movable,
            _ => ZoneId::Normal,
        }
    }

    fn auto_movable_zone(&self, id: BlockId) -> ZoneId {
        if self.ratio == 0 {
            return ZoneId::Normal;
        }
        let bp = self.block_pages();
        let group = self.blocks.get(&id).and_then(|b| b.group);
        let gdata = group.and_then(|g| self.groups.get(&g));
        let need = match gdata.map(|g| g.kind) {
            Some(GroupKind::Static { max_pages }) => {
                let g = gdata.unwrap_or_else(|| unreachable!());
                if g.present_kernel_pages > 0 {
                    return ZoneId::Normal; // all or nothing per DIMM
                }
                max_pages - g.present_movable_pages
            }
            Some(GroupKind::Dynamic { unit_pages }) if unit_pages > bp => {
                // The unit this block belongs to: its online blocks decide.
                let unit_blocks = unit_pages / bp;
                let first = id / unit_blocks * unit_blocks;
                let mut online = 0;
                for b in (first..first + unit_blocks).filter_map(|u| self.blocks.get(&u)) {
                    if b.group == group && b.state == BlockState::Online {
                        if b.zone != Some(ZoneId::Movable) {
                            return ZoneId::Normal;
                        }
                        online += b.nr_pages;
                    }
                }
                unit_pages - online
            }
            _ => bp,
        };
        if self.can_online_movable(group, need) {
            ZoneId::Movable
        } else {
            ZoneId::Normal
        }
    }

    /// Linux `auto_movable_can_online_movable` (one node).
    fn can_online_movable(&self, group: Option<GroupId>, need: u64) -> bool {
        let mut k = self.present.kernel_early;
        let mut m = self.present.movable;
        let (mut reserve_k, mut reserve_m) = (0u64, 0u64);
        for (&gid, g) in &self.groups {
            if Some(gid) == group || !matches!(g.kind, GroupKind::Dynamic { .. }) {
                continue;
            }
            let req = (g.present_movable_pages * 100 / self.ratio).saturating_sub(g.present_kernel_pages);
            if req > 0 {
                reserve_k += req;
                reserve_m += g.present_movable_pages;
            }
        }
        if k <= reserve_k {
            return false;
        }
        k -= reserve_k;
        m = m.saturating_sub(reserve_m);
        if let Some(g) = group.and_then(|g| self.groups.get(&g)) {
            if matches!(g.kind, GroupKind::Dynamic { .. }) {
                k += g.present_kernel_pages;
            }
        }
        (m + need) as u128 * 100 <= self.ratio as u128 * k as u128
    }
}
