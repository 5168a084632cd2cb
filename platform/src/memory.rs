//! Boot memory: the kernel page table (TTBR1), the linear map of all RAM, `ioremap`, the
//! physical page allocator for boot RAM and the kernel heap.

use crate::{
    dtb::Range,
    early,
    layout::{self, IOREMAP_SIZE, IOREMAP_START, PAGE_SHIFT, PAGE_SIZE},
    sync::IrqSafeLock,
};
use alloc::vec::Vec;
use arch::descriptor::{Attrs, MemType, Perm};
use buddy_system_allocator::{FrameAllocator, LockedHeap};
use core::sync::atomic::{AtomicU64, Ordering};
use mm::pgtable::{MapError, MapFlags, PageTable, PhysAddr, TableAlloc};

type Cfg = crate::config::Cfg;

/// Kernel heap. Starts on a bss region, grows by `HEAP_GROW_BYTES` from the page allocator.
/// Not IRQ-safe: interrupt handlers must not allocate.
#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();
const HEAP_BOOT_BYTES: usize = 512 << 10;
const HEAP_GROW_BYTES: u64 = 8 << 20;
#[repr(C, align(4096))]
struct HeapBoot([u8; HEAP_BOOT_BYTES]);
static mut HEAP_BOOT: HeapBoot = HeapBoot([0; HEAP_BOOT_BYTES]);

/// Physical pages of boot RAM (PFNs). Issue #3 moves this state into the memmap.
static FRAMES: IrqSafeLock<FrameAllocator<32>> = IrqSafeLock::new(FrameAllocator::new());

/// Accounting shown by `meminfo`.
pub static RAM_PAGES: AtomicU64 = AtomicU64::new(0);
pub static FREE_PAGES: AtomicU64 = AtomicU64::new(0);
pub static PT_PAGES: AtomicU64 = AtomicU64::new(0);
static IOREMAP_NEXT: AtomicU64 = AtomicU64::new(IOREMAP_START);
static PAGE_ALLOC_READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Where kernel page-table pages come from: the early pool (in the image) until the page
/// allocator exists, then the page allocator. Tables are reached through the image mapping
/// or the linear map.
pub struct KernelTables;

impl TableAlloc for KernelTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let pa = if PAGE_ALLOC_READY.load(Ordering::Acquire) {
            let pa = alloc_pages(0)?;
            // SAFETY: a fresh page from the allocator, mapped by the linear map.
            unsafe { core::ptr::write_bytes(layout::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
            pa
        } else {
            early::pool_alloc()?
        };
        PT_PAGES.fetch_add(1, Ordering::Relaxed);
        Some(pa)
    }

    fn free_table(&mut self, pa: PhysAddr) {
        PT_PAGES.fetch_sub(1, Ordering::Relaxed);
        if !in_early_pool(pa) {
            free_pages(pa, 0);
        }
    }

    fn table_ptr(&self, pa: PhysAddr) -> *mut u64 {
        if in_early_pool(pa) {
            pa.wrapping_add(layout::kimage_voffset()) as *mut u64
        } else {
            layout::phys_to_virt(pa) as *mut u64
        }
    }
}

fn in_early_pool(pa: PhysAddr) -> bool {
    let base = early::EARLY_POOL_PA.load(Ordering::Relaxed);
    (base..base + (early::POOL_TABLES as u64) * PAGE_SIZE).contains(&pa)
}

/// The kernel's TTBR1 page table (the one the boot code built and the MMU uses).
pub static KERNEL_PT: IrqSafeLock<Option<PageTable<Cfg>>> = IrqSafeLock::new(None);

pub fn with_kernel_pt<R>(f: impl FnOnce(&mut PageTable<Cfg>, &mut KernelTables) -> R) -> R {
    let mut pt = KERNEL_PT.lock();
    let pt = pt.as_mut().expect("kernel page table installed at boot");
    f(pt, &mut KernelTables)
}

/// Map every RAM range into the linear map (RW, never executable, blocks where aligned).
pub fn map_linear(ram: &[Range]) -> Result<(), MapError> {
    let attrs = Attrs { mem: MemType::Normal, perm: Perm::ReadWrite };
    with_kernel_pt(|pt, tables| {
        for r in ram {
            let (start, end) = (align_up(r.base, PAGE_SIZE), align_down(r.end(), PAGE_SIZE));
            if end <= start || end > layout::LINEAR_SIZE {
                continue;
            }
            pt.map(tables, layout::phys_to_virt(start), start, end - start, attrs, MapFlags { block: true, cont: true })?;
        }
        Ok(())
    })
}

