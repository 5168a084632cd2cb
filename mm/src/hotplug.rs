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

use crate::{altmap::Altmap, buddy::MemmapInit, geometry::Geometry, page::ZoneId, sparse::state};
use alloc::{collections::BTreeMap, vec::Vec};
use arch::mutant::{self, Mutant};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryGroup {
    pub kind: GroupKind,
    pub present_kernel_pages: u64,
    pub present_movable_pages: u64,
    pub nr_blocks: u64,
}

impl MemoryGroup {
    const fn empty(kind: GroupKind) -> Self {
        MemoryGroup {
            kind,
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
    /// The zone while online.
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

/// Why a hotplug request was refused. Every refusal leaves the system as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotplugError {
    /// Start or size not memory-block aligned, or size zero.
    Misaligned {
        start: u64,
        size: u64,
        block_size: u64,
    },
    /// Beyond the physical range the configuration can map.
    OutOfRange {
        start: u64,
        size: u64,
        limit: u64,
    },
    /// Overlaps boot RAM or memory added before.
    Overlap {
        start: u64,
        size: u64,
    },
    NoSuchBlock(BlockId),
    /// No memory was added at this range.
    NotAdded {
        start: u64,
        size: u64,
    },
    /// The block is not in the state the request needs.
    BadState {
        block: BlockId,
        state: BlockState,
    },
    /// Boot memory can never be offlined or removed.
    EarlyMemory(BlockId),
    /// An unmovable page is in use: the block stays online.
    Busy {
        block: BlockId,
        pfn: u64,
    },
    /// Migration ran out of memory to move into (`moved` pages moved, `left` still in use):
    /// the block stays online.
    NoMigrationTarget {
        block: BlockId,
        moved: u64,
        left: u64,
    },
    /// Removal of a range that is not offline.
    NotOffline(BlockId),
    /// Removing the range starting at `pa` would split a block or contiguous mapping of the
    /// linear map.
    WouldSplitLeaf {
        pa: u64,
    },
    /// Self-hosted memmap: remove whole ranges as they were added.
    Granularity {
        start: u64,
        size: u64,
    },
    /// Memmap on memory requested but impossible; the reason.
    MemmapOnMemory(&'static str),
    /// Out of memory for page tables or memmap.
    NoMemory,
    NoSuchGroup(GroupId),
    /// A group with blocks cannot be unregistered; a static group cannot grow past its size.
    GroupInUse(GroupId),
    /// The page allocator refused a range it should manage (an internal inconsistency).
    Allocator(crate::buddy::BuddyError),
    /// Block `block` belongs to static group `group` (a DIMM) whose online blocks are in
    /// `zone`: a DIMM is onlined into one zone (Linux keeps a static group's memory together
    /// so the whole DIMM can be unplugged).
    GroupSplit {
        block: BlockId,
        group: GroupId,
        zone: ZoneId,
    },
    /// Block `block` belongs to static group `group` (a DIMM): its driver removes it, on eject.
    OwnedByGroup {
        block: BlockId,
        group: GroupId,
    },
    /// Failure injected by a test double.
    Injected,
}

impl core::fmt::Display for HotplugError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use HotplugError::*;
        match *self {
            Misaligned {
                start,
                size: 0,
                block_size,
            } => write!(
                f,
                "range {start:#x}+0x0 is empty: the size must be a non-zero multiple of the memory block size {block_size:#x}"
            ),
            Misaligned {
                start,
                size,
                block_size,
            } => write!(
                f,
                "range {start:#x}+{size:#x} is not aligned to the memory block size {block_size:#x}"
            ),
            OutOfRange { start, size, limit } => write!(
                f,
                "range {start:#x}+{size:#x} is beyond the mappable physical range (limit {limit:#x})"
            ),
            Overlap { start, size } => write!(f, "range {start:#x}+{size:#x} overlaps RAM or memory added before"),
            NoSuchBlock(b) => write!(f, "memory block {b} does not exist"),
            NotAdded { start, size } => write!(f, "no memory was added at {start:#x}+{size:#x}"),
            BadState { block, state } => write!(f, "memory block {block} is {}", state.name()),
            EarlyMemory(b) => write!(f, "memory block {b} is boot memory and cannot be offlined or removed"),
            Busy { block, pfn } => write!(f, "memory block {block}: unmovable page in use at pfn {pfn:#x}"),
            NoMigrationTarget { block, moved, left } => write!(
                f,
                "memory block {block}: no memory left to migrate into ({moved} pages moved, {left} left)"
            ),
            NotOffline(b) => write!(f, "memory block {b} is not offline"),
            WouldSplitLeaf { pa } => write!(
                f,
                "removing the range at pa {pa:#x} would split a linear-map block or contiguous run"
            ),
            Granularity { start, size } => write!(
                f,
                "{start:#x}+{size:#x} is not a whole range as added (its memmap is self-hosted)"
            ),
            MemmapOnMemory(why) => write!(f, "memmap on memory not possible: {why}"),
            NoMemory => write!(f, "out of memory for page tables or memmap"),
            NoSuchGroup(g) => write!(f, "memory group {g} does not exist"),
            GroupInUse(g) => write!(f, "memory group {g} is in use"),
            Allocator(e) => write!(f, "the page allocator refused the range: {e}"),
            GroupSplit { block, group, zone } => write!(
                f,
                "memory block {block} is part of DIMM group {group}, whose other blocks are online in {}: a DIMM stays in one zone (online it as {}, or offline the whole DIMM first)",
                zone.name(),
                match zone {
                    ZoneId::Normal => "kernel",
                    ZoneId::Movable => "movable",
                }
            ),
            OwnedByGroup { block, group } => write!(
                f,
                "memory block {block} belongs to DIMM group {group}: DIMM memory is removed by unplugging the DIMM (:unplug on the host), not by remove"
            ),
            Injected => write!(f, "injected failure"),
        }
    }
}

impl HotplugError {
    /// The refusal of offlining block `block` for `e`.
    pub fn from_offline(block: BlockId, e: crate::migrate::OfflineError) -> Self {
        use crate::migrate::OfflineError::*;
        match e {
            Unmovable { pfn } => HotplugError::Busy { block, pfn },
            NoTarget { moved, left } => HotplugError::NoMigrationTarget { block, moved, left },
            Range(e) => HotplugError::Allocator(e),
        }
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
    fn populate_memmap(&mut self, section_pfn: u64, altmap: Option<&mut Altmap>) -> Result<(), HotplugError>;
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
    /// The memmap of `[pfn, pfn + nr)` (offline) is about to be freed: forget its deferred
    /// state without touching it (`PageAlloc::memmap_removed`). Default: nothing deferred.
    fn release_memmap(&mut self, _pfn: u64, _nr: u64) {}
    /// Section state bits (the sparse model).
    fn section_update(&mut self, section_nr: u64, set: u8, clear: u8);
    /// Mark the self-hosted memmap pages (Linux `mhp_init_memmap_on_memory`).
    fn init_vmemmap_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId);
    fn deinit_vmemmap_pages(&mut self, pfn: u64, nr: u64);
    /// Give `[pfn, pfn + nr)` to the allocator in `zone`.
    fn online_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId) -> Result<(), HotplugError>;
    /// Isolate, migrate movable pages away, take the range out of the allocator; on failure
    /// (`Busy`, `NoMigrationTarget`) everything is back in the allocator and usable. New frames
    /// come from below PFN `target_below` while there is room there (`u64::MAX`: anywhere): an
    /// offline of several ranges passes its lowest, so each page moves once.
    fn offline_pages(&mut self, pfn: u64, nr: u64, block: BlockId, target_below: u64) -> Result<(), HotplugError>;
    /// `remove_memory` is done with `[pa, pa + size)`: memmap freed, linear map torn down
    /// and invalidated. The memory leaves the kernel; the test builds check that no entry
    /// (live or cleared-but-not-invalidated) still maps it, its linear map or its memmap.
    fn removed(&mut self, pa: u64, size: u64);
}

