//! virtio-mem (virtio 1.2 §5.15) over the modern virtio-pci transport of `virtio-drivers`.
//!
//! One `virtio-mem-pci` device owns a region of guest-physical memory and plugs or unplugs it
//! in device blocks when the host changes `requested_size`. Three modes:
//! - **sub-block** (Linux SBM; device block < memory block and a whole number of pageblocks,
//!   e.g. the usual 2 MiB): memory blocks are added as needed, each with its first device
//!   block(s) plugged for its memmap on memory; only plugged device blocks reach the allocator
//!   ([`super::sbm::plugged_runs`], used by the platform's online/offline hooks), the rest stays
//!   fake-offline. Grow plugs into added blocks first; shrink offlines + unplugs the highest
//!   plugged device blocks (blocks in MOVABLE first) and removes a block once only its memmap's
//!   device blocks are left, then unplugs those;
//! - **big-block** (device block > memory block, e.g. `block=1G`): a unit is one device block
//!   holding several memory blocks;
//! - **memory-block** (device block smaller than a pageblock, the isolation unit): a unit is one
//!   memory block, plugged as a whole; a size between two stops at the lower one and says so.
//!
//! Units (big-block, memory-block): grow = `PLUG` the unit (with
//! `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE` the memmap may only be written once plugged),
//! `add_memory` with memmap on memory into the device's dynamic memory group, online per the
//! policy; shrink = units wholly in MOVABLE first, highest address first, offline (migrating) +
//! remove (clear → TLBI → free) + `UNPLUG`. In every mode memory that cannot be offlined is
//! skipped, and when nothing more can go the resize stops short with the reason.
//!
//! Config changes arrive as legacy INTx (level) through the host bridge's `interrupt-map`: the
//! handler masks the SPI and latches the event; the work runs in thread context from the
//! shell's idle loop ([`process_pending`]), which reads the ISR (deasserting the line), resizes,
//! and unmasks. A device without a routable INTx is polled from the idle loop instead (at
//! least every timer tick). Used-buffer interrupts are suppressed (requests are synchronous).

use crate::{
    boot::layout::{self, Size, G, PAGE_SHIFT, PAGE_SIZE},
    drivers::pci::Ecam,
    drivers::timer,
    kernel::mem::hotplug::with_hotplug,
    kernel::mem::sbm,
    kernel::mem::{kernel_pt, page_alloc},
    kernel::pci::Pci,
    println,
};
use alloc::{format, string::String, vec::Vec};
use arch::mutant::{self, Mutant};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use mm::hotplug::{AddFlags, BlockId, GroupId};
use mm::page::ZoneId;
use virtio_drivers::{
    queue::VirtQueue,
    transport::{pci::PciTransport, DeviceStatus, Transport},
    BufferDirection, Hal, PhysAddr,
};

/// PCI device id of a modern virtio-mem device (0x1040 + 24).
const PCI_DEVICE_ID: u16 = 0x1058;
const VIRTIO_VENDOR: u16 = 0x1af4;
const QUEUE_SIZE: usize = 8;

/// Feature bits.
pub mod feature {
    pub const ACPI_PXM: u64 = 1 << 0;
    pub const UNPLUGGED_INACCESSIBLE: u64 = 1 << 1;
    pub const VERSION_1: u64 = 1 << 32;
}

/// `struct virtio_mem_config` offsets.
mod cfg {
    pub const BLOCK_SIZE: usize = 0;
    pub const NODE_ID: usize = 8;
    pub const ADDR: usize = 16;
    pub const REGION_SIZE: usize = 24;
    pub const USABLE_REGION_SIZE: usize = 32;
    pub const PLUGGED_SIZE: usize = 40;
    pub const REQUESTED_SIZE: usize = 48;
}

/// Request types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Request {
    Plug = 0,
    Unplug = 1,
    UnplugAll = 2,
    /// Not sent: at start everything is unplugged (UNPLUG_ALL) instead of adopted.
    #[allow(dead_code)]
    State = 3,
}

/// Response types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    Ack,
    Nack,
    Busy,
    Error,
    Unknown(u16),
}

impl Response {
    fn from_u16(v: u16) -> Self {
        match v {
            0 => Response::Ack,
            1 => Response::Nack,
            2 => Response::Busy,
            3 => Response::Error,
            v => Response::Unknown(v),
        }
    }
}

/// Why a request or a resize step failed.
#[derive(Debug)]
pub enum VmemError {
    Queue(virtio_drivers::Error),
    /// The device answered NACK (e.g. plugging beyond `requested_size`, or unplug refused).
    Nack(Request),
    /// Still BUSY after `tries` attempts.
    Busy(Request, u32),
    /// The device answered ERROR (bad address or block count).
    DeviceError(Request),
    BadResponse(Request, u16),
    Hotplug(mm::hotplug::HotplugError),
}

impl core::fmt::Display for VmemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmemError::Queue(e) => write!(f, "virtqueue: {e:?}"),
            VmemError::Nack(r) => write!(f, "{r:?} answered NACK"),
            VmemError::Busy(r, n) => write!(f, "{r:?} still BUSY after {n} tries"),
            VmemError::DeviceError(r) => write!(f, "{r:?} answered ERROR"),
            VmemError::BadResponse(r, v) => write!(f, "{r:?} answered unknown type {v}"),
            VmemError::Hotplug(e) => write!(f, "{e}"),
        }
    }
}

