//! The memory side of a virtio-mem device, as [`mm::vmem`]'s policy sees it ([`VmemMemory`]):
//! whole units (big blocks, and the memory blocks of sub-block mode) go through the hotplug core,
//! one operation per lock; sub-blocks through the allocator and the plug bitmap of [`super::sbm`].

use super::sbm;
use crate::boot::layout::PAGE_SHIFT;
use crate::kernel::mem::hotplug::{with_hotplug, HOTPLUG};
use alloc::vec::Vec;
use mm::hotplug::{BlockId, GroupId, HotplugError};
use mm::vmem::{memory as core_ops, VmemMemory};

pub(super) struct Memory {
    pub group: GroupId,
    /// The NUMA node of the device's memory.
    pub node: mm::numa::NodeId,
    /// Index in [`sbm::SBM`] (sub-block mode).
    pub region: Option<usize>,
}

impl VmemMemory for Memory {
    fn add(&mut self, addr: u64, size: u64) -> Result<Vec<BlockId>, HotplugError> {
        let (group, node) = (self.group, self.node);
        with_hotplug(|hp, ops| core_ops::add(hp, ops, node, group, addr, size))
    }

    fn offline_and_remove(&mut self, addr: u64, size: u64, below: u64) -> Result<(), HotplugError> {
        with_hotplug(|hp, ops| hp.offline_and_remove_below(ops, addr, size, below >> PAGE_SHIFT))
    }

    fn set_online(&mut self, block: BlockId, pfn: u64, nr: u64, on: bool, below: u64) -> Result<(), HotplugError> {
        with_hotplug(|hp, ops| core_ops::set_online(hp, ops, block, pfn, nr, on, below >> PAGE_SHIFT))
    }

    fn in_normal(&mut self, block: BlockId) -> bool {
        // A read: the lock alone, no operation (so no `debug_vm` pass either).
        HOTPLUG.lock().as_ref().is_none_or(|hp| core_ops::in_normal(hp, block))
    }

    fn set_plugged(&mut self, first: usize, n: usize, v: bool) {
        if let Some(r) = self.region {
            sbm::SBM.lock()[r].plugged[first..first + n].fill(v);
        }
    }
}
