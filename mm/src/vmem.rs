//! virtio-mem's memory policy (virtio 1.2 §5.15; Linux `drivers/virtio/virtio_mem.c`), portable
//! and host-tested: which device blocks to plug and unplug when the host changes
//! `requested_size`, the request protocol (BUSY retried, NACK and ERROR final, every answer
//! checked), and the retry of a resize that stopped short.
//!
//! The device (transport, config space, virtqueue) is behind [`VmemDevice`]; the memory (the
//! hotplug core and the plug bitmap the online filter reads) behind [`VmemMemory`]. The kernel
//! implements both over virtio-pci and its hotplug lock; the host tests over a fake device that
//! misbehaves in every way the spec allows and some it does not (`mm/tests/vmem/`).
//!
//! Three modes, chosen from the device block size:
//! - **sub-block** (Linux SBM; device block < memory block and a whole number of pageblocks,
//!   e.g. the usual 2 MiB): memory blocks are added as needed, each with its first device
//!   block(s) plugged for its memmap on memory; only plugged device blocks reach the allocator
//!   (the online filter reads [`VmemMemory::plugged`]), the rest stays fake-offline. Grow plugs
//!   into added blocks first; shrink offlines and unplugs the highest plugged device blocks
//!   (blocks in MOVABLE first) and removes a block once only its memmap's device blocks are
//!   left, then unplugs those. Plug state changes on the safe side of each transition: marked
//!   plugged after the device's PLUG and before onlining; offlined before marked unplugged and
//!   before the device's UNPLUG;
//! - **big-block** (device block > memory block): a unit is one device block holding several
//!   memory blocks;
//! - **memory-block** (device block smaller than a pageblock, the isolation unit): a unit is one
//!   memory block, plugged whole; a size between two stops at the lower one and says so.
//!
//! Units (big-block, memory-block): grow = PLUG the unit (with `UNPLUGGED_INACCESSIBLE` the
//! memmap may only be written once plugged), add with memmap on memory, online per the policy;
//! shrink = units wholly in MOVABLE first, highest address first: offline (migrating) + remove
//! (clear → TLBI → free) + UNPLUG. In every mode memory that cannot be offlined is skipped, and
//! when nothing more can go the resize stops short with the reason.

use crate::geometry::Geometry;
use crate::hotplug::{BlockId, HotplugError};
use crate::size::Size;
use alloc::{string::String, vec, vec::Vec};
use arch::mutant::{self, Mutant};

pub mod memory;
mod sbm;
mod units;

/// `struct virtio_mem_req`'s type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RequestType {
    Plug = 0,
    Unplug = 1,
    UnplugAll = 2,
    State = 3,
}

/// `struct virtio_mem_req`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub ty: RequestType,
    pub addr: u64,
    pub nb_blocks: u16,
}

impl Request {
    /// The wire format: le16 type, 3×le16 padding, le64 addr, le16 nb_blocks, padding.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..2].copy_from_slice(&(self.ty as u16).to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16..18].copy_from_slice(&self.nb_blocks.to_le_bytes());
        b
    }
}

/// `struct virtio_mem_resp`'s type (le16 type, 3×le16 padding, le16 state; 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    Ack,
    Nack,
    Busy,
    Error,
    /// A type the spec does not define.
    Unknown(u16),
}

impl Response {
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        match u16::from_le_bytes([b[0], b[1]]) {
            0 => Response::Ack,
            1 => Response::Nack,
            2 => Response::Busy,
            3 => Response::Error,
            v => Response::Unknown(v),
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let v: u16 = match self {
            Response::Ack => 0,
            Response::Nack => 1,
            Response::Busy => 2,
            Response::Error => 3,
            Response::Unknown(v) => v,
        };
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&v.to_le_bytes());
        b
    }
}

/// The transport failed to carry a request (the device never answered, the queue broke).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError(pub String);