/// Attempts of a request answered BUSY (1 ms apart).
const BUSY_TRIES: u32 = 8;

// ---------------------------------------------------------------------------------------------
// Hal over the page allocator.

/// `virtio-drivers`' DMA and MMIO hooks: DMA pages from the buddy (reached through the linear
/// map; QEMU's DMA is coherent, so sharing is the physical address), MMIO through `ioremap`.
pub struct HotmemHal;

/// Order of the kernel pages holding `pages` 4 KiB virtio pages.
fn dma_order(pages: usize) -> u32 {
    let bytes = (pages as u64 * 4096).max(1);
    bytes.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros()
}

/// Physical address of a kernel VA (linear map, or the kernel image: boot heap, stacks).
fn virt_to_phys(va: u64) -> u64 {
    if (layout::PAGE_OFFSET..layout::PAGE_OFFSET + layout::LINEAR_SIZE).contains(&va) {
        va - layout::PAGE_OFFSET
    } else {
        va.wrapping_sub(layout::kimage_voffset())
    }
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory owned by the caller until
// `dma_dealloc`, reachable at both addresses; `share` returns the physical address of memory
// that the device may access (QEMU's DMA is cache-coherent).
unsafe impl Hal for HotmemHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let order = dma_order(pages);
        let pa = page_alloc::alloc_pages(order).expect("virtio-mem: no memory for a virtqueue");
        let va = layout::phys_to_virt(pa) as *mut u8;
        // SAFETY: fresh pages of ours, reached through the linear map.
        unsafe { core::ptr::write_bytes(va, 0, (PAGE_SIZE << order) as usize) };
        (pa, NonNull::new(va).expect("linear map addresses are not null"))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        match page_alloc::free_pages(paddr, dma_order(pages)) {
            Ok(()) => 0,
            Err(_) => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let va = kernel_pt::ioremap(paddr, size as u64).expect("virtio-mem: ioremap of a BAR region");
        NonNull::new(va as *mut u8).expect("ioremap addresses are not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        virt_to_phys(buffer.as_ptr() as *mut u8 as u64)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

// ---------------------------------------------------------------------------------------------
// The device.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Unit {
    Unplugged,
    /// Plugged and added (blocks online per the policy, or left offline).
    Added {
        blocks: Vec<BlockId>,
    },
    /// Removed, but the device refused the UNPLUG: retried on the next shrink.
    PluggedRemoved,
}

pub struct VirtioMem {
    pub index: usize,
    pub pci: String,
    transport: PciTransport,
    queue: VirtQueue<HotmemHal, QUEUE_SIZE>,
    pub features: u64,
    pub block_size: u64,
    pub node_id: u16,
    pub addr: u64,
    pub region_size: u64,
    /// max(memory block, device block).
    pub unit: u64,
    pub group: GroupId,
    /// INTx INTID (`None`: polled).
    pub intid: Option<u32>,
    /// Units of memory-block / big-block mode (empty in sub-block mode).
    units: Vec<Unit>,
    /// Sub-block mode state.
    sbm: Option<Sbm>,
    /// The `requested_size` the last resize worked towards.
    last_handled: Option<u64>,
    /// The last resize stopped short: when and why it is tried again.
    retry: Option<Retry>,
    /// The last resize's outcome (`vmem` shows it).
    pub last_event: String,
    /// Cycles spent waiting for the device's answers (of the current resize).
    device_cycles: u64,
}

pub static DEVICES: spin::Mutex<Vec<VirtioMem>> = spin::Mutex::new(Vec::new());

/// A resize that stopped short (memory busy, the device said BUSY or NACK) is tried again on
/// the device's next config change (any new request, the same size included) and on a timer
/// that backs off from [`RETRY_FIRST_S`] doubling to [`RETRY_MAX_S`] (Linux `virtio_mem_retry`).
/// A guest that keeps memory its host asked back is what virtio-mem exists to prevent.
struct Retry {
    reason: String,
    /// CNTVCT at which the timer retry is due.
    at: u64,
    backoff_s: u64,
}

const RETRY_FIRST_S: u64 = 5;
const RETRY_MAX_S: u64 = 300;

/// Sub-block mode of one device.
struct Sbm {
    /// Index in [`sbm::SBM`].
    region: usize,
    subs_per_block: usize,
    /// Device blocks at the start of each memory block that hold its memmap (plugged while
    /// the block exists).
    meta: usize,
    /// Memory blocks of the region that are added (their block id).
    added: Vec<Option<BlockId>>,
}

/// INTIDs of the devices' INTx lines (`u32::MAX` = unused), read by the interrupt handler.
static INTIDS: [AtomicU32; 8] = [const { AtomicU32::new(u32::MAX) }; 8];
/// An INTx fired since the last [`process_pending`] (set at init too: the first pass applies a
/// `requested_size` the device had before we looked).
static IRQ_PENDING: AtomicBool = AtomicBool::new(true);
/// Interrupts taken (shown by `vmem`).
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);

/// Is `intid` one of our INTx lines?
pub fn owns_intid(intid: u32) -> bool {
    INTIDS.iter().any(|i| i.load(Ordering::Relaxed) == intid)
}

/// Interrupt handler: mask the level-triggered line (the device keeps it asserted until its ISR
/// is read, in thread context) and latch the event.
pub fn handle_irq(intid: u32) {
    crate::drivers::gic::disable_spi(intid);
    IRQ_COUNT.fetch_add(1, Ordering::Relaxed);
    IRQ_PENDING.store(true, Ordering::Release);
}

impl VirtioMem {
    fn read_u64(&self, off: usize) -> u64 {
        // Two 32-bit reads under the config generation (virtio §2.5.1: 64-bit fields need not
        // be read atomically).
        let r = self.transport.read_consistent(|| {
            let lo: u32 = self.transport.read_config_space(off)?;
            let hi: u32 = self.transport.read_config_space(off + 4)?;
            Ok((hi as u64) << 32 | lo as u64)
        });
        r.unwrap_or(0)
    }

    pub fn requested_size(&self) -> u64 {
        self.read_u64(cfg::REQUESTED_SIZE)
    }

    pub fn plugged_size(&self) -> u64 {
        self.read_u64(cfg::PLUGGED_SIZE)
    }

    pub fn usable_region_size(&self) -> u64 {
        self.read_u64(cfg::USABLE_REGION_SIZE)
    }

    fn request_once(&mut self, ty: Request, addr: u64, nb_blocks: u16) -> Result<Response, VmemError> {
        // struct virtio_mem_req: le16 type, 3×le16 padding, le64 addr, le16 nb_blocks, padding.
        let mut req = [0u8; 24];
        req[0..2].copy_from_slice(&(ty as u16).to_le_bytes());
        req[8..16].copy_from_slice(&addr.to_le_bytes());
        req[16..18].copy_from_slice(&nb_blocks.to_le_bytes());
        // struct virtio_mem_resp: le16 type, 3×le16 padding, le16 state.
        let mut resp = [0u8; 16];
        self.queue
            .add_notify_wait_pop(&[&req], &mut [&mut resp], &mut self.transport)
            .map_err(VmemError::Queue)?;
        Ok(Response::from_u16(u16::from_le_bytes([resp[0], resp[1]])))
    }

    /// A request with the retry policy: BUSY is retried `BUSY_TRIES` times 1 ms apart, NACK and
    /// ERROR are final.
    fn request(&mut self, ty: Request, addr: u64, nb_blocks: u16) -> Result<(), VmemError> {
        if ty == Request::Unplug && crate::kernel::mem::hotplug::DEBUG_VM.load(Ordering::Relaxed) {
            self.assert_offline(addr, nb_blocks);
        }
        for _ in 0..BUSY_TRIES {
            let t0 = arch::cpu::counter();
            let r = self.request_once(ty, addr, nb_blocks);
            self.device_cycles += arch::cpu::counter() - t0;
            match r? {
                Response::Ack => return Ok(()),
                Response::Busy => timer::sleep_ms(1),
                Response::Nack => return Err(VmemError::Nack(ty)),
                Response::Error => return Err(VmemError::DeviceError(ty)),
                Response::Unknown(v) => return Err(VmemError::BadResponse(ty, v)),
            }
        }
        Err(VmemError::Busy(ty, BUSY_TRIES))
    }

    /// `debug_vm` at the end of a resize: the device's plugged size is what the driver's state
    /// says, and every invariant holds, the sub-block rule included.
    fn check_quiescent(&self, plugged: u64) {
        let mine = self.units_plugged() as u64 * self.unit;
        if plugged != mine {
            crate::kernel::exit::fatal_stop(format_args!(
                "debug_vm: virtio-mem dev={} device says {plugged:#x} plugged, the driver's state {mine:#x}",
                self.index
            ));
        }
        let hp = crate::kernel::mem::hotplug::HOTPLUG.lock();
        if let Some(Err(e)) = hp.as_ref().map(crate::kernel::mem::hotplug::check_invariants) {
            crate::kernel::exit::fatal_stop(format_args!("debug_vm: after a virtio-mem resize: {e}"));
        }
    }

    /// `debug_vm`: the device may only be told to unplug memory the guest no longer uses:
    /// every page of the range with a struct page is offline (or has no memmap any more).
    fn assert_offline(&self, addr: u64, nb_blocks: u16) {
        let (s, n) = (addr >> PAGE_SHIFT, (nb_blocks as u64 * self.block_size) >> PAGE_SHIFT);
        let online = page_alloc::with_page_alloc(|a| (s..s + n).find(|&pfn| a.is_online(pfn) == Some(true)));
        if let Some(pfn) = online {
            crate::kernel::exit::fatal_stop(format_args!(
                "debug_vm: virtio-mem dev={} UNPLUG of {addr:#x}+{} while pfn {pfn:#x} is online",
                self.index,
                Size(nb_blocks as u64 * self.block_size)
            ));
        }
    }

    fn unit_addr(&self, i: usize) -> u64 {
        self.addr + i as u64 * self.unit
    }

    fn unit_blocks(&self) -> u16 {
        (self.unit / self.block_size) as u16
    }

    pub fn units_plugged(&self) -> usize {
        match &self.sbm {
            Some(m) => sbm::SBM.lock()[m.region].plugged.iter().filter(|&&b| b).count(),
            None => self.units.iter().filter(|u| **u != Unit::Unplugged).count(),
        }
    }

    // ---- sub-block mode ---------------------------------------------------------------------

    fn sub_pages(&self) -> u64 {
        self.block_size >> PAGE_SHIFT
    }

    fn sub_addr(&self, i: usize) -> u64 {
        self.addr + i as u64 * self.block_size
    }

    fn sub_plugged(&self, i: usize) -> bool {
        let r = self.sbm.as_ref().map_or(0, |m| m.region);
        sbm::SBM.lock()[r].plugged[i]
    }

    fn set_subs(&self, first: usize, n: usize, v: bool) {
        let r = self.sbm.as_ref().map_or(0, |m| m.region);
        sbm::SBM.lock()[r].plugged[first..first + n].fill(v);
    }

    /// Online (`on`) or fake-offline device blocks `[first, first + n)` of an online memory
    /// block; nothing to do while the block is offline.
    fn sbm_online(&self, block: BlockId, first: usize, n: usize, on: bool) -> Result<(), VmemError> {
        let (pfn, nr) = (self.sub_addr(first) >> PAGE_SHIFT, n as u64 * self.sub_pages());
        with_hotplug(|hp, ops| {
            use mm::hotplug::HotplugOps;
            match hp.block(block) {
                Some(b) if b.state == mm::hotplug::BlockState::Online => {
                    let zone = b.zone.unwrap_or(ZoneId::Normal);
                    if on {
                        ops.online_pages(pfn, nr, zone)
                    } else {
                        ops.offline_pages(pfn, nr, block)
                    }
                }
                _ => Ok(()),
            }
        })
        .map_err(VmemError::Hotplug)
    }

    /// Plug up to `need` device blocks: first in added memory blocks, else by adding one.
    fn sbm_grow_step(&mut self, need: usize) -> Result<(), String> {
        let m = self.sbm.as_ref().expect("sub-block mode");
        let (s, meta) = (m.subs_per_block, m.meta);
        let added = m.added.clone();
        let usable = (self.usable_region_size() / self.block_size) as usize;
        let free_in = |blk: usize| (blk * s..(blk + 1) * s).find(|&i| i < usable && !self.sub_plugged(i));
        if let Some((blk, first)) = (0..added.len())
            .filter(|&b| added[b].is_some())
            .find_map(|b| free_in(b).map(|i| (b, i)))
        {
            let mut n = 0;
            while n < need && first + n < (blk + 1) * s && first + n < usable && !self.sub_plugged(first + n) {
                n += 1;
            }
            let addr = self.sub_addr(first);
            self.request(Request::Plug, addr, n as u16)
                .map_err(|e| format!("plugging {addr:#x}+{}: {e}", Size(n as u64 * self.block_size)))?;
            // Plugged first: the online filter hands over plugged device blocks only.
            let early = mutant::on(Mutant::VmemOnlineBeforePlugged);
            let online = if early {
                let r = self.sbm_online(added[blk].unwrap_or(0), first, n, true);
                self.set_subs(first, n, true);
                r
            } else {
                self.set_subs(first, n, true);
                self.sbm_online(added[blk].unwrap_or(0), first, n, true)
            };
            if let Err(e) = online {
                self.set_subs(first, n, false);
                let _ = self.request(Request::Unplug, addr, n as u16);
                return Err(format!("onlining {addr:#x}: {e}"));
            }
            return Ok(());
        }
        let n = need.min(s).max(meta);
        let Some(blk) = (0..added.len()).find(|&b| added[b].is_none() && b * s + n <= usable) else {
            return Err(format!(
                "no room left in the usable region of {}",
                Size(usable as u64 * self.block_size)
            ));
        };
        let first = blk * s;
        let addr = self.sub_addr(first);
        self.request(Request::Plug, addr, n as u16)
            .map_err(|e| format!("plugging {addr:#x}+{}: {e}", Size(n as u64 * self.block_size)))?;
        self.set_subs(first, n, true);
        let (group, mb) = (self.group, G.section_size());
        let r = with_hotplug(|hp, ops| {
            let ids = hp.add_memory(ops, Some(group), addr, mb, AddFlags { memmap_on_memory: true })?;
            hp.auto_online(ops, &ids);
            Ok::<_, mm::hotplug::HotplugError>(ids)
        });
        match r {
            Ok(ids) => {
                if let Some(m) = self.sbm.as_mut() {
                    m.added[blk] = ids.first().copied();
                }
                Ok(())
            }
            Err(e) => {
                self.set_subs(first, n, false);
                let _ = self.request(Request::Unplug, addr, n as u16);
                Err(format!("adding {addr:#x}+{}: {e}", Size(mb)))
            }
        }
    }

    /// Unplug up to `excess` device blocks from memory block `blk` (its highest plugged ones
    /// first; the whole block, memmap included, once only the memmap's are left).
    fn sbm_shrink_block(&mut self, blk: usize, excess: usize) -> Result<(), String> {
        let m = self.sbm.as_ref().expect("sub-block mode");
        let (s, meta) = (m.subs_per_block, m.meta);
        let id = m.added[blk];
        let first = blk * s;
        let hi = (first + meta..first + s).rev().find(|&i| self.sub_plugged(i));
        match (id, hi) {
            (Some(id), Some(hi)) => {
                let mut lo = hi;
                while lo > first + meta && self.sub_plugged(lo - 1) && hi - lo + 1 < excess {
                    lo -= 1;
                }
                let n = hi - lo + 1;
                let addr = self.sub_addr(lo);
                if mutant::on(Mutant::VmemUnplugBeforeOffline) {
                    let _ = self.request(Request::Unplug, addr, n as u16);
                }
                self.sbm_online(id, lo, n, false)
                    .map_err(|e| format!("{addr:#x}+{}: {e}", Size(n as u64 * self.block_size)))?;
                self.set_subs(lo, n, false);
                if let Err(e) = self.request(Request::Unplug, addr, n as u16) {
                    self.set_subs(lo, n, true);
                    let _ = self.sbm_online(id, lo, n, true);
                    return Err(format!("unplugging {addr:#x}: {e}"));
                }
                Ok(())
            }
            (Some(_), None) => {
                let (addr, mb) = (self.sub_addr(first), G.section_size());
                with_hotplug(|hp, ops| hp.offline_and_remove(ops, addr, mb))
                    .map_err(|e| format!("{addr:#x}+{}: {e}", Size(mb)))?;
                if let Some(m) = self.sbm.as_mut() {
                    m.added[blk] = None;
                }
                self.sbm_unplug_stale(blk)
            }
            (None, _) => self.sbm_unplug_stale(blk),
        }
    }

    /// UNPLUG whatever is still plugged in a memory block that is not added.
    fn sbm_unplug_stale(&mut self, blk: usize) -> Result<(), String> {
        let s = self.sbm.as_ref().map_or(1, |m| m.subs_per_block);
        let first = blk * s;
        let plugged: Vec<usize> = (first..first + s).filter(|&i| self.sub_plugged(i)).collect();
        let (Some(&lo), Some(&hi)) = (plugged.first(), plugged.last()) else {
            return Ok(());
        };
        let addr = self.sub_addr(lo);
        self.request(Request::Unplug, addr, (hi - lo + 1) as u16)
            .map_err(|e| format!("unplugging {addr:#x}: {e}"))?;
        self.set_subs(lo, hi - lo + 1, false);
        Ok(())
    }

    /// Shrink candidates in sub-block mode: blocks not added but still plugged, then blocks
    /// wholly in MOVABLE, then the rest; highest address first within each.
    fn sbm_shrink_order(&self) -> Vec<usize> {
        let m = self.sbm.as_ref().expect("sub-block mode");
        let s = m.subs_per_block;
        let mut v: Vec<(u8, usize)> = with_hotplug(|hp, _| {
            (0..m.added.len())
                .filter(|&b| (b * s..(b + 1) * s).any(|i| self.sub_plugged(i)))
                .map(|b| match m.added[b] {
                    None => (0, b),
                    Some(id) if hp.block(id).is_some_and(|x| x.zone != Some(ZoneId::Normal)) => (1, b),
                    Some(_) => (2, b),
                })
                .collect()
        });
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.into_iter().map(|(_, b)| b).collect()
    }

    fn sbm_resize(&mut self, requested: u64) -> Option<String> {
        let target = (requested / self.block_size) as usize;
        while self.units_plugged() < target {
            if let Err(e) = self.sbm_grow_step(target - self.units_plugged()) {
                return Some(e);
            }
        }
        while self.units_plugged() > target {
            let excess = self.units_plugged() - target;
            let mut last = String::new();
            let mut done = false;
            for blk in self.sbm_shrink_order() {
                match self.sbm_shrink_block(blk, excess) {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if !done {
                return Some(format!(
                    "memory busy: no plugged device block could be offlined and unplugged (last: {last})"
                ));
            }
        }
        None
    }

    /// PLUG unit `i`, add its memory blocks to the group and online them per the policy.
    fn grow_unit(&mut self, i: usize) -> Result<(), VmemError> {
        let (addr, nb) = (self.unit_addr(i), self.unit_blocks());
        self.request(Request::Plug, addr, nb)?;
        let (group, unit) = (self.group, self.unit);
        let r = with_hotplug(|hp, ops| {
            let ids = hp.add_memory(ops, Some(group), addr, unit, AddFlags { memmap_on_memory: true })?;
            hp.auto_online(ops, &ids);
            Ok::<_, mm::hotplug::HotplugError>(ids)
        });
        match r {
            Ok(blocks) => {
                self.units[i] = Unit::Added { blocks };
                Ok(())
            }
            Err(e) => {
                if let Err(u) = self.request(Request::Unplug, addr, nb) {
                    println!(
                        "virtio-mem: dev={} addr={addr:#x} cannot unplug after a failed add: {u}",
                        self.index
                    );
                    self.units[i] = Unit::PluggedRemoved;
                }
                Err(VmemError::Hotplug(e))
            }
        }
    }

    /// Offline + remove + UNPLUG unit `i`.
    fn shrink_unit(&mut self, i: usize) -> Result<(), VmemError> {
        let (addr, nb, unit) = (self.unit_addr(i), self.unit_blocks(), self.unit);
        if matches!(self.units[i], Unit::Added { .. }) {
            with_hotplug(|hp, ops| hp.offline_and_remove(ops, addr, unit)).map_err(VmemError::Hotplug)?;
            self.units[i] = Unit::PluggedRemoved;
        }
        self.request(Request::Unplug, addr, nb)?;
        self.units[i] = Unit::Unplugged;
        Ok(())
    }

    /// Shrink candidates: removed-but-plugged first, then units wholly in MOVABLE, then the
    /// rest; highest address first within each.
    fn shrink_order(&self) -> Vec<usize> {
        let mut v: Vec<(u8, usize)> = with_hotplug(|hp, _| {
            self.units
                .iter()
                .enumerate()
                .filter_map(|(i, u)| match u {
                    Unit::Unplugged => None,
                    Unit::PluggedRemoved => Some((0, i)),
                    Unit::Added { blocks } => {
                        let movable = blocks
                            .iter()
                            .all(|&b| hp.block(b).is_some_and(|b| b.zone != Some(ZoneId::Normal)));
                        Some((if movable { 1 } else { 2 }, i))
                    }
                })
                .collect()
        });
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// Move the plugged units toward `requested`; returns why it stopped short, if it did.
    fn resize(&mut self, requested: u64) -> Option<String> {
        if self.sbm.is_some() {
            return self.sbm_resize(requested);
        }
        let target = (requested / self.unit) as usize;
        let mut why: Option<String> = None;
        while self.units_plugged() < target {
            let usable = self.usable_region_size();
            let next = (0..self.units.len())
                .find(|&i| self.units[i] == Unit::Unplugged && (i as u64 + 1) * self.unit <= usable);
            let Some(i) = next else {
                why = Some(format!(
                    "no unplugged unit left in the usable region of {}",
                    Size(usable)
                ));
                break;
            };
            if let Err(e) = self.grow_unit(i) {
                why = Some(format!("plugging {:#x}+{}: {e}", self.unit_addr(i), Size(self.unit)));
                break;
            }
        }
        while self.units_plugged() > target {
            let mut done = false;
            let mut last: Option<String> = None;
            for i in self.shrink_order() {
                match self.shrink_unit(i) {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => last = Some(format!("{:#x}+{}: {e}", self.unit_addr(i), Size(self.unit))),
                }
            }
            if !done {
                why = Some(format!(
                    "memory busy: no plugged unit could be offlined and unplugged (last: {})",
                    last.unwrap_or_default()
                ));
                break;
            }
        }
        if why.is_none() && !requested.is_multiple_of(self.unit) {
            why = Some(format!(
                "requested size is not a multiple of the {} unit (device blocks smaller than a pageblock are plugged a memory block at a time)",
                Size(self.unit)
            ));
        }
        why
    }
}

/// Find every virtio-mem function, bring it up, unplug whatever is plugged (a reboot or a
/// device with memory plugged at start), register its dynamic memory group.
pub fn init(pci: &mut Pci) {
    let fns: Vec<_> = pci
        .functions
        .iter()
        .filter(|f| f.info.vendor_id == VIRTIO_VENDOR && f.info.device_id == PCI_DEVICE_ID)
        .cloned()
        .collect();
    if let Err(e) = crate::kernel::deferred::register(process_pending) {
        println!("virtio-mem: cannot register the deferred work: {e:?}");
    }
    for f in fns {
        let index = DEVICES.lock().len();
        match probe(&mut pci.root, f.df, index, f.intid) {
            Ok(d) => {
                if let Some(id) = d.intid {
                    // INTx lines are shared: one handler per line, whichever device raised it.
                    if !owns_intid(id) {
                        if let Err(e) = crate::kernel::irq::register(id, |id, _| handle_irq(id)) {
                            println!("virtio-mem: intid={id}: {e:?}");
                        }
                    }
                    if let Some(slot) = INTIDS.iter().find(|s| s.load(Ordering::Relaxed) == u32::MAX) {
                        slot.store(id, Ordering::Relaxed);
                    }
                    crate::drivers::gic::enable_spi(id, crate::drivers::gic::Trigger::Level);
                }
                DEVICES.lock().push(d)
            }
            Err(why) => println!("virtio-mem: pci={} refused: {why}", f.df),
        }
    }
}

fn probe(
    root: &mut virtio_drivers::transport::pci::bus::PciRoot<Ecam>,
    df: virtio_drivers::transport::pci::bus::DeviceFunction,
    index: usize,
    intid: Option<u32>,
) -> Result<VirtioMem, String> {
    let mut t = PciTransport::new::<HotmemHal, Ecam>(root, df).map_err(|e| format!("transport: {e}"))?;
    // Device initialisation (virtio §3.1.1), by hand: `begin_init` wants a bitflags type.
    t.set_status(DeviceStatus::empty());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = t.read_device_features();
    if offered & feature::VERSION_1 == 0 {
        t.set_status(DeviceStatus::FAILED);
        return Err("the device does not offer VIRTIO_F_VERSION_1".into());
    }
    let features = offered & (feature::VERSION_1 | feature::UNPLUGGED_INACCESSIBLE | feature::ACPI_PXM);
    t.write_driver_features(features);
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    if !t.get_status().contains(DeviceStatus::FEATURES_OK) {
        t.set_status(DeviceStatus::FAILED);
        return Err(format!("the device rejected features {features:#x}"));
    }
    let rd = |t: &PciTransport, off: usize| -> u64 {
        t.read_consistent(|| {
            let lo: u32 = t.read_config_space(off)?;
            let hi: u32 = t.read_config_space(off + 4)?;
            Ok((hi as u64) << 32 | lo as u64)
        })
        .unwrap_or(0)
    };
    let block_size = rd(&t, cfg::BLOCK_SIZE);
    let addr = rd(&t, cfg::ADDR);
    let region_size = rd(&t, cfg::REGION_SIZE);
    let node_id = t.read_config_space::<u16>(cfg::NODE_ID).unwrap_or(0);
    let mb = G.section_size();
    let align = mb.max(block_size);
    // Sub-block mode needs device blocks that are whole pageblocks (the isolation unit).
    let pageblock = PAGE_SIZE << G.pageblock_order();
    let sub_block_mode = block_size < mb && block_size % pageblock == 0;
    let unit = if sub_block_mode { block_size } else { align };
    let refuse = |t: &mut PciTransport, why: String| {
        t.set_status(DeviceStatus::FAILED);
        Err(why)
    };
    if block_size == 0 || !block_size.is_power_of_two() || block_size < PAGE_SIZE {
        return refuse(
            &mut t,
            format!("device block size {block_size:#x} is not a power of two ≥ the page size"),
        );
    }
    if addr % align != 0 || region_size % align != 0 {
        return refuse(
            &mut t,
            format!(
                "region {addr:#x}+{} is not aligned to the {} unit (memory block {} for the {} granule; device block {})",
                Size(region_size),
                Size(align),
                Size(mb),
                G.granule_name(),
                Size(block_size)
            ),
        );
    }
    if align / block_size > u16::MAX as u64 {
        return refuse(
            &mut t,
            format!(
                "{} device blocks per memory block do not fit one request",
                align / block_size
            ),
        );
    }
    let mut queue = match VirtQueue::<HotmemHal, QUEUE_SIZE>::new(&mut t, 0, false, false) {
        Ok(q) => q,
        Err(e) => return refuse(&mut t, format!("virtqueue: {e:?}")),
    };
    // Requests are waited for synchronously: no used-buffer interrupts.
    queue.set_dev_notify(false);
    t.finish_init();
    let group = match with_hotplug(|hp, _| hp.register_dynamic_group(align >> PAGE_SHIFT)) {
        Ok(g) => g,
        Err(e) => return refuse(&mut t, format!("dynamic memory group: {e}")),
    };
    let mut d = VirtioMem {
        index,
        pci: format!("{df}"),
        transport: t,
        queue,
        features,
        block_size,
        node_id,
        addr,
        region_size,
        unit,
        group,
        intid: intid.filter(|_| index < INTIDS.len()),
        units: if sub_block_mode {
            Vec::new()
        } else {
            alloc::vec![Unit::Unplugged; (region_size / unit) as usize]
        },
        sbm: sub_block_mode.then(|| {
            let subs_per_block = (mb / block_size) as usize;
            let mut regions = sbm::SBM.lock();
            regions.push(sbm::SbmRegion {
                start_pfn: addr >> PAGE_SHIFT,
                end_pfn: (addr + region_size) >> PAGE_SHIFT,
                sub_pages: block_size >> PAGE_SHIFT,
                plugged: alloc::vec![false; (region_size / block_size) as usize],
            });
            Sbm {
                region: regions.len() - 1,
                subs_per_block,
                meta: ((G.memmap_pages_per_block() << PAGE_SHIFT).div_ceil(block_size) as usize).max(1),
                added: alloc::vec![None; (region_size / mb) as usize],
            }
        }),
        last_handled: None,
        retry: None,
        last_event: String::from("none"),
        device_cycles: 0,
    };
    let plugged = d.plugged_size();
    if plugged != 0 {
        // Memory plugged before this boot (a reset, or plugged at start): nobody uses it.
        if let Err(e) = d.request(Request::UnplugAll, 0, 0) {
            println!("virtio-mem: dev={index} UNPLUG_ALL of {}: {e}", Size(plugged));
        }
    }
    println!(
        "virtio-mem: dev={index} pci={} addr={addr:#x} region={} block={} unit={} mode={} node={node_id} features={features:#x}{} group={group} irq={} unplugged_at_start={}",
        d.pci,
        Size(region_size),
        Size(block_size),
        Size(unit),
        mode(block_size, d.sbm.is_some()),
        if features & feature::UNPLUGGED_INACCESSIBLE != 0 { "(unplugged-inaccessible)" } else { "" },
        d.intid.map_or("polled".into(), |i| format!("intx:{i}")),
        Size(plugged),
    );
    Ok(d)
}

fn mode(block_size: u64, sbm: bool) -> &'static str {
    if sbm {
        "sub-block"
    } else if block_size > G.section_size() {
        "big-block"
    } else {
        "memory-block"
    }
}

/// Deferred work (the bottom half, [`crate::kernel::deferred`]): resize every device whose
/// `requested_size` changed, and retry every stopped resize that is due (a config change of
/// its device, or its timer).
pub fn process_pending() {
    let irq = IRQ_PENDING.swap(false, Ordering::Acquire);
    let now = arch::cpu::counter();
    let mut devs = DEVICES.lock();
    for d in devs.iter_mut() {
        let due = d.retry.as_ref().is_some_and(|r| now >= r.at);
        if d.intid.is_some() {
            if !irq && !due {
                continue;
            }
            // Reading the ISR deasserts the line; a change after this raises it again.
            let _ = d.transport.ack_interrupt();
        }
        let requested = d.requested_size();
        let retrying = d.retry.is_some() && (irq || due);
        if d.last_handled == Some(requested) && !retrying {
            continue;
        }
        let plugged_before = d.units_plugged() as u64 * d.unit;
        if d.last_handled.is_none() && requested == 0 && plugged_before == 0 {
            d.last_handled = Some(0);
            continue;
        }
        let t0 = arch::cpu::counter();
        d.device_cycles = 0;
        let why = d.resize(requested);
        let cycles = arch::cpu::counter() - t0;
        let same = d.last_handled == Some(requested);
        d.last_handled = Some(requested);
        let plugged = d.plugged_size();
        if crate::kernel::mem::hotplug::DEBUG_VM.load(Ordering::Relaxed) {
            d.check_quiescent(plugged);
        }
        let head = format!(
            "virtio-mem: dev={} addr={:#x} requested={requested:#x} plugged={plugged:#x} from={plugged_before:#x}",
            d.index, d.addr
        );
        let times = format!(
            "cycles={cycles} us={} device_us={}",
            timer::cycles_to_us(cycles),
            timer::cycles_to_us(d.device_cycles)
        );
        d.retry = why.map(|reason| {
            // The same request failing again backs off; a new one starts from the first delay.
            let backoff_s = match &d.retry {
                Some(r) if same => (r.backoff_s * 2).min(RETRY_MAX_S),
                _ => RETRY_FIRST_S,
            };
            let at = arch::cpu::counter() + backoff_s * arch::cpu::counter_freq();
            Retry { reason, at, backoff_s }
        });
        d.last_event = match &d.retry {
            None => format!("{head} event=done {times}"),
            Some(r) => format!(
                "{head} event=stopped {times} next_retry_s={} reason=\"{}\"",
                r.backoff_s, r.reason
            ),
        };
        println!("{}", d.last_event);
    }
    if irq {
        for d in devs.iter() {
            if let Some(id) = d.intid {
                crate::drivers::gic::enable_spi(id, crate::drivers::gic::Trigger::Level);
            }
        }
    }
}

impl VirtioMem {
    /// `state=idle`, or `state=stopped reason="..." next_retry_s=N` (seconds from now).
    fn state(&self) -> String {
        match &self.retry {
            None => "state=idle".into(),
            Some(r) => {
                let left = r.at.saturating_sub(arch::cpu::counter()) / arch::cpu::counter_freq().max(1);
                format!("state=stopped next_retry_s={left} reason=\"{}\"", r.reason)
            }
        }
    }
}

/// `vmem` shell command.
pub fn print_devices() {
    let devs = DEVICES.lock();
    if devs.is_empty() {
        println!("vmem: none (add one with the runner's --virtio-mem SIZE)");
        return;
    }
    for d in devs.iter() {
        println!(
            "vmem: dev={} pci={} addr={:#x} region={:#x} block={:#x} unit={:#x} mode={} plugged={:#x} requested={:#x} usable={:#x} units={}/{} group={} node={} features={:#x} irq={} irqs={} {}",
            d.index,
            d.pci,
            d.addr,
            d.region_size,
            d.block_size,
            d.unit,
            mode(d.block_size, d.sbm.is_some()),
            d.plugged_size(),
            d.requested_size(),
            d.usable_region_size(),
            d.units_plugged(),
            d.region_size / d.unit,
            d.group,
            d.node_id,
            d.features,
            d.intid.map_or("polled".into(), |i| format!("intx:{i}")),
            IRQ_COUNT.load(Ordering::Relaxed),
            d.state()
        );
        for (i, u) in d.units.iter().enumerate() {
            match u {
                Unit::Unplugged => {}
                Unit::Added { blocks } => println!(
                    "vmem: dev={} unit={i} addr={:#x} blocks={blocks:?}",
                    d.index,
                    d.unit_addr(i)
                ),
                Unit::PluggedRemoved => println!(
                    "vmem: dev={} unit={i} addr={:#x} removed, UNPLUG pending",
                    d.index,
                    d.unit_addr(i)
                ),
            }
        }
        if let Some(m) = &d.sbm {
            let s = m.subs_per_block;
            for (b, id) in m.added.iter().enumerate() {
                let n = (b * s..(b + 1) * s).filter(|&i| d.sub_plugged(i)).count();
                match id {
                    Some(id) => println!(
                        "vmem: dev={} block={id} addr={:#x} subblocks={n}/{s}",
                        d.index,
                        d.sub_addr(b * s)
                    ),
                    None if n > 0 => println!(
                        "vmem: dev={} addr={:#x} subblocks={n}/{s} removed, UNPLUG pending",
                        d.index,
                        d.sub_addr(b * s)
                    ),
                    None => {}
                }
            }
        }
        println!("vmem: dev={} last: {}", d.index, d.last_event);
    }
}
