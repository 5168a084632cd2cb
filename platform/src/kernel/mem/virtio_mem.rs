//! virtio-mem (virtio 1.2 §5.15) over the modern virtio-pci transport of `virtio-drivers`: the
//! kernel's side of the driver. The policy (modes, grow and shrink order, the request protocol,
//! retries) is portable and host-tested in [`mm::vmem`]; this file gives it the device
//! ([`VmemDevice`] over the transport and virtqueue, with a deadline per request) and the memory
//! ([`VmemMemory`] over the hotplug lock and the sub-block plug bitmap of [`super::sbm`], which
//! the platform's online filter reads), and runs it from the bottom half.
//!
//! Config changes arrive as legacy INTx (level) through the host bridge's `interrupt-map`: the
//! handler masks the SPI and latches the event; the work runs in thread context from the
//! shell's idle loop ([`process_pending`]), which reads the ISR (deasserting the line), resizes,
//! and unmasks. A device without a routable INTx is polled from the idle loop instead (at
//! least every timer tick), and so is a stopped resize's retry timer. Used-buffer interrupts
//! are suppressed (requests are synchronous).

use crate::{
    boot::layout::{self, Size, G, PAGE_SHIFT, PAGE_SIZE},
    drivers::pci::Ecam,
    drivers::timer,
    kernel::mem::hotplug::{with_hotplug, DEBUG_VM, HOTPLUG},
    kernel::mem::sbm,
    kernel::mem::{kernel_pt, page_alloc},
    kernel::pci::Pci,
    println,
};
use alloc::{boxed::Box, format, string::String, vec::Vec};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use mm::hotplug::{AddFlags, BlockId, GroupId, HotplugError};
use mm::page::ZoneId;
use mm::vmem::{DeviceConfig, Request, RequestType, Response, TransportError, Unit, Vmem, VmemDevice, VmemMemory};
use virtio_drivers::{
    queue::VirtQueue,
    transport::{pci::PciTransport, DeviceStatus, Transport},
    BufferDirection, Hal, PhysAddr,
};

/// PCI device id of a modern virtio-mem device (0x1040 + 24).
const PCI_DEVICE_ID: u16 = 0x1058;
const VIRTIO_VENDOR: u16 = 0x1af4;
const QUEUE_SIZE: usize = 8;
/// Longest wait for the device's answer to one request; a device that does not answer in time
/// is given up (its buffers stay with it, leaked, so a late answer writes nothing of ours).
const ANSWER_TIMEOUT_MS: u64 = 5_000;

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

/// The transport and request queue of one device.
struct Device {
    index: usize,
    transport: PciTransport,
    queue: VirtQueue<HotmemHal, QUEUE_SIZE>,
    block_size: u64,
    /// A request went unanswered: the device is no longer used.
    gone: bool,
    /// Cycles spent waiting for the device's answers (of the current resize).
    cycles: u64,
}

fn read_u64(t: &PciTransport, off: usize) -> u64 {
    // Two 32-bit reads under the config generation (virtio §2.5.1: 64-bit fields need not be
    // read atomically).
    t.read_consistent(|| {
        let lo: u32 = t.read_config_space(off)?;
        let hi: u32 = t.read_config_space(off + 4)?;
        Ok((hi as u64) << 32 | lo as u64)
    })
    .unwrap_or(0)
}

impl VmemDevice for Device {
    fn requested_size(&mut self) -> u64 {
        read_u64(&self.transport, cfg::REQUESTED_SIZE)
    }

    fn plugged_size(&mut self) -> u64 {
        read_u64(&self.transport, cfg::PLUGGED_SIZE)
    }

    fn usable_region_size(&mut self) -> u64 {
        read_u64(&self.transport, cfg::USABLE_REGION_SIZE)
    }

