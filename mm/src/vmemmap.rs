//! `vmemmap_populate` / `vmemmap_free`: back one section's slice of the memmap with memory.
//!
//! Two paths, as Linux arm64:
//! - **section path**: a PMD block per fully covered, PMD-aligned chunk (4K: one 2 MiB block is
//!   exactly one 128 MiB section's memmap; 16K/64K only when a range covers a whole PMD);
//! - **base-page path**: PTE mappings for everything else, with the contiguous hint where an
//!   aligned run is fully covered and its backing can be allocated in one piece.
//!
//! Backing pages come from the altmap when one is given (memmap on memory) and never silently
//! from elsewhere: altmap exhaustion is an error, after undoing this call's work. Page-table
//! pages always come from the table allocator. An existing block PMD is reused; an existing
//! table PMD forces base pages for that PMD (Linux bug fixed in 2025: treating any present PMD
//! as "populated" left base pages missing).

use crate::{
    altmap::{Altmap, AltmapExhausted},
    geometry::Config,
    pgtable::{Attrs, MapError, MapFlags, PageTable, PhysAddr, TableAlloc, VirtAddr},
};
use alloc::vec::Vec;
use arch::mutant::{self, Mutant};
use arch::tlb::TlbInvalidate;

/// Where memmap backing pages come from when there is no altmap.
pub trait PageSource {
    /// 2^order naturally aligned pages, or `None`.
    fn alloc_pages(&mut self, order: u32) -> Option<PhysAddr>;
    /// Give back what `alloc_pages` returned (only after the TLB no longer maps it).
    fn free_pages(&mut self, pa: PhysAddr, order: u32);
    /// `[pa, pa + size)` goes back to an altmap (no allocator sees it, but the same rule
    /// holds: only after the TLB no longer maps it). The kernel runs the teardown checker here.
    fn altmap_free(&mut self, _pa: PhysAddr, _size: u64) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmemmapError {
    /// `[start, end)` is not page aligned, leaves the vmemmap region, or spans more than one
    /// section's memmap.
    BadRange { start: VirtAddr, end: VirtAddr },
    /// The altmap is too small: memmap on memory cannot be satisfied.
    AltmapExhausted(AltmapExhausted),
    /// No memory for a backing page.
    NoMemory,
    /// The page-table engine refused (no table page, or a live mapping in the way).
    Map(MapError),
}

impl From<MapError> for VmemmapError {
    fn from(e: MapError) -> Self {
        VmemmapError::Map(e)
    }
}

/// What one populate call created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopulateStats {
    /// PMD blocks created.
    pub blocks: u64,
    /// Base pages created (PTEs).
    pub pages: u64,
    /// Of those, in contiguous runs.
    pub cont_pages: u64,
    /// PMD blocks already there and reused.
    pub reused_blocks: u64,
    /// Backing pages taken from the altmap.
    pub altmap_pages: u64,
    /// Bytes of memmap backed by this call.
    pub bytes: u64,
}

/// What one free call released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeStats {
    pub leaves: u64,
    pub bytes: u64,
    pub altmap_pages: u64,
    pub tables_freed: u64,
}

/// The vmemmap region and everything populate/free need.
pub struct Vmemmap<'a, C: Config, T: TableAlloc, S: PageSource, L: TlbInvalidate> {
    pub pt: &'a mut PageTable<C>,
    pub tables: &'a mut T,
    pub source: &'a mut S,
    pub tlb: &'a mut L,
    /// `[start, end)` of the vmemmap region (the floor/ceiling for freeing tables).
    pub region: (VirtAddr, VirtAddr),
}

/// One leaf this call created (for rollback).
#[derive(Clone, Copy)]
struct Created {
    va: VirtAddr,
    size: u64,
    pa: PhysAddr,
    altmap: bool,
}

