//! Memory hotplug core (Linux `mm/memory_hotplug.c` + `drivers/base/memory.c`): memory blocks
//! and their state machine, zones, memory groups, online policies (with `auto-movable`), and
//! the add / online / offline / remove flows in the only safe order.
//!
//! The flows are generic over [`HotplugOps`], the platform operations (linear map, vmemmap,
//! `struct page` initialisation, the page allocator), so host tests drive them with doubles
//! that inject failures at every step and check that nothing is left behind.
//!
//! Memory block = one section. Memmap on memory: the first `Geometry::memmap_pages_per_block()`
//! pages of a hot-added block back its own memmap through a per-block [`Altmap`]; they are
//! initialised first when onlining, never reach the allocator, and are released last.
//!
//! Every block, group and present-page count belongs to a NUMA node (Linux `memory_block.nid`,
//! `memory_group.nid`, `pglist_data`'s zones): memory is added to a node, a group holds memory of
//! its node only, and the zones a block is onlined into are its node's.
//!
//! One job per file: the refusals ([`HotplugError`], `error.rs`), adding and removing memory
//! (`add_remove.rs`), onlining and offlining blocks (`online.rs`), the zone a block goes to and
//! memory groups (`zone.rs`), the auto-movable policy (`auto_movable.rs`), the nodes and their
//! present pages (`node.rs`), and the accounting checker (`check.rs`).

use crate::{
    altmap::Altmap,
    buddy::MemmapInit,
    geometry::Geometry,
    numa::{NodeId, MAX_NUMNODES},
    page::ZoneId,
};
use alloc::{collections::BTreeMap, vec::Vec};

mod add_remove;
mod auto_movable;
mod check;
mod error;
mod node;
mod online;
mod zone;
pub use check::AccountingViolation;
pub use error::HotplugError;

/// A memory block's id: the number of its (first) section.
pub type BlockId = u64;
pub type GroupId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    Offline,
    GoingOnline,
    Online,
    GoingOffline,
}

impl BlockState {
    pub const fn name(self) -> &'static str {
        match self {
            BlockState::Offline => "offline",
            BlockState::GoingOnline => "going-online",
            BlockState::Online => "online",
            BlockState::GoingOffline => "going-offline",
        }
    }
}

/// How to online a block (`online`, `online_kernel`, `online_movable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnlineType {
    /// Let the online policy choose the zone.
    Auto,
    Kernel,
    Movable,
}

/// Zone choice for [`OnlineType::Auto`] (Linux `memory_hotplug.online_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnlinePolicy {
    /// Keep zones contiguous: inherit the zone of an online neighbour block or of the block's
    /// group; otherwise the kernel zone.
    ContigZones,
    /// MOVABLE as long as MOVABLE:KERNEL_EARLY stays within `ratio` percent.
    AutoMovable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Added and removed as a whole (a DIMM): all its blocks in one zone kind.
    Static { max_pages: u64 },
    /// Added and removed in units (virtio-mem): all blocks of a unit in one zone kind.
    Dynamic { unit_pages: u64 },
}

/// A memory group (Linux `struct memory_group`): the memory of one device, all of it on the
/// group's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryGroup {
    pub kind: GroupKind,
    /// The node of every block of the group (Linux `memory_group.nid`).
    pub nid: NodeId,
    pub present_kernel_pages: u64,
    pub present_movable_pages: u64,
    pub nr_blocks: u64,
}

