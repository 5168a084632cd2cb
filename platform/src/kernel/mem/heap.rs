//! The kernel heap (`#[global_allocator]`): starts on a bss region, grows from the page
//! allocator once it exists. Not IRQ-safe: interrupt handlers must not allocate (its lock is a
//! plain [`Mutex`] of class `heap`, which the test builds' lock checker refuses in interrupt
//! context).

use crate::{
    boot::layout::{self, G, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::page_alloc::alloc_pages,
    kernel::sync::Mutex,
};
use buddy_system_allocator::Heap;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

/// The buddy heap behind the kernel's lock type (so its lock has a class like every other).
struct KernelHeap(Mutex<Heap<32>>);

// SAFETY: `alloc` returns null or a block of `layout` from the heap, which never hands a
// block out twice; `dealloc` gives back exactly what `alloc` returned, with its layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            let mut heap = self.0.lock();
            // SAFETY: the caller's contract: `ptr` came from `alloc` with this `layout`.
            unsafe { heap.dealloc(p, layout) };
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new("heap", Heap::empty()));
const HEAP_BOOT_BYTES: usize = 512 << 10;
const HEAP_GROW_BYTES: u64 = 8 << 20;
#[repr(C, align(4096))]
struct HeapBoot([u8; HEAP_BOOT_BYTES]);
static mut HEAP_BOOT: HeapBoot = HeapBoot([0; HEAP_BOOT_BYTES]);
static STARTED: spin::Once<()> = spin::Once::new();

/// Start the heap on its boot region (before anything allocates). Later calls do nothing.
pub fn init_heap() {
    STARTED.call_once(|| {
        let p = core::ptr::addr_of_mut!(HEAP_BOOT) as usize;
        // SAFETY: HEAP_BOOT is named nowhere else, and `STARTED` hands it to the heap once.
        unsafe { HEAP.0.lock().init(p, HEAP_BOOT_BYTES) };
    });
}

/// Grow the heap by `HEAP_GROW_BYTES` from the page allocator, in the largest blocks the buddy
/// has (4 MiB on 4K, 32 MiB on 16K, ...). Those pages are the heap's for good.
pub fn grow_heap() {
    let order = (HEAP_GROW_BYTES >> PAGE_SHIFT).trailing_zeros().min(G.max_order());
    let chunk = PAGE_SIZE << order;
    for _ in 0..HEAP_GROW_BYTES.div_ceil(chunk) {
        let Some(pa) = alloc_pages(order) else { break };
        let va = layout::phys_to_virt(pa) as usize;
        // SAFETY: these pages were just taken from the page allocator, are reached through the
        // linear map and are never freed: nothing else uses them.
        unsafe { HEAP.0.lock().add_to_heap(va, va + chunk as usize) };
    }
}

/// (used, total) bytes of the heap.
pub fn heap_stats() -> (usize, usize) {
    let h = HEAP.0.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}
