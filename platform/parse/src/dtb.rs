//! Device-tree property values, decoded: big-endian cells, the PCI host bridge's `bus-range`
//! and `ranges`, and GIC interrupt specifiers. Input is the raw bytes of a property; finding
//! nodes and properties is the kernel's (`platform/src/boot/dtb.rs`, with `fdt`).
//!
//! Rule for malformed values: a value cut short (a length that is not a whole number of cells
//! or specifiers) is decoded up to its last whole cell or specifier, the rest is ignored, and
//! nothing panics.

use alloc::vec::Vec;
use tock_registers::LocalRegisterCopy;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHost {
    pub ecam: Range,
    pub bus_start: u8,
    pub bus_end: u8,
    pub windows: Vec<PciWindow>,
    /// Raw `interrupt-map` (INTx routing), as big-endian cells.
    pub interrupt_map: Vec<u32>,
    pub interrupt_map_mask: Vec<u32>,
}

/// The raw properties of an ECAM host bridge node that [`pci_host`] decodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct PciHostProps<'a> {
    pub bus_range: Option<&'a [u8]>,
    pub ranges: &'a [u8],
    pub interrupt_map: Option<&'a [u8]>,
    pub interrupt_map_mask: Option<&'a [u8]>,
}

tock_registers::register_bitfields! {u32,
    /// The first cell of a PCI address (`phys.hi`, IEEE 1275 PCI bus binding), in `ranges`
    /// and in `interrupt-map` child addresses.
    pub PCI_PHYS_HI [
        PREFETCHABLE OFFSET(30) NUMBITS(1) [],
        SPACE OFFSET(24) NUMBITS(2) [
            Config = 0,
            Io = 1,
            Mem32 = 2,
            Mem64 = 3
        ],
        BUS OFFSET(16) NUMBITS(8) [],
        DEVICE OFFSET(11) NUMBITS(5) [],
        FUNCTION OFFSET(8) NUMBITS(3) []
    ]
}

/// A property value as big-endian 32-bit cells (a trailing partial cell is ignored).
pub fn cells(p: &[u8]) -> Vec<u32> {
    p.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Two cells, high first, as one 64-bit number.
fn cells64(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The bus numbers an ECAM window serves: `bus-range` if it has exactly two cells (each
/// clamped to 255), else one bus per MiB of ECAM, at most 256.
pub fn bus_range(prop: Option<&[u8]>, ecam: Range) -> (u8, u8) {
    match prop.map(cells) {
        Some(c) if c.len() == 2 => (c[0].min(255) as u8, c[1].min(255) as u8),
        _ => (0, ((ecam.size >> 20).clamp(1, 256) - 1) as u8),
    }
}

/// The windows of a host bridge's `ranges`: 3 PCI address cells, 2 CPU address cells, 2 size
/// cells each, as on QEMU virt (a trailing partial window is ignored).
pub fn pci_windows(ranges: &[u8]) -> Vec<PciWindow> {
    cells(ranges)
        .chunks_exact(7)
        .map(|c| {
            let hi = LocalRegisterCopy::<u32, PCI_PHYS_HI::Register>::new(c[0]);
            let space = match hi.read_as_enum(PCI_PHYS_HI::SPACE) {
                Some(PCI_PHYS_HI::SPACE::Value::Config) => PciSpace::Config,
                Some(PCI_PHYS_HI::SPACE::Value::Io) => PciSpace::Io,
                Some(PCI_PHYS_HI::SPACE::Value::Mem32) => PciSpace::Mem32,
                _ => PciSpace::Mem64,
            };
            PciWindow {
                space,
                prefetchable: hi.is_set(PCI_PHYS_HI::PREFETCHABLE),
                pci: cells64(c[1], c[2]),
                cpu: cells64(c[3], c[4]),
                size: cells64(c[5], c[6]),
            }
        })
        .collect()
}

/// An ECAM host bridge from its first `reg` range and its raw properties.
pub fn pci_host(ecam: Range, props: PciHostProps) -> PciHost {
    let (bus_start, bus_end) = bus_range(props.bus_range, ecam);
    PciHost {
        ecam,
        bus_start,
        bus_end,
        windows: pci_windows(props.ranges),
        interrupt_map: props.interrupt_map.map(cells).unwrap_or_default(),
        interrupt_map_mask: props.interrupt_map_mask.map(cells).unwrap_or_default(),
    }
}

/// INTIDs of an `interrupts` property, decoded as GIC 3-cell specifiers `<type number flags>`
/// (type 1 = PPI → INTID 16 + n, any other type is an SPI → 32 + n). The sum wraps at 2^32 as
/// the release kernel's arithmetic does; such an INTID matches no interrupt of the GIC.
pub fn gic_interrupts(prop: &[u8]) -> Vec<u32> {
    prop.chunks_exact(12)
        .map(|c| {
            let cell = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            let (kind, num) = (cell(0), cell(4));
            if kind == 1 {
                num.wrapping_add(16)
            } else {
                num.wrapping_add(32)
            }
        })
        .collect()
}