    fn exchange(&mut self, req: Request) -> Result<Response, TransportError> {
        if self.gone {
            return Err(TransportError("the device stopped answering earlier".into()));
        }
        if req.ty == RequestType::Unplug && DEBUG_VM.load(Ordering::Relaxed) {
            self.assert_offline(req.addr, req.nb_blocks);
        }
        let t0 = arch::cpu::counter();
        let req_buf = Box::new(req.to_bytes());
        let mut resp_buf = Box::new([0u8; 16]);
        // SAFETY: both buffers are heap-owned and stay untouched until the token is popped; if
        // the device never answers they are leaked below, never freed or reused, so a late
        // write by the device lands in memory nobody else owns.
        let token = unsafe { self.queue.add(&[&req_buf[..]], &mut [&mut resp_buf[..]]) }
            .map_err(|e| TransportError(format!("virtqueue: {e:?}")))?;
        if self.queue.should_notify() {
            self.transport.notify(0);
        }
        let deadline = t0 + arch::cpu::counter_freq() * ANSWER_TIMEOUT_MS / 1000;
        while !self.queue.can_pop() {
            if arch::cpu::counter() > deadline {
                self.gone = true;
                Box::leak(req_buf);
                Box::leak(resp_buf);
                return Err(TransportError(format!(
                    "no answer within {} s; the driver stops using the device",
                    ANSWER_TIMEOUT_MS / 1000
                )));
            }
            core::hint::spin_loop();
        }
        // SAFETY: the token and buffers are the ones added above.
        unsafe { self.queue.pop_used(token, &[&req_buf[..]], &mut [&mut resp_buf[..]]) }
            .map_err(|e| TransportError(format!("virtqueue: {e:?}")))?;
        self.cycles += arch::cpu::counter() - t0;
        Ok(Response::from_bytes(&resp_buf))
    }

    fn sleep_ms(&mut self, ms: u64) {
        timer::sleep_ms(ms);
    }
}

impl Device {
    /// `debug_vm`: the device may only be told to unplug memory the guest no longer uses:
    /// every page of the range is offline (or has no memmap any more).
    fn assert_offline(&self, addr: u64, nb_blocks: u16) {
        let size = nb_blocks as u64 * self.block_size;
        let (s, n) = (addr >> PAGE_SHIFT, size >> PAGE_SHIFT);
        let online = page_alloc::with_page_alloc(|a| (s..s + n).find(|&pfn| a.is_online(pfn) == Some(true)));
        if let Some(pfn) = online {
            crate::kernel::exit::fatal_stop(format_args!(
                "debug_vm: virtio-mem dev={} UNPLUG of {addr:#x}+{} while pfn {pfn:#x} is online",
                self.index,
                Size(size)
            ));
        }
    }
}

/// The memory side of one device: the hotplug core (one operation per lock) and, in sub-block
/// mode, its region's plug bitmap in [`sbm::SBM`].
struct Memory {
    group: GroupId,
    /// Index in [`sbm::SBM`] (sub-block mode).
    region: Option<usize>,
}

impl VmemMemory for Memory {
    fn add(&mut self, addr: u64, size: u64) -> Result<Vec<BlockId>, HotplugError> {
        let group = self.group;
        with_hotplug(|hp, ops| {
            let ids = hp.add_memory(ops, Some(group), addr, size, AddFlags { memmap_on_memory: true })?;
            hp.auto_online(ops, &ids);
            Ok(ids)
        })
    }

    fn offline_and_remove(&mut self, addr: u64, size: u64, below: u64) -> Result<(), HotplugError> {
        with_hotplug(|hp, ops| hp.offline_and_remove_below(ops, addr, size, below >> PAGE_SHIFT))
    }

    fn set_online(&mut self, block: BlockId, pfn: u64, nr: u64, on: bool, below: u64) -> Result<(), HotplugError> {
        with_hotplug(|hp, ops| {
            use mm::hotplug::HotplugOps;
            match hp.block(block) {
                Some(b) if b.state == mm::hotplug::BlockState::Online => {
                    let zone = b.zone.unwrap_or(ZoneId::Normal);
                    if on {
                        ops.online_pages(pfn, nr, zone)
                    } else {
                        ops.offline_pages(pfn, nr, block, below >> PAGE_SHIFT)
                    }
                }
                _ => Ok(()),
            }
        })
    }

    fn in_normal(&mut self, block: BlockId) -> bool {
        // A read: the lock alone, no operation (so no `debug_vm` pass either).
        let hp = HOTPLUG.lock();
        hp.as_ref()
            .and_then(|hp| hp.block(block))
            .is_none_or(|b| b.zone == Some(ZoneId::Normal))
    }

    fn plugged(&self, i: usize) -> bool {
        self.region.is_some_and(|r| sbm::SBM.lock()[r].plugged[i])
    }

    fn set_plugged(&mut self, first: usize, n: usize, v: bool) {
        if let Some(r) = self.region {
            sbm::SBM.lock()[r].plugged[first..first + n].fill(v);
        }
    }
}

pub struct VirtioMem {
    pub index: usize,
    pub pci: String,
    dev: Device,
    mem: Memory,
    vmem: Vmem,
    pub features: u64,
    /// INTx INTID (`None`: polled).
    pub intid: Option<u32>,
    /// The last resize's outcome (`vmem` shows it).
    pub last_event: String,
}

