//! The kernel's page allocator: the buddy allocator (`mm::buddy`) whose state lives in the
//! memmap, after memblock at boot; and deferred `struct page` initialisation
//! (`memmap_init=deferred`, docs/deferred-init.md): what is left of it runs on idle CPUs
//! ([`deferred_init_idle`], registered as idle work in `kernel::deferred`).

use crate::{
    boot::layout::{G, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::memblock::{self, align_down, align_up},
    kernel::mem::memmap::{sparse, KernelMemmap},
    kernel::mem::teardown,
    kernel::sync::IrqSafeLock,
};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm::{
    buddy::{AllocKind, BuddyError, MemmapInit, PageAlloc, Violation, ZoneCensus},
    page::{Memmap, Page, ZoneId},
    pgtable::PhysAddr,
    sparse::state,
    vmemmap::PageSource,
};

static PAGE_ALLOC: IrqSafeLock<Option<PageAlloc<KernelMemmap>>> = IrqSafeLock::new("page_alloc", None);
static BUDDY_READY: AtomicBool = AtomicBool::new(false);
/// `memmap_init=deferred` (the default) is in force: boot and hot-added memory leave their
/// `struct page`s to be written when first needed.
static DEFERRED_MODE: AtomicBool = AtomicBool::new(true);
/// Test build: fill deferred memmap with `Page::POISON` (`memmap_poison=off` turns it off).
static POISON_DEFERRED: AtomicBool = AtomicBool::new(mm::page::POISON_CHECKS);
/// Deferred memory may be on a zone's list: idle CPUs have work ([`deferred_init_idle`]).
static DEFERRED_PENDING: AtomicBool = AtomicBool::new(false);
/// Counter value before which idle CPUs leave deferred memory alone ([`hotplug_busy`]).
static BACKGROUND_AFTER: AtomicU64 = AtomicU64::new(0);

/// The memmap initialisation mode (`memmap_init=`).
pub fn memmap_init() -> MemmapInit {
    if DEFERRED_MODE.load(Ordering::Relaxed) {
        MemmapInit::Deferred
    } else {
        MemmapInit::Eager
    }
}

/// Set the memmap initialisation mode and the test build's poisoning (from the command line,
/// before the boot memmap is populated).
pub fn set_memmap_init(mode: MemmapInit, poison: Option<bool>) {
    DEFERRED_MODE.store(mode == MemmapInit::Deferred, Ordering::Relaxed);
    if let Some(on) = poison {
        POISON_DEFERRED.store(on && mm::page::POISON_CHECKS, Ordering::Relaxed);
    }
}

/// Whether deferred memmap is filled with `Page::POISON` (test build).
pub fn poison_deferred() -> bool {
    POISON_DEFERRED.load(Ordering::Relaxed)
}

/// Fill the memmap of `[pfn, pfn + nr)` with `Page::POISON` (test build, deferred memory), so
/// a read of an uninitialised struct page trips the allocator's poison assertions.
///
/// # Safety
/// As [`crate::kernel::mem::memmap::init_struct_pages`]: populated memmap nobody else uses.
pub unsafe fn poison_memmap(pfn: u64, nr: u64) {
    if poison_deferred() {
        // SAFETY: the caller's contract is `Memmap::init_pages`' contract.
        unsafe { KernelMemmap.init_pages(pfn, nr, Page::POISON) };
    }
}

/// Deferred memory went onto a zone's list: wake the idle CPUs to initialise it.
pub fn deferred_work_added() {
    DEFERRED_PENDING.store(true, Ordering::Release);
    // During a hotplug operation the idle CPUs would only go back to sleep: they look again at
    // a timer tick once it is over ([`hotplug_busy`]), and a wake-up per onlined block costs
    // the onlining CPU an SGI each.
    if mm::buddy::idle_may_take(arch::cpu::counter(), BACKGROUND_AFTER.load(Ordering::Acquire)) {
        crate::drivers::gic::send_sgi_to_others(crate::drivers::gic::SGI_WAKE);
    }
}

/// Whether idle CPUs have background `struct page` initialisation to do.
fn deferred_init_pending() -> bool {
    DEFERRED_PENDING.load(Ordering::Acquire) && BUDDY_READY.load(Ordering::Acquire)
}

/// A hotplug operation starts (`busy`) or ends: background initialisation stays off during it
/// and for one timer tick after it, so a run of operations (a script onlining block after block,
/// a DIMM's auto-online, the bench) is not slowed by idle CPUs taking chunks in between. They
/// compete for the allocator lock and, under TCG, for the host's cores: with a second vCPU
/// initialising in the background, onlining 256 GiB on 4K took 1.5× as long per block as
/// onlining 1 GiB. Idle CPUs look again at their next timer tick.
pub fn hotplug_busy(busy: bool) {
    let tick = arch::cpu::counter_freq() / crate::drivers::timer::HZ;
    let after = mm::buddy::background_after(busy, arch::cpu::counter(), tick);
    BACKGROUND_AFTER.store(after, Ordering::Release);
}

/// One step of background `struct page` initialisation for an idle CPU (thread context,
/// interrupts enabled): one max-order chunk, with the allocator lock held only to take it and
/// to hand it over, unless a hotplug operation is running or just ended ([`hotplug_busy`]).
/// Returns whether there was work (the caller then polls again instead of sleeping).
pub fn deferred_init_idle() -> bool {
    if !mm::buddy::idle_may_take(arch::cpu::counter(), BACKGROUND_AFTER.load(Ordering::Acquire)) {
        return false;
    }
    deferred_init_now()
}

/// One step of deferred `struct page` initialisation now, hotplug or not (`meminfo settle`,
/// the bench's completion time): as [`deferred_init_idle`].
pub fn deferred_init_now() -> bool {
    if !deferred_init_pending() {
        return false;
    }
    let n = mm::buddy::deferred_init_step(&KernelMemmap, 1, |f| with_page_alloc(|a| f(a)));
    if n == 0 {
        // Nothing left to take (chunks still in flight are another CPU's to finish). Look
        // again after clearing the flag: an online that listed memory before the clear would
        // otherwise have its wake-up lost.
        DEFERRED_PENDING.store(false, Ordering::SeqCst);
        if with_page_alloc(|a| {
            ZoneId::ALL
                .iter()
                .any(|&z| a.deferred_ranges(z).iter().any(|r| !r.isolated))
        }) {
            DEFERRED_PENDING.store(true, Ordering::SeqCst);
        }
    }
    n > 0
}

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

/// Finish background initialisation now: work on it on this CPU until nothing is left, then
/// wait for the chunks other CPUs hold (`meminfo settle`; tests that need quiet CPUs, since a
/// busy CPU's own accesses can evict TLB entries the test means to find).
pub fn deferred_init_complete() {
    while deferred_init_now() {}
    while deferred_in_flight() {
        core::hint::spin_loop();
    }
}

/// Whether idle CPUs hold deferred chunks they have not handed over yet (free memory the
/// allocator cannot give out until they do).
pub fn deferred_in_flight() -> bool {
    with_page_alloc(|a| a.deferred_in_flight().next().is_some())
}

/// Test build: take one deferred chunk as an idle CPU does ([`mm::buddy::deferred_init_step`]'s
/// first step); it is in flight until [`deferred_hand_back`].
#[cfg(feature = "ktest")]
pub fn deferred_take_one() -> Option<mm::buddy::DeferredChunk> {
    with_page_alloc(|a| a.deferred_take())
}

/// Test build: initialise a chunk from [`deferred_take_one`] outside the allocator lock and hand
/// it over, as an idle CPU does; returns its pages.
#[cfg(feature = "ktest")]
pub fn deferred_hand_back(c: mm::buddy::DeferredChunk) -> Result<u64, BuddyError> {
    c.init(&KernelMemmap);
    with_page_alloc(|a| a.deferred_finish(c))
}

/// `f` under the allocator lock; when it fails while idle CPUs are initialising deferred
/// chunks (free memory, just not handed over yet), wait for them and try again, so an
/// allocation never fails because background initialisation holds the memory it needs.
pub fn with_page_alloc_waiting<R, E>(f: impl FnMut(&mut PageAlloc<KernelMemmap>) -> Result<R, E>) -> Result<R, E> {
    mm::buddy::wait_for_chunks(|g| with_page_alloc(|a| g(a)), f, core::hint::spin_loop)
}

/// Allocate 2^order contiguous, naturally aligned pages for the kernel; returns the PA.
pub fn alloc_pages(order: u32) -> Option<u64> {
    if !BUDDY_READY.load(Ordering::Acquire) {
        let size = PAGE_SIZE << order;
        return memblock::alloc(size, size);
    }
    let nid = crate::kernel::numa::this_node();
    with_page_alloc_waiting(|a| a.alloc_node(order, AllocKind::Kernel, nid).ok_or(()))
        .ok()
        .map(|pfn| pfn << PAGE_SHIFT)
}

/// Free pages from [`alloc_pages`]. In the test build the teardown checker first verifies no
/// cleared-but-not-invalidated translation still points at them.
pub fn free_pages(pa: u64, order: u32) -> Result<(), BuddyError> {
    teardown::check_free(pa, PAGE_SIZE << order);
    with_page_alloc(|a| a.free(pa >> PAGE_SHIFT, order))
}

/// Free pages (all zones), deferred ones included: they are free by definition, and counting
/// them keeps the figure independent of how far background initialisation got.
pub fn free_page_count() -> u64 {
    with_page_alloc(|a| ZoneId::ALL.iter().map(|&z| a.counters(z).available()).sum())
}

/// Memmap backing and tables from the buddy (hot paths after boot).
pub struct BuddySource;

impl PageSource for BuddySource {
    fn alloc_pages(&mut self, order: u32) -> Option<PhysAddr> {
        if super::fault::fails(super::fault::Fault::Backing) {
            return None;
        }
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
///
/// `memmap_init=deferred`: the boot memmap was populated but not written
/// ([`crate::kernel::mem::vmemmap::init_memmap`]); here the struct pages of what the kernel
/// uses (image, memmap, early tables, DT reservations, holes) are written, and the
/// pageblock-aligned insides of the free ranges are deferred: they go onto the zone's list
/// without being touched, for idle CPUs and the allocator to initialise when needed.
pub fn init_page_allocator() {
    let mut alloc = PageAlloc::new(KernelMemmap, G.max_order());
    alloc.set_distances(crate::kernel::numa::distances());
    let free: Vec<(u64, u64)> = memblock::take_all()
        .iter()
        .map(|f| {
            (
                align_up(f.base, PAGE_SIZE) >> PAGE_SHIFT,
                align_down(f.end(), PAGE_SIZE) >> PAGE_SHIFT,
            )
        })
        .filter(|&(s, e)| e > s)
        .collect();
    if memmap_init() == MemmapInit::Deferred {
        let max_pfn = free.iter().map(|&(_, e)| e).max().unwrap_or(0);
        match alloc.enable_deferred(G, max_pfn) {
            Ok(()) => defer_boot_memmap(&mut alloc, &free),
            Err(e) => {
                crate::println!("memmap: deferred init unavailable ({e}); initialising eagerly");
                init_boot_memmap(|_| Vec::new());
                DEFERRED_MODE.store(false, Ordering::Relaxed);
            }
        }
    }
    for &(s, e) in &free {
        let nid = crate::kernel::numa::boot_node_of(s << PAGE_SHIFT);
        if let Err(err) = alloc.online_range(ZoneId::Normal, nid, s, e - s) {
            crate::println!("memory: cannot free boot pfns {s:#x}-{e:#x}: {err:?}");
        }
    }
    for (nr, _) in sparse().iter_with(state::EARLY) {
        sparse().set(nr, state::ONLINE);
    }
    *PAGE_ALLOC.lock() = Some(alloc);
    BUDDY_READY.store(true, Ordering::Release);
    if memmap_init() == MemmapInit::Deferred {
        match crate::kernel::deferred::register_idle(deferred_init_idle) {
            Ok(()) => DEFERRED_PENDING.store(true, Ordering::Release),
            // Allocations still initialise what they need; nothing runs in the background.
            Err(e) => crate::println!("memmap: no background initialisation: {e:?}"),
        }
    }
}

/// Write the boot sections' struct pages (reserved, block = section) except the ranges
/// `deferred(section range)` names, which are left as they are.
fn init_boot_memmap(mut deferred: impl FnMut((u64, u64)) -> Vec<(u64, u64)>) {
    let pps = G.pages_per_section();
    for (nr, _) in sparse().iter_with(state::EARLY) {
        let (s0, e0) = (sparse().section_nr_to_pfn(nr), sparse().section_nr_to_pfn(nr) + pps);
        let mut p = s0;
        for (s, e) in deferred((s0, e0)) {
            // SAFETY: the boot memmap of this section is populated and nothing reads it before
            // the page allocator exists (this function runs while it is being built).
            unsafe { crate::kernel::mem::memmap::init_struct_pages(p, s - p, nr as u32, 0) };
            p = e;
        }
        // SAFETY: as above.
        unsafe { crate::kernel::mem::memmap::init_struct_pages(p, e0 - p, nr as u32, 0) };
    }
}

/// `memmap_init=deferred` at boot: the pageblock-aligned insides of the free ranges are
/// deferred, every other boot struct page is written now.
fn defer_boot_memmap(alloc: &mut PageAlloc<KernelMemmap>, free: &[(u64, u64)]) {
    let pb = 1u64 << G.pageblock_order();
    init_boot_memmap(|(s0, e0)| {
        let mut runs = Vec::new();
        for &(s, e) in free {
            let (s, e) = (align_up(s.max(s0), pb), align_down(e.min(e0), pb));
            if s < e && alloc.defer_memmap(s, e - s).is_ok() {
                runs.push((s, e));
            }
        }
        runs
    });
}
