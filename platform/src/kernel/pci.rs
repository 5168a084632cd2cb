//! PCI enumeration over the ECAM driver ([`crate::drivers::pci`]): map the first buses,
//! size every memory BAR and place it in the 32-bit memory window of `ranges` (naturally
//! aligned, bump allocation; 64-bit BARs too, since the window is reachable by both), then
//! enable memory decoding and bus mastering.

use crate::{
    boot::dtb::{PciHost, PciSpace},
    drivers::pci::{intx_intid, Ecam, ECAM_BUS_BYTES, MAX_BUSES},
    kernel::mem::memory,
    println,
};
use alloc::vec::Vec;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
};

/// A bump allocator over one window of `ranges` (CPU addresses).
struct Window {
    next: u64,
    end: u64,
}

impl Window {
    fn alloc(&mut self, size: u64) -> Option<u64> {
        let align = size.max(memory_page());
        let a = self.next.checked_add(align - 1)? & !(align - 1);
        let end = a.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            a
        })
    }
}

fn memory_page() -> u64 {
    crate::boot::layout::PAGE_SIZE
}

/// One function found on the bus, BARs assigned.
#[derive(Clone, Debug)]
pub struct PciFunction {
    pub df: DeviceFunction,
    pub info: DeviceFunctionInfo,
    /// The GIC INTID of its `interrupt-pin` through the host bridge's `interrupt-map`.
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
    pub functions: Vec<PciFunction>,
}

/// Map the ECAM of the first buses, enumerate, assign BARs, enable decoding + bus mastering.
pub fn init(host: Option<&PciHost>) -> Result<Pci, PciInitError> {
    let host = host.ok_or(PciInitError::NoHostBridge)?;
    let buses = (host.bus_end as u64 + 1 - host.bus_start as u64)
        .min(MAX_BUSES)
        .min(host.ecam.size / ECAM_BUS_BYTES);
    let va = memory::ioremap(host.ecam.base, buses * ECAM_BUS_BYTES).map_err(|_| PciInitError::Map)?;
    let w = host
        .windows
        .iter()
        .find(|w| w.space == PciSpace::Mem32)
        .ok_or(PciInitError::NoMem32Window)?;
    // BARs hold PCI bus addresses (on virt the windows are identity: pci == cpu).
    let mut win = Window {
        next: w.pci,
        end: w.pci + w.size,
    };
    // SAFETY: `va` is a fresh device mapping of exactly these buses' ECAM, never unmapped.
    let ecam = unsafe { Ecam::new(va, host.bus_start, buses) };
    let mut root = PciRoot::new(ecam);
    let mut functions = Vec::new();
    for bus in host.bus_start as u64..host.bus_start as u64 + buses {
        for (df, info) in root.enumerate_bus(bus as u8) {
            if info.header_type != HeaderType::Standard {
                continue;
            }
            let (_, cmd) = root.get_status_command(df);
            root.set_command(df, cmd & !(Command::MEMORY_SPACE | Command::IO_SPACE));
            let mut bar = 0u8;
            while bar < 6 {
                let Ok(Some(b)) = root.bar_info(df, bar) else {
                    bar += 1;
                    continue;
                };
                let two = b.takes_two_entries();
                if let BarInfo::Memory { size, .. } = b {
                    match win.alloc(size) {
                        Some(pci_addr) if two => root.set_bar_64(df, bar, pci_addr),
                        Some(pci_addr) => root.set_bar_32(df, bar, pci_addr as u32),
                        None => println!(
                            "pci: {df} BAR{bar} of {size:#x} bytes does not fit the 32-bit window: left unassigned"
                        ),
                    }
                }
                bar += if two { 2 } else { 1 };
            }
            root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
            let pin = (ecam.read_word(df, 0x3c) >> 8) as u8;
            println!(
                "pci: {df} vendor={:#06x} device={:#06x} class={:#04x} int_pin={pin} intid={}",
                info.vendor_id,
                info.device_id,
                info.class,
                intx_intid(host, df, pin).map_or("-".into(), |i| alloc::format!("{i}"))
            );
            let intid = intx_intid(host, df, pin);
            functions.push(PciFunction { df, info, intid });
        }
    }
    println!(
        "pci: ecam={:#x} buses={}-{} (scanned {buses}) mem32={:#x}+{:#x} functions={}",
        host.ecam.base,
        host.bus_start,
        host.bus_end,
        w.cpu,
        w.size,
        functions.len()
    );
    Ok(Pci { root, functions })
}