pub static DEVICES: spin::Mutex<Vec<VirtioMem>> = spin::Mutex::new(Vec::new());

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
    /// `debug_vm` at the end of a resize: the device's plugged size is what the driver's state
    /// says, and every invariant holds, the sub-block rule included.
    fn check_quiescent(&self, plugged: u64) {
        let mine = self.vmem.plugged_bytes(&self.mem);
        if plugged != mine {
            crate::kernel::exit::fatal_stop(format_args!(
                "debug_vm: virtio-mem dev={} device says {plugged:#x} plugged, the driver's state {mine:#x}",
                self.index
            ));
        }
        let hp = HOTPLUG.lock();
        if let Some(Err(e)) = hp.as_ref().map(crate::kernel::mem::hotplug::check_invariants) {
            crate::kernel::exit::fatal_stop(format_args!("debug_vm: after a virtio-mem resize: {e}"));
        }
    }

    /// `state=idle`, or `state=stopped next_retry_s=N reason="..."` (seconds from now).
    fn state(&self) -> String {
        match self.vmem.retry() {
            None => "state=idle".into(),
            Some(r) => format!(
                "state=stopped next_retry_s={} reason=\"{}\"",
                r.at_ms.saturating_sub(now_ms()) / 1000,
                r.reason
            ),
        }
    }
}

/// The bottom half's clock.
fn now_ms() -> u64 {
    timer::cycles_to_us(arch::cpu::counter()) / 1000
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
    let cfg = DeviceConfig {
        block_size: read_u64(&t, cfg::BLOCK_SIZE),
        addr: read_u64(&t, cfg::ADDR),
        region_size: read_u64(&t, cfg::REGION_SIZE),
        usable_region_size: read_u64(&t, cfg::USABLE_REGION_SIZE),
        plugged_size: read_u64(&t, cfg::PLUGGED_SIZE),
        node_id: t.read_config_space::<u16>(cfg::NODE_ID).unwrap_or(0),
    };
    let refuse = |t: &mut PciTransport, why: String| {
        t.set_status(DeviceStatus::FAILED);
        Err(why)
    };
    let vmem = match Vmem::new(G, cfg) {
        Ok(v) => v,
        Err(e) => return refuse(&mut t, format!("{e}")),
    };
    let mut queue = match VirtQueue::<HotmemHal, QUEUE_SIZE>::new(&mut t, 0, false, false) {
        Ok(q) => q,
        Err(e) => return refuse(&mut t, format!("virtqueue: {e:?}")),
    };
    // Requests are waited for synchronously: no used-buffer interrupts.
    queue.set_dev_notify(false);
    t.finish_init();
    let align = G.section_size().max(cfg.block_size);
    let group = match with_hotplug(|hp, _| hp.register_dynamic_group(align >> PAGE_SHIFT)) {
        Ok(g) => g,
        Err(e) => return refuse(&mut t, format!("dynamic memory group: {e}")),
    };
    let region = vmem.sbm().map(|_| {
        let mut regions = sbm::SBM.lock();
        regions.push(sbm::SbmRegion {
            start_pfn: cfg.addr >> PAGE_SHIFT,
            end_pfn: (cfg.addr + cfg.region_size) >> PAGE_SHIFT,
            sub_pages: cfg.block_size >> PAGE_SHIFT,
            plugged: alloc::vec![false; vmem.nr_device_blocks()],
        });
        regions.len() - 1
    });
    let mut d = VirtioMem {
        index,
        pci: format!("{df}"),
        dev: Device {
            index,
            transport: t,
            queue,
            block_size: cfg.block_size,
            gone: false,
            cycles: 0,
        },
        mem: Memory { group, region },
        vmem,
        features,
        intid: intid.filter(|_| index < INTIDS.len()),
        last_event: String::from("none"),
    };
    let plugged = cfg.plugged_size;
    if plugged != 0 {
        // Memory plugged before this boot (a reset, or plugged at start): nobody uses it.
        if let Err(e) = mm::vmem::request(&mut d.dev, RequestType::UnplugAll, 0, 0) {
            println!("virtio-mem: dev={index} UNPLUG_ALL of {}: {e}", Size(plugged));
        }
    }
    println!(
        "virtio-mem: dev={index} pci={} addr={:#x} region={} block={} unit={} mode={} node={} features={features:#x}{} group={group} irq={} unplugged_at_start={}",
        d.pci,
        cfg.addr,
        Size(cfg.region_size),
        Size(cfg.block_size),
        Size(d.vmem.unit),
        d.vmem.mode.name(),
        cfg.node_id,
        if features & feature::UNPLUGGED_INACCESSIBLE != 0 { "(unplugged-inaccessible)" } else { "" },
        d.intid.map_or("polled".into(), |i| format!("intx:{i}")),
        Size(plugged),
    );
    Ok(d)
}