/// Per-zone present pages (self-hosted memmap pages included, like Linux).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZonePresent {
    pub normal: u64,
    pub movable: u64,
    /// Kernel-zone pages present since boot (Linux KERNEL_EARLY, the auto-movable base).
    pub kernel_early: u64,
}

/// All hotplug state. Callers serialise access (the hotplug lock).
pub struct Hotplug {
    geom: Geometry,
    blocks: BTreeMap<BlockId, MemoryBlock>,
    groups: BTreeMap<GroupId, MemoryGroup>,
    next_group: GroupId,
    /// Ranges added (start, size, memmap on memory), for overlap and granularity checks.
    added: Vec<(u64, u64, bool)>,
    present: ZonePresent,
    pub policy: OnlinePolicy,
    /// auto-movable MOVABLE:KERNEL_EARLY ratio in percent (Linux default 301).
    pub ratio: u64,
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
            present: ZonePresent::default(),
            policy: OnlinePolicy::AutoMovable,
            ratio: 301,
            default_online: Some(OnlineType::Auto),
            max_pa,
            memmap_init: MemmapInit::Eager,
        }
    }

    /// Present pages per zone (the accounting the checker recounts).
    pub fn present(&self) -> ZonePresent {
        self.present
    }

    /// The end of the physical range the configuration can map.
    pub fn max_pa(&self) -> u64 {
        self.max_pa
    }

    /// Count `pages` of kernel-zone memory present since boot (the auto-movable ratio's base)
    /// as if the boot had brought them: a VM whose early memory is larger than the blocks this
    /// `Hotplug` was given (tests of the ratio policy).
    pub fn assume_kernel_early(&mut self, pages: u64) {
        self.present.kernel_early = pages;
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

    /// A boot block: online in NORMAL, early (never offlined or removed).
    pub fn add_boot_block(&mut self, id: BlockId) {
        let bp = self.block_pages();
        self.blocks.insert(
            id,
            MemoryBlock {
                id,
                start_pfn: id * bp,
                nr_pages: bp,
                state: BlockState::Online,
                zone: Some(ZoneId::Normal),
                group: None,
                altmap: None,
                early: true,
            },
        );
        self.present.normal += bp;
        self.present.kernel_early += bp;
    }

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

    /// Linux `add_memory(group, start, size, flags)`: validate, map, populate the memmap,
    /// create OFFLINE blocks; any failure undoes every step (with the same altmaps). Onlining
    /// is the caller's: [`auto_online`](Self::auto_online) applies `default_online`.
    pub fn add_memory(
        &mut self,
        ops: &mut impl HotplugOps,
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
        if let Some(g) = group {
            let grp = self.groups.get(&g).ok_or(HotplugError::NoSuchGroup(g))?;
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
            match self.create_block(ops, id, group, flags) {
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

    /// Online new blocks per `default_online` (Linux auto-onlining after `add_memory`); like
    /// Linux, a failure leaves that block offline and does not undo the add. Returns each
    /// block's zone (`None` = left offline).
    pub fn auto_online(&mut self, ops: &mut impl HotplugOps, ids: &[BlockId]) -> Vec<(BlockId, Option<ZoneId>)> {
        let t = self.default_online;
        ids.iter()
            .map(|&id| (id, t.and_then(|t| self.online_block(ops, id, t).ok())))
            .collect()
    }

    fn create_block(
        &self,
        ops: &mut impl HotplugOps,
        id: BlockId,
        group: Option<GroupId>,
        flags: AddFlags,
    ) -> Result<MemoryBlock, HotplugError> {
        let bp = self.block_pages();
        let pfn = id * bp;
        let mut altmap = flags
            .memmap_on_memory
            .then(|| Altmap::new(pfn, pfn + bp - 1, 0, self.geom.memmap_pages_per_block()));
        ops.populate_memmap(pfn, altmap.as_mut())?;
        match self.memmap_init {
            MemmapInit::Eager => ops.init_memmap(pfn, bp, id),
            MemmapInit::Deferred => {
                // The self-hosted memmap pages are initialised now (as eagerly); the rest of
                // the block's struct pages when first needed.
                let n_vm = altmap.map_or(0, |a| a.alloc + a.align);
                if n_vm > 0 {
                    ops.init_memmap(pfn, n_vm, id);
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
    fn static_group_zone(&self, id: BlockId) -> Option<(GroupId, ZoneId)> {
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

    fn get(&self, id: BlockId) -> Result<MemoryBlock, HotplugError> {
        self.blocks.get(&id).copied().ok_or(HotplugError::NoSuchBlock(id))
    }

    fn set_state(&mut self, id: BlockId, s: BlockState) {
        if let Some(b) = self.blocks.get_mut(&id) {
            b.state = s;
        }
    }

    fn account(&mut self, b: &MemoryBlock, zone: ZoneId, add: bool) {
        let n = b.nr_pages;
        let apply = |v: &mut u64| if add { *v += n } else { *v -= n };
        match zone {
            ZoneId::Normal => apply(&mut self.present.normal),
            ZoneId::Movable => apply(&mut self.present.movable),
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
            ops.init_vmemmap_pages(b.start_pfn, n_vm, zone);
        }
        if let Err(e) = ops.online_pages(b.start_pfn + n_vm, b.nr_pages - n_vm, zone) {
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
        if let Err(e) = ops.offline_pages(b.start_pfn + n_vm, b.nr_pages - n_vm, id, target_below) {
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

    /// Check the hotplug accounting against a recount over the blocks: no block left in a
    /// transient state, zones set exactly on online blocks, zone and group present pages and
    /// group block counts equal to the recount, and every static group (a DIMM) in one zone.
    pub fn check(&self) -> Result<(), AccountingViolation> {
        let mut present = ZonePresent::default();
        let mut groups: BTreeMap<GroupId, MemoryGroup> = BTreeMap::new();
        let mut group_zone: BTreeMap<GroupId, ZoneId> = BTreeMap::new();
        for b in self.blocks.values() {
            let online = b.state == BlockState::Online;
            if !matches!(b.state, BlockState::Online | BlockState::Offline) || online != b.zone.is_some() {
                return Err(AccountingViolation::BlockState(b.id));
            }
            let g = b.group.map(|id| {
                let kind = self
                    .groups
                    .get(&id)
                    .map_or(GroupKind::Static { max_pages: 0 }, |g| g.kind);
                let g = groups.entry(id).or_insert(MemoryGroup::empty(kind));
                g.nr_blocks += 1;
                g
            });
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
        if present != self.present {
            return Err(AccountingViolation::Present {
                recorded: self.present,
                recount: present,
            });
        }
        for (&id, g) in &self.groups {
            let recount = groups.remove(&id).unwrap_or(MemoryGroup::empty(g.kind));
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
    Present {
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
            Present { recorded, recount } => write!(f, "present pages {recorded:?}, recount gives {recount:?}"),
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
