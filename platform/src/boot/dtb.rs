//! What the kernel needs from the device tree, gathered in one walk of the blob at boot.
//!
//! The walk ([`parse::fdt::Fdt::walk`]) reports nodes and properties in blob order; this file
//! keeps the properties of the nodes it is inside and decides about a node when it ends (its
//! properties precede its children, and its parent's `#address-cells`/`#size-cells` are known
//! by then). Every `/memory` node counts, not only the first, and GIC interrupt specifiers are
//! decoded from the raw property (3 cells). A search per wanted node would re-read the whole
//! tree each time: QEMU virt's is a 1 MiB blob, milliseconds per search under TCG.
//!
//! Values are decoded by the host-tested [`parse::dtb`] (cells, PCI windows, interrupt
//! specifiers) and [`parse::fdt`] (the blob, `reg`, strings), whose types it re-exports.

use alloc::{string::String, vec::Vec};
use parse::dtb::{gic_interrupts, pci_host, PciHostProps};
pub use parse::dtb::{PciHost, PciSpace, Range, PCI_PHYS_HI};
use parse::fdt::{self, Event, Fdt};

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
    /// Every `/memory` range with its `numa-node-id`, as the DT lists them (before `mem=` or
    /// the linear map's reach cut `memory`).
    pub memory_nodes: Vec<(Range, Option<u32>)>,
    /// `numa-node-id` of each CPU, in the order of `cpus`.
    pub cpu_nodes: Vec<Option<u32>>,
    /// `/distance-map`'s `distance-matrix`, raw (big-endian (node, node, distance) cells).
    pub distance_matrix: Option<Vec<u8>>,
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
            DtbError::Header(e) => write!(f, "invalid device tree: {e}"),
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

/// The properties of one open node that the kernel reads, and its cells for its children.
#[derive(Clone, Copy, Default)]
struct Node<'a> {
    name: &'a str,
    /// Position in blob order (the first match of a `compatible` search is the lowest).
    seq: usize,
    addr_cells: Option<u32>,
    size_cells: Option<u32>,
    reg: Option<&'a [u8]>,
    compatible: Option<&'a [u8]>,
    interrupts: Option<&'a [u8]>,
    numa_node_id: Option<u32>,
    /// Any other property the kernel reads somewhere (`method`, `bootargs`, `bus-range`, ...).
    others: [Option<&'a [u8]>; OTHERS.len()],
}

/// The other properties kept per node, by index into [`Node::others`].
const OTHERS: [&str; 9] = [
    "method",
    "bootargs",
    "stdout-path",
    "model",
    "bus-range",
    "ranges",
    "interrupt-map",
    "interrupt-map-mask",
    "distance-matrix",
];

fn other_index(name: &str) -> Option<usize> {
    OTHERS.iter().position(|&n| n == name)
}

impl<'a> Node<'a> {
    fn base_name(&self) -> &'a str {
        self.name.split('@').next().unwrap_or("")
    }

    fn other(&self, name: &str) -> Option<&'a [u8]> {
        self.others[other_index(name)?]
    }

    fn is_compatible(&self, any_of: &[&str]) -> bool {
        self.compatible
            .is_some_and(|c| fdt::strings(c).any(|s| any_of.contains(&s)))
    }

    /// `reg` decoded with the cells `self` (the parent) gives its children (DT defaults 2, 1).
    fn child_reg(&self, child: &Node<'a>) -> Vec<Range> {
        let (a, s) = (self.addr_cells.unwrap_or(2), self.size_cells.unwrap_or(1));
        child.reg.map(|r| fdt::reg(r, a, s).collect()).unwrap_or_default()
    }

    fn set(&mut self, name: &str, value: &'a [u8]) {
        let cell = || fdt::take_cells(value, 1).map(|(v, _)| v as u32);
        match name {
            "#address-cells" => self.addr_cells = cell(),
            "#size-cells" => self.size_cells = cell(),
            "reg" => self.reg = Some(value),
            "compatible" => self.compatible = Some(value),
            "interrupts" => self.interrupts = Some(value),
            "numa-node-id" => self.numa_node_id = cell(),
            _ => {
                if let Some(i) = other_index(name) {
                    self.others[i] = Some(value);
                }
            }
        }
    }
}

const GIC_V2: [&str; 3] = ["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"];

