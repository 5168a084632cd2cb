//! The kernel page table (TTBR1): its table pages, the linear map and `ioremap`.

use crate::{
    boot::dtb::Range,
    boot::early,
    boot::layout::{self, G, IOREMAP_SIZE, IOREMAP_START, PAGE_SIZE},
    kernel::mem::counters::PT_PAGES,
    kernel::mem::fault::{self, Fault},
    kernel::mem::memblock::{self, align_down, align_up},
    kernel::mem::page_alloc::{alloc_pages, free_pages},
    kernel::mem::teardown,
    kernel::sync::IrqSafeLock,
};
use alloc::vec::Vec;
use arch::descriptor::Attrs;
use core::sync::atomic::{AtomicU64, Ordering};
use mm::pgtable::{MapError, MapFlags, PageTable, PhysAddr, TableAlloc};

type Cfg = crate::config::Cfg;

/// Where kernel page-table pages come from: the early pool (in the image) first, then
/// memblock, then the buddy. Tables are reached through the image mapping or the linear map.
pub struct KernelTables;

// SAFETY: `alloc_table` hands out zeroed pages nobody else owns (the early pool's next page, or
// a fresh page from the page allocator, zeroed here); `table_ptr` reaches a pool page through
// the kernel image mapping and any other table page through the linear map, both RW over the
// whole page, and every table page is RAM the linear map covers before a table is placed there
// (`map_linear` keeps memblock below what it already mapped).
unsafe impl TableAlloc for KernelTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if fault::fails(Fault::Table) {
            return None;
        }
        let pa = match early::pool_alloc() {
            Some(pa) => pa,
            None => {
                let pa = alloc_pages(0)?;
                // SAFETY: a fresh page, ours, reached through the linear map.
                unsafe { arch::memops::zero(layout::phys_to_virt(pa) as *mut u8, PAGE_SIZE as usize) };
                pa
            }
        };
        PT_PAGES.fetch_add(1, Ordering::Relaxed);
        Some(pa)
    }

    fn free_table(&mut self, pa: PhysAddr) {
        PT_PAGES.fetch_sub(1, Ordering::Relaxed);
        if in_early_pool(pa) {
            teardown::check_free(pa, PAGE_SIZE);
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
        teardown::made_valid(m);
    }

    fn published(&mut self) {
        teardown::published();
    }
}

fn in_early_pool(pa: PhysAddr) -> bool {
    let base = early::EARLY_POOL_PA.load(Ordering::Relaxed);
    (base..base + (early::POOL_TABLES as u64) * PAGE_SIZE).contains(&pa)
}

/// The kernel's TTBR1 page table (the one the boot code built and the MMU uses).
static KERNEL_PT: IrqSafeLock<Option<PageTable<Cfg>>> = IrqSafeLock::new("kernel_pt", None);

/// Take over the page table the boot code built (root `ttbr1`, live in TTBR1_EL1).
pub fn install(ttbr1: PhysAddr) {
    // SAFETY: the boot code built this tree for the kernel's configuration from the early pool
    // (whose pages `KernelTables` never frees), and from now on only `KERNEL_PT` changes it.
    *KERNEL_PT.lock() = Some(unsafe { PageTable::from_root(ttbr1) });
}

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
    memblock::set_limit(0);
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
            memblock::set_limit(e);
        }
    }
    Ok(())
}

/// RAM the linear map can reach (PA below `2^(VA-1)`), and how many bytes lie beyond it
/// (left unused, like Linux does with memory outside the linear region).
pub fn clip_to_linear(ram: &[Range]) -> (Vec<Range>, u64) {
    let mut kept = Vec::new();
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
///
/// The mapping uses the largest leaves the PA's alignment allows (Linux's huge ioremap), its
/// VA aligned like the PA up to a PMD block: a PCIe ECAM of 256 buses (256 MiB) is then 128 PMD
/// blocks on 4K instead of 65536 pte entries in 128 table pages, most of the PCI stage of the
/// boot. Nothing unmaps an ioremap, so no block is ever split.
pub fn ioremap(pa: u64, size: u64) -> Result<u64, MapError> {
    let base = align_down(pa, PAGE_SIZE);
    let len = align_up(pa + size, PAGE_SIZE) - base;
    let align = ioremap_align(base, len);
    let mut va = 0;
    IOREMAP_NEXT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
            va = align_up(next, align);
            va.checked_add(len)
        })
        .map_err(|_| MapError::OutOfRange)?;
    if va + len > IOREMAP_START + IOREMAP_SIZE {
        return Err(MapError::OutOfRange);
    }
    with_kernel_pt(|pt, tables| pt.map(tables, va, base, len, Attrs::DEVICE_RW, MapFlags::LARGEST))?;
    Ok(va + (pa - base))
}

/// The VA alignment of an ioremap of `len` bytes at `pa`: the largest leaf or contiguous run
/// (PMD block, pte run) that `pa` is aligned to and `len` holds, else a page.
fn ioremap_align(pa: u64, len: u64) -> u64 {
    let pte_level = 3;
    [Some(G.pmd_size()), G.cont_size(pte_level)]
        .into_iter()
        .flatten()
        .find(|&a| pa.is_multiple_of(a) && len >= a)
        .unwrap_or(PAGE_SIZE)
}