/// The device, as the policy sees it.
pub trait VmemDevice {
    fn requested_size(&mut self) -> u64;
    fn plugged_size(&mut self) -> u64;
    fn usable_region_size(&mut self) -> u64;
    /// Send one request and wait for its answer.
    fn exchange(&mut self, req: Request) -> Result<Response, TransportError>;
    /// Wait before asking again (a BUSY answer).
    fn sleep_ms(&mut self, ms: u64);
}

/// The memory, as the policy sees it: the hotplug core (under its lock, each call one
/// operation) and the mirror of sub-block mode's plug bitmap that the online filter reads. The
/// policy keeps the bitmap itself ([`Sbm::plugged`]) and tells the mirror every change, so it
/// never reads the mirror back: a resize costs O(memory blocks), not O(device blocks) per step.
pub trait VmemMemory {
    /// Add `[addr, addr + size)` with memmap on memory to the device's group and online it per
    /// the policy; the block ids.
    fn add(&mut self, addr: u64, size: u64) -> Result<Vec<BlockId>, HotplugError>;
    /// Offline (migrating) and remove `[addr, addr + size)`; migrated pages go below `below`
    /// (an address) where there is room.
    fn offline_and_remove(&mut self, addr: u64, size: u64, below: u64) -> Result<(), HotplugError>;
    /// Online (`on`) or offline `[pfn, pfn + nr)` of memory block `block` if the block is online
    /// (an offline block's pages are offline already; onlining the block later hands over the
    /// plugged ones only). Offlining migrates below `below` (an address) where there is room.
    fn set_online(&mut self, block: BlockId, pfn: u64, nr: u64, on: bool, below: u64) -> Result<(), HotplugError>;
    /// Whether memory block `block` is online in ZONE_NORMAL (shrinks prefer the others).
    fn in_normal(&mut self, block: BlockId) -> bool;
    /// Sub-block mode: device blocks `[first, first + n)` of the region are now plugged (`v`)
    /// or unplugged, for the online filter.
    fn set_plugged(&mut self, first: usize, n: usize, v: bool);
}

/// Why a request or a resize step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmemError {
    Transport(RequestType, TransportError),
    /// The device answered NACK (e.g. plugging beyond `requested_size`, or unplug refused).
    Nack(RequestType),
    /// Still BUSY after `tries` attempts.
    Busy(RequestType, u32),
    /// The device answered ERROR (bad address or block count).
    DeviceError(RequestType),
    /// An answer type the spec does not define.
    BadResponse(RequestType, u16),
    Hotplug(HotplugError),
}

impl core::fmt::Display for VmemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmemError::Transport(r, e) => write!(f, "{r:?}: no answer from the device ({})", e.0),
            VmemError::Nack(r) => write!(f, "{r:?} answered NACK"),
            VmemError::Busy(r, n) => write!(f, "{r:?} still BUSY after {n} tries"),
            VmemError::DeviceError(r) => write!(f, "{r:?} answered ERROR"),
            VmemError::BadResponse(r, v) => write!(f, "{r:?} answered unknown type {v}"),
            VmemError::Hotplug(e) => write!(f, "{e}"),
        }
    }
}

/// Attempts of a request answered BUSY (1 ms apart).
pub const BUSY_TRIES: u32 = 8;

/// A request with the retry policy: BUSY is retried [`BUSY_TRIES`] times 1 ms apart; NACK,
/// ERROR, an undefined answer and a transport failure are final.
pub fn request(dev: &mut impl VmemDevice, ty: RequestType, addr: u64, nb_blocks: u16) -> Result<(), VmemError> {
    let req = Request { ty, addr, nb_blocks };
    for _ in 0..BUSY_TRIES {
        match dev.exchange(req).map_err(|e| VmemError::Transport(ty, e))? {
            Response::Ack => return Ok(()),
            Response::Busy => dev.sleep_ms(1),
            Response::Nack => return Err(VmemError::Nack(ty)),
            Response::Error => return Err(VmemError::DeviceError(ty)),
            Response::Unknown(v) => return Err(VmemError::BadResponse(ty, v)),
        }
    }
    Err(VmemError::Busy(ty, BUSY_TRIES))
}

