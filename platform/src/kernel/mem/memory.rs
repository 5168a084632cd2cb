//! Physical memory: memblock at boot, the sparse model and its memmap (populated through
//! `vmemmap_populate`), the buddy page allocator whose state lives in the memmap, the kernel
//! page table (TTBR1) with the linear map and `ioremap`, and the kernel heap.

use crate::{
    boot::dtb::Range,
    boot::early,
    boot::layout::{self, IOREMAP_SIZE, IOREMAP_START, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::memblock::Memblock,
    kernel::sync::IrqSafeLock,
};
use alloc::vec::Vec;
use arch::descriptor::Attrs;
use buddy_system_allocator::LockedHeap;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm::{
    buddy::{AllocKind, BuddyError, PageAlloc, Violation, ZoneCensus},
    page::{Memmap, Page},
    pgtable::{MapError, MapFlags, PageTable, PhysAddr, TableAlloc},
    sparse::{state, Sparse, MAX_PHYSMEM_BITS},
    vmemmap::{PageSource, PopulateStats, Vmemmap, VmemmapError},
};

type Cfg = crate::config::Cfg;
const G: mm::Geometry = layout::G;

// ---------------------------------------------------------------------------------------------
// Heap

/// Kernel heap. Starts on a bss region, grows by `HEAP_GROW_BYTES` from the page allocator.
/// Not IRQ-safe: interrupt handlers must not allocate.
#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();
const HEAP_BOOT_BYTES: usize = 512 << 10;
const HEAP_GROW_BYTES: u64 = 8 << 20;
#[repr(C, align(4096))]
struct HeapBoot([u8; HEAP_BOOT_BYTES]);
static mut HEAP_BOOT: HeapBoot = HeapBoot([0; HEAP_BOOT_BYTES]);

/// Start the heap on its boot region (before anything allocates).
pub fn init_heap() {
    let p = core::ptr::addr_of_mut!(HEAP_BOOT) as usize;
    // SAFETY: HEAP_BOOT is used by nothing else, and is handed to the heap exactly once.
    unsafe { HEAP.lock().init(p, HEAP_BOOT_BYTES) };
}

/// (used, total) bytes of the heap.
pub fn heap_stats() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}

// ---------------------------------------------------------------------------------------------
// Accounting shown by `meminfo`

pub static RAM_PAGES: AtomicU64 = AtomicU64::new(0);
/// Page-table pages of the kernel page table (TTBR1), the early pool included.
pub static PT_PAGES: AtomicU64 = AtomicU64::new(0);
/// Bytes of memmap populated (struct pages backed by memory).
pub static MEMMAP_BYTES: AtomicU64 = AtomicU64::new(0);
/// Of those, backed by the memory they describe (altmap).
pub static MEMMAP_SELF_HOSTED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Guest cycles spent populating and initialising the boot memmap.
pub static BOOT_MEMMAP_CYCLES: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------------------------
// Sparse model, memmap, buddy

static SPARSE: spin::Once<Sparse> = spin::Once::new();

pub fn sparse() -> &'static Sparse {
    SPARSE.get().expect("sparse model initialised at boot")
}

/// The memmap in the vmemmap region: `pfn_to_page(pfn) = VMEMMAP_START + 64 * pfn`.
pub struct KernelMemmap;

pub const VMEMMAP: mm::page::Vmemmap = mm::page::Vmemmap {
    base: layout::VMEMMAP_START,
};

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

pub static PAGE_ALLOC: IrqSafeLock<Option<PageAlloc<KernelMemmap>>> = IrqSafeLock::new(None);
static BUDDY_READY: AtomicBool = AtomicBool::new(false);
static MEMBLOCK: IrqSafeLock<Memblock> = IrqSafeLock::new(Memblock::new());

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
        return MEMBLOCK.lock().alloc(size, size);
    }
    with_page_alloc(|a| a.alloc(order, AllocKind::Kernel)).map(|pfn| pfn << PAGE_SHIFT)
}