/// What the walk found: raw, decided into a [`Platform`] by [`Found::platform`].
#[derive(Default)]
struct Found<'a> {
    memory: Vec<Range>,
    memory_nodes: Vec<(Range, Option<u32>)>,
    reserved: Vec<Range>,
    /// Every `arm,pl011` node: (seq, path, node); the one `stdout-path` names wins.
    uarts: Vec<(usize, String, Node<'a>, Vec<Range>)>,
    gic_v3: Option<(Node<'a>, Vec<Range>)>,
    gic_v2: Option<(Node<'a>, Vec<Range>)>,
    fw_cfg: Option<(usize, Range)>,
    pci: Option<(usize, PciHost)>,
    cpus: Vec<(u64, Option<u32>)>,
    chosen: Option<Node<'a>>,
    aliases: Vec<(&'a str, &'a [u8])>,
    psci_method: Option<&'a [u8]>,
    model: Option<&'a [u8]>,
    distance_matrix: Option<&'a [u8]>,
}

/// Keep `cand` in `slot` if it comes first in blob order.
fn first<T>(slot: &mut Option<T>, cand: T, seq: impl Fn(&T) -> usize) {
    if slot.as_ref().is_none_or(|s| seq(&cand) < seq(s)) {
        *slot = Some(cand);
    }
}

impl<'a> Found<'a> {
    /// `node` ended; `stack` holds its ancestors (root first).
    fn node_ended(&mut self, node: &Node<'a>, stack: &[Node<'a>]) {
        let Some(parent) = stack.last() else {
            self.model = node.other("model");
            return;
        };
        let depth = stack.len();
        let (name, pname) = (node.base_name(), parent.base_name());
        let reg = || parent.child_reg(node);
        match (depth, pname, name) {
            (1, _, "memory") => {
                for r in reg().into_iter().filter(|r| r.size > 0) {
                    self.memory.push(r);
                    self.memory_nodes.push((r, node.numa_node_id));
                }
            }
            (1, _, "chosen") => self.chosen = Some(*node),
            (1, _, "psci") => self.psci_method = node.other("method"),
            (1, _, "distance-map") => self.distance_matrix = node.other("distance-matrix"),
            (2, "reserved-memory", _) => self.reserved.extend(reg()),
            (2, "cpus", "cpu") => {
                if let Some(r) = reg().first() {
                    self.cpus.push((r.base, node.numa_node_id));
                }
            }
            _ => {}
        }
        self.device_ended(node, stack, parent);
    }

    /// The devices found by `compatible`, wherever they sit.
    fn device_ended(&mut self, node: &Node<'a>, stack: &[Node<'a>], parent: &Node<'a>) {
        let seq = node.seq;
        if node.is_compatible(&["arm,pl011"]) {
            let mut path = String::new();
            for n in stack.iter().skip(1).chain(core::iter::once(node)) {
                path.push('/');
                path.push_str(n.name);
            }
            self.uarts.push((seq, path, *node, parent.child_reg(node)));
        } else if node.is_compatible(&["arm,gic-v3"]) {
            first(&mut self.gic_v3, (*node, parent.child_reg(node)), |g| g.0.seq);
        } else if node.is_compatible(&GIC_V2) {
            first(&mut self.gic_v2, (*node, parent.child_reg(node)), |g| g.0.seq);
        } else if node.is_compatible(&["qemu,fw-cfg-mmio"]) {
            if let Some(&r) = parent.child_reg(node).first() {
                first(&mut self.fw_cfg, (seq, r), |f| f.0);
            }
        } else if node.is_compatible(&["pci-host-ecam-generic"]) {
            if let Some(host) = pci_host_of(node, parent) {
                first(&mut self.pci, (seq, host), |p| p.0);
            }
        }
    }
}

/// `reg`, `bus-range`, `ranges` and the `interrupt-map` of an ECAM host bridge
/// ([`parse::dtb::pci_host`]); `None` without `reg` or `ranges`.
fn pci_host_of(node: &Node, parent: &Node) -> Option<PciHost> {
    let ecam = *parent.child_reg(node).first()?;
    let props = PciHostProps {
        bus_range: node.other("bus-range"),
        ranges: node.other("ranges")?,
        interrupt_map: node.other("interrupt-map"),
        interrupt_map_mask: node.other("interrupt-map-mask"),
    };
    Some(pci_host(ecam, props))
}

