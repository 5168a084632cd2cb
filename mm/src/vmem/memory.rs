//! virtio-mem's memory operations over the hotplug core: what a [`VmemMemory`](super::VmemMemory)
//! does inside one hotplug operation (the kernel runs each under its hotplug lock; the host
//! tests over the test machine), and the online filter of sub-block mode.
//!
//! None of them writes a `struct page` of plugged memory: in [`MemmapInit::Deferred`] mode an
//! add initialises the self-hosted memmap pages only, onlining hands the plugged ranges to the
//! zone's deferred list, and offlining memory that was never allocated drops them from it.
//!
//! [`MemmapInit::Deferred`]: crate::buddy::MemmapInit::Deferred

use crate::hotplug::{AddFlags, BlockId, BlockState, GroupId, Hotplug, HotplugError, HotplugOps};
use crate::numa::NodeId;
use crate::page::ZoneId;
use alloc::vec::Vec;

/// Add `[addr, addr + size)` with memmap on memory to node `nid` and `group` and online it per
/// the policy (`default_online`); the block ids.
pub fn add(
    hp: &mut Hotplug,
    ops: &mut impl HotplugOps,
    nid: NodeId,
    group: GroupId,
    addr: u64,
    size: u64,
) -> Result<Vec<BlockId>, HotplugError> {
    let ids = hp.add_memory(ops, nid, Some(group), addr, size, AddFlags { memmap_on_memory: true })?;
    hp.auto_online(ops, &ids);
    Ok(ids)
}

/// Online (`on`) or offline `[pfn, pfn + nr)` of memory block `block` if the block is online
/// (an offline block's pages are offline already); offlining migrates below PFN `below_pfn`
/// where there is room.
pub fn set_online(
    hp: &Hotplug,
    ops: &mut impl HotplugOps,
    block: BlockId,
    pfn: u64,
    nr: u64,
    on: bool,
    below_pfn: u64,
) -> Result<(), HotplugError> {
    match hp.block(block) {
        Some(b) if b.state == BlockState::Online => {
            let zone = b.zone.unwrap_or(ZoneId::Normal);
            if on {
                ops.online_pages(pfn, nr, zone, b.node)
            } else {
                ops.offline_pages(pfn, nr, block, b.node, below_pfn)
            }
        }
        _ => Ok(()),
    }
}

/// Whether memory block `block` is online in ZONE_NORMAL (a block not there counts as such).
pub fn in_normal(hp: &Hotplug, block: BlockId) -> bool {
    hp.block(block).is_none_or(|b| b.zone == Some(ZoneId::Normal))
}

/// The online filter of one sub-block-mode region (device blocks of `sub_pages` pages from
/// `start_pfn`, `plugged` per device block): calls `keep` with the parts of `[pfn, pfn + nr)`
/// that may be online, i.e. those outside the region and the plugged device blocks inside it,
/// one call per run. O(device blocks of the range).
pub fn plugged_runs(
    start_pfn: u64,
    sub_pages: u64,
    plugged: &[bool],
    pfn: u64,
    nr: u64,
    keep: &mut dyn FnMut(u64, u64),
) {
    let end_pfn = start_pfn + plugged.len() as u64 * sub_pages;
    let end = pfn + nr;
    let mut run: Option<u64> = None;
    let mut p = pfn;
    while p < end {
        let (ok, next) = if p < start_pfn || p >= end_pfn {
            (true, if p < start_pfn { start_pfn.min(end) } else { end })
        } else {
            let i = ((p - start_pfn) / sub_pages) as usize;
            (plugged[i], (start_pfn + (i as u64 + 1) * sub_pages).min(end))
        };
        match (ok, run) {
            (true, None) => run = Some(p),
            (false, Some(s)) => {
                keep(s, p - s);
                run = None;
            }
            _ => {}
        }
        p = next;
    }
    if let Some(s) = run {
        keep(s, end - s);
    }
}
