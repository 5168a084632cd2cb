//! PCI enumeration over the ECAM driver ([`crate::drivers::pci`]): map the first buses, walk
//! the hierarchy depth first from the host bridge, number the buses behind every bridge (root
//! ports, switch ports), size every memory BAR and place it in the host bridge's 32-bit memory
//! window of `ranges` (naturally aligned, bump allocation; 64-bit BARs too, since the window is
//! reachable by both), open each bridge's windows over what was placed behind it, then enable
//! memory decoding and bus mastering.
//!
//! The window is shared from both ends: non-prefetchable BARs grow up from its bottom,
//! prefetchable ones down from its top, so that each bridge's memory window and prefetchable
//! window are each one contiguous range (a bridge forwards exactly one of each). A bridge's
//! windows are 1 MiB granular, so the allocators are aligned to 1 MiB on entering and on
//! leaving a bridge. INTx of a function behind bridges is routed through each bridge's swizzle
//! up to the root bus, where the host bridge's `interrupt-map` names the GIC INTID.
//!
//! What cannot be placed (a BAR that does not fit, a bridge when no mapped bus number is left)
//! is left disabled, with one `pci:` line saying so.

use crate::{
    boot::dtb::{PciHost, PciSpace},
    drivers::pci::{intx_intid, swizzle, BridgeWindow, Ecam, BRIDGE_WINDOW_ALIGN, ECAM_BUS_BYTES, MAX_BUSES},
    kernel::mem::kernel_pt,
    println,
};
use alloc::{format, string::String, vec::Vec};
use core::ops::Range;
use virtio_drivers::transport::pci::bus::{BarInfo, Command, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot};

/// BARs a function has: six in a standard header, two in a bridge's.
const STANDARD_BARS: u8 = 6;
const BRIDGE_BARS: u8 = 2;

/// The host bridge's 32-bit memory window, handed out from both ends: `low` up for
/// non-prefetchable BARs, `high` down for prefetchable ones.
struct Space {
    low: u64,
    high: u64,
}

impl Space {
    fn alloc_up(&mut self, size: u64) -> Option<u64> {
        let align = size.max(memory_page());
        let a = self.low.checked_add(align - 1)? & !(align - 1);
        let end = a.checked_add(size)?;
        (end <= self.high).then(|| {
            self.low = end;
            a
        })
    }

    fn alloc_down(&mut self, size: u64) -> Option<u64> {
        let align = size.max(memory_page());
        let a = self.high.checked_sub(size)? & !(align - 1);
        (a >= self.low).then(|| {
            self.high = a;
            a
        })
    }

    /// Align both ends to a bridge window's granule (never crossing each other).
    fn align_for_bridge(&mut self) {
        let g = BRIDGE_WINDOW_ALIGN;
        self.low = self.low.div_ceil(g).saturating_mul(g).min(self.high);
        self.high = (self.high / g * g).max(self.low);
    }
}

fn memory_page() -> u64 {
    crate::boot::layout::PAGE_SIZE
}

/// One function found, BARs assigned.
#[derive(Clone, Debug)]
pub struct PciFunction {
    pub df: DeviceFunction,
    pub info: DeviceFunctionInfo,
    /// The GIC INTID of its `interrupt-pin`: swizzled through the bridges above it, then the
    /// host bridge's `interrupt-map`.
    pub intid: Option<u32>,
}

/// Why PCI is not available.
#[derive(Debug)]
pub enum PciInitError {
    NoHostBridge,
    NoMem32Window,
    Map,
}

impl core::fmt::Display for PciInitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PciInitError::NoHostBridge => write!(f, "no pci-host-ecam-generic node in the device tree"),
            PciInitError::NoMem32Window => write!(f, "the host bridge has no 32-bit memory window in `ranges`"),
            PciInitError::Map => write!(f, "cannot map the ECAM space"),
        }
    }
}