/// One bottom-half pass over a latched config-change event: `swap(v)` stores `v` in the latch
/// (the interrupt handler sets it) and returns what it held. The latch is cleared before the
/// pass reads the device's `requested_size`, so a change that arrives during the pass latches
/// again and the next pass sees it. `pass` gets whether a change was latched.
pub fn with_config_change<R>(mut swap: impl FnMut(bool) -> bool, pass: impl FnOnce(bool) -> R) -> R {
    let irq = swap(false);
    if !mutant::on(Mutant::IrqPendingClearedLate) {
        return pass(irq);
    }
    swap(irq);
    let r = pass(irq);
    swap(false);
    r
}

/// The device's configuration as read at probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    pub block_size: u64,
    pub addr: u64,
    pub region_size: u64,
    pub usable_region_size: u64,
    pub plugged_size: u64,
    pub node_id: u16,
}

/// Why a device is refused at probe (it is then marked FAILED and left untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    BlockSize(u64),
    Misaligned {
        addr: u64,
        region_size: u64,
        unit: u64,
        memory_block: u64,
        block_size: u64,
        granule: &'static str,
    },
    TooManyBlocks(u64),
    /// `plugged_size` or `usable_region_size` beyond the region, or not a block multiple.
    BadSizes {
        plugged: u64,
        usable: u64,
        region: u64,
    },
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ProbeError::BlockSize(b) => write!(f, "device block size {b:#x} is not a power of two ≥ the page size"),
            ProbeError::Misaligned {
                addr,
                region_size,
                unit,
                memory_block,
                block_size,
                granule,
            } => write!(
                f,
                "region {addr:#x}+{:#} is not aligned to the {:#} unit (memory block {:#} for the {granule} granule; device block {:#})",
                Size(region_size),
                Size(unit),
                Size(memory_block),
                Size(block_size)
            ),
            ProbeError::TooManyBlocks(n) => write!(f, "{n} device blocks per memory block do not fit one request"),
            ProbeError::BadSizes { plugged, usable, region } => write!(
                f,
                "plugged size {plugged:#x} or usable region {usable:#x} is beyond the {region:#x} region or not a block multiple"
            ),
        }
    }
}

/// The mode a device block size gives (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    SubBlock,
    MemoryBlock,
    BigBlock,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Mode::SubBlock => "sub-block",
            Mode::MemoryBlock => "memory-block",
            Mode::BigBlock => "big-block",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    Unplugged,
    /// Plugged and added (blocks online per the policy, or left offline).
    Added {
        blocks: Vec<BlockId>,
    },
    /// Removed, but the device refused the UNPLUG: retried on the next shrink.
    PluggedRemoved,
}

/// Sub-block mode state.
#[derive(Clone, Debug)]
pub struct Sbm {
    pub subs_per_block: usize,
    /// Device blocks at the start of each memory block that hold its memmap (plugged while
    /// the block exists).
    pub meta: usize,
    /// Memory blocks of the region that are added (their block id).
    pub added: Vec<Option<BlockId>>,
    /// Which device blocks are plugged, by the driver's count.
    plugged: Vec<bool>,
    /// Plugged device blocks per memory block, and in all.
    per_block: Vec<usize>,
    nr_plugged: usize,
}

impl Sbm {
    fn new(subs_per_block: usize, meta: usize, nr_blocks: usize) -> Self {
        Sbm {
            subs_per_block,
            meta,
            added: vec![None; nr_blocks],
            plugged: vec![false; nr_blocks * subs_per_block],
            per_block: vec![0; nr_blocks],
            nr_plugged: 0,
        }
    }

    /// Whether device block `i` of the region is plugged.
    pub fn plugged(&self, i: usize) -> bool {
        self.plugged[i]
    }

