//! VMSAv8-64 stage-1 translation table descriptors (4K, 16K and 64K granules, 48-bit OA,
//! no FEAT_LPA/LPA2).
//!
//! One 64-bit format serves every granule: bits [1:0] say invalid / block / table-or-page,
//! the output address lives in bits [47:12] (a 16K or 64K aligned address simply has its low
//! bits zero; for 64K without FEAT_LPA bits [15:12] are RES0), attributes sit in [11:2] and
//! [54:52]. Whether `0b11` means *table* or *page* depends on the level (page only at level 3,
//! Linux PTE level), so accessors that care take `last_level`.
//!
//! All mappings built here are kernel-only (EL0 no access, UXN always set), global (nG clear)
//! and have AF set (no hardware access-flag management needed). The constructors are `const`
//! plain integer code: the page-table engine calls them before the MMU is on.

use core::fmt;
use tock_registers::{register_bitfields, LocalRegisterCopy};

register_bitfields! {u64,
    /// Stage-1 table, block and page descriptor fields (Arm ARM D8.3).
    pub STAGE1_DESCRIPTOR [
        /// Table only: access permission limit for subsequent levels.
        APTable OFFSET(61) NUMBITS(2) [
            NoEffect = 0b00,
            NoEL0Access = 0b01,
            NoWrite = 0b10,
            NoWriteNoEL0Read = 0b11
        ],
        /// Table only: subsequent levels are UXN.
        UXNTable OFFSET(60) NUMBITS(1) [],
        /// Table only: subsequent levels are PXN.
        PXNTable OFFSET(59) NUMBITS(1) [],
        /// Unprivileged execute-never.
        UXN OFFSET(54) NUMBITS(1) [],
        /// Privileged execute-never.
        PXN OFFSET(53) NUMBITS(1) [],
        /// Contiguous hint: one of an aligned run of identical adjacent leaves.
        CONTIGUOUS OFFSET(52) NUMBITS(1) [],
        /// Output address (leaf) or next-level table address (table), bits [47:12].
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        /// Not global (ASID-tagged).
        nG OFFSET(11) NUMBITS(1) [],
        /// Access flag.
        AF OFFSET(10) NUMBITS(1) [],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Data access permissions AP[2:1].
        AP OFFSET(6) NUMBITS(2) [
            RW_EL1 = 0b00,
            RW_EL1_EL0 = 0b01,
            RO_EL1 = 0b10,
            RO_EL1_EL0 = 0b11
        ],
        /// Index into MAIR_EL1.
        ATTRINDX OFFSET(2) NUMBITS(3) [],
        /// 0: block (levels 0-2); 1: table (levels 0-2) or page (level 3).
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        VALID OFFSET(0) NUMBITS(1) []
    ]
}

use STAGE1_DESCRIPTOR as D;

/// MAIR_EL1 attribute index of Device-nGnRE memory. MAIR_EL1 must hold `MAIR_DEVICE_NGNRE`
/// in this byte.
pub const MAIR_IDX_DEVICE: u64 = 0;
/// MAIR_EL1 attribute index of Normal write-back cacheable memory. MAIR_EL1 must hold
/// `MAIR_NORMAL_WB` in this byte.
pub const MAIR_IDX_NORMAL: u64 = 1;
/// MAIR attribute byte for Device-nGnRE.
pub const MAIR_DEVICE_NGNRE: u64 = 0x04;
/// MAIR attribute byte for Normal, inner/outer write-back non-transient read/write-allocate.
pub const MAIR_NORMAL_WB: u64 = 0xff;
/// The MAIR_EL1 value matching the indices above.
pub const MAIR_EL1_VALUE: u64 =
    (MAIR_DEVICE_NGNRE << (8 * MAIR_IDX_DEVICE)) | (MAIR_NORMAL_WB << (8 * MAIR_IDX_NORMAL));

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE; never executable.
    Device,
}

