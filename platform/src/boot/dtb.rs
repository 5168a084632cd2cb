//! What the kernel needs from the device tree, parsed once at boot with `fdt` 0.1.5.
//!
//! Two `fdt` 0.1.5 traps are avoided on purpose: `Fdt::memory()` returns only the first
//! `/memory` node (we walk all of them), and `interrupts()` cannot decode the GIC's 3-cell
//! specifiers (we parse the raw property).
//!
//! This file finds nodes and properties; their values are decoded by the host-tested
//! [`parse::dtb`] (cells, PCI windows, interrupt specifiers), whose types it re-exports.

use alloc::{string::String, vec::Vec};
use fdt::Fdt;
use parse::dtb::{gic_interrupts, pci_host, PciHostProps};
pub use parse::dtb::{PciHost, PciSpace, Range, PCI_PHYS_HI};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    V2,
    V3,
}

#[derive(Debug)]
pub struct Gic {
    pub version: GicVersion,
    /// Distributor.
    pub gicd: Range,
    /// CPU interface (v2) or redistributor region (v3).
    pub gicc_or_gicr: Range,
}

#[derive(Debug)]
pub struct Platform {
    pub memory: Vec<Range>,
    /// `/memreserve/` entries and reserved-memory nodes.
    pub reserved: Vec<Range>,
    pub uart: Range,
    pub uart_intid: u32,
    pub gic: Gic,
    pub psci_method: Option<String>,
    /// MPIDR affinity of each CPU, in DT order.
    pub cpus: Vec<u64>,
    pub bootargs: String,
    /// QEMU fw_cfg registers (`qemu,fw-cfg-mmio`), if present.
    pub fw_cfg: Option<Range>,
    pub dtb_size: u64,
    pub model: String,
    /// The PCIe host bridge, if the machine has one.
    pub pci: Option<PciHost>,
    /// NUMA nodes, their CPUs, memory and distances ([`super::numa`]).
    pub numa: Result<super::numa::Topology, super::numa::NumaError>,
}

#[derive(Debug)]
pub enum DtbError {
    Header(fdt::FdtError),
    /// The header's totalsize exceeds what is mapped.
    TooLarge {
        size: u64,
        mapped: u64,
    },
    NoMemory,
    NoUart,
    NoGic,
    NoCpus,
    BadReg(&'static str),
}

impl core::fmt::Display for DtbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DtbError::Header(e) => write!(f, "invalid device tree header: {e:?}"),
            DtbError::TooLarge { size, mapped } => write!(
                f,
                "device tree of {size} bytes is larger than the {mapped} bytes mapped for it"
            ),
            DtbError::NoMemory => write!(f, "device tree has no usable /memory node"),
            DtbError::NoUart => write!(f, "device tree has no arm,pl011 UART"),
            DtbError::NoGic => write!(f, "device tree has no GICv2/GICv3 interrupt controller"),
            DtbError::NoCpus => write!(f, "device tree lists no CPUs"),
            DtbError::BadReg(n) => write!(f, "device tree node {n} has a malformed reg property"),
        }
    }
}

fn reg_ranges(node: &fdt::node::FdtNode) -> Vec<Range> {
    node.reg()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Range {
                base: r.starting_address as u64,
                size: r.size? as u64,
            })
        })
        .collect()
}

