//! Kernel virtual memory layout (TTBR1), per configuration. Like Linux arm64, lowest first:
//!
//! | region  | start                      | size                               |
//! |---------|----------------------------|------------------------------------|
//! | linear  | `PAGE_OFFSET` = -2^VA      | 2^(VA-1): maps PA `[0, 2^(VA-1))`  |
//! | vmemmap | `PAGE_OFFSET + 2^(VA-1)`   | linear size >> (PAGE_SHIFT - 6)    |
//! | ioremap | next 1 GiB boundary        | 1 GiB (MMIO, device memory)        |
//! | movable | right after ioremap         | 4 GiB: movable (stress) pages, base pages |
//! | fdt     | `KIMAGE_VADDR - 64 MiB`    | 2 MiB window for the DTB           |
//! | kimage  | `0xffff_ffff_c000_0000`    | the kernel image (text, rodata, data, bss) |
//!
//! `linear VA = PAGE_OFFSET + PA` (no offset: PAGE_OFFSET is aligned to 2^(VA-1), so a PA's
//! alignment is its VA's and blocks line up). `pfn_to_page(pfn) = VMEMMAP_START + 64 * pfn`.

use core::sync::atomic::{AtomicU64, Ordering};
use mm::{Config, Geometry};

pub const G: Geometry = <crate::config::Cfg as Config>::GEOM;
pub const PAGE_SHIFT: u32 = G.page_shift;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

pub const PAGE_OFFSET: u64 = G.ttbr1_base();
pub const LINEAR_SIZE: u64 = 1 << (G.va_bits - 1);
/// `struct page` size; the vmemmap holds one per possible PFN of the linear range.
pub const STRUCT_PAGE_SIZE: u64 = 64;
pub const VMEMMAP_START: u64 = PAGE_OFFSET + LINEAR_SIZE;
pub const VMEMMAP_SIZE: u64 = (LINEAR_SIZE >> PAGE_SHIFT) * STRUCT_PAGE_SIZE;
pub const IOREMAP_START: u64 = (VMEMMAP_START + VMEMMAP_SIZE + (1 << 30) - 1) & !((1 << 30) - 1);
pub const IOREMAP_SIZE: u64 = 1 << 30;
/// The movable window: every movable allocation (a `stress` page) has a fixed VA here,
/// `MOVABLE_START + handle * PAGE_SIZE`, mapped with base pages through the kernel page table,
/// as user pages would be; migration re-points that PTE at the new frame (clear → broadcast
/// TLBI → copy → map), so the VA never changes while the PA does. Its last-level tables are
/// allocated at boot (4K: 8 MiB, 16K: 2 MiB, 64K: 512 KiB) and never freed, so a movable
/// allocation costs exactly its page and no table page can pin a hot-added block.
pub const MOVABLE_START: u64 = IOREMAP_START + IOREMAP_SIZE;
/// 4 GiB: more than the handle table can track on 4K (about 2 GiB), so that limit stays the
/// one `stress` reports.
pub const MOVABLE_SIZE: u64 = 4 << 30;
pub const KIMAGE_VADDR: u64 = 0xffff_ffff_c000_0000;
pub const FDT_VADDR: u64 = KIMAGE_VADDR - (64 << 20);
pub const FDT_MAX_SIZE: u64 = 2 << 20;
/// Bytes of DTB the early code maps (from the DTB's address): QEMU's DTBs are 1 MiB.
pub const FDT_MAPPED: u64 = 1 << 20;

const _: () = assert!(IOREMAP_START + IOREMAP_SIZE <= MOVABLE_START);
const _: () = assert!(MOVABLE_START + MOVABLE_SIZE <= FDT_VADDR);
const _: () = assert!(MOVABLE_START.is_multiple_of(1 << 30));
const _: () = assert!(VMEMMAP_START.is_multiple_of(1 << 30));

/// `VA - PA` of the kernel image, fixed by where the image was loaded (set once at early boot).
pub static KIMAGE_VOFFSET: AtomicU64 = AtomicU64::new(0);

pub fn kimage_voffset() -> u64 {
    KIMAGE_VOFFSET.load(Ordering::Relaxed)
}

/// Linear-map address of a physical address.
pub const fn phys_to_virt(pa: u64) -> u64 {
    PAGE_OFFSET + pa
}

/// Physical address of a kernel VA: the linear map, or the kernel image (boot heap, stacks).
pub fn virt_to_phys(va: u64) -> u64 {
    if (PAGE_OFFSET..PAGE_OFFSET + LINEAR_SIZE).contains(&va) {
        va - PAGE_OFFSET
    } else {
        va.wrapping_sub(kimage_voffset())
    }
}

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// Link-time addresses of the image regions (valid once running at the link address).
pub fn image_start() -> u64 {
    core::ptr::addr_of!(__image_start) as u64
}
pub fn text_end() -> u64 {
    core::ptr::addr_of!(__text_end) as u64
}
pub fn rodata_end() -> u64 {
    core::ptr::addr_of!(__rodata_end) as u64
}
pub fn image_end() -> u64 {
    core::ptr::addr_of!(__image_end) as u64
}

/// Human-readable size (e.g. `128 TiB`, `2 MiB`, `4 KiB`).
pub struct Size(pub u64);

impl core::fmt::Display for Size {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, name) in units {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{} {}", self.0 >> shift, name);
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// The build configuration and layout, exported for debuggers (the GDB extension reads it from
/// the ELF instead of asking the user which granule or VA size the kernel was built for).
#[repr(C)]
pub struct DebugInfo {
    /// `b"HOTMEMv1"` as a little-endian u64.
    pub magic: u64,
    pub page_shift: u64,
    pub va_bits: u64,
    pub levels: u64,
    pub start_level: u64,
    pub section_shift: u64,
    pub struct_page_size: u64,
    pub page_offset: u64,
    pub linear_size: u64,
    pub vmemmap_start: u64,
    pub vmemmap_size: u64,
    pub kimage_vaddr: u64,
    pub max_order: u64,
}

#[no_mangle]
#[used]
pub static HOTMEM_DEBUG_INFO: DebugInfo = DebugInfo {
    magic: u64::from_le_bytes(*b"HOTMEMv1"),
    page_shift: G.page_shift as u64,
    va_bits: G.va_bits as u64,
    levels: G.levels() as u64,
    start_level: G.start_level() as u64,
    section_shift: G.section_shift() as u64,
    struct_page_size: STRUCT_PAGE_SIZE,
    page_offset: PAGE_OFFSET,
    linear_size: LINEAR_SIZE,
    vmemmap_start: VMEMMAP_START,
    vmemmap_size: VMEMMAP_SIZE,
    kimage_vaddr: KIMAGE_VADDR,
    max_order: G.max_order() as u64,
};
