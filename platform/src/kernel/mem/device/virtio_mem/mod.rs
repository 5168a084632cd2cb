//! virtio-mem (virtio 1.2 §5.15): the kernel's policy for the device of
//! [`crate::drivers::virtio_mem`]. The policy proper (modes, grow and shrink order, the request
//! protocol, retries) is portable and host-tested in [`mm::vmem`]; this file registers the
//! device type, brings every function up, gives the policy its device ([`Device`]: the driver,
//! with the `debug_vm` check that UNPLUG is only sent for offline memory) and its memory
//! ([`memory::Memory`]), and runs it from the bottom half.
//!
//! Config changes arrive as legacy INTx (level) through the host bridge's `interrupt-map`: the
//! handler masks the SPI and latches the event; the work runs in thread context from the
//! shell's idle loop ([`process_pending`]), which reads the ISR (deasserting the line), resizes,
//! and unmasks. A device without a routable INTx is polled from the idle loop instead (at
//! least every timer tick), and so is a stopped resize's retry timer. Used-buffer interrupts
//! are suppressed (requests are synchronous).

mod memory;
pub mod sbm;

use crate::{
    boot::layout::{Size, G, PAGE_SHIFT},
    drivers::timer,
    drivers::virtio_mem::{self as driver, feature, VirtioMem as Driver},
    kernel::mem::device::{Buses, MemoryDevice, View},
    kernel::mem::hotplug::{with_hotplug, DEBUG_VM, HOTPLUG},
    kernel::mem::page_alloc,
    kernel::pci::Pci,
    kernel::virtio::HotmemHal,
    memory_device, println,
};
use alloc::{format, string::String, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use memory::Memory;
use mm::vmem::{Request, RequestType, Response, TransportError, Unit, Vmem, VmemDevice};

memory_device!(MemoryDevice {
    name: "virtio-mem",
    init,
    online_filter: Some(sbm::online_filter),
    check: Some(sbm::check),
    views: &[View {
        name: "vmem",
        help: "virtio-mem devices: region, block/unit, plugged/requested, units, group",
        show: print_devices,
    }],
});

/// The driver as the policy's device, with the checks of `debug_vm`.
struct Device {
    index: usize,
    block_size: u64,
    driver: Driver<HotmemHal>,
}

impl VmemDevice for Device {
    fn requested_size(&mut self) -> u64 {
        self.driver.requested_size()
    }

    fn plugged_size(&mut self) -> u64 {
        self.driver.plugged_size()
    }

    fn usable_region_size(&mut self) -> u64 {
        self.driver.usable_region_size()
    }

    fn exchange(&mut self, req: Request) -> Result<Response, TransportError> {
        if req.ty == RequestType::Unplug && DEBUG_VM.load(Ordering::Relaxed) {
            self.assert_offline(req.addr, req.nb_blocks);
        }
        self.driver.exchange(req)
    }

    fn sleep_ms(&mut self, ms: u64) {
        self.driver.sleep_ms(ms);
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

/// One device in use: the driver, its memory and the policy's state.
struct VirtioMem {
    index: usize,
    pci: String,
    dev: Device,
    mem: Memory,
    vmem: Vmem,
    features: u64,
    /// INTx INTID (`None`: polled).
    intid: Option<u32>,
    /// The last resize's outcome (`vmem` shows it).
    last_event: String,
}

static DEVICES: crate::kernel::sync::Mutex<Vec<VirtioMem>> =
    crate::kernel::sync::Mutex::new("virtio-mem devices", Vec::new());

/// INTIDs of the devices' INTx lines (`u32::MAX` = unused), read by the interrupt handler.
static INTIDS: [AtomicU32; 8] = [const { AtomicU32::new(u32::MAX) }; 8];
/// An INTx fired since the last [`process_pending`] (set at init too: the first pass applies a
/// `requested_size` the device had before we looked).
static IRQ_PENDING: AtomicBool = AtomicBool::new(true);
/// Interrupts taken (shown by `vmem`).
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);

/// Is `intid` one of our INTx lines?
fn owns_intid(intid: u32) -> bool {
    INTIDS.iter().any(|i| i.load(Ordering::Relaxed) == intid)
}

/// Interrupt handler: mask the level-triggered line (the device keeps it asserted until its ISR
/// is read, in thread context) and latch the event.
fn handle_irq(intid: u32) {
    crate::drivers::gic::disable_spi(intid);
    IRQ_COUNT.fetch_add(1, Ordering::Relaxed);
    IRQ_PENDING.store(true, Ordering::Release);
}

impl VirtioMem {
    /// `debug_vm` at the end of a resize: the device's plugged size is what the driver's state
    /// says, and every invariant holds, the sub-block rule included.
    fn check_quiescent(&self, plugged: u64) {
        let mine = self.vmem.plugged_bytes();
        if plugged != mine {
            crate::kernel::exit::fatal_stop(format_args!(
                "debug_vm: virtio-mem dev={} device says {plugged:#x} plugged, the driver's state {mine:#x}",
                self.index
            ));
        }
        // The online filter's mirror of the plug bitmap is the policy's.
        if let (Some(m), Some(r)) = (self.vmem.sbm(), self.mem.region) {
            let regions = sbm::SBM.lock();
            let mirror = &regions[r].plugged;
            if let Some(i) = (0..mirror.len()).find(|&i| mirror[i] != m.plugged(i)) {
                crate::kernel::exit::fatal_stop(format_args!(
                    "debug_vm: virtio-mem dev={} device block {i}: plugged={} but the online filter says {}",
                    self.index,
                    m.plugged(i),
                    mirror[i]
                ));
            }
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
fn init(buses: &mut Buses) {
    let Some(pci) = buses.pci.as_deref_mut() else {
        return;
    };
    let fns: Vec<_> = pci
        .functions
        .iter()
        .filter(|f| f.info.vendor_id == driver::VIRTIO_VENDOR && f.info.device_id == driver::PCI_DEVICE_ID)
        .cloned()
        .collect();
    if let Err(e) = crate::kernel::deferred::register(process_pending) {
        println!("virtio-mem: cannot register the deferred work: {e:?}");
    }
    for f in fns {
        let index = DEVICES.lock().len();
        match probe(pci, f.df, index, f.intid) {
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

/// The NUMA node of the device's memory (Linux `virtio_mem_translate_node_id`): `node_id` is
/// a proximity domain when `ACPI_PXM` is negotiated, and QEMU numbers proximity domains like
/// its nodes; without it the device names no node and its memory goes to node 0. A node the
/// kernel cannot describe is refused when the device's memory group is registered.
fn device_node(features: u64, node_id: u16) -> mm::numa::NodeId {
    if features & feature::ACPI_PXM == 0 {
        return 0;
    }
    mm::numa::NodeId::try_from(node_id).unwrap_or(mm::numa::NodeId::MAX)
}

/// Bring one function up: the driver's initialisation, the policy's check of its
/// configuration, its memory group and (sub-block mode) plug bitmap.
fn probe(
    pci: &mut Pci,
    df: virtio_drivers::transport::pci::bus::DeviceFunction,
    index: usize,
    intid: Option<u32>,
) -> Result<VirtioMem, String> {
    let probed = driver::probe::<HotmemHal>(&mut pci.root, df).map_err(|e| format!("{e}"))?;
    let (cfg, features) = (probed.config, probed.features);
    let vmem = match Vmem::new(G, cfg) {
        Ok(v) => v,
        Err(e) => {
            probed.fail();
            return Err(format!("{e}"));
        }
    };
    let mut driver = probed.start::<HotmemHal>().map_err(|e| format!("{e}"))?;
    let align = G.section_size().max(cfg.block_size);
    let node = device_node(features, cfg.node_id);
    let group = match with_hotplug(|hp, _| hp.register_dynamic_group(node, align >> PAGE_SHIFT)) {
        Ok(g) => g,
        Err(e) => {
            driver.fail();
            return Err(format!("dynamic memory group: {e}"));
        }
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
            block_size: cfg.block_size,
            driver,
        },
        mem: Memory { group, node, region },
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
        d.mem.node,
        if features & feature::UNPLUGGED_INACCESSIBLE != 0 { "(unplugged-inaccessible)" } else { "" },
        d.intid.map_or("polled".into(), |i| format!("intx:{i}")),
        Size(plugged),
    );
    Ok(d)
}

/// Deferred work (the bottom half, [`crate::kernel::deferred`]): resize every device whose
/// `requested_size` changed, and retry every stopped resize that is due (a config change of
/// its device, or its timer).
fn process_pending() {
    mm::vmem::with_config_change(|v| IRQ_PENDING.swap(v, Ordering::AcqRel), process_devices);
}

/// One pass over every device; `irq`: a config change was latched since the last pass.
fn process_devices(irq: bool) {
    let now = now_ms();
    let mut devs = DEVICES.lock();
    for d in devs.iter_mut() {
        let due = d.vmem.retry().is_some_and(|r| now >= r.at_ms);
        if d.intid.is_some() {
            if !irq && !due {
                continue;
            }
            // Reading the ISR deasserts the line; a change after this raises it again.
            d.dev.driver.ack_interrupt();
        }
        let t0 = arch::cpu::counter();
        d.dev.driver.wait_cycles = 0;
        let migrated0 = crate::kernel::mem::movable::migrated_pages();
        let Some(r) = d.vmem.process(&mut d.dev, &mut d.mem, irq, now) else {
            continue;
        };
        let cycles = arch::cpu::counter() - t0;
        let migrated = crate::kernel::mem::movable::migrated_pages() - migrated0;
        if DEBUG_VM.load(Ordering::Relaxed) && !d.dev.driver.gone {
            d.check_quiescent(r.plugged);
        }
        let head = format!(
            "virtio-mem: dev={} addr={:#x} requested={:#x} plugged={:#x} from={:#x}",
            d.index, d.vmem.cfg.addr, r.requested, r.plugged, r.from
        );
        let times = format!(
            "cycles={cycles} us={} device_us={} migrated_pages={migrated}",
            timer::cycles_to_us(cycles),
            timer::cycles_to_us(d.dev.driver.wait_cycles)
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

/// The `vmem` view.
fn print_devices() {
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
            d.vmem.units_plugged(),
            c.region_size / d.vmem.unit,
            d.mem.group,
            d.mem.node,
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
                let n = m.plugged_in(b);
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