impl MemoryGroup {
    const fn empty(kind: GroupKind, nid: NodeId) -> Self {
        MemoryGroup {
            kind,
            nid,
            present_kernel_pages: 0,
            present_movable_pages: 0,
            nr_blocks: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBlock {
    pub id: BlockId,
    pub start_pfn: u64,
    pub nr_pages: u64,
    pub state: BlockState,
    /// The node the block's memory belongs to, from its add to its removal.
    pub node: NodeId,
    /// The zone (of the block's node) while online.
    pub zone: Option<ZoneId>,
    pub group: Option<GroupId>,
    /// The altmap backing this block's memmap (memmap on memory); owned by the block.
    pub altmap: Option<Altmap>,
    /// Boot memory: never offlined or removed.
    pub early: bool,
}

impl MemoryBlock {
    /// Pages at the start of the block that back its own memmap: what populate consumed from
    /// the altmap (allocated + alignment padding), not what the altmap could have given.
    pub fn nr_vmemmap_pages(&self) -> u64 {
        self.altmap.map_or(0, |a| a.alloc + a.align)
    }
}

/// Flags of `add_memory` (Linux `MHP_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddFlags {
    /// Self-host each block's memmap (required, not a hint: refused with a reason if impossible).
    pub memmap_on_memory: bool,
}

/// The platform operations the flows drive.
pub trait HotplugOps {
    /// Linear map of `[pa, pa + size)`: RW, never executable, largest leaves alignment allows.
    fn map_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError>;
    /// Refuse (nothing changed) if unmapping `[pa, pa + size)` would split a leaf.
    fn check_unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError>;
    /// Tear the linear map of the range down: clear → invalidate → free empty tables.
    fn unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError>;
    /// `vmemmap_populate` for one section's memmap, from `altmap` if given.
    fn populate_memmap(
        &mut self,
        section_pfn: u64,
        nid: NodeId,
        altmap: Option<&mut Altmap>,
    ) -> Result<(), HotplugError>;
    /// `vmemmap_free` for one section's memmap, backing back to `altmap` or the allocator.
    fn depopulate_memmap(&mut self, section_pfn: u64, altmap: Option<&mut Altmap>);
    /// Initialise the `struct page`s of a new block (reserved, offline).
    fn init_memmap(&mut self, pfn: u64, nr: u64, block: BlockId);
    /// [`MemmapInit::Deferred`]: leave the `struct page`s of `[pfn, pfn + nr)` of a new block
    /// uninitialised (Linux: deferred struct page init) — the page allocator records it
    /// (`PageAlloc::defer_memmap`) and initialises them when first needed. An implementation
    /// that cannot defer initialises them now; the default does (eager).
    fn defer_memmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        self.init_memmap(pfn, nr, block);
    }
    /// [`MemmapInit::Deferred`]: the self-hosted memmap pages `[pfn, pfn + nr)` of a new block
    /// keep struct pages that are never written (`PageAlloc::defer_vmemmap`), so an add writes
    /// no page of the memory it adds; [`init_vmemmap_pages`](Self::init_vmemmap_pages) and
    /// [`deinit_vmemmap_pages`](Self::deinit_vmemmap_pages) then only record the block's zone.
    /// An implementation that cannot defer initialises them now; the default does (eager).
    fn defer_vmemmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        self.init_memmap(pfn, nr, block);
    }
    /// The memmap of `[pfn, pfn + nr)` (offline) is about to be freed: forget its deferred
    /// state without touching it (`PageAlloc::memmap_removed`). Default: nothing deferred.
    fn release_memmap(&mut self, _pfn: u64, _nr: u64) {}
    /// Section state bits (the sparse model).
    fn section_update(&mut self, section_nr: u64, set: u8, clear: u8);
    /// Mark the self-hosted memmap pages (Linux `mhp_init_memmap_on_memory`) as pages of `zone`
    /// of node `nid`.
    fn init_vmemmap_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId);
    fn deinit_vmemmap_pages(&mut self, pfn: u64, nr: u64);
    /// Give `[pfn, pfn + nr)` to the allocator in `zone` of node `nid`.
    fn online_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) -> Result<(), HotplugError>;
    /// Isolate, migrate movable pages away, take the range out of the allocator; on failure
    /// (`Busy`, `NoMigrationTarget`) everything is back in the allocator and usable. `nid` is
    /// the node of `block` (migration prefers targets on it). New frames come from below PFN
    /// `target_below` while there is room there (`u64::MAX`: anywhere): an offline of several
    /// ranges passes its lowest, so each page moves once.
    fn offline_pages(
        &mut self,
        pfn: u64,
        nr: u64,
        block: BlockId,
        nid: NodeId,
        target_below: u64,
    ) -> Result<(), HotplugError>;
    /// `remove_memory` is done with `[pa, pa + size)`: memmap freed, linear map torn down
    /// and invalidated. The memory leaves the kernel; the test builds check that no entry
    /// (live or cleared-but-not-invalidated) still maps it, its linear map or its memmap.
    fn removed(&mut self, pa: u64, size: u64);
}

/// Per-zone present pages of a node or of all nodes (self-hosted memmap pages included, like
/// Linux).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZonePresent {
    pub normal: u64,
    pub movable: u64,
    /// Kernel-zone pages present since boot (Linux KERNEL_EARLY, the auto-movable base).
    pub kernel_early: u64,
}

impl ZonePresent {
    /// Present pages in every zone (Linux `node_present_pages`).
    pub const fn total(&self) -> u64 {
        self.normal + self.movable
    }
}