/// Parse the DTB at `ptr` (a kernel VA).
///
/// # Safety
/// `ptr` must point to at least `mapped` bytes of mapped, readable memory.
pub unsafe fn parse(ptr: *const u8, mapped: u64) -> Result<Platform, DtbError> {
    // The header's totalsize (big-endian u32 at offset 4) must fit what is mapped before the
    // parser reads that many bytes.
    let mut hdr = [0u8; 8];
    // SAFETY: `mapped` ≥ 8 bytes are readable at `ptr` (caller contract).
    unsafe { core::ptr::copy_nonoverlapping(ptr, hdr.as_mut_ptr(), 8) };
    let size = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as u64;
    if size > mapped {
        // A bad magic is the more useful report when the header is garbage.
        if hdr[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
            return Err(DtbError::Header(fdt::FdtError::BadMagic));
        }
        return Err(DtbError::TooLarge { size, mapped });
    }
    // SAFETY: the whole DTB (totalsize bytes) is mapped, checked above; `from_ptr` validates
    // the magic and bounds every access by totalsize.
    let fdt = unsafe { Fdt::from_ptr(ptr) }.map_err(DtbError::Header)?;

    let memory: Vec<Range> = fdt
        .find_all_nodes("/memory")
        .flat_map(|n| reg_ranges(&n))
        .filter(|r| r.size > 0)
        .collect();
    if memory.is_empty() {
        return Err(DtbError::NoMemory);
    }
    let mut reserved: Vec<Range> = fdt
        .memory_reservations()
        .map(|r| Range {
            base: r.address() as u64,
            size: r.size() as u64,
        })
        .collect();
    if let Some(rm) = fdt.find_node("/reserved-memory") {
        for child in rm.children() {
            reserved.extend(reg_ranges(&child));
        }
    }

    let uart_node = fdt
        .chosen()
        .stdout()
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|s| s == "arm,pl011")))
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
        .ok_or(DtbError::NoUart)?;
    let uart = *reg_ranges(&uart_node).first().ok_or(DtbError::BadReg("uart"))?;
    let uart_intid = raw_interrupts(&uart_node).first().copied().unwrap_or(33);

    let (version, gic_node) = if let Some(n) = fdt.find_compatible(&["arm,gic-v3"]) {
        (GicVersion::V3, n)
    } else if let Some(n) = fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"]) {
        (GicVersion::V2, n)
    } else {
        return Err(DtbError::NoGic);
    };
    let regs = reg_ranges(&gic_node);
    if regs.len() < 2 {
        return Err(DtbError::BadReg("interrupt-controller"));
    }
    let gic = Gic {
        version,
        gicd: regs[0],
        gicc_or_gicr: regs[1],
    };

    let psci_method = fdt
        .find_node("/psci")
        .and_then(|n| n.property("method"))
        .and_then(|p| p.as_str())
        .map(String::from);

    let cpus: Vec<u64> = fdt.cpus().map(|c| c.ids().first() as u64).collect();
    if cpus.is_empty() {
        return Err(DtbError::NoCpus);
    }
    let bootargs = fdt.chosen().bootargs().map(String::from).unwrap_or_default();
    let model = fdt.root().model().into();
    let fw_cfg = fdt
        .find_compatible(&["qemu,fw-cfg-mmio"])
        .and_then(|n| reg_ranges(&n).first().copied());
    let pci = fdt
        .find_compatible(&["pci-host-ecam-generic"])
        .and_then(|n| parse_pci_host(&n));
    Ok(Platform {
        numa: super::numa::topology(&fdt),
        pci,
        memory,
        reserved,
        uart,
        uart_intid,
        gic,
        psci_method,
        cpus,
        bootargs,
        fw_cfg,
        dtb_size: fdt.total_size() as u64,
        model,
    })
}

/// `reg`, `bus-range`, `ranges` and the `interrupt-map` of an ECAM host bridge
/// ([`parse::dtb::pci_host`]); `None` without `reg` or `ranges`.
fn parse_pci_host(node: &fdt::node::FdtNode) -> Option<PciHost> {
    let ecam = *reg_ranges(node).first()?;
    let props = PciHostProps {
        bus_range: node.property("bus-range").map(|p| p.value),
        ranges: node.property("ranges")?.value,
        interrupt_map: node.property("interrupt-map").map(|p| p.value),
        interrupt_map_mask: node.property("interrupt-map-mask").map(|p| p.value),
    };
    Some(pci_host(ecam, props))
}

/// INTIDs of a node's `interrupts` property ([`parse::dtb::gic_interrupts`]).
pub fn raw_interrupts(node: &fdt::node::FdtNode) -> Vec<u32> {
    node.property("interrupts")
        .map(|p| gic_interrupts(p.value))
        .unwrap_or_default()
}