/// The host bridge after enumeration.
pub struct Pci {
    pub root: PciRoot<Ecam>,
    /// Every function with a standard header, on the root bus and behind bridges.
    pub functions: Vec<PciFunction>,
}

/// The depth-first walk's state.
struct Walk<'a> {
    host: &'a PciHost,
    root: PciRoot<Ecam>,
    ecam: Ecam,
    space: Space,
    /// The next bus number to give a bridge, and the last one mapped.
    next_bus: u16,
    last_bus: u8,
    /// The bridges from the root bus down to the bus being scanned.
    path: Vec<DeviceFunction>,
    functions: Vec<PciFunction>,
    bridges: usize,
}

/// Map the ECAM of the first buses, enumerate through bridges, assign bus numbers, windows and
/// BARs, enable decoding + bus mastering.
pub fn init(host: Option<&PciHost>) -> Result<Pci, PciInitError> {
    let host = host.ok_or(PciInitError::NoHostBridge)?;
    let buses = (host.bus_end as u64 + 1 - host.bus_start as u64)
        .min(MAX_BUSES)
        .min(host.ecam.size / ECAM_BUS_BYTES);
    let va = kernel_pt::ioremap(host.ecam.base, buses * ECAM_BUS_BYTES).map_err(|_| PciInitError::Map)?;
    let w = host
        .windows
        .iter()
        .find(|w| w.space == PciSpace::Mem32)
        .ok_or(PciInitError::NoMem32Window)?;
    // SAFETY: `va` is a fresh device mapping of exactly these buses' ECAM, never unmapped.
    let ecam = unsafe { Ecam::new(va, host.bus_start, buses) };
    let mut walk = Walk {
        host,
        root: PciRoot::new(ecam),
        ecam,
        // BARs hold PCI bus addresses (on virt the windows are identity: pci == cpu).
        space: Space {
            low: w.pci,
            high: w.pci + w.size,
        },
        next_bus: host.bus_start as u16 + 1,
        last_bus: (host.bus_start as u64 + buses - 1) as u8,
        path: Vec::new(),
        functions: Vec::new(),
        bridges: 0,
    };
    walk.scan_bus(host.bus_start);
    println!(
        "pci: ecam={:#x} buses={}-{} (scanned {}) mem32={:#x}+{:#x} bridges={} functions={}",
        host.ecam.base,
        host.bus_start,
        host.bus_end,
        walk.next_bus - host.bus_start as u16,
        w.cpu,
        w.size,
        walk.bridges,
        walk.functions.len()
    );
    Ok(Pci {
        root: walk.root,
        functions: walk.functions,
    })
}