/// Deferred work (the bottom half, [`crate::kernel::deferred`]): resize every device whose
/// `requested_size` changed, and retry every stopped resize that is due (a config change of
/// its device, or its timer).
pub fn process_pending() {
    let irq = IRQ_PENDING.swap(false, Ordering::Acquire);
    let now = now_ms();
    let mut devs = DEVICES.lock();
    for d in devs.iter_mut() {
        let due = d.vmem.retry().is_some_and(|r| now >= r.at_ms);
        if d.intid.is_some() {
            if !irq && !due {
                continue;
            }
            // Reading the ISR deasserts the line; a change after this raises it again.
            let _ = d.dev.transport.ack_interrupt();
        }
        let t0 = arch::cpu::counter();
        d.dev.cycles = 0;
        let migrated0 = crate::kernel::mem::hotplug::HANDLES.lock().migrated_pages;
        let Some(r) = d.vmem.process(&mut d.dev, &mut d.mem, irq, now) else {
            continue;
        };
        let cycles = arch::cpu::counter() - t0;
        let migrated = crate::kernel::mem::hotplug::HANDLES.lock().migrated_pages - migrated0;
        if DEBUG_VM.load(Ordering::Relaxed) && !d.dev.gone {
            d.check_quiescent(r.plugged);
        }
        let head = format!(
            "virtio-mem: dev={} addr={:#x} requested={:#x} plugged={:#x} from={:#x}",
            d.index, d.vmem.cfg.addr, r.requested, r.plugged, r.from
        );
        let times = format!(
            "cycles={cycles} us={} device_us={} migrated_pages={migrated}",
            timer::cycles_to_us(cycles),
            timer::cycles_to_us(d.dev.cycles)
        );
        d.last_event = match &r.stopped {
            None => format!("{head} event=done {times}"),
            Some(s) => format!(
                "{head} event=stopped {times} next_retry_s={} reason=\"{}\"",
                s.backoff_ms / 1000,
                s.reason
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

/// `vmem` shell command.
pub fn print_devices() {
    let mut devs = DEVICES.lock();
    if devs.is_empty() {
        println!("vmem: none (add one with the runner's --virtio-mem SIZE)");
        return;
    }
    for d in devs.iter_mut() {
        let c = d.vmem.cfg;
        let (plugged, requested, usable) = (d.dev.plugged_size(), d.dev.requested_size(), d.dev.usable_region_size());
        println!(
            "vmem: dev={} pci={} addr={:#x} region={:#x} block={:#x} unit={:#x} mode={} plugged={plugged:#x} requested={requested:#x} usable={usable:#x} units={}/{} group={} node={} features={:#x} irq={} irqs={} {}",
            d.index,
            d.pci,
            c.addr,
            c.region_size,
            c.block_size,
            d.vmem.unit,
            d.vmem.mode.name(),
            d.vmem.units_plugged(&d.mem),
            c.region_size / d.vmem.unit,
            d.mem.group,
            c.node_id,
            d.features,
            d.intid.map_or("polled".into(), |i| format!("intx:{i}")),
            IRQ_COUNT.load(Ordering::Relaxed),
            d.state()
        );
        for (i, u) in d.vmem.units().iter().enumerate() {
            match u {
                Unit::Unplugged => {}
                Unit::Added { blocks } => println!(
                    "vmem: dev={} unit={i} addr={:#x} blocks={blocks:?}",
                    d.index,
                    d.vmem.unit_addr(i)
                ),
                Unit::PluggedRemoved => println!(
                    "vmem: dev={} unit={i} addr={:#x} removed, UNPLUG pending",
                    d.index,
                    d.vmem.unit_addr(i)
                ),
            }
        }
        if let Some(m) = d.vmem.sbm() {
            let s = m.subs_per_block;
            for (b, id) in m.added.iter().enumerate() {
                let n = (b * s..(b + 1) * s).filter(|&i| d.mem.plugged(i)).count();
                match id {
                    Some(id) => println!(
                        "vmem: dev={} block={id} addr={:#x} subblocks={n}/{s}",
                        d.index,
                        d.vmem.sub_addr(b * s)
                    ),
                    None if n > 0 => println!(
                        "vmem: dev={} addr={:#x} subblocks={n}/{s} removed, UNPLUG pending",
                        d.index,
                        d.vmem.sub_addr(b * s)
                    ),
                    None => {}
                }
            }
        }
        println!("vmem: dev={} last: {}", d.index, d.last_event);
    }
}
