//! Populating and freeing the memmap in the vmemmap region: at boot for every section of boot
//! RAM (backing from memblock), later for hotplugged sections (backing from the buddy).

use crate::{
    boot::dtb::Range,
    boot::layout::{G, PAGE_SIZE},
    kernel::mem::counters::{BOOT_MEMMAP_CYCLES, MEMMAP_BYTES},
    kernel::mem::kernel_pt::{with_kernel_pt, KernelTables},
    kernel::mem::memblock,
    kernel::mem::memmap::{init_sparse, init_struct_pages, vmemmap_region, VMEMMAP},
    kernel::mem::page_alloc::{memmap_init, poison_memmap, BuddySource},
    kernel::mem::teardown::KernelTlb,
};
use core::sync::atomic::Ordering;
use mm::{
    buddy::MemmapInit,
    pgtable::PhysAddr,
    sparse::state,
    vmemmap::{PageSource, PopulateStats, Vmemmap, VmemmapError},
};

type Cfg = crate::config::Cfg;

/// Boot memmap backing from memblock, from the memory it describes first (the memory of its
/// node: Linux `vmemmap_populate`'s node argument), so a node's memmap is local to it.
struct MemblockSource {
    node_memory: Range,
}

impl PageSource for MemblockSource {
    fn alloc_pages(&mut self, order: u32) -> Option<PhysAddr> {
        let size = PAGE_SIZE << order;
        memblock::alloc_try_node(size, size, self.node_memory)
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
/// early sections), initialise every `struct page` as reserved (`memmap_init=eager`; deferred:
/// left to `init_page_allocator`), and mark the sections present + early + has-memmap.
pub fn init_memmap(ram: &[Range]) -> Result<BootMemmap, VmemmapError> {
    let t0 = arch::cpu::counter();
    let sparse = init_sparse();
    let mut total = PopulateStats::default();
    let mut sections = 0;
    for r in ram {
        // Runs of neighbouring sections not present yet, each populated in one call, so a PMD
        // of memmap that a run covers whole is one block (16K: 64 sections' memmap per PMD).
        let mut nrs = sparse
            .sections_of(r.base, r.size)
            .filter(|&nr| sparse.state(nr) & state::PRESENT == 0)
            .peekable();
        while let Some(first) = nrs.next() {
            let mut last = first;
            while nrs.next_if_eq(&(last + 1)).is_some() {
                last += 1;
            }
            let start = VMEMMAP.pfn_to_page(sparse.section_nr_to_pfn(first));
            let end = VMEMMAP.pfn_to_page(sparse.section_nr_to_pfn(last)) + G.memmap_per_section();
            let st = with_kernel_pt(|pt, tables| {
                Vmemmap {
                    pt,
                    tables,
                    source: &mut MemblockSource { node_memory: *r },
                    tlb: &mut KernelTlb,
                    region: vmemmap_region(),
                }
                .populate(start, end, None)
            })?;
            for nr in first..=last {
                let pfn = sparse.section_nr_to_pfn(nr);
                if memmap_init() == MemmapInit::Eager {
                    // SAFETY: the memmap of this section was just populated (mapped RW) and
                    // nothing uses it before the section is marked as having a memmap, below.
                    unsafe { init_struct_pages(pfn, G.pages_per_section(), nr as u32, 0) };
                } else {
                    // Written when the page allocator is built (`init_page_allocator`): only
                    // what the kernel uses; the free memory's is deferred.
                    // SAFETY: as above.
                    unsafe { poison_memmap(pfn, G.pages_per_section()) };
                }
                sparse.set(nr, state::PRESENT | state::EARLY | state::HAS_MEMMAP);
                sections += 1;
            }
            total.blocks += st.blocks;
            total.pages += st.pages;
            total.cont_pages += st.cont_pages;
            total.bytes += st.bytes;
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
pub fn with_vmemmap<R>(f: impl FnOnce(&mut Vmemmap<'_, Cfg, KernelTables, BuddySource, KernelTlb>) -> R) -> R {
    with_kernel_pt(|pt, tables| {
        f(&mut Vmemmap {
            pt,
            tables,
            source: &mut BuddySource,
            tlb: &mut KernelTlb,
            region: vmemmap_region(),
        })
    })
}