    /// Plugged device blocks of memory block `blk` (of the region).
    pub fn plugged_in(&self, blk: usize) -> usize {
        self.per_block[blk]
    }

    /// Plugged device blocks of the region.
    pub fn nr_plugged(&self) -> usize {
        self.nr_plugged
    }

    /// Record device blocks `[first, first + n)` as plugged (`v`) or not; O(n).
    fn mark(&mut self, first: usize, n: usize, v: bool) {
        for i in first..first + n {
            if self.plugged[i] != v {
                self.plugged[i] = v;
                let blk = i / self.subs_per_block;
                if v {
                    self.per_block[blk] += 1;
                    self.nr_plugged += 1;
                } else {
                    self.per_block[blk] -= 1;
                    self.nr_plugged -= 1;
                }
            }
        }
    }
}

/// A resize that stopped short (memory busy, the device said BUSY or NACK) is tried again on
/// the device's next config change (any new request, the same size included) and on a timer
/// that backs off from [`RETRY_FIRST_MS`] doubling to [`RETRY_MAX_MS`] (Linux
/// `virtio_mem_retry`). A guest that keeps memory its host asked back is what virtio-mem exists
/// to prevent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    pub reason: String,
    /// When the timer retry is due (the caller's clock, ms).
    pub at_ms: u64,
    pub backoff_ms: u64,
}

pub const RETRY_FIRST_MS: u64 = 5_000;
pub const RETRY_MAX_MS: u64 = 300_000;

/// What one pass of [`Vmem::process`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resized {
    pub requested: u64,
    /// Plugged (by the driver's count) before the pass.
    pub from: u64,
    /// The device's plugged size after it.
    pub plugged: u64,
    /// Stopped short: why, and when the timer retries.
    pub stopped: Option<Retry>,
}

/// One virtio-mem device's policy state.
pub struct Vmem {
    pub cfg: DeviceConfig,
    geom: Geometry,
    pub mode: Mode,
    /// max(memory block, device block), or the device block in sub-block mode.
    pub unit: u64,
    units: Vec<Unit>,
    sbm: Option<Sbm>,
    /// The `requested_size` the last resize worked towards.
    last_handled: Option<u64>,
    retry: Option<Retry>,
    /// While a shrink runs: the lowest address it takes away (migration targets come from
    /// below it where there is room, so each page moves once); `u64::MAX` otherwise.
    below: u64,
}

impl Vmem {
    /// Checks the device's configuration for `geom`'s kernel and sets up its state.
    pub fn new(geom: Geometry, cfg: DeviceConfig) -> Result<Self, ProbeError> {
        let mb = geom.section_size();
        let b = cfg.block_size;
        if b == 0 || !b.is_power_of_two() || b < geom.page_size() {
            return Err(ProbeError::BlockSize(b));
        }
        let align = mb.max(b);
        if !cfg.addr.is_multiple_of(align) || !cfg.region_size.is_multiple_of(align) || cfg.region_size == 0 {
            return Err(ProbeError::Misaligned {
                addr: cfg.addr,
                region_size: cfg.region_size,
                unit: align,
                memory_block: mb,
                block_size: b,
                granule: geom.granule_name(),
            });
        }
        if align / b > u16::MAX as u64 {
            return Err(ProbeError::TooManyBlocks(align / b));
        }
        let bad = |v: u64| v > cfg.region_size || !v.is_multiple_of(b);
        if bad(cfg.plugged_size) || bad(cfg.usable_region_size) {
            return Err(ProbeError::BadSizes {
                plugged: cfg.plugged_size,
                usable: cfg.usable_region_size,
                region: cfg.region_size,
            });
        }
        // Sub-block mode needs device blocks that are whole pageblocks (the isolation unit).
        let pageblock = geom.page_size() << geom.pageblock_order();
        let mode = if b < mb && b.is_multiple_of(pageblock) {
            Mode::SubBlock
        } else if b > mb {
            Mode::BigBlock
        } else {
            Mode::MemoryBlock
        };
        let unit = if mode == Mode::SubBlock { b } else { align };
        let memmap = geom.memmap_pages_per_block() << geom.page_shift;
        Ok(Vmem {
            cfg,
            geom,
            mode,
            unit,
            units: if mode == Mode::SubBlock {
                Vec::new()
            } else {
                vec![Unit::Unplugged; (cfg.region_size / unit) as usize]
            },
            sbm: (mode == Mode::SubBlock).then(|| {
                Sbm::new(
                    (mb / b) as usize,
                    (memmap.div_ceil(b) as usize).max(1),
                    (cfg.region_size / mb) as usize,
                )
            }),
            last_handled: None,
            retry: None,
            below: u64::MAX,
        })
    }