impl Walk<'_> {
    fn scan_bus(&mut self, bus: u8) {
        let found: Vec<_> = self.root.enumerate_bus(bus).collect();
        for (df, info) in found {
            match info.header_type {
                HeaderType::Standard => self.function(df, info),
                HeaderType::PciPciBridge => self.bridge(df, info),
                other => println!(
                    "pci: {df} vendor={:#06x} device={:#06x} header {other:?} is not supported: left disabled",
                    info.vendor_id, info.device_id
                ),
            }
        }
    }

    /// The INTID `pin` of `df` arrives at: swizzled by every bridge above it, then mapped by the
    /// host bridge's `interrupt-map` as a pin of the root-bus bridge (or of `df` itself).
    fn route(&self, df: DeviceFunction, pin: u8) -> Option<u32> {
        let (mut at, mut pin) = (df, pin);
        for bridge in self.path.iter().rev() {
            pin = swizzle(at.device, pin);
            at = *bridge;
        }
        intx_intid(self.host, at, pin)
    }

    /// Size and place the BARs of `df` (`count` of them); returns whether all fit.
    fn place_bars(&mut self, df: DeviceFunction, count: u8) -> bool {
        let mut all = true;
        let mut bar = 0u8;
        while bar < count {
            let Ok(Some(b)) = self.root.bar_info(df, bar) else {
                bar += 1;
                continue;
            };
            let two = b.takes_two_entries();
            if let BarInfo::Memory { size, prefetchable, .. } = b {
                let at = if prefetchable {
                    self.space.alloc_down(size)
                } else {
                    self.space.alloc_up(size)
                };
                match at {
                    Some(pci_addr) if two => self.root.set_bar_64(df, bar, pci_addr),
                    Some(pci_addr) => self.root.set_bar_32(df, bar, pci_addr as u32),
                    None => {
                        all = false;
                        println!(
                            "pci: {df} BAR{bar} of {size:#x} bytes does not fit the 32-bit window: device left disabled"
                        )
                    }
                }
            }
            bar += if two { 2 } else { 1 };
        }
        all
    }

    fn function(&mut self, df: DeviceFunction, info: DeviceFunctionInfo) {
        let (_, cmd) = self.root.get_status_command(df);
        self.root
            .set_command(df, cmd & !(Command::MEMORY_SPACE | Command::IO_SPACE));
        let placed = self.place_bars(df, STANDARD_BARS);
        let pin = self.ecam.interrupt_pin(df);
        let intid = self.route(df, pin);
        println!(
            "pci: {df} vendor={:#06x} device={:#06x} class={:#04x} int_pin={pin} intid={}",
            info.vendor_id,
            info.device_id,
            info.class,
            intid.map_or("-".into(), |i| format!("{i}"))
        );
        if placed {
            self.root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
            self.functions.push(PciFunction { df, info, intid });
        }
    }

    fn bridge(&mut self, df: DeviceFunction, info: DeviceFunctionInfo) {
        self.bridges += 1;
        let (_, cmd) = self.root.get_status_command(df);
        self.root.set_command(
            df,
            cmd & !(Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER),
        );
        self.ecam.close_bridge_io(df);
        // A bridge whose own BAR does not fit still forwards to what is behind it.
        self.place_bars(df, BRIDGE_BARS);
        if self.next_bus > self.last_bus as u16 {
            println!(
                "pci: {df} bridge vendor={:#06x} device={:#06x}: no bus number left (buses {}-{} are mapped): nothing behind it is used",
                info.vendor_id, info.device_id, self.host.bus_start, self.last_bus
            );
            self.ecam.set_bridge_buses(df, 0, 0, 0);
            self.ecam.set_bridge_window(df, BridgeWindow::Memory, None);
            self.ecam.set_bridge_window(df, BridgeWindow::Prefetchable, None);
            return;
        }
        let secondary = self.next_bus as u8;
        self.next_bus += 1;
        // Forward every bus that may still be numbered while the walk is below this bridge.
        self.ecam.set_bridge_buses(df, df.bus, secondary, self.last_bus);
        self.space.align_for_bridge();
        let (mem_start, pref_end) = (self.space.low, self.space.high);
        self.path.push(df);
        self.scan_bus(secondary);
        self.path.pop();
        self.space.align_for_bridge();
        let subordinate = (self.next_bus - 1) as u8;
        let mem = mem_start..self.space.low;
        let pref = self.space.high..pref_end;
        self.ecam.set_bridge_buses(df, df.bus, secondary, subordinate);
        self.ecam.set_bridge_window(df, BridgeWindow::Memory, Some(mem.clone()));
        self.ecam
            .set_bridge_window(df, BridgeWindow::Prefetchable, Some(pref.clone()));
        self.root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
        println!(
            "pci: {df} bridge vendor={:#06x} device={:#06x} buses={secondary}-{subordinate} mem={} pref={}",
            info.vendor_id,
            info.device_id,
            window(&mem),
            window(&pref)
        );
    }
}

fn window(r: &Range<u64>) -> String {
    if r.is_empty() {
        "-".into()
    } else {
        format!("{:#x}-{:#x}", r.start, r.end - 1)
    }
}
