//! `virtio-drivers`' hooks for every virtio device of the kernel: DMA pages from the page
//! allocator, MMIO through `ioremap`.

use crate::boot::layout::{self, PAGE_SIZE};
use crate::kernel::mem::{kernel_pt, page_alloc};
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// `virtio-drivers`' DMA and MMIO hooks: DMA pages from the buddy (reached through the linear
/// map; QEMU's DMA is coherent, so sharing is the physical address), MMIO through `ioremap`.
pub struct HotmemHal;

/// Order of the kernel pages holding `pages` 4 KiB virtio pages.
fn dma_order(pages: usize) -> u32 {
    let bytes = (pages as u64 * 4096).max(1);
    bytes.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros()
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory owned by the caller until
// `dma_dealloc`, reachable at both addresses; `share` returns the physical address of memory
// that the device may access (QEMU's DMA is cache-coherent).
unsafe impl Hal for HotmemHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let order = dma_order(pages);
        let pa = page_alloc::alloc_pages(order).expect("virtio: no memory for a virtqueue");
        let va = layout::phys_to_virt(pa) as *mut u8;
        // SAFETY: fresh pages of ours, reached through the linear map.
        unsafe { arch::memops::zero(va, (PAGE_SIZE << order) as usize) };
        (pa, NonNull::new(va).expect("linear map addresses are not null"))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        match page_alloc::free_pages(paddr, dma_order(pages)) {
            Ok(()) => 0,
            Err(_) => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let va = kernel_pt::ioremap(paddr, size as u64).expect("virtio: ioremap of a BAR region");
        NonNull::new(va as *mut u8).expect("ioremap addresses are not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        layout::virt_to_phys(buffer.as_ptr() as *mut u8 as u64)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