/// All hotplug state. Callers serialise access (the hotplug lock).
pub struct Hotplug {
    geom: Geometry,
    blocks: BTreeMap<BlockId, MemoryBlock>,
    groups: BTreeMap<GroupId, MemoryGroup>,
    next_group: GroupId,
    /// Ranges added (start, size, memmap on memory), for overlap and granularity checks.
    added: Vec<(u64, u64, bool)>,
    /// Present pages per node, as the blocks give them (the checker recounts these).
    present: [ZonePresent; MAX_NUMNODES],
    /// KERNEL_EARLY of a node as [`assume_kernel_early`](Self::assume_kernel_early) set it,
    /// in place of its boot blocks' count.
    assumed_early: [Option<u64>; MAX_NUMNODES],
    pub policy: OnlinePolicy,
    /// auto-movable MOVABLE:KERNEL_EARLY ratio in percent (Linux
    /// `memory_hotplug.auto_movable_ratio`, default 301).
    pub ratio: u64,
    /// auto-movable keeps the ratio on the block's node too, not only over all nodes (Linux
    /// `memory_hotplug.auto_movable_numa_aware`, default true).
    pub auto_movable_numa_aware: bool,
    /// What new blocks do after `add_memory` (Linux `memhp_default_state`); `None` = stay offline.
    pub default_online: Option<OnlineType>,
    /// First physical address the configuration cannot map.
    max_pa: u64,
    /// How `add_memory` initialises the memmap of new blocks (`memmap_init=`).
    pub memmap_init: MemmapInit,
}

impl Hotplug {
    pub fn new(geom: Geometry, max_pa: u64) -> Self {
        Hotplug {
            geom,
            blocks: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_group: 0,
            added: Vec::new(),
            present: [ZonePresent::default(); MAX_NUMNODES],
            assumed_early: [None; MAX_NUMNODES],
            policy: OnlinePolicy::AutoMovable,
            ratio: 301,
            auto_movable_numa_aware: true,
            default_online: Some(OnlineType::Auto),
            max_pa,
            memmap_init: MemmapInit::Eager,
        }
    }

    /// The end of the physical range the configuration can map.
    pub fn max_pa(&self) -> u64 {
        self.max_pa
    }

    pub fn block_size(&self) -> u64 {
        self.geom.section_size()
    }

    fn block_pages(&self) -> u64 {
        self.geom.pages_per_section()
    }

    pub fn blocks(&self) -> impl Iterator<Item = &MemoryBlock> {
        self.blocks.values()
    }

    pub fn block(&self, id: BlockId) -> Option<&MemoryBlock> {
        self.blocks.get(&id)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&GroupId, &MemoryGroup)> {
        self.groups.iter()
    }

    pub fn group(&self, id: GroupId) -> Option<&MemoryGroup> {
        self.groups.get(&id)
    }

    /// A boot block of node `nid`: online in NORMAL, early (never offlined or removed).
    pub fn add_boot_block(&mut self, id: BlockId, nid: NodeId) -> Result<(), HotplugError> {
        Self::check_node(nid)?;
        let bp = self.block_pages();
        self.blocks.insert(
            id,
            MemoryBlock {
                id,
                start_pfn: id * bp,
                nr_pages: bp,
                state: BlockState::Online,
                node: nid,
                zone: Some(ZoneId::Normal),
                group: None,
                altmap: None,
                early: true,
            },
        );
        let present = self.node_present_mut(nid);
        present.normal += bp;
        present.kernel_early += bp;
        Ok(())
    }

    fn check_range(&self, start: u64, size: u64) -> Result<(), HotplugError> {
        let bs = self.block_size();
        if size == 0 || !start.is_multiple_of(bs) || !size.is_multiple_of(bs) {
            return Err(HotplugError::Misaligned {
                start,
                size,
                block_size: bs,
            });
        }
        if start.checked_add(size).is_none_or(|end| end > self.max_pa) {
            return Err(HotplugError::OutOfRange {
                start,
                size,
                limit: self.max_pa,
            });
        }
        Ok(())
    }

    fn block_ids(&self, start: u64, size: u64) -> core::ops::Range<BlockId> {
        let bs = self.block_size();
        start / bs..(start + size) / bs
    }

    fn get(&self, id: BlockId) -> Result<MemoryBlock, HotplugError> {
        self.blocks.get(&id).copied().ok_or(HotplugError::NoSuchBlock(id))
    }

    fn set_state(&mut self, id: BlockId, s: BlockState) {
        if let Some(b) = self.blocks.get_mut(&id) {
            b.state = s;
        }
    }
}
