//! The movable window: movable pages that users reach at a fixed virtual address
//! (`layout::MOVABLE_START` + one page per handle), so that offline can migrate them under the
//! user's feet (`hotplug`'s offline path re-points the window entry). This is the safe API
//! workloads (`stress`) use: allocate a page mapped in the window, read and write it under the
//! handles lock (which migration holds too), free them all.
//!
//! Locking: the handles lock (IRQ-safe), then the kernel page table, then the allocator, as
//! migration takes them.

use crate::{
    boot::layout::{self, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::teardown::{self, KernelTlb},
    kernel::mem::{kernel_pt, page_alloc},
    kernel::sync::IrqSafeLock,
};
use mm::migrate::{Handle, HandleError, Handles};
use mm::pgtable::{Attrs, MapFlags};

/// Movable allocations; migration and data access both hold this lock.
pub static HANDLES: IrqSafeLock<Handles> = IrqSafeLock::new("handles", Handles::new());

/// The fixed window VA of a movable allocation.
pub fn movable_va(h: Handle) -> u64 {
    layout::MOVABLE_START + h.0 as u64 * PAGE_SIZE
}

/// Handles the window has room for (one page each).
const WINDOW_SLOTS: u64 = layout::MOVABLE_SIZE / PAGE_SIZE;

/// Why a movable page could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovableError {
    /// No free movable page.
    NoMemory,
    /// The handle table (kernel heap) cannot grow.
    NoBookkeeping,
    /// Every window slot is taken.
    WindowFull,
}

/// `f` on the window mapping of `h` (the caller holds the handles lock, so migration cannot
/// re-point it meanwhile).
fn with_window<R>(h: Handle, order: u32, f: impl FnOnce(&mut [u64]) -> R) -> R {
    let words = ((PAGE_SIZE << order) / 8) as usize;
    // SAFETY: the handle owns these pages and `alloc_page` mapped them at `movable_va(h)`;
    // migration cannot move them while the caller holds the handles lock.
    let data = unsafe { core::slice::from_raw_parts_mut(movable_va(h) as *mut u64, words) };
    f(data)
}

/// A movable page mapped at its window VA (its table exists since boot) and given to `init`,
/// all under the handles lock, so a concurrent [`with_page`] never sees it half-made.
pub fn alloc_page(init: impl FnOnce(Handle, &mut [u64])) -> Result<Handle, MovableError> {
    let mut handles = HANDLES.lock();
    let h = page_alloc::with_page_alloc_waiting(|a| handles.try_alloc(a, 0)).map_err(|e| match e {
        HandleError::NoMemory => MovableError::NoMemory,
        HandleError::NoBookkeeping => MovableError::NoBookkeeping,
    })?;
    let (pfn, _) = handles.get(h).expect("just allocated");
    let in_window = (h.0 as u64) < WINDOW_SLOTS;
    let mapped = in_window
        && kernel_pt::with_kernel_pt(|pt, t| {
            pt.map(
                t,
                movable_va(h),
                pfn << PAGE_SHIFT,
                PAGE_SIZE,
                Attrs::NORMAL_RW,
                MapFlags::PAGES,
            )
        })
        .is_ok();
    if !mapped {
        teardown::check_free(pfn << PAGE_SHIFT, PAGE_SIZE);
        let _ = page_alloc::with_page_alloc(|a| handles.free(a, h));
        return Err(if in_window {
            MovableError::NoMemory
        } else {
            MovableError::WindowFull
        });
    }
    with_window(h, 0, |d| init(h, d));
    Ok(h)
}

/// `f` on the data of allocation `i`, read through its window VA (any CPU may call it): `None`
/// if no allocation has that index, `Some(None)` if its window VA faults (counted by the
/// caller, not fatal: a broken migration must show up as a failed check).
pub fn with_page<R>(i: usize, f: impl FnOnce(&mut [u64]) -> R) -> Option<Option<R>> {
    let h = Handle(i as u32);
    let handles = HANDLES.lock();
    let (_, order) = handles.get(h)?;
    let va = movable_va(h);
    let mapped = (0..(1u64 << order)).all(|p| {
        matches!(
            arch::exception::probe_read(va + p * PAGE_SIZE),
            arch::exception::Probe::Value(_)
        )
    });
    Some(mapped.then(|| with_window(h, order, f)))
}

/// Allocation indices are below this.
pub fn slot_count() -> usize {
    HANDLES.lock().slot_count()
}

/// Pages of live allocations in `[pfn, pfn + nr)` (in-guest tests).
#[cfg(feature = "ktest")]
pub fn pages_in(pfn: u64, nr: u64) -> u64 {
    HANDLES
        .lock()
        .iter()
        .filter(|&(_, p, _)| (pfn..pfn + nr).contains(&p))
        .map(|(_, _, o)| 1u64 << o)
        .sum()
}

/// Pages migrated so far (offline, virtio-mem shrink).
pub fn migrated_pages() -> u64 {
    HANDLES.lock().migrated_pages
}

/// Free every allocation (unmapped from the window first); returns how many there were.
pub fn free_all() -> u64 {
    let mut handles = HANDLES.lock();
    let slots = (handles.slot_count() as u64).min(WINDOW_SLOTS);
    // Unmap the used part of the window in pieces that never cover a whole last-level table's
    // span (each span is cut one page before its end), so the window's table pages stay, with
    // one TLB flush per piece rather than per page.
    let span = PAGE_SIZE * (PAGE_SIZE / 8);
    let (mut va, end) = (layout::MOVABLE_START, layout::MOVABLE_START + slots * PAGE_SIZE);
    while va < end {
        let next_span = (va / span + 1) * span;
        let cut = if va < next_span - PAGE_SIZE {
            next_span - PAGE_SIZE
        } else {
            next_span
        };
        let to = cut.min(end);
        if let Err(e) = kernel_pt::with_kernel_pt(|pt, t| pt.unmap_within(t, &mut KernelTlb, va, to - va, va, to)) {
            crate::println!("movable: unmap of the window at {va:#x} failed: {e:?}");
            return 0;
        }
        va = to;
    }
    let mut n = 0;
    for i in 0..handles.slot_count() {
        let h = Handle(i as u32);
        let Some((pfn, order)) = handles.get(h) else { continue };
        teardown::check_free(pfn << PAGE_SHIFT, PAGE_SIZE << order);
        if page_alloc::with_page_alloc(|a| handles.free(a, h)).is_ok() {
            n += 1;
        }
    }
    n
}
