//! The `auto-movable` online policy (Linux `auto_movable_zone_for_pfn` and
//! `auto_movable_can_online_movable`, `mm/memory_hotplug.c`), with Linux's arithmetic.
//!
//! A block goes MOVABLE if, counting every remaining block of its unit (a dynamic group's unit)
//! or of its DIMM (a static group) as MOVABLE too, MOVABLE stays within `ratio` percent of
//! KERNEL_EARLY: over all nodes, and, when `auto_movable_numa_aware`, on the block's node. Every
//! other dynamic group in scope first reserves the kernel-early pages its own MOVABLE memory
//! needs (rounded down, less the group's own kernel pages) and takes its MOVABLE pages out of
//! the count; the block's own dynamic group adds its kernel pages to the base, since one driver
//! coordinates a dynamic group's memory. Hot-added kernel memory of other devices never raises
//! the base: it may be unplugged on its own.

use super::{BlockId, BlockState, GroupId, GroupKind, Hotplug, MemoryGroup};
use crate::{
    numa::{NodeId, MAX_NUMNODES},
    page::ZoneId,
};

/// Linux `struct auto_movable_stats`: the zones in scope.
#[derive(Clone, Copy, Default)]
struct ZoneStats {
    kernel_early_pages: u64,
    movable_pages: u64,
}

/// Linux `struct auto_movable_group_stats`: the other dynamic groups in scope.
#[derive(Clone, Copy, Default)]
struct GroupStats {
    movable_pages: u64,
    req_kernel_early_pages: u64,
}

impl Hotplug {
    /// Linux `auto_movable_zone_for_pfn(nid, group, pfn, nr_pages)` for block `id`.
    pub(super) fn auto_movable_zone(&self, id: BlockId) -> ZoneId {
        if self.ratio == 0 {
            return ZoneId::Normal;
        }
        let Some(b) = self.blocks.get(&id) else {
            return ZoneId::Normal;
        };
        let group = b.group.and_then(|g| self.groups.get(&g).map(|data| (g, data)));
        let (max_pages, online_pages) = match group.map(|(_, g)| g) {
            Some(&MemoryGroup {
                kind: GroupKind::Static { max_pages },
                present_kernel_pages,
                present_movable_pages,
                ..
            }) => {
                // If anything of the DIMM is online !MOVABLE, the rest goes !MOVABLE too.
                if present_kernel_pages > 0 {
                    return ZoneId::Normal;
                }
                (max_pages, present_movable_pages)
            }
            Some(&MemoryGroup {
                kind: GroupKind::Dynamic { unit_pages },
                ..
            }) if unit_pages != b.nr_pages => {
                // Every online block of the unit: one !MOVABLE makes the rest !MOVABLE.
                let Some(online) = self.unit_online_movable(b.start_pfn, unit_pages) else {
                    return ZoneId::Normal;
                };
                (unit_pages, online)
            }
            _ => (b.nr_pages, 0),
        };
        // MOVABLE if all the remaining parts could go MOVABLE now (they are expected next).
        let nr_pages = max_pages.saturating_sub(online_pages);
        let gid = group.map(|(g, _)| g);
        if !self.auto_movable_can_online_movable(None, gid, nr_pages) {
            return ZoneId::Normal;
        }
        if self.auto_movable_numa_aware && !self.auto_movable_can_online_movable(Some(b.node), gid, nr_pages) {
            return ZoneId::Normal;
        }
        ZoneId::Movable
    }

    /// The online pages of the unit of `unit_pages` holding `pfn` (Linux walks its sections
    /// with `pfn_to_online_page`), or `None` if one of them is online outside MOVABLE.
    fn unit_online_movable(&self, pfn: u64, unit_pages: u64) -> Option<u64> {
        let bp = self.block_pages();
        let first = pfn / unit_pages * unit_pages / bp;
        let mut online = 0;
        for b in (first..first + unit_pages / bp).filter_map(|id| self.blocks.get(&id)) {
            if b.state == BlockState::Online {
                if b.zone != Some(ZoneId::Movable) {
                    return None;
                }
                online += bp;
            }
        }
        Some(online)
    }

    /// Linux `auto_movable_can_online_movable(nid, group, nr_pages)`: whether `nr_pages` more
    /// MOVABLE pages keep MOVABLE:KERNEL_EARLY within the ratio in `scope` (`None`: every node,
    /// Linux `NUMA_NO_NODE`).
    pub(super) fn auto_movable_can_online_movable(
        &self,
        scope: Option<NodeId>,
        group: Option<GroupId>,
        nr_pages: u64,
    ) -> bool {
        let stats = self.auto_movable_zone_stats(scope);
        let mut group_stats = GroupStats::default();
        // Remove the effect of every dynamic group in scope but the block's own.
        for (&gid, g) in &self.groups {
            let in_scope = scope.is_none_or(|nid| g.nid == nid);
            if matches!(g.kind, GroupKind::Dynamic { .. }) && Some(gid) != group && in_scope {
                self.auto_movable_stats_account_group(&mut group_stats, g);
            }
        }
        let (mut kernel_early_pages, mut movable_pages) = (stats.kernel_early_pages, stats.movable_pages);
        if kernel_early_pages <= group_stats.req_kernel_early_pages {
            return false;
        }
        kernel_early_pages -= group_stats.req_kernel_early_pages;
        movable_pages = movable_pages.saturating_sub(group_stats.movable_pages);
        if let Some(g) = group.and_then(|g| self.groups.get(&g)) {
            if matches!(g.kind, GroupKind::Dynamic { .. }) {
                kernel_early_pages += g.present_kernel_pages;
            }
        }
        movable_pages += nr_pages;
        u128::from(movable_pages) <= u128::from(self.ratio) * u128::from(kernel_early_pages) / 100
    }

    /// Linux `auto_movable_stats_account_zone` over the zones of `scope` (`None`: all nodes).
    fn auto_movable_zone_stats(&self, scope: Option<NodeId>) -> ZoneStats {
        let nodes = match scope {
            Some(nid) => nid..nid.saturating_add(1),
            None => 0..MAX_NUMNODES as NodeId,
        };
        nodes
            .map(|nid| self.present_node(nid))
            .fold(ZoneStats::default(), |s, p| ZoneStats {
                kernel_early_pages: s.kernel_early_pages + p.kernel_early,
                movable_pages: s.movable_pages + p.movable,
            })
    }

    /// Linux `auto_movable_stats_account_group`: the kernel-early pages group `g` needs for its
    /// MOVABLE pages at the ratio (rounded down), less its own kernel pages, when that is
    /// positive; and its MOVABLE pages, always.
    fn auto_movable_stats_account_group(&self, stats: &mut GroupStats, g: &MemoryGroup) {
        if self.ratio == 0 {
            return;
        }
        let pages = i128::from(g.present_movable_pages) * 100 / i128::from(self.ratio);
        let pages = pages - i128::from(g.present_kernel_pages);
        if pages > 0 {
            stats.req_kernel_early_pages += u64::try_from(pages).unwrap_or(u64::MAX);
        }
        stats.movable_pages += g.present_movable_pages;
    }
}