/// Map device registers at `[pa, pa + size)` into the ioremap window; returns the VA of `pa`.
pub fn ioremap(pa: u64, size: u64) -> Result<u64, MapError> {
    let base = align_down(pa, PAGE_SIZE);
    let len = align_up(pa + size, PAGE_SIZE) - base;
    let va = IOREMAP_NEXT.fetch_add(len, Ordering::Relaxed);
    if va + len > IOREMAP_START + IOREMAP_SIZE {
        return Err(MapError::OutOfRange);
    }
    let attrs = Attrs { mem: MemType::Device, perm: Perm::ReadWrite };
    with_kernel_pt(|pt, tables| pt.map(tables, va, base, len, attrs, MapFlags { block: false, cont: false }))?;
    Ok(va + (pa - base))
}

pub const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}
pub const fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}

/// Start the heap on its boot region (before anything allocates).
pub fn init_heap() {
    let p = core::ptr::addr_of_mut!(HEAP_BOOT) as usize;
    // SAFETY: HEAP_BOOT is used by nothing else, and is handed to the heap exactly once.
    unsafe { HEAP.lock().init(p, HEAP_BOOT_BYTES) };
}

/// Hand boot RAM minus `reserved` to the page allocator, then grow the heap from it.
pub fn init_page_allocator(ram: &[Range], reserved: &[Range]) {
    let mut free: Vec<Range> = ram.to_vec();
    for r in reserved {
        free = free.into_iter().flat_map(|f| subtract(f, *r)).collect();
    }
    let mut frames = FRAMES.lock();
    let mut total = 0;
    for r in ram {
        total += (align_down(r.end(), PAGE_SIZE) - align_up(r.base, PAGE_SIZE)) >> PAGE_SHIFT;
    }
    let mut nfree = 0;
    for f in free {
        let (s, e) = (align_up(f.base, PAGE_SIZE) >> PAGE_SHIFT, align_down(f.end(), PAGE_SIZE) >> PAGE_SHIFT);
        if e > s {
            frames.add_frame(s as usize, e as usize);
            nfree += e - s;
        }
    }
    drop(frames);
    RAM_PAGES.store(total, Ordering::Relaxed);
    FREE_PAGES.store(nfree, Ordering::Relaxed);
    PT_PAGES.store(early::EARLY_POOL_USED.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
    PAGE_ALLOC_READY.store(true, Ordering::Release);

    let order = (HEAP_GROW_BYTES >> PAGE_SHIFT).trailing_zeros();
    if let Some(pa) = alloc_pages(order) {
        let va = layout::phys_to_virt(pa) as usize;
        // SAFETY: these pages were just taken from the page allocator and are never freed.
        unsafe { HEAP.lock().add_to_heap(va, va + HEAP_GROW_BYTES as usize) };
    }
}

/// `a` minus `b`: zero, one or two ranges.
fn subtract(a: Range, b: Range) -> impl Iterator<Item = Range> {
    let left = Range { base: a.base, size: b.base.min(a.end()).saturating_sub(a.base) };
    let rs = b.end().max(a.base);
    let right = Range { base: rs, size: a.end().saturating_sub(rs) };
    let overlap = b.base < a.end() && b.end() > a.base;
    let parts = if overlap { [Some(left), Some(right)] } else { [Some(a), None] };
    parts.into_iter().flatten().filter(|r| r.size > 0)
}

/// Allocate 2^order contiguous, naturally aligned pages; returns the PA.
pub fn alloc_pages(order: u32) -> Option<u64> {
    let pfn = FRAMES.lock().alloc(1 << order)?;
    FREE_PAGES.fetch_sub(1 << order, Ordering::Relaxed);
    Some((pfn as u64) << PAGE_SHIFT)
}

pub fn free_pages(pa: u64, order: u32) {
    FRAMES.lock().dealloc((pa >> PAGE_SHIFT) as usize, 1 << order);
    FREE_PAGES.fetch_add(1 << order, Ordering::Relaxed);
}

/// (used, total) bytes of the heap.
pub fn heap_stats() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}

#[cfg(test)]
mod tests {}
