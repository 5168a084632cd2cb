//! Adding and removing memory (Linux `add_memory` / `remove_memory`): validate the range, map
//! it, populate its memmap and create OFFLINE blocks, or take all of that down again; every
//! refusal is decided before anything changes, and a failed add undoes every step.

use super::{AddFlags, BlockId, BlockState, GroupId, GroupKind, Hotplug, HotplugError, HotplugOps, MemoryBlock};
use crate::{altmap::Altmap, buddy::MemmapInit, numa::NodeId, sparse::state};
use alloc::vec::Vec;
use arch::mutant::{self, Mutant};

impl Hotplug {
    /// Whether memmap on memory can serve this configuration, or why not.
    pub fn memmap_on_memory_supported(&self) -> Result<(), &'static str> {
        let g = self.geom;
        if !g.memmap_per_section().is_multiple_of(g.page_size()) {
            return Err("the memmap of a block is not a whole number of pages");
        }
        if g.memmap_pages_per_block() >= g.pages_per_section() {
            return Err("the memmap would fill the whole block");
        }
        if !g.memmap_pages_per_block().is_multiple_of(1 << g.pageblock_order()) {
            return Err("the usable part would not start pageblock-aligned");
        }
        Ok(())
    }

    /// Linux `add_memory(nid, start, size, flags)` (into `group`, which must be of node
    /// `nid`): validate, map, populate the memmap, create OFFLINE blocks of node `nid`; any
    /// failure undoes every step (with the same altmaps). Onlining is the caller's:
    /// [`auto_online`](Self::auto_online) applies `default_online`.
    pub fn add_memory(
        &mut self,
        ops: &mut impl HotplugOps,
        nid: NodeId,
        group: Option<GroupId>,
        start: u64,
        size: u64,
        flags: AddFlags,
    ) -> Result<Vec<BlockId>, HotplugError> {
        self.check_range(start, size)?;
        if self.block_ids(start, size).any(|b| self.blocks.contains_key(&b))
            || self.added.iter().any(|&(s, l, _)| start < s + l && s < start + size)
        {
            return Err(HotplugError::Overlap { start, size });
        }
        Self::check_node(nid)?;
        if let Some(g) = group {
            let grp = self.groups.get(&g).ok_or(HotplugError::NoSuchGroup(g))?;
            if grp.nid != nid {
                return Err(HotplugError::GroupNode {
                    group: g,
                    group_node: grp.nid,
                    node: nid,
                });
            }
            if let GroupKind::Static { max_pages } = grp.kind {
                if (grp.nr_blocks * self.block_pages()) + (size >> self.geom.page_shift) > max_pages {
                    return Err(HotplugError::GroupInUse(g));
                }
            }
        }
        if flags.memmap_on_memory {
            self.memmap_on_memory_supported()
                .map_err(HotplugError::MemmapOnMemory)?;
        }

        ops.map_linear(start, size)?;
        let mut created: Vec<MemoryBlock> = Vec::new();
        for id in self.block_ids(start, size) {
            match self.create_block(ops, id, nid, group, flags) {
                Ok(b) => created.push(b),
                Err(e) => {
                    for b in created.iter_mut().rev() {
                        Self::destroy_block(ops, b);
                    }
                    let _ = ops.unmap_linear(start, size);
                    return Err(e);
                }
            }
        }
        let ids: Vec<BlockId> = created.iter().map(|b| b.id).collect();
        for b in created {
            self.blocks.insert(b.id, b);
        }
        if let Some(g) = group.and_then(|g| self.groups.get_mut(&g)) {
            g.nr_blocks += ids.len() as u64;
        }
        self.added.push((start, size, flags.memmap_on_memory));
        Ok(ids)
    }

    fn create_block(
        &self,
        ops: &mut impl HotplugOps,
        id: BlockId,
        nid: NodeId,
        group: Option<GroupId>,
        flags: AddFlags,
    ) -> Result<MemoryBlock, HotplugError> {
        let bp = self.block_pages();
        let pfn = id * bp;
        let mut altmap = flags
            .memmap_on_memory
            .then(|| Altmap::new(pfn, pfn + bp - 1, 0, self.geom.memmap_pages_per_block()));
        ops.populate_memmap(pfn, nid, altmap.as_mut())?;
        match self.memmap_init {
            MemmapInit::Eager => ops.init_memmap(pfn, bp, id),
            MemmapInit::Deferred => {
                // No struct page is written: those of the self-hosted memmap pages never are
                // (their state is the block's), the rest when first needed.
                let n_vm = altmap.map_or(0, |a| a.alloc + a.align);
                if n_vm > 0 {
                    ops.defer_vmemmap(pfn, n_vm, id);
                }
                ops.defer_memmap(pfn + n_vm, bp - n_vm, id);
            }
        }
        let mut bits = state::PRESENT | state::HAS_MEMMAP;
        if altmap.is_some() {
            bits |= state::SELF_HOSTED;
        }
        ops.section_update(id, bits, 0);
        Ok(MemoryBlock {
            id,
            start_pfn: pfn,
            nr_pages: bp,
            state: BlockState::Offline,
            node: nid,
            zone: None,
            group,
            altmap,
            early: false,
        })
    }

    fn destroy_block(ops: &mut impl HotplugOps, b: &mut MemoryBlock) {
        ops.section_update(
            b.id,
            0,
            state::PRESENT | state::HAS_MEMMAP | state::SELF_HOSTED | state::ONLINE,
        );
        ops.release_memmap(b.start_pfn, b.nr_pages);
        ops.depopulate_memmap(b.start_pfn, b.altmap.as_mut());
    }

    /// `remove_memory` for memory no driver owns (the shell's `remove`, Linux's probe
    /// interface): a DIMM's blocks are refused, since only its driver may remove them (on
    /// eject), and its state must stay what the driver believes.
    pub fn remove_unowned_memory(
        &mut self,
        ops: &mut impl HotplugOps,
        start: u64,
        size: u64,
    ) -> Result<(), HotplugError> {
        if let Some((block, group)) = self.static_group_block(start, size) {
            if !mutant::on(Mutant::DimmRemoveBehindDriver) {
                return Err(HotplugError::OwnedByGroup { block, group });
            }
        }
        self.remove_memory(ops, start, size)
    }

    /// Linux `remove_memory(start, size)`: every block offline, whole added ranges when the
    /// memmap is self-hosted, no linear-map leaf split (checked before anything changes);
    /// then the memmap is freed and the linear map torn down (clear → TLBI → free).
    pub fn remove_memory(&mut self, ops: &mut impl HotplugOps, start: u64, size: u64) -> Result<(), HotplugError> {
        self.check_range(start, size)?;
        let ids = self.block_ids(start, size);
        for id in ids.clone() {
            let b = self.blocks.get(&id).ok_or(HotplugError::NotAdded { start, size })?;
            if b.early {
                return Err(HotplugError::EarlyMemory(id));
            }
            if b.state != BlockState::Offline {
                return Err(HotplugError::NotOffline(id));
            }
        }
        // The range must consist of whole added ranges (memmap on memory: per-block altmaps
        // are owned by the blocks, and the add recorded how it was done).
        let end = start + size;
        let inside: Vec<(u64, u64, bool)> = self
            .added
            .iter()
            .copied()
            .filter(|&(s, l, _)| s < end && start < s + l)
            .collect();
        if inside.iter().any(|&(s, l, mom)| (s < start || s + l > end) && mom) {
            return Err(HotplugError::Granularity { start, size });
        }
        ops.check_unmap_linear(start, size)?;

        for id in ids {
            if let Some(mut b) = self.blocks.remove(&id) {
                Self::destroy_block(ops, &mut b);
                if let Some(g) = b.group.and_then(|g| self.groups.get_mut(&g)) {
                    g.nr_blocks -= 1;
                }
            }
        }
        ops.unmap_linear(start, size)?;
        ops.removed(start, size);
        // Shrink or drop the recorded ranges.
        let mut kept = Vec::new();
        for (s, l, mom) in core::mem::take(&mut self.added) {
            if s >= end || start >= s + l {
                kept.push((s, l, mom));
                continue;
            }
            if s < start {
                kept.push((s, start - s, mom));
            }
            if s + l > end {
                kept.push((end, s + l - end, mom));
            }
        }
        self.added = kept;
        Ok(())
    }
}
