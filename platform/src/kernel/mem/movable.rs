//! The movable window: movable pages that users reach at a fixed virtual address
//! (`layout::MOVABLE_START` + one page per handle), so that offline can migrate them under the
//! user's feet (`hotplug`'s offline path re-points the window entry). This is the safe API
//! workloads (`stress`) use: allocate a page mapped in the window, read and write it under the
//! handles lock (which migration holds too), free them all.
//!
//! Two ways to reach a page: under the handles lock ([`with_page`]: migration cannot run
//! meanwhile), or without any lock through an [`OwnedPage`], as a program touches its memory:
//! migration may then move the page under the access. The migrating CPU publishes the range it
//! is moving ([`migrate_window`]: the role of Linux's migration entries) before it clears the
//! window entry, and a CPU whose access faults there waits in the fault path ([`fault`]) until
//! the new frame is mapped, then retries the access: every write lands either in the old frame
//! before the clear (the broadcast TLBI and its DSB complete it before the copy) or in the new
//! frame after the remap, none is lost.
//!
//! Locking: the handles lock (IRQ-safe), then the kernel page table, then the allocator, as
//! migration takes them.

use crate::{
    boot::layout::{self, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::teardown::{self, KernelTlb},
    kernel::mem::{kernel_pt, page_alloc},
    kernel::sync::IrqSafeLock,
};
use alloc::collections::BTreeSet;
use core::sync::atomic::{fence, AtomicU64, Ordering};
use mm::migrate::{Handle, HandleError, Handles};
use mm::pgtable::{Attrs, MapFlags, PageTable};

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
/// if no allocation has that index (or an [`OwnedPage`]'s owner has it), `Some(None)` if its window VA faults (counted by the
/// caller, not fatal: a broken migration must show up as a failed check).
pub fn with_page<R>(i: usize, f: impl FnOnce(&mut [u64]) -> R) -> Option<Option<R>> {
    let h = Handle(i as u32);
    let handles = HANDLES.lock();
    if OWNED.lock().contains(&h.0) {
        return None;
    }
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

/// Free every allocation not owned by an [`OwnedPage`] (unmapped from the window first);
/// returns how many there were.
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
    let owned = OWNED.lock();
    for i in 0..handles.slot_count() {
        let h = Handle(i as u32);
        if owned.contains(&h.0) {
            // Its owner keeps using it: map it again (its table was kept).
            if let Some((pfn, _)) = handles.get(h) {
                let _ = kernel_pt::with_kernel_pt(|pt, t| {
                    pt.map(
                        t,
                        movable_va(h),
                        pfn << PAGE_SHIFT,
                        PAGE_SIZE,
                        Attrs::NORMAL_RW,
                        MapFlags::PAGES,
                    )
                });
            }
            continue;
        }
        let Some((pfn, order)) = handles.get(h) else { continue };
        teardown::check_free(pfn << PAGE_SHIFT, PAGE_SIZE << order);
        if page_alloc::with_page_alloc(|a| handles.free(a, h)).is_ok() {
            n += 1;
        }
    }
    n
}

/// The window range a migration is moving now (`[start, end)`; empty when none). One migration
/// runs at a time (under the handles lock), so one range is enough.
static MIGRATING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Faults that waited for a migration (shown by `torture`).
pub static MIGRATION_WAITS: AtomicU64 = AtomicU64::new(0);
/// Test build: hold every migration open between the clear and the copy until a CPU waits on
/// it, at most this long, so that a CPU writing the page meets it however its vCPU is
/// scheduled.
#[cfg(feature = "ktest")]
pub static MIGRATION_HOLD_US: AtomicU64 = AtomicU64::new(0);
/// CPUs waiting in the fault path for a migration now.
static WAITING: AtomicU64 = AtomicU64::new(0);

/// Move the window block at `va` (`size` bytes) to `dst_pa` with `copy` between the clear and
/// the remap ([`mm::migrate::move_window_block`]), with the range published for the fault path
/// for the whole move. The caller holds the handles lock.
pub fn migrate_window<C: mm::geometry::Config>(
    pt: &mut PageTable<C>,
    tables: &mut impl mm::pgtable::TableAlloc,
    va: u64,
    size: u64,
    dst_pa: u64,
    copy: impl FnOnce(),
) -> Result<(), mm::pgtable::MapError> {
    MIGRATING[1].store(va + size, Ordering::Relaxed);
    MIGRATING[0].store(va, Ordering::Relaxed);
    // The range is visible before the entry is cleared: a CPU that faults on the clear entry
    // finds it.
    fence(Ordering::SeqCst);
    let hold_then_copy = || {
        #[cfg(feature = "ktest")]
        {
            let hold = arch::cpu::counter_freq() * MIGRATION_HOLD_US.load(Ordering::Relaxed) / 1_000_000;
            let t0 = arch::cpu::counter();
            while arch::cpu::counter() - t0 < hold && WAITING.load(Ordering::Relaxed) == 0 {
                core::hint::spin_loop();
            }
        }
        copy()
    };
    let r = mm::migrate::move_window_block(pt, tables, &mut KernelTlb, va, size, dst_pa, hold_then_copy);
    // The remap is published (the engine's DSB) before the range is withdrawn.
    MIGRATING[0].store(0, Ordering::Release);
    MIGRATING[1].store(0, Ordering::Release);
    r
}

/// The fault path for the movable window: a fault at `far` that a migration explains waits for
/// it to end; `true` if the access should be retried (the VA is under migration, or mapped
/// again by the time we looked), `false` for a real fault.
pub fn fault(far: u64) -> bool {
    if !(layout::MOVABLE_START..layout::MOVABLE_START + layout::MOVABLE_SIZE).contains(&far) {
        return false;
    }
    // Mutant: the writer does not wait; its fault is taken for a real one.
    if arch::mutant::on(arch::mutant::Mutant::WriterDoesNotWait) {
        return false;
    }
    let under_migration = || {
        let (s, e) = (
            MIGRATING[0].load(Ordering::Acquire),
            MIGRATING[1].load(Ordering::Acquire),
        );
        s <= far && far < e
    };
    if under_migration() {
        WAITING.fetch_add(1, Ordering::Relaxed);
        while under_migration() {
            core::hint::spin_loop();
        }
        WAITING.fetch_sub(1, Ordering::Relaxed);
        MIGRATION_WAITS.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    // The migration ended between the fault and the look: the VA is mapped again.
    arch::mmu::hw_translate(far, true).is_ok()
}

/// Handles owned by an [`OwnedPage`] (`free_all` leaves them).
static OWNED: crate::kernel::sync::Mutex<BTreeSet<u32>> =
    crate::kernel::sync::Mutex::new("owned pages", BTreeSet::new());

/// A movable page its owner reads and writes through the window without a lock, while
/// offline may migrate it (the fault path waits out a migration). Only its owner frees it.
pub struct OwnedPage {
    h: Handle,
}

impl OwnedPage {
    /// A movable page in the window, zeroed.
    pub fn alloc() -> Result<OwnedPage, MovableError> {
        let h = alloc_page(|h, d| {
            d.fill(0);
            OWNED.lock().insert(h.0);
        })?;
        Ok(OwnedPage { h })
    }

    /// The page's frame now (migration changes it).
    #[cfg(feature = "ktest")]
    pub fn pfn(&self) -> Option<u64> {
        HANDLES.lock().get(self.h).map(|(pfn, _)| pfn)
    }

    /// Words in the page.
    pub fn words(&self) -> usize {
        (PAGE_SIZE / 8) as usize
    }

    fn word(&self, i: usize) -> *mut u64 {
        assert!(i < self.words(), "word {i} of a {}-word page", self.words());
        (movable_va(self.h) + i as u64 * 8) as *mut u64
    }

    /// Store word `i` (panics if out of the page).
    pub fn store(&self, i: usize, v: u64) {
        // SAFETY: in the page's window mapping, which this owner alone uses and which stays
        // mapped to the page's data (absent only during a migration, whose fault the fault
        // path waits out) until `free` consumes the owner.
        unsafe { self.word(i).write_volatile(v) }
    }

    /// Load word `i` (panics if out of the page).
    pub fn load(&self, i: usize) -> u64 {
        // SAFETY: as in `store`.
        unsafe { self.word(i).read_volatile() }
    }

    /// Word `i` of the page's frame as memory holds it, read through the linear map (not the
    /// window, whose translation this CPU may have cached): what a migration really kept.
    #[cfg(feature = "ktest")]
    pub fn load_frame(&self, i: usize) -> u64 {
        assert!(i < self.words(), "word {i} of a {}-word page", self.words());
        let handles = HANDLES.lock();
        let (pfn, _) = handles.get(self.h).expect("an owned page is live");
        let va = layout::phys_to_virt(pfn << PAGE_SHIFT) + i as u64 * 8;
        // SAFETY: a word of a live movable page of ours (inside it, aligned), reached through
        // the linear map; migration cannot move it while the handles lock is held.
        unsafe { (va as *const u64).read_volatile() }
    }

    /// Unmap and free the page.
    pub fn free(self) {
        let mut handles = HANDLES.lock();
        let va = movable_va(self.h);
        // Floor and ceiling are the page itself: the window's table stays.
        let unmapped =
            kernel_pt::with_kernel_pt(|pt, t| pt.unmap_within(t, &mut KernelTlb, va, PAGE_SIZE, va, va + PAGE_SIZE));
        OWNED.lock().remove(&self.h.0);
        let Some((pfn, order)) = handles.get(self.h) else {
            return;
        };
        if unmapped.is_ok() {
            teardown::check_free(pfn << PAGE_SHIFT, PAGE_SIZE << order);
            let _ = page_alloc::with_page_alloc(|a| handles.free(a, self.h));
        }
    }
}