/// Kernel (EL1) access permissions; EL0 never has access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    ReadOnly,
    ReadWrite,
    ReadExec,
    ReadWriteExec,
}

impl Perm {
    pub const fn writable(self) -> bool {
        matches!(self, Perm::ReadWrite | Perm::ReadWriteExec)
    }
    pub const fn executable(self) -> bool {
        matches!(self, Perm::ReadExec | Perm::ReadWriteExec)
    }
}

/// Attributes of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub mem: MemType,
    pub perm: Perm,
}

impl Attrs {
    /// Normal memory, read-write, execute-never (linear map, vmemmap, data).
    pub const NORMAL_RW: Attrs = Attrs {
        mem: MemType::Normal,
        perm: Perm::ReadWrite,
    };
    /// Normal memory, read-only, execute-never (rodata).
    pub const NORMAL_RO: Attrs = Attrs {
        mem: MemType::Normal,
        perm: Perm::ReadOnly,
    };
    /// Normal memory, read-only, executable (text).
    pub const NORMAL_RX: Attrs = Attrs {
        mem: MemType::Normal,
        perm: Perm::ReadExec,
    };
    /// Device-nGnRE, read-write (MMIO).
    pub const DEVICE_RW: Attrs = Attrs {
        mem: MemType::Device,
        perm: Perm::ReadWrite,
    };

    /// Descriptor bits [63:2] except the output address and CONT (the "prot" of Linux).
    pub const fn bits(self) -> u64 {
        let mut v = D::AF::SET.value | D::UXN::SET.value;
        v |= match self.perm {
            Perm::ReadOnly | Perm::ReadExec => D::AP::RO_EL1.value,
            Perm::ReadWrite | Perm::ReadWriteExec => D::AP::RW_EL1.value,
        };
        match self.mem {
            MemType::Normal => {
                v |= (MAIR_IDX_NORMAL << 2) | D::SH::InnerShareable.value;
                if !self.perm.executable() {
                    v |= D::PXN::SET.value;
                }
            }
            // SH is ignored for Device memory (always Outer Shareable); Device is always XN.
            MemType::Device => v |= (MAIR_IDX_DEVICE << 2) | D::PXN::SET.value,
        }
        v
    }
}

const VALID: u64 = D::VALID::SET.value;
const TYPE_TABLE: u64 = D::TYPE::TableOrPage.value;
const CONT: u64 = D::CONTIGUOUS::SET.value;
const OA_MASK: u64 = D::OUTPUT_ADDR.mask << D::OUTPUT_ADDR.shift;

/// One stage-1 descriptor.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Descriptor(u64);

impl Descriptor {
    pub const INVALID: Descriptor = Descriptor(0);
    /// Mask of the output / next-level table address bits [47:12].
    pub const OA_MASK: u64 = OA_MASK;
    /// The contiguous-hint bit.
    pub const CONT_BIT: u64 = CONT;

    /// Wraps a raw value read from a table.
    pub const fn from_raw(raw: u64) -> Self {
        Descriptor(raw)
    }

    /// Table descriptor pointing at the next-level table `pa` (granule aligned). UXNTable is
    /// set: nothing below a kernel table is ever EL0-executable.
    pub const fn table(pa: u64) -> Self {
        Descriptor((pa & OA_MASK) | D::UXNTable::SET.value | TYPE_TABLE | VALID)
    }

    /// Leaf descriptor: a page when `last_level` (level 3), a block otherwise. `pa` must be
    /// aligned to the size the leaf maps.
    pub const fn leaf(pa: u64, attrs: Attrs, last_level: bool) -> Self {
        let ty = if last_level { TYPE_TABLE } else { 0 };
        Descriptor((pa & OA_MASK) | attrs.bits() | ty | VALID)
    }

