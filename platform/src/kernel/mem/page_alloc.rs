//! The kernel's page allocator: the buddy allocator (`mm::buddy`) whose state lives in the
//! memmap, after memblock at boot.

use crate::{
    boot::layout::{G, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::memblock::{self, align_down, align_up},
    kernel::mem::memmap::{sparse, KernelMemmap},
    kernel::mem::teardown,
    kernel::sync::IrqSafeLock,
};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use mm::{
    buddy::{AllocKind, BuddyError, PageAlloc, Violation, ZoneCensus},
    pgtable::PhysAddr,
    sparse::state,
    vmemmap::PageSource,
};

static PAGE_ALLOC: IrqSafeLock<Option<PageAlloc<KernelMemmap>>> = IrqSafeLock::new(None);
static BUDDY_READY: AtomicBool = AtomicBool::new(false);

/// The page allocator's invariants ([`PageAlloc::check`]) over every section with a memmap.
/// The caller holds the hotplug lock, so no offline is in progress and nothing may be isolated.
pub fn check_page_alloc() -> Result<[ZoneCensus; 2], Violation> {
    let pps = G.pages_per_section();
    let ranges: Vec<(u64, u64)> = sparse()
        .iter_with(state::HAS_MEMMAP)
        .map(|(nr, _)| (sparse().section_nr_to_pfn(nr), pps))
        .collect();
    with_page_alloc(|a| a.check(&ranges, true))
}

pub fn with_page_alloc<R>(f: impl FnOnce(&mut PageAlloc<KernelMemmap>) -> R) -> R {
    let mut a = PAGE_ALLOC.lock();
    f(a.as_mut().expect("page allocator initialised at boot"))
}

/// Allocate 2^order contiguous, naturally aligned pages for the kernel; returns the PA.
pub fn alloc_pages(order: u32) -> Option<u64> {
    if !BUDDY_READY.load(Ordering::Acquire) {
        let size = PAGE_SIZE << order;
        return memblock::alloc(size, size);
    }
    with_page_alloc(|a| a.alloc(order, AllocKind::Kernel)).map(|pfn| pfn << PAGE_SHIFT)
}

/// Free pages from [`alloc_pages`]. In the test build the teardown checker first verifies no
/// cleared-but-not-invalidated translation still points at them.
pub fn free_pages(pa: u64, order: u32) -> Result<(), BuddyError> {
    teardown::check_free(pa, PAGE_SIZE << order);
    with_page_alloc(|a| a.free(pa >> PAGE_SHIFT, order))
}

/// Free pages of the boot RAM (all zones).
pub fn free_page_count() -> u64 {
    with_page_alloc(|a| mm::page::ZoneId::ALL.iter().map(|&z| a.counters(z).free).sum())
}

/// Memmap backing and tables from the buddy (hot paths after boot).
pub struct BuddySource;

impl PageSource for BuddySource {
    fn alloc_pages(&mut self, order: u32) -> Option<PhysAddr> {
        alloc_pages(order)
    }
    fn free_pages(&mut self, pa: PhysAddr, order: u32) {
        if let Err(e) = free_pages(pa, order) {
            crate::println!("memory: cannot free pa={pa:#x} order={order}: {e:?}");
        }
    }
    fn altmap_free(&mut self, pa: PhysAddr, size: u64) {
        teardown::check_free(pa, size);
    }
}

/// Hand what memblock still holds to the buddy allocator (NORMAL zone), retire memblock, and
/// mark the boot sections online. From now on [`alloc_pages`] uses the buddy.
pub fn init_page_allocator() {
    let mut alloc = PageAlloc::new(KernelMemmap, G.max_order());
    for f in memblock::take_all() {
        let (s, e) = (
            align_up(f.base, PAGE_SIZE) >> PAGE_SHIFT,
            align_down(f.end(), PAGE_SIZE) >> PAGE_SHIFT,
        );
        if e > s {
            if let Err(e) = alloc.online_range(mm::page::ZoneId::Normal, 0, s, e - s) {
                crate::println!("memory: cannot free boot range {:#x}-{:#x}: {e:?}", f.base, f.end());
            }
        }
    }
    for (nr, _) in sparse().iter_with(state::EARLY) {
        sparse().set(nr, state::ONLINE);
    }
    *PAGE_ALLOC.lock() = Some(alloc);
    BUDDY_READY.store(true, Ordering::Release);
}
