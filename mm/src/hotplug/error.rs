//! Why a hotplug request was refused, and how each refusal reads on the console.

use super::{BlockId, BlockState, GroupId};
use crate::numa::{NodeId, MAX_NUMNODES};
use crate::page::ZoneId;

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
    /// A node number at or beyond `MAX_NUMNODES`.
    NoSuchNode(NodeId),
    /// Memory of node `node` cannot join memory group `group`, whose memory is on `group_node`
    /// (a group is one device, on one node).
    GroupNode {
        group: GroupId,
        group_node: NodeId,
        node: NodeId,
    },
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
            NoSuchNode(n) => write!(
                f,
                "node {n} does not exist (nodes 0-{} are supported)",
                MAX_NUMNODES - 1
            ),
            GroupNode {
                group,
                group_node,
                node,
            } => write!(
                f,
                "memory of node {node} cannot join memory group {group}, whose memory is on node {group_node}"
            ),
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