    /// The same descriptor with the contiguous hint set.
    pub const fn with_contiguous(self) -> Self {
        Descriptor(self.0 | CONT)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// A valid table descriptor (only possible above the last level).
    pub const fn is_table(self, level_is_last: bool) -> bool {
        !level_is_last && self.0 & 0b11 == 0b11
    }

    /// A valid leaf: a page at the last level (`0b11`), a block above it (`0b01`). Whether a
    /// block is allowed at a given level is the caller's business (see `Geometry`).
    pub const fn is_leaf(self, level_is_last: bool) -> bool {
        let want = if level_is_last { 0b11 } else { 0b01 };
        self.0 & 0b11 == want
    }

    pub const fn is_contiguous(self) -> bool {
        self.0 & CONT != 0
    }

    /// Output address (leaf) or next-level table address (table).
    pub const fn output_address(self) -> u64 {
        self.0 & OA_MASK
    }

    /// Attribute bits of a leaf as `Attrs::bits` builds them: everything but VALID, TYPE,
    /// the output address and CONT.
    pub const fn attr_bits(self) -> u64 {
        self.0 & !(OA_MASK | CONT | TYPE_TABLE | VALID)
    }

    /// Decodes the attributes of a leaf built by `leaf`; `None` for an invalid descriptor or
    /// a memory type index other than `MAIR_IDX_NORMAL`/`MAIR_IDX_DEVICE`. A Device leaf
    /// decodes as non-executable whatever it was built with.
    pub fn attrs(self) -> Option<Attrs> {
        if !self.is_valid() {
            return None;
        }
        let r = self.reg();
        let mem = match r.read(D::ATTRINDX) {
            MAIR_IDX_NORMAL => MemType::Normal,
            MAIR_IDX_DEVICE => MemType::Device,
            _ => return None,
        };
        let write = r.read(D::AP) & 0b10 == 0;
        let exec = !r.is_set(D::PXN);
        let perm = match (write, exec) {
            (false, false) => Perm::ReadOnly,
            (true, false) => Perm::ReadWrite,
            (false, true) => Perm::ReadExec,
            (true, true) => Perm::ReadWriteExec,
        };
        Some(Attrs { mem, perm })
    }

    /// The descriptor as a tock-registers copy, for field access.
    pub fn reg(self) -> LocalRegisterCopy<u64, D::Register> {
        LocalRegisterCopy::new(self.0)
    }

    /// Exact decoding when the level is known (`Display` has to guess table vs page).
    pub fn display(self, last_level: bool) -> DescriptorAt {
        DescriptorAt {
            desc: self,
            last_level: Some(last_level),
        }
    }
}

impl From<Descriptor> for u64 {
    fn from(d: Descriptor) -> u64 {
        d.0
    }
}

/// `Display` adaptor returned by [`Descriptor::display`].
#[derive(Clone, Copy)]
pub struct DescriptorAt {
    desc: Descriptor,
    last_level: Option<bool>,
}

impl fmt::Display for DescriptorAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.desc;
        let r = d.reg();
        write!(f, "{:#018x}  ", d.0)?;
        if !d.is_valid() {
            return f.write_str("INVALID");
        }
        let kind = match (r.read(D::TYPE), self.last_level) {
            (0, Some(true)) => return f.write_str("RESERVED"),
            (0, _) => "BLOCK",
            (_, Some(true)) => "PAGE",
            (_, Some(false)) => "TABLE",
            // Level unknown: tables built here never have AF set, leaves always do.
            (_, None) if r.is_set(D::AF) => "PAGE",
            (_, None) => "TABLE",
        };
        write!(f, "{kind} pa={:#x}", d.output_address())?;
        if kind == "TABLE" {
            if r.is_set(D::PXNTable) {
                f.write_str(" PXNTable")?;
            }
            if r.is_set(D::UXNTable) {
                f.write_str(" UXNTable")?;
            }
            match r.read(D::APTable) {
                0 => {}
                ap => write!(f, " APTable={ap:#b}")?,
            }
            return Ok(());
        }
        match r.read(D::ATTRINDX) {
            MAIR_IDX_NORMAL => f.write_str(" Normal")?,
            MAIR_IDX_DEVICE => f.write_str(" Device")?,
            i => write!(f, " AttrIndx={i}")?,
        }
        let ap = match r.read_as_enum(D::AP) {
            Some(D::AP::Value::RW_EL1) => "RW",
            Some(D::AP::Value::RW_EL1_EL0) => "RW+EL0",
            Some(D::AP::Value::RO_EL1) => "RO",
            _ => "RO+EL0",
        };
        write!(f, " {ap}")?;
        f.write_str(if r.is_set(D::PXN) { " XN" } else { " X" })?;
        if !r.is_set(D::UXN) {
            f.write_str(" UX")?;
        }
        if r.is_set(D::AF) {
            f.write_str(" AF")?;
        }
        let sh = match r.read_as_enum(D::SH) {
            Some(D::SH::Value::InnerShareable) => "inner",
            Some(D::SH::Value::OuterShareable) => "outer",
            Some(D::SH::Value::NonShareable) => "non",
            None => "reserved",
        };
        write!(f, " SH={sh}")?;
        if r.is_set(D::nG) {
            f.write_str(" nG")?;
        }
        if r.is_set(D::CONTIGUOUS) {
            f.write_str(" CONT")?;
        }
        Ok(())
    }
}