impl<C: Config, T: TableAlloc, S: PageSource, L: TlbInvalidate> Vmemmap<'_, C, T, S, L> {
    const PAGE: u64 = C::GEOM.page_size();

    /// A page-aligned, non-empty range inside the region, at most `max_len` bytes.
    fn check(&self, start: VirtAddr, end: VirtAddr, max_len: u64) -> Result<(), VmemmapError> {
        let ok = start < end
            && (start | end).is_multiple_of(Self::PAGE)
            && start >= self.region.0
            && end <= self.region.1
            && end - start <= max_len;
        ok.then_some(()).ok_or(VmemmapError::BadRange { start, end })
    }

    /// Backing for `size` bytes: from the altmap if given (no fallback), else the source.
    fn alloc_backing(&mut self, size: u64, altmap: &mut Option<&mut Altmap>) -> Result<(PhysAddr, bool), VmemmapError> {
        let n = size / Self::PAGE;
        match altmap {
            Some(a) => match a.alloc_pfns(n) {
                Ok(pfn) => Ok((pfn << C::GEOM.page_shift, true)),
                // Mutant: the silent fallback memmap on memory must never take.
                Err(_) if mutant::on(Mutant::AltmapFallsBack) => self
                    .source
                    .alloc_pages(n.trailing_zeros())
                    .map(|pa| (pa, false))
                    .ok_or(VmemmapError::NoMemory),
                Err(e) => Err(VmemmapError::AltmapExhausted(e)),
            },
            None => self
                .source
                .alloc_pages(n.trailing_zeros())
                .map(|pa| (pa, false))
                .ok_or(VmemmapError::NoMemory),
        }
    }

    /// Backing for up to `max` base pages in one piece: from the altmap as many as it has
    /// left (one mapping for a section's whole memmap), else one page as
    /// [`alloc_backing`](Self::alloc_backing) gives it (the allocator's pages are freed one by
    /// one at removal, so they are taken one by one).
    fn alloc_backing_run(
        &mut self,
        max: u64,
        altmap: &mut Option<&mut Altmap>,
    ) -> Result<((PhysAddr, bool), u64), VmemmapError> {
        if let Some(Ok((pfn, n))) = altmap.as_deref_mut().map(|a| a.alloc_run(max)) {
            return Ok(((pfn << C::GEOM.page_shift, true), n));
        }
        Ok((self.alloc_backing(Self::PAGE, altmap)?, 1))
    }

    /// How many base pages from `va` on (below `end`) have no leaf yet.
    fn empty_pages(&self, va: VirtAddr, end: VirtAddr) -> u64 {
        (va..end)
            .step_by(Self::PAGE as usize)
            .take_while(|&p| self.pt.walk(self.tables, p).leaf.is_none())
            .count() as u64
    }

    fn free_backing(&mut self, pa: PhysAddr, size: u64, altmap: &mut Option<&mut Altmap>) -> bool {
        let n = size / Self::PAGE;
        if let Some(a) = altmap {
            if a.contains(pa >> C::GEOM.page_shift) {
                self.source.altmap_free(pa, size);
                a.free_pfns(n);
                return true;
            }
        }
        self.source.free_pages(pa, n.trailing_zeros());
        false
    }

    /// Linux `vmemmap_populate(start, end, node, altmap)`: one section's memmap, or without an
    /// altmap the memmap of several neighbouring sections in one call (the boot memmap), so a
    /// PMD of memmap that the range covers whole is one block even where one section's memmap
    /// is smaller than a PMD (16K: 512 KiB per section, 32 MiB per PMD). Such a block is
    /// shared by its sections: only memory that is never removed (boot RAM) is populated so.
    pub fn populate(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        mut altmap: Option<&mut Altmap>,
    ) -> Result<PopulateStats, VmemmapError> {
        let max_len = if altmap.is_some() {
            C::GEOM.memmap_per_section()
        } else {
            self.region.1 - self.region.0
        };
        self.check(start, end, max_len)?;
        let mut created: Vec<Created> = Vec::new();
        let mut stats = PopulateStats::default();
        match self.populate_inner(start, end, &mut altmap, &mut created, &mut stats) {
            Ok(()) => Ok(stats),
            Err(e) => {
                self.rollback(&created, &mut altmap);
                Err(e)
            }
        }
    }

    fn populate_inner(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        altmap: &mut Option<&mut Altmap>,
        created: &mut Vec<Created>,
        stats: &mut PopulateStats,
    ) -> Result<(), VmemmapError> {
        let g = C::GEOM;
        let pmd = g.pmd_size();
        let mut va = start;
        while va < end {
            let chunk_end = ((va / pmd) + 1).saturating_mul(pmd).min(end);
            let walk = self.pt.walk(self.tables, va);
            let pmd_step = walk.steps().iter().find(|s| s.level == 2).copied();
            let pmd_is_block = walk.leaf.is_some_and(|l| l.level == 2);
            let pmd_is_table = pmd_step.is_some_and(|s| s.desc.is_valid() && s.desc.is_table(false));
            if pmd_is_block {
                stats.reused_blocks += 1;
                va = chunk_end;
                continue;
            }
            if va.is_multiple_of(pmd) && chunk_end - va == pmd && !pmd_is_table && g.block_allowed(2) {
                // Section path. Without an altmap a failed block allocation falls back to
                // base pages; with one it is an error (the altmap was sized for blocks).
                match self.alloc_backing(pmd, altmap) {
                    Ok(backing) => {
                        self.map_leaf(va, pmd, backing, MapFlags::BLOCKS, created, stats)?;
                        stats.blocks += 1;
                        va = chunk_end;
                        continue;
                    }
                    Err(e @ VmemmapError::AltmapExhausted(_)) => return Err(e),
                    Err(_) => {}
                }
            }
            self.populate_basepages(va, chunk_end, altmap, created, stats)?;
            va = chunk_end;
        }
        Ok(())
    }

    /// Linux `vmemmap_populate_basepages`, plus the contiguous hint on aligned, fully covered,
    /// empty runs whose backing can be had in one piece.
    fn populate_basepages(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        altmap: &mut Option<&mut Altmap>,
        created: &mut Vec<Created>,
        stats: &mut PopulateStats,
    ) -> Result<(), VmemmapError> {
        let page = Self::PAGE;
        let cont = C::GEOM.cont_size(3);
        let mut va = start;
        while va < end {
            if let Some(c) = cont {
                // Mutant: a run reaching past `end` maps memmap nobody asked for.
                let fits = va + c <= end || mutant::on(Mutant::ContRunPastEnd);
                if va.is_multiple_of(c) && fits && self.range_empty(va, va + c) {
                    if let Ok(backing) = self.alloc_backing(c, altmap) {
                        self.map_leaf(
                            va,
                            c,
                            backing,
                            MapFlags {
                                block: false,
                                cont: true,
                            },
                            created,
                            stats,
                        )?;
                        stats.pages += c / page;
                        stats.cont_pages += c / page;
                        va += c;
                        continue;
                    }
                }
            }
            // Base pages up to the next contiguous-run boundary at most, where the hint is
            // tried again; a run only from an altmap (see `alloc_backing_run`).
            let run_end = match (altmap.is_some(), cont) {
                (false, _) => va + page,
                (true, Some(c)) => (va / c + 1).saturating_mul(c).min(end),
                (true, None) => end,
            };
            let run = self.empty_pages(va, run_end);
            if run == 0 {
                va += page;
                continue;
            }
            let (backing, n) = self.alloc_backing_run(run, altmap)?;
            self.map_leaf(va, n * page, backing, MapFlags::PAGES, created, stats)?;
            stats.pages += n;
            va += n * page;
        }
        Ok(())
    }

    /// Map `size` bytes at `va` onto freshly allocated backing, recording it for rollback
    /// (before mapping, so a failed map still releases the backing).
    fn map_leaf(
        &mut self,
        va: VirtAddr,
        size: u64,
        (pa, from_altmap): (PhysAddr, bool),
        flags: MapFlags,
        created: &mut Vec<Created>,
        stats: &mut PopulateStats,
    ) -> Result<(), VmemmapError> {
        created.push(Created {
            va,
            size,
            pa,
            altmap: from_altmap,
        });
        self.pt.map(self.tables, va, pa, size, Attrs::NORMAL_RW, flags)?;
        stats.bytes += size;
        if from_altmap {
            stats.altmap_pages += size / Self::PAGE;
        }
        Ok(())
    }

    fn range_empty(&self, start: VirtAddr, end: VirtAddr) -> bool {
        self.empty_pages(start, end) == (end - start) / Self::PAGE
    }

    /// Undo this call's leaves: unmap (clear → TLBI → free empty tables), then release backing.
    fn rollback(&mut self, created: &[Created], altmap: &mut Option<&mut Altmap>) {
        for c in created.iter().rev() {
            let mapped = self.pt.walk(self.tables, c.va).leaf.is_some_and(|l| l.pa == c.pa);
            if mapped {
                // Mutant: floor and ceiling at the leaf keep every emptied table.
                let (floor, ceiling) = if mutant::on(Mutant::RollbackLeaksTables) {
                    (c.va, c.va + c.size)
                } else {
                    self.region
                };
                let _ = self
                    .pt
                    .unmap_within(self.tables, self.tlb, c.va, c.size, floor, ceiling);
            }
            if c.altmap {
                if let Some(a) = altmap {
                    self.source.altmap_free(c.pa, c.size);
                    a.free_pfns(c.size / Self::PAGE);
                }
            } else {
                self.source.free_pages(c.pa, (c.size / Self::PAGE).trailing_zeros());
            }
        }
    }

    /// Linux `vmemmap_free(start, end, altmap)`: unmap the memmap of `[start, end)` — leaves
    /// cleared, one TLB invalidation, empty tables inside the vmemmap region freed — and only
    /// then release each leaf's backing to the altmap or the source it came from.
    pub fn free(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        mut altmap: Option<&mut Altmap>,
    ) -> Result<FreeStats, VmemmapError> {
        self.check(start, end, C::GEOM.memmap_per_section())?;
        // Collect the leaves (and what backs them) before the mappings disappear.
        let mut leaves: Vec<(PhysAddr, u64)> = Vec::new();
        let mut va = start;
        let cont = C::GEOM.cont_size(3).unwrap_or(Self::PAGE);
        while va < end {
            match self.pt.walk(self.tables, va).leaf {
                Some(l) => {
                    let base_va = va & !(l.size - 1);
                    // A contiguous run was allocated in one piece: release it as one.
                    let size = if l.contiguous && l.level == 3 && va.is_multiple_of(cont) {
                        cont
                    } else {
                        l.size
                    };
                    if !(l.contiguous && l.level == 3 && !va.is_multiple_of(cont)) {
                        leaves.push((l.pa - (va - base_va), size));
                    }
                    va = base_va + l.size;
                }
                None => va += Self::PAGE,
            }
        }
        let mut altmap_pages = 0;
        // Mutant: the order the arm64 hot-remove review rejected (backing freed while the
        // vmemmap still maps it).
        if mutant::on(Mutant::FreeBeforeUnmap) {
            for &(pa, size) in &leaves {
                if self.free_backing(pa, size, &mut altmap) {
                    altmap_pages += size / Self::PAGE;
                }
            }
        }
        let u = self
            .pt
            .unmap_within(self.tables, self.tlb, start, end - start, self.region.0, self.region.1)?;
        if !mutant::on(Mutant::FreeBeforeUnmap) {
            for (pa, size) in leaves {
                if self.free_backing(pa, size, &mut altmap) {
                    altmap_pages += size / Self::PAGE;
                }
            }
        }
        Ok(FreeStats {
            leaves: u.leaves,
            bytes: u.bytes,
            altmap_pages,
            tables_freed: u.tables_freed,
        })
    }
}