/// Free pages from [`alloc_pages`]. In the test build the teardown checker first verifies no
/// cleared-but-not-invalidated translation still points at them.
pub fn free_pages(pa: u64, order: u32) -> Result<(), BuddyError> {
    crate::kernel::mem::teardown::check_free(pa, PAGE_SIZE << order);
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
        crate::kernel::mem::teardown::check_free(pa, size);
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel page table

/// Where kernel page-table pages come from: the early pool (in the image) first, then
/// memblock, then the buddy. Tables are reached through the image mapping or the linear map.
pub struct KernelTables;

impl TableAlloc for KernelTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let pa = match early::pool_alloc() {
            Some(pa) => pa,
            None => {
                let pa = alloc_pages(0)?;
                // SAFETY: a fresh page, ours, reached through the linear map.
                unsafe { core::ptr::write_bytes(layout::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
                pa
            }
        };
        PT_PAGES.fetch_add(1, Ordering::Relaxed);
        Some(pa)
    }

    fn free_table(&mut self, pa: PhysAddr) {
        PT_PAGES.fetch_sub(1, Ordering::Relaxed);
        if in_early_pool(pa) {
            crate::kernel::mem::teardown::check_free(pa, PAGE_SIZE);
        } else if let Err(e) = free_pages(pa, 0) {
            crate::println!("memory: cannot free table page pa={pa:#x}: {e:?}");
        }
    }

    fn table_ptr(&self, pa: PhysAddr) -> *mut u64 {
        if in_early_pool(pa) {
            pa.wrapping_add(layout::kimage_voffset()) as *mut u64
        } else {
            layout::phys_to_virt(pa) as *mut u64
        }
    }

    fn made_valid(&mut self, m: arch::tlb::Mapping) {
        crate::kernel::mem::teardown::made_valid(m);
    }

    fn published(&mut self) {
        crate::kernel::mem::teardown::published();
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
///
/// Needs memblock initialised: the early pool only covers the first piece (up to the first
/// 1 GiB boundary of the lowest range); every later table comes from memblock, limited to RAM
/// the linear map already covers (a table must be reachable through the linear map before the
/// call that uses it). Pieces go lowest first, so the covered RAM is always a prefix and the
/// limit is its end. `ram` must lie within the linear map's reach ([`clip_to_linear`]).
pub fn map_linear(ram: &[Range]) -> Result<(), MapError> {
    const FIRST_PIECE: u64 = 1 << 30;
    let mut sorted = ram.to_vec();
    sorted.sort_by_key(|r| r.base);
    MEMBLOCK.lock().set_limit(0);
    let mut first = true;
    for r in sorted {
        let start = align_up(r.base, PAGE_SIZE);
        let end = align_down(r.end(), PAGE_SIZE).min(layout::LINEAR_SIZE);
        if end <= start {
            continue;
        }
        let mut pieces = [(start, end), (end, end)];
        if first {
            let cut = align_up(start + 1, FIRST_PIECE).min(end);
            pieces = [(start, cut), (cut, end)];
            first = false;
        }
        for (s, e) in pieces {
            if e <= s {
                continue;
            }
            with_kernel_pt(|pt, tables| {
                pt.map(
                    tables,
                    layout::phys_to_virt(s),
                    s,
                    e - s,
                    Attrs::NORMAL_RW,
                    MapFlags::LARGEST,
                )
            })?;
            MEMBLOCK.lock().set_limit(e);
        }
    }
    Ok(())
}

/// RAM the linear map can reach (PA below `2^(VA-1)`), and how many bytes lie beyond it
/// (left unused, like Linux does with memory outside the linear region).
pub fn clip_to_linear(ram: &[Range]) -> (alloc::vec::Vec<Range>, u64) {
    let mut kept = alloc::vec::Vec::new();
    let mut dropped = 0;
    for r in ram {
        let end = r.end().min(layout::LINEAR_SIZE);
        if end > r.base {
            kept.push(Range {
                base: r.base,
                size: end - r.base,
            });
        }
        dropped += r.end() - end.max(r.base);
    }
    (kept, dropped)
}

static IOREMAP_NEXT: AtomicU64 = AtomicU64::new(IOREMAP_START);

/// Map device registers at `[pa, pa + size)` into the ioremap window; returns the VA of `pa`.
pub fn ioremap(pa: u64, size: u64) -> Result<u64, MapError> {
    let base = align_down(pa, PAGE_SIZE);
    let len = align_up(pa + size, PAGE_SIZE) - base;
    let va = IOREMAP_NEXT.fetch_add(len, Ordering::Relaxed);
    if va + len > IOREMAP_START + IOREMAP_SIZE {
        return Err(MapError::OutOfRange);
    }
    with_kernel_pt(|pt, tables| pt.map(tables, va, base, len, Attrs::DEVICE_RW, MapFlags::PAGES))?;
    Ok(va + (pa - base))
}

pub const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}
pub const fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}

// ---------------------------------------------------------------------------------------------
// Boot

/// Memblock: all RAM minus the image, the DTB and DT reservations.
pub fn init_memblock(ram: &[Range], reserved: &[Range]) {
    MEMBLOCK.lock().init(ram, reserved);
    let mut total = 0;
    for r in ram {
        total += (align_down(r.end(), PAGE_SIZE) - align_up(r.base, PAGE_SIZE)) >> PAGE_SHIFT;
    }
    RAM_PAGES.store(total, Ordering::Relaxed);
    PT_PAGES.store(early::EARLY_POOL_USED.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
}

/// Boot memmap backing from memblock.
struct MemblockSource;

impl PageSource for MemblockSource {
    fn alloc_pages(&mut self, order: u32) -> Option<PhysAddr> {
        let size = PAGE_SIZE << order;
        MEMBLOCK.lock().alloc(size, size)
    }
    fn free_pages(&mut self, _pa: PhysAddr, _order: u32) {
        // Only reached when a boot populate fails half-way; the boot then stops anyway.
    }
}

/// Result of populating the boot memmap.
pub struct BootMemmap {
    pub sections: u64,
    pub stats: PopulateStats,
    pub cycles: u64,
}

/// Populate the memmap of every section that holds boot RAM (whole sections, like Linux's
/// early sections), initialise every `struct page` as reserved, and mark the sections
/// present + early + has-memmap.
pub fn init_memmap(ram: &[Range]) -> Result<BootMemmap, VmemmapError> {
    let t0 = arch::cpu::counter();
    let max_pa = layout::LINEAR_SIZE.min(1 << MAX_PHYSMEM_BITS);
    let sparse = SPARSE.call_once(|| Sparse::new(G, max_pa));
    let mut total = PopulateStats::default();
    let mut sections = 0;
    for r in ram {
        for nr in sparse.sections_of(r.base, r.size) {
            if sparse.state(nr) & state::PRESENT != 0 {
                continue;
            }
            let pfn = sparse.section_nr_to_pfn(nr);
            let start = VMEMMAP.pfn_to_page(pfn);
            let end = start + G.memmap_per_section();
            let st = with_kernel_pt(|pt, tables| {
                Vmemmap {
                    pt,
                    tables,
                    source: &mut MemblockSource,
                    tlb: &mut crate::kernel::mem::teardown::KernelTlb,
                    region: vmemmap_region(),
                }
                .populate(start, end, None)
            })?;
            init_struct_pages(pfn, G.pages_per_section(), nr as u32, 0);
            sparse.set(nr, state::PRESENT | state::EARLY | state::HAS_MEMMAP);
            total.blocks += st.blocks;
            total.pages += st.pages;
            total.cont_pages += st.cont_pages;
            total.bytes += st.bytes;
            sections += 1;
        }
    }
    MEMMAP_BYTES.fetch_add(total.bytes, Ordering::Relaxed);
    let cycles = arch::cpu::counter() - t0;
    BOOT_MEMMAP_CYCLES.store(cycles, Ordering::Relaxed);
    Ok(BootMemmap {
        sections,
        stats: total,
        cycles,
    })
}

/// Run `f` on the kernel's vmemmap (its page table, table allocator, the buddy as memmap
/// backing, broadcast TLB maintenance) — the post-boot way to populate or free memmap.
pub fn with_vmemmap<R>(
    f: impl FnOnce(&mut Vmemmap<'_, Cfg, KernelTables, BuddySource, crate::kernel::mem::teardown::KernelTlb>) -> R,
) -> R {
    with_kernel_pt(|pt, tables| {
        f(&mut Vmemmap {
            pt,
            tables,
            source: &mut BuddySource,
            tlb: &mut crate::kernel::mem::teardown::KernelTlb,
            region: vmemmap_region(),
        })
    })
}

pub fn vmemmap_region() -> (u64, u64) {
    (layout::VMEMMAP_START, layout::VMEMMAP_START + layout::VMEMMAP_SIZE)
}

/// Every `struct page` of `[pfn, pfn + n)` to its initial state (reserved + `extra_flags`,
/// block id): one pass of 64-byte stores over the memmap.
pub fn init_struct_pages(pfn: u64, n: u64, block: u32, extra_flags: u32) {
    let first = VMEMMAP.pfn_to_page(pfn) as *mut Page;
    let page = Page {
        block,
        flags: Page::INIT.flags | extra_flags,
        ..Page::INIT
    };
    for i in 0..n as usize {
        // SAFETY: the memmap of these PFNs was just populated (mapped RW); nobody else uses it
        // before its section is marked as having a memmap.
        unsafe { first.add(i).write(page) };
    }
}

/// Hand what memblock still holds to the buddy allocator (NORMAL zone), retire memblock,
/// and grow the heap from the buddy.
pub fn init_page_allocator() {
    let mut alloc = PageAlloc::new(KernelMemmap, G.max_order());
    let free = MEMBLOCK.lock().take_all();
    for f in free {
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

    // Grow the heap in the largest blocks the buddy has (4 MiB on 4K, 32 MiB on 16K, ...).
    let order = (HEAP_GROW_BYTES >> PAGE_SHIFT).trailing_zeros().min(G.max_order());
    let chunk = PAGE_SIZE << order;
    for _ in 0..HEAP_GROW_BYTES.div_ceil(chunk) {
        let Some(pa) = alloc_pages(order) else { break };
        let va = layout::phys_to_virt(pa) as usize;
        // SAFETY: these pages were just taken from the page allocator and are never freed.
        unsafe { HEAP.lock().add_to_heap(va, va + chunk as usize) };
    }
}
