//! What the kernel needs from the device tree, parsed once at boot with `fdt` 0.1.5.
//!
//! Two `fdt` 0.1.5 traps are avoided on purpose: `Fdt::memory()` returns only the first
//! `/memory` node (we walk all of them), and `interrupts()` cannot decode the GIC's 3-cell
//! specifiers (we parse the raw property).

use alloc::{string::String, vec::Vec};
use fdt::Fdt;

/// A physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

impl Range {
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

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

/// A window of the PCI host bridge's `ranges`: PCI bus addresses `pci..pci+size` appear at CPU
/// physical `cpu..cpu+size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    pub space: PciSpace,
    pub prefetchable: bool,
    pub pci: u64,
    pub cpu: u64,
    pub size: u64,
}

/// Address space of a PCI window (bits 24-25 of the `phys.hi` cell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciSpace {
    Config,
    Io,
    Mem32,
    Mem64,
}

/// The generic ECAM host bridge (`pci-host-ecam-generic`).
#[derive(Clone, Debug)]
pub struct PciHost {
    pub ecam: Range,
    pub bus_start: u8,
    pub bus_end: u8,
    pub windows: Vec<PciWindow>,
    /// Raw `interrupt-map` (INTx routing), as big-endian cells.
    pub interrupt_map: Vec<u32>,
    pub interrupt_map_mask: Vec<u32>,
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

fn cells(p: &[u8]) -> Vec<u32> {
    p.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `reg`, `bus-range`, `ranges` (3 PCI address cells, 2 CPU address cells, 2 size cells, as on
/// QEMU virt) and the `interrupt-map` of an ECAM host bridge; `None` if malformed.
fn parse_pci_host(node: &fdt::node::FdtNode) -> Option<PciHost> {
    let ecam = *reg_ranges(node).first()?;
    let (bus_start, bus_end) = match node.property("bus-range").map(|p| cells(p.value)) {
        Some(c) if c.len() == 2 => (c[0].min(255) as u8, c[1].min(255) as u8),
        _ => (0, ((ecam.size >> 20).clamp(1, 256) - 1) as u8),
    };
    let ranges = cells(node.property("ranges")?.value);
    let windows = ranges
        .chunks_exact(7)
        .map(|c| {
            let space = match (c[0] >> 24) & 3 {
                0 => PciSpace::Config,
                1 => PciSpace::Io,
                2 => PciSpace::Mem32,
                _ => PciSpace::Mem64,
            };
            PciWindow {
                space,
                prefetchable: c[0] & (1 << 30) != 0,
                pci: (c[1] as u64) << 32 | c[2] as u64,
                cpu: (c[3] as u64) << 32 | c[4] as u64,
                size: (c[5] as u64) << 32 | c[6] as u64,
            }
        })
        .collect();
    Some(PciHost {
        ecam,
        bus_start,
        bus_end,
        windows,
        interrupt_map: node
            .property("interrupt-map")
            .map(|p| cells(p.value))
            .unwrap_or_default(),
        interrupt_map_mask: node
            .property("interrupt-map-mask")
            .map(|p| cells(p.value))
            .unwrap_or_default(),
    })
}

/// INTIDs of a node's `interrupts` property, decoded as GIC 3-cell specifiers
/// `<type number flags>` (type 0 = SPI → INTID 32 + n, 1 = PPI → 16 + n).
pub fn raw_interrupts(node: &fdt::node::FdtNode) -> Vec<u32> {
    let Some(p) = node.property("interrupts") else {
        return Vec::new();
    };
    p.value
        .chunks_exact(12)
        .map(|c| {
            let cell = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            let (kind, num) = (cell(0), cell(4));
            if kind == 1 {
                16 + num
            } else {
                32 + num
            }
        })
        .collect()
}