/// `0x...  TABLE pa=0x...` / `0x...  BLOCK pa=0x... Normal RW XN AF SH=inner CONT`. Without the
/// level, `0b11` descriptors are told apart by AF (see [`Descriptor::display`] for exact).
impl fmt::Display for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(
            &DescriptorAt {
                desc: *self,
                last_level: None,
            },
            f,
        )
    }
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Descriptor({self})")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    const ALL_PERMS: [Perm; 4] = [Perm::ReadOnly, Perm::ReadWrite, Perm::ReadExec, Perm::ReadWriteExec];

    #[test]
    fn field_positions() {
        assert_eq!(OA_MASK, 0x0000_ffff_ffff_f000);
        assert_eq!(CONT, 1 << 52);
        assert_eq!(D::PXN::SET.value, 1 << 53);
        assert_eq!(D::UXN::SET.value, 1 << 54);
        assert_eq!(D::PXNTable::SET.value, 1 << 59);
        assert_eq!(D::UXNTable::SET.value, 1 << 60);
        assert_eq!(D::APTable::NoWriteNoEL0Read.value, 3 << 61);
        assert_eq!(D::AF::SET.value, 1 << 10);
        assert_eq!(D::SH::InnerShareable.value, 3 << 8);
        assert_eq!(D::AP::RO_EL1.value, 2 << 6);
        assert_eq!(MAIR_EL1_VALUE, 0xff04);
    }

    #[test]
    fn matches_linux_prot_values() {
        // Linux PROT_SECT_NORMAL (PMD block, MT_NORMAL at our index 1), with PXN|UXN as for
        // the linear map: 0x0060_0000_0000_0705 + address.
        let b = Descriptor::leaf(0x4020_0000, Attrs::NORMAL_RW, false);
        assert_eq!(b.raw(), 0x0060_0000_4020_0705);
        // PAGE_KERNEL (PTE, RW, XN).
        let p = Descriptor::leaf(0x4000_1000, Attrs::NORMAL_RW, true);
        assert_eq!(p.raw(), 0x0060_0000_4000_1707);
        // PAGE_KERNEL_ROX: RO, executable at EL1, UXN.
        let x = Descriptor::leaf(0x4000_2000, Attrs::NORMAL_RX, true);
        assert_eq!(x.raw(), 0x0040_0000_4000_2787);
        // PROT_DEVICE_nGnRE page at index 0, always XN, no SH bits.
        let d = Descriptor::leaf(0x0900_0000, Attrs::DEVICE_RW, true);
        assert_eq!(d.raw(), 0x0060_0000_0900_0403);
        let t = Descriptor::table(0x4123_4000);
        assert_eq!(t.raw(), (1 << 60) | 0x4123_4003);
        assert_eq!(b.with_contiguous().raw(), b.raw() | 1 << 52);
    }

    #[test]
    fn accessors() {
        let t = Descriptor::table(0x8000_0000);
        assert!(t.is_valid() && t.is_table(false) && !t.is_table(true));
        assert!(t.is_leaf(true) && !t.is_leaf(false)); // bits 0b11 at level 3 = page
        assert_eq!(t.output_address(), 0x8000_0000);
        let b = Descriptor::leaf(0x8000_0000, Attrs::NORMAL_RW, false);
        assert!(b.is_leaf(false) && !b.is_leaf(true) && !b.is_table(false));
        assert!(!Descriptor::INVALID.is_valid());
        assert!(!Descriptor::INVALID.is_leaf(true) && !Descriptor::INVALID.is_table(false));
        assert_eq!(Descriptor::INVALID.attrs(), None);
        // Address bits outside [47:12] are dropped.
        let l = Descriptor::leaf(0xffff_0000_1234_5fff, Attrs::NORMAL_RW, true);
        assert_eq!(l.output_address(), 0x1234_5000);
        assert!(!l.is_contiguous() && l.with_contiguous().is_contiguous());
        assert_eq!(u64::from(l), l.raw());
        assert_eq!(Descriptor::from_raw(l.raw()), l);
    }

    #[test]
    fn attrs_round_trip() {
        for perm in ALL_PERMS {
            for last in [false, true] {
                let a = Attrs {
                    mem: MemType::Normal,
                    perm,
                };
                let d = Descriptor::leaf(0x4000_0000, a, last);
                assert_eq!(d.attrs(), Some(a));
                assert!(d.reg().is_set(D::UXN));
                assert_eq!(d.reg().read(D::AP) & 1, 0, "EL0 never has access");
                assert_eq!(d.reg().is_set(D::PXN), !perm.executable());
                assert_eq!(d.attr_bits(), a.bits());
                let dev = Descriptor::leaf(
                    0x0900_0000,
                    Attrs {
                        mem: MemType::Device,
                        perm,
                    },
                    last,
                );
                let got = dev.attrs().unwrap();
                assert_eq!(got.mem, MemType::Device);
                assert_eq!(got.perm.writable(), perm.writable());
                assert!(!got.perm.executable(), "Device is always XN");
            }
        }
        let odd = Descriptor::from_raw(Descriptor::leaf(0, Attrs::NORMAL_RW, true).raw() | 3 << 2);
        assert_eq!(odd.attrs(), None);
    }

    #[test]
    fn display() {
        let t = Descriptor::table(0x4123_4000);
        assert_eq!(format!("{t}"), "0x1000000041234003  TABLE pa=0x41234000 UXNTable");
        let b = Descriptor::leaf(0x4020_0000, Attrs::NORMAL_RW, false).with_contiguous();
        assert_eq!(
            format!("{b}"),
            "0x0070000040200705  BLOCK pa=0x40200000 Normal RW XN AF SH=inner CONT"
        );
        let p = Descriptor::leaf(0x4000_2000, Attrs::NORMAL_RX, true);
        assert_eq!(
            format!("{p}"),
            "0x0040000040002787  PAGE pa=0x40002000 Normal RO X AF SH=inner"
        );
        let d = Descriptor::leaf(0x0900_0000, Attrs::DEVICE_RW, true);
        assert_eq!(
            format!("{}", d.display(true)),
            "0x0060000009000403  PAGE pa=0x9000000 Device RW XN AF SH=non"
        );
        assert_eq!(
            format!("{}", t.display(true)),
            "0x1000000041234003  PAGE pa=0x41234000 Device RW X UX SH=non"
        );
        assert_eq!(format!("{}", Descriptor::INVALID), "0x0000000000000000  INVALID");
        assert_eq!(format!("{}", b.display(true)), "0x0070000040200705  RESERVED");
        assert_eq!(
            format!("{:?}", Descriptor::INVALID),
            "Descriptor(0x0000000000000000  INVALID)"
        );
    }
}