    /// Device blocks in the region (the length of the sub-block plug bitmap).
    pub fn nr_device_blocks(&self) -> usize {
        (self.cfg.region_size / self.cfg.block_size) as usize
    }

    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    pub fn sbm(&self) -> Option<&Sbm> {
        self.sbm.as_ref()
    }

    pub fn retry(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }

    /// Units (device blocks in sub-block mode) plugged by the driver's count: O(1) in sub-block
    /// mode, O(units) otherwise.
    pub fn units_plugged(&self) -> usize {
        match &self.sbm {
            Some(m) => m.nr_plugged(),
            None => self.units.iter().filter(|u| **u != Unit::Unplugged).count(),
        }
    }

    /// Bytes plugged by the driver's count.
    pub fn plugged_bytes(&self) -> u64 {
        self.units_plugged() as u64 * self.unit
    }

    pub fn unit_addr(&self, i: usize) -> u64 {
        self.cfg.addr + i as u64 * self.unit
    }

    fn unit_blocks(&self) -> u16 {
        (self.unit / self.cfg.block_size) as u16
    }

    pub fn sub_addr(&self, i: usize) -> u64 {
        self.cfg.addr + i as u64 * self.cfg.block_size
    }

    fn sub_pages(&self) -> u64 {
        self.cfg.block_size >> self.geom.page_shift
    }

    /// One pass of the bottom half: resize toward `requested_size` when it changed, or retry a
    /// stopped resize on a config change (`config_change`) or when its timer is due (`now_ms`).
    /// `None`: nothing to do.
    pub fn process(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        config_change: bool,
        now_ms: u64,
    ) -> Option<Resized> {
        let due = self.retry.as_ref().is_some_and(|r| now_ms >= r.at_ms);
        let requested = dev.requested_size();
        let retrying = self.retry.is_some() && (config_change || due) && !mutant::on(Mutant::VmemForgetStopped);
        if self.last_handled == Some(requested) && !retrying {
            return None;
        }
        let from = self.plugged_bytes();
        if self.last_handled.is_none() && requested == 0 && from == 0 {
            self.last_handled = Some(0);
            return None;
        }
        let why = self.resize(dev, mem, requested);
        let same = self.last_handled == Some(requested);
        self.last_handled = Some(requested);
        self.retry = why.map(|reason| {
            // The same request failing again backs off; a new one starts from the first delay.
            let backoff_ms = match &self.retry {
                Some(r) if same => (r.backoff_ms * 2).min(RETRY_MAX_MS),
                _ => RETRY_FIRST_MS,
            };
            Retry {
                reason,
                at_ms: now_ms + backoff_ms,
                backoff_ms,
            }
        });
        Some(Resized {
            requested,
            from,
            plugged: dev.plugged_size(),
            stopped: self.retry.clone(),
        })
    }

    /// Move the plugged units toward `requested`; returns why it stopped short, if it did.
    pub fn resize(&mut self, dev: &mut impl VmemDevice, mem: &mut impl VmemMemory, requested: u64) -> Option<String> {
        if self.sbm.is_some() {
            self.sbm_resize(dev, mem, requested)
        } else {
            self.units_resize(dev, mem, requested)
        }
    }
}