/// Walk the blob once, keeping what [`Found`] wants.
fn walk<'a>(fdt: &Fdt<'a>) -> Result<Found<'a>, DtbError> {
    let mut found = Found::default();
    let mut stack: Vec<Node<'a>> = Vec::with_capacity(8);
    let mut seq = 0;
    fdt.walk(|e| match e {
        Event::Begin { name, .. } => {
            stack.push(Node {
                name,
                seq,
                ..Node::default()
            });
            seq += 1;
        }
        Event::Prop { name, value } => {
            if let Some(node) = stack.last_mut() {
                node.set(name, value);
                if stack.len() == 2 && stack[1].name == "aliases" {
                    found.aliases.push((name, value));
                }
            }
        }
        Event::End { .. } => {
            if let Some(node) = stack.pop() {
                found.node_ended(&node, &stack);
            }
        }
    })
    .map_err(DtbError::Header)?;
    Ok(found)
}

impl Found<'_> {
    /// The console UART: the `arm,pl011` node `/chosen/stdout-path` names (a path or an alias,
    /// options after `:` ignored), else the first `arm,pl011` node.
    fn uart(&self) -> Option<&(usize, String, Node<'_>, Vec<Range>)> {
        let stdout = self
            .chosen
            .and_then(|c| c.other("stdout-path"))
            .and_then(fdt::str_value);
        let target = stdout.map(|s| s.split(':').next().unwrap_or(""));
        let path = target.map(|t| {
            if t.starts_with('/') {
                t
            } else {
                let alias = self.aliases.iter().find(|(n, _)| *n == t);
                alias.and_then(|(_, v)| fdt::str_value(v)).unwrap_or(t)
            }
        });
        path.and_then(|p| self.uarts.iter().find(|u| u.1 == p))
            .or_else(|| self.uarts.iter().min_by_key(|u| u.0))
    }
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
    let magic = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let size = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as u64;
    if size > mapped {
        // A bad magic is the more useful report when the header is garbage.
        if magic != fdt::MAGIC {
            return Err(DtbError::Header(fdt::FdtError::BadMagic(magic)));
        }
        return Err(DtbError::TooLarge { size, mapped });
    }
    // SAFETY: `size` ≤ `mapped` bytes are mapped and readable at `ptr` (checked above), and
    // nothing writes the DTB (mapped read-only).
    let blob = unsafe { core::slice::from_raw_parts(ptr, size as usize) };
    let fdt = Fdt::new(blob).map_err(DtbError::Header)?;
    let found = walk(&fdt)?;
    platform(&fdt, found)
}

/// Decide the [`Platform`] from what the walk found.
fn platform(fdt: &Fdt, found: Found) -> Result<Platform, DtbError> {
    if found.memory.is_empty() {
        return Err(DtbError::NoMemory);
    }
    let mut reserved: Vec<Range> = fdt.reservations().collect();
    reserved.extend(&found.reserved);

    let (_, _, uart_node, uart_regs) = found.uart().ok_or(DtbError::NoUart)?;
    let uart = *uart_regs.first().ok_or(DtbError::BadReg("uart"))?;
    let uart_intid = uart_node
        .interrupts
        .map(gic_interrupts)
        .and_then(|i| i.first().copied())
        .unwrap_or(33);

    let (version, (_, regs)) = match (&found.gic_v3, &found.gic_v2) {
        (Some(g), _) => (GicVersion::V3, g),
        (None, Some(g)) => (GicVersion::V2, g),
        (None, None) => return Err(DtbError::NoGic),
    };
    if regs.len() < 2 {
        return Err(DtbError::BadReg("interrupt-controller"));
    }
    let gic = Gic {
        version,
        gicd: regs[0],
        gicc_or_gicr: regs[1],
    };
    if found.cpus.is_empty() {
        return Err(DtbError::NoCpus);
    }
    let text = |v: Option<&[u8]>| v.and_then(fdt::str_value).map(String::from);
    Ok(Platform {
        memory: found.memory,
        reserved,
        uart,
        uart_intid,
        gic,
        psci_method: text(found.psci_method),
        cpus: found.cpus.iter().map(|c| c.0).collect(),
        bootargs: text(found.chosen.and_then(|c| c.other("bootargs"))).unwrap_or_default(),
        fw_cfg: found.fw_cfg.map(|f| f.1),
        dtb_size: fdt.total_size() as u64,
        model: text(found.model).unwrap_or_default(),
        pci: found.pci.map(|p| p.1),
        memory_nodes: found.memory_nodes,
        cpu_nodes: found.cpus.iter().map(|c| c.1).collect(),
        distance_matrix: found.distance_matrix.map(<[u8]>::to_vec),
    })
}
