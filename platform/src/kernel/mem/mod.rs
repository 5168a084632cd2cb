//! Memory management. Bottom up, each file importing only those before it: `counters`, `fault`,
//! `memblock`, `memmap` (sparse model), `page_alloc`, `pages` (owned blocks), `kernel_pt`
//! (kernel page table, linear map, ioremap), `vmemmap` (memmap population), `heap`; TLB and
//! teardown glue (`teardown`, below them all); the movable window (`movable`); hotplug state (`hotplug`); memory device types
//! (`device`: the registration, and the DIMM and virtio-mem policies).

pub mod counters;
pub mod device;
pub mod fault;
pub mod heap;
pub mod hotplug;
pub mod kernel_pt;
pub mod memblock;
pub mod memmap;
pub mod movable;
pub mod page_alloc;
pub mod pages;
pub mod teardown;
pub mod vmemmap;

use crate::boot::layout::{self, Size, G};
use crate::println;

/// Print the virtual layout (at boot and for the `layout` shell command).
pub fn print_layout() {
    let img = layout::image_start();
    println!(
        "layout: granule={} page_size={} va_bits={} levels={} start_level={}",
        G.granule_name(),
        G.page_size(),
        G.va_bits,
        G.levels(),
        G.start_level()
    );
    let rows = [
        ("linear", layout::PAGE_OFFSET, layout::LINEAR_SIZE),
        ("vmemmap", layout::VMEMMAP_START, layout::VMEMMAP_SIZE),
        ("ioremap", layout::IOREMAP_START, layout::IOREMAP_SIZE),
        ("movable", layout::MOVABLE_START, layout::MOVABLE_SIZE),
        ("fdt", layout::FDT_VADDR, layout::FDT_MAX_SIZE),
        ("kimage", img, layout::image_end() - img),
    ];
    for (name, start, size) in rows {
        println!(
            "layout: region={:<8} start={:#018x} end={:#018x} size={}",
            name,
            start,
            start + size,
            Size(size)
        );
    }
    println!(
        "layout: kimage text={:#x}-{:#x} (RX) rodata={:#x}-{:#x} (R) data={:#x}-{:#x} (RW NX) pa={:#x}",
        img,
        layout::text_end(),
        layout::text_end(),
        layout::rodata_end(),
        layout::rodata_end(),
        layout::image_end(),
        img.wrapping_sub(layout::kimage_voffset())
    );
}
