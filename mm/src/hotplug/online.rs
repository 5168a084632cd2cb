//! Onlining and offlining memory blocks (Linux `memory_block_online` / `_offline`), the
//! automatic onlining after an add, and the eject path (offline every block, then remove; a
//! veto gives every block back in its zone).

use super::{BlockId, BlockState, Hotplug, HotplugError, HotplugOps, MemoryBlock, OnlineType};
use crate::{page::ZoneId, sparse::state};
use alloc::vec::Vec;
use arch::mutant::{self, Mutant};

impl Hotplug {
    /// Online new blocks per `default_online` (Linux auto-onlining after `add_memory`); like
    /// Linux, a failure leaves that block offline and does not undo the add. Returns each
    /// block's zone (`None` = left offline).
    pub fn auto_online(&mut self, ops: &mut impl HotplugOps, ids: &[BlockId]) -> Vec<(BlockId, Option<ZoneId>)> {
        let t = self.default_online;
        ids.iter()
            .map(|&id| (id, t.and_then(|t| self.online_block(ops, id, t).ok())))
            .collect()
    }

    /// Linux `adjust_present_page_count`: the block's node's zone and its group.
    fn account(&mut self, b: &MemoryBlock, zone: ZoneId, add: bool) {
        let n = b.nr_pages;
        let apply = |v: &mut u64| if add { *v += n } else { *v -= n };
        let present = self.node_present_mut(b.node);
        match zone {
            ZoneId::Normal => apply(&mut present.normal),
            ZoneId::Movable => apply(&mut present.movable),
        }
        if let Some(g) = b.group.and_then(|g| self.groups.get_mut(&g)) {
            match zone {
                ZoneId::Normal => apply(&mut g.present_kernel_pages),
                ZoneId::Movable => apply(&mut g.present_movable_pages),
            }
        }
    }

    /// Online block `id` (Linux `memory_block_online`): self-hosted memmap pages first, then
    /// the rest into the zone; accounted only after success. Returns the zone.
    pub fn online_block(
        &mut self,
        ops: &mut impl HotplugOps,
        id: BlockId,
        online_type: OnlineType,
    ) -> Result<ZoneId, HotplugError> {
        let b = self.get(id)?;
        if b.state != BlockState::Offline {
            return Err(HotplugError::BadState {
                block: id,
                state: b.state,
            });
        }
        let zone = self.zone_for(id, online_type);
        if let Some((group, other)) = self.static_group_zone(id) {
            if other != zone && !mutant::on(Mutant::DimmZoneSplit) {
                return Err(HotplugError::GroupSplit {
                    block: id,
                    group,
                    zone: other,
                });
            }
        }
        self.set_state(id, BlockState::GoingOnline);
        let n_vm = b.nr_vmemmap_pages();
        if n_vm > 0 {
            ops.init_vmemmap_pages(b.start_pfn, n_vm, zone, b.node);
        }
        if let Err(e) = ops.online_pages(b.start_pfn + n_vm, b.nr_pages - n_vm, zone, b.node) {
            if n_vm > 0 {
                ops.deinit_vmemmap_pages(b.start_pfn, n_vm);
            }
            self.set_state(id, BlockState::Offline);
            return Err(e);
        }
        self.account(&b, zone, true);
        ops.section_update(id, state::ONLINE, 0);
        if let Some(blk) = self.blocks.get_mut(&id) {
            blk.zone = Some(zone);
            blk.state = BlockState::Online;
        }
        Ok(zone)
    }

    /// Offline block `id` (Linux `memory_block_offline`): isolate, migrate, take the pages out;
    /// `Busy` leaves the block online, usable and accounted as before.
    pub fn offline_block(&mut self, ops: &mut impl HotplugOps, id: BlockId) -> Result<(), HotplugError> {
        self.offline_block_below(ops, id, u64::MAX)
    }

    /// [`offline_block`](Self::offline_block), migrating below PFN `target_below` where there
    /// is room (see [`HotplugOps::offline_pages`]).
    fn offline_block_below(
        &mut self,
        ops: &mut impl HotplugOps,
        id: BlockId,
        target_below: u64,
    ) -> Result<(), HotplugError> {
        let b = self.get(id)?;
        if b.early {
            return Err(HotplugError::EarlyMemory(id));
        }
        if b.state != BlockState::Online {
            return Err(HotplugError::BadState {
                block: id,
                state: b.state,
            });
        }
        let zone = b.zone.unwrap_or(ZoneId::Normal);
        self.set_state(id, BlockState::GoingOffline);
        let n_vm = b.nr_vmemmap_pages();
        if let Err(e) = ops.offline_pages(b.start_pfn + n_vm, b.nr_pages - n_vm, id, b.node, target_below) {
            self.set_state(id, BlockState::Online);
            return Err(e);
        }
        if n_vm > 0 {
            ops.deinit_vmemmap_pages(b.start_pfn, n_vm);
        }
        self.account(&b, zone, false);
        ops.section_update(id, 0, state::ONLINE);
        if let Some(blk) = self.blocks.get_mut(&id) {
            blk.zone = None;
            blk.state = BlockState::Offline;
        }
        Ok(())
    }

    /// The eject path (a DIMM going away): everything `remove_memory` checks is checked first
    /// (so a removal that would split a leaf is rejected before offlining), then every block is
    /// offlined — on a veto the blocks already offlined are onlined again into their zones and
    /// the error returned, leaving the memory fully usable — then the range is removed.
    pub fn offline_and_remove(&mut self, ops: &mut impl HotplugOps, start: u64, size: u64) -> Result<(), HotplugError> {
        self.offline_and_remove_below(ops, start, size, start >> self.geom.page_shift)
    }

    /// [`offline_and_remove`](Self::offline_and_remove) with migration targets below PFN
    /// `target_below` where there is room (a caller taking away more than this range passes
    /// the lowest PFN it takes).
    pub fn offline_and_remove_below(
        &mut self,
        ops: &mut impl HotplugOps,
        start: u64,
        size: u64,
        target_below: u64,
    ) -> Result<(), HotplugError> {
        self.check_range(start, size)?;
        let ids: Vec<BlockId> = self.block_ids(start, size).collect();
        for &id in &ids {
            let b = self.blocks.get(&id).ok_or(HotplugError::NotAdded { start, size })?;
            if b.early {
                return Err(HotplugError::EarlyMemory(id));
            }
        }
        ops.check_unmap_linear(start, size)?;
        let mut done: Vec<(BlockId, ZoneId)> = Vec::new();
        for &id in &ids {
            let b = self.get(id)?;
            if b.state == BlockState::Offline {
                continue;
            }
            let zone = b.zone.unwrap_or(ZoneId::Normal);
            // Pages of a block move below the whole range, not into a block offlined next.
            if let Err(e) = self.offline_block_below(ops, id, target_below) {
                self.reonline(ops, &done);
                return Err(e);
            }
            done.push((id, zone));
        }
        // A removal refused after the offlines (e.g. not a whole added range) gives the blocks
        // back too: the memory stays usable, as after a veto.
        let r = self.remove_memory(ops, start, size);
        if r.is_err() {
            self.reonline(ops, &done);
        }
        r
    }

    /// Online `done` again into the zones they had, last first.
    fn reonline(&mut self, ops: &mut impl HotplugOps, done: &[(BlockId, ZoneId)]) {
        for &(id, zone) in done.iter().rev() {
            let t = if zone == ZoneId::Movable {
                OnlineType::Movable
            } else {
                OnlineType::Kernel
            };
            let _ = self.online_block(ops, id, t);
        }
    }
}
