//! The sparse memory model and the memmap: which sections exist, and their `struct page`s in
//! the vmemmap region (`pfn_to_page(pfn) = VMEMMAP_START + 64 * pfn`).

use crate::boot::layout::{self, G};
use mm::{
    page::{Memmap, Page},
    sparse::{Sparse, MAX_PHYSMEM_BITS},
};

static SPARSE: spin::Once<Sparse> = spin::Once::new();

/// The sparse model; created at boot by [`init_sparse`].
pub fn sparse() -> &'static Sparse {
    SPARSE.get().expect("sparse model initialised at boot")
}

/// Create the sparse model (once): every section the linear map can reach.
pub fn init_sparse() -> &'static Sparse {
    let max_pa = layout::LINEAR_SIZE.min(1 << MAX_PHYSMEM_BITS);
    SPARSE.call_once(|| Sparse::new(G, max_pa))
}

/// The memmap in the vmemmap region: `pfn_to_page(pfn) = VMEMMAP_START + 64 * pfn`.
pub struct KernelMemmap;

pub const VMEMMAP: mm::page::Vmemmap = mm::page::Vmemmap {
    base: layout::VMEMMAP_START,
};

/// The vmemmap region, `[start, end)`.
pub fn vmemmap_region() -> (u64, u64) {
    (layout::VMEMMAP_START, layout::VMEMMAP_START + layout::VMEMMAP_SIZE)
}

// SAFETY: a PFN is valid only once its section's memmap is populated (mapped RW in the vmemmap
// region) and until it is freed; the VA arithmetic gives distinct, 64-byte aligned pages.
unsafe impl Memmap for KernelMemmap {
    fn page(&self, pfn: u64) -> *mut Page {
        VMEMMAP.pfn_to_page(pfn) as *mut Page
    }
    fn valid(&self, pfn: u64) -> bool {
        SPARSE.get().is_some_and(|s| s.pfn_valid(pfn))
    }
}

/// Every `struct page` of `[pfn, pfn + n)` to its initial state (reserved + `extra_flags`,
/// block id): one pass of 64-byte stores over the memmap.
///
/// # Safety
/// The memmap of `[pfn, pfn + n)` is populated (mapped RW in the vmemmap region) and nothing
/// else uses those `struct page`s during the call: their section is not yet marked as having
/// a memmap, or the caller holds the page allocator and hotplug locks over pages it owns.
pub unsafe fn init_struct_pages(pfn: u64, n: u64, block: u32, extra_flags: u32) {
    let page = Page {
        block,
        flags: Page::INIT.flags | extra_flags,
        ..Page::INIT
    };
    // SAFETY: the caller's contract is `Memmap::init_pages`' contract.
    unsafe { KernelMemmap.init_pages(pfn, n, page) };
}
