//! Kernel page-table engine, generic over the build configuration (`C: Config`).
//!
//! Works for 2, 3 and 4 levels: a walk starts at `Geometry::start_level()` (the pgd of this
//! configuration) and a folded level is never touched. Linux names: level 0 = pgd/p4d,
//! 1 = pud, 2 = pmd, 3 = pte.
//!
//! * [`PageTable::map`] creates mappings, never re-shapes live ones (Linux
//!   `__create_pgd_mapping` + `pgattr_change_is_safe`): it only ever turns invalid entries
//!   into valid ones, so it needs no TLB maintenance and is all-or-nothing (see below).
//! * [`PageTable::unmap`] is the hot-remove teardown (Linux `unmap_hotplug_range` +
//!   `free_empty_tables`): it refuses to split a leaf or a contiguous run, clears all leaves,
//!   invalidates once, and only then unlinks empty tables (floor/ceiling rule), each with a
//!   walk-cache invalidation before the page is freed.
//!
//! `map` and `walk` (and everything they call) run before the MMU is on, from a physical
//! address other than the link address: no panics that can trigger, no `core::fmt`, no trait
//! objects, no statics holding pointers — plain integer and pointer code only.
//!
//! All-or-nothing `map`: every entry the call writes is first written *staged* — the intended
//! descriptor with VALID clear and the software bit [`STAGED`] set, which the hardware ignores.
//! New tables hang below staged entries, so they are invisible too. If the call fails
//! (`Reshape`, `NoMemory`), the staged entries are cleared and the new tables freed, which
//! needs no TLB maintenance because nothing was ever valid. On success the staged entries are
//! made valid bottom-up (children before the entry that links them).
//!
//! One walk: every operation is a visitor of the entry walk in `pgtable/walk.rs`, which visits
//! the entries translating a VA range in VA order, each typed (absent, table, block, page,
//! staged) with its level and VA span, and descends where the visitor asks. The visitors:
//! staging, commit and rollback of `map` and `populate_tables` (`pgtable/map.rs`); the split
//! check, the clear of leaves and the free of empty tables of `unmap` (`pgtable/unmap.rs`); the
//! translation of one VA and the census (`pgtable/inspect.rs`).
//!
//! Soundness rests on the [`TableAlloc`] contract: `table_ptr` gives a pointer through which
//! the whole granule-sized table page may be read and written; and on the walk's `Visit`
//! contract: a visitor descends only into live tables of the tree and frees a table only once
//! the walk has left it.

use core::marker::PhantomData;

use crate::geometry::{Config, Geometry};
pub use arch::descriptor::{Attrs, Descriptor, MemType, Perm};
use arch::mutant::{self, Mutant};
use arch::tlb::{Mapping, TlbInvalidate};
use map::MapReq;

mod inspect;
mod map;
mod unmap;
mod walk;

#[cfg(not(target_os = "none"))]
pub mod testing;

pub type PhysAddr = u64;
pub type VirtAddr = u64;

/// Output addresses are 48-bit (no FEAT_LPA/LPA2).
pub const PA_LIMIT: u64 = 1 << 48;

/// Software bit marking an entry `map` has written but not yet made valid. Only ever present
/// in invalid entries (the hardware ignores every other bit of those) and only while a `map`
/// call runs.
pub const STAGED: u64 = 1 << 55;

/// Where page-table pages come from and how the engine reaches them.
///
/// # Safety
/// The engine reads and writes table pages through `table_ptr` without further checks, so an
/// implementation promises: `alloc_table` returns a zeroed, granule-sized and granule-aligned
/// page that nothing else uses until it is given back through `free_table`; for every such page
/// not yet given back, `table_ptr(pa)` returns a pointer valid for volatile reads and writes of
/// the whole page (and the same pointer every time), that no other code reads or writes while
/// the engine holds the allocator (`&mut`/`&` borrow of the call).
pub unsafe trait TableAlloc {
    /// A zeroed, granule-sized and granule-aligned page, or `None` when out of memory.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Gives back a page from `alloc_table`. The engine calls it only after the page is
    /// unlinked and the walk caches were invalidated (or when it was never linked).
    fn free_table(&mut self, pa: PhysAddr);
    /// How the engine reaches table page `pa` (identity before the MMU is on, the linear map
    /// after). Must be valid for reads and writes of the whole page.
    fn table_ptr(&self, pa: PhysAddr) -> *mut u64;
    /// Notification, not allocation: `map` made entry `m` valid (a leaf, or a table entry
    /// pointing at a table page). The teardown-order checker uses it to know what is mapped;
    /// real allocators ignore it.
    fn made_valid(&mut self, _m: Mapping) {}
    /// Notification: `map` issued `DSB ISHST; ISB` for the entries it made valid.
    fn published(&mut self) {}
}

/// What `map` may use beyond base pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapFlags {
    /// Allow block leaves wherever `Geometry::block_allowed` and alignment permit.
    pub block: bool,
    /// Set the contiguous hint on aligned runs (CONT_PTE, and CONT_PMD with `block`).
    pub cont: bool,
}

impl MapFlags {
    /// Base pages only (Linux `NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS`).
    pub const PAGES: MapFlags = MapFlags {
        block: false,
        cont: false,
    };
    /// Blocks, no contiguous hint.
    pub const BLOCKS: MapFlags = MapFlags {
        block: true,
        cont: false,
    };
    /// The largest leaves alignment allows (linear map).
    pub const LARGEST: MapFlags = MapFlags {
        block: true,
        cont: true,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A table page could not be allocated.
    NoMemory,
    /// `va`, `pa` or `size` not page-aligned; or (unmap) the range would split a block or
    /// a contiguous run.
    Misaligned,
    /// The VA range wraps, leaves its half of the address space (TTBR0 / TTBR1) or the
    /// floor/ceiling region; or the PA range exceeds 48 bits.
    OutOfRange,
    /// The entry mapping `va` is valid and differs from what the call would write (output
    /// address, attributes, block size or contiguous bit): only break-before-make may do that.
    Reshape { va: VirtAddr },
}

/// What one `unmap` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapStats {
    /// Leaf descriptors cleared (pages and blocks).
    pub leaves: u64,
    /// Of which had the contiguous bit.
    pub cont_leaves: u64,
    /// Bytes those leaves mapped.
    pub bytes: u64,
    /// Table pages unlinked and freed.
    pub tables_freed: u64,
}

/// Table pages and leaves of a whole tree, per level (index = architectural level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Table pages, the root included.
    pub tables: u64,
    /// Table pages whose entries are at each level (the root at the start level).
    pub tables_at: [u64; 4],
    /// Valid leaves per level: blocks at levels 0-2, pages at level 3.
    pub leaves: [u64; 4],
    /// Of those, how many carry the contiguous bit.
    pub cont: [u64; 4],
    /// Bytes mapped by all leaves.
    pub bytes: u64,
    /// Non-zero entries that are neither a valid table nor a valid leaf (should be 0).
    pub bad: u64,
}

impl Census {
    pub fn pages(&self) -> u64 {
        self.leaves[3]
    }
    pub fn blocks(&self) -> u64 {
        self.leaves[0] + self.leaves[1] + self.leaves[2]
    }
}

/// One descriptor read by `walk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub level: u32,
    pub index: usize,
    /// The table the descriptor was read from.
    pub table_pa: PhysAddr,
    pub desc: Descriptor,
}

/// Translation found by `walk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Physical address `va` translates to.
    pub pa: PhysAddr,
    pub level: u32,
    /// Bytes the leaf descriptor maps (page or block).
    pub size: u64,
    pub contiguous: bool,
}

/// A software table walk, as the MMU would do it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// `steps[..n]` are the descriptors read, root first.
    pub steps: [Step; 4],
    pub n: usize,
    /// `None`: translation fault at `steps[n - 1]`.
    pub leaf: Option<Leaf>,
}

impl Walk {
    const EMPTY_STEP: Step = Step {
        level: 0,
        index: 0,
        table_pa: 0,
        desc: Descriptor::INVALID,
    };

    /// The descriptors read, root first.
    pub fn steps(&self) -> &[Step] {
        self.steps.get(..self.n).unwrap_or(&[])
    }
}

/// A kernel translation table tree rooted at a start-level (pgd) table.
///
/// One tree serves one TTBR: the walk uses only the index bits of a VA, so a low-half and a
/// high-half VA with the same low `va_bits` bits land on the same entry. `map` and `unmap`
/// accept either half but a range must stay inside one. Writers must be serialised by the
/// caller (several `PageTable`s may share a root via `from_root`), and a software `walk` must
/// not race an `unmap` that frees tables (Linux: `get_online_mems()` around ptdump).
pub struct PageTable<C: Config> {
    root: PhysAddr,
    _cfg: PhantomData<C>,
}

impl<C: Config> PageTable<C> {
    const GEOM: Geometry = C::GEOM;

    /// Allocates an empty root (start-level) table.
    pub fn new(a: &mut impl TableAlloc) -> Result<Self, MapError> {
        let root = alloc_table::<C, _>(a)?;
        // SAFETY: a fresh, zeroed table page of this configuration, owned by nobody else.
        Ok(unsafe { Self::from_root(root) })
    }

    /// Adopts an existing tree (e.g. the boot tables, read back from TTBR1_EL1).
    ///
    /// # Safety
    /// `root` is the start-level table of a tree built for configuration `C` (every table page
    /// reachable from it a table of `C`'s format, from the allocator the engine is later given,
    /// or never freed), and no other `PageTable` changes that tree while this one lives: the
    /// engine writes, frees and invalidates through it on that promise.
    pub unsafe fn from_root(root: PhysAddr) -> Self {
        PageTable {
            root,
            _cfg: PhantomData,
        }
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)` with the largest leaves alignment and
    /// `flags` allow. Entries already holding exactly the wanted descriptor are left alone;
    /// any other valid entry in the way is `Reshape`. An existing (possibly empty) table where
    /// a block would fit is reused with smaller leaves, since replacing it would need
    /// break-before-make. On error nothing is changed and no table is leaked.
    ///
    /// On success the new entries are published with `DSB ISHST; ISB`
    /// ([`arch::barrier::publish_new_mappings`], Linux `set_pte` + `emit_pte_barriers`) before
    /// this returns, so the caller may use them at once.
    pub fn map(
        &mut self,
        a: &mut impl TableAlloc,
        va: VirtAddr,
        pa: PhysAddr,
        size: u64,
        attrs: Attrs,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        if size == 0 {
            return Ok(());
        }
        if (va | pa | size) & (Self::GEOM.page_size() - 1) != 0 {
            return Err(MapError::Misaligned);
        }
        let last = va_last::<C>(va, size)?;
        match pa.checked_add(size - 1) {
            Some(pa_last) if pa_last < PA_LIMIT => {}
            _ => return Err(MapError::OutOfRange),
        }
        let req = MapReq {
            va,
            last,
            pa,
            attrs,
            flags,
            deepest: 3,
        };
        self.stage_and_commit(a, &req)
    }

    /// Allocates every last-level (pte) table covering `[va, va + size)` and links it in,
    /// creating no leaf: later `map`s of base pages in the range allocate no table, and
    /// `unmap_within` with floor/ceiling outside the tables' spans keeps them (a window whose
    /// maps must not fail or allocate; Linux preallocates vmalloc/fixmap tables the same way).
    /// Only invalid entries become valid, and TLBs never hold invalid entries, so no TLB
    /// maintenance is needed: the publishing barrier suffices. All or nothing, as `map`.
    pub fn populate_tables(&mut self, a: &mut impl TableAlloc, va: VirtAddr, size: u64) -> Result<(), MapError> {
        if size == 0 {
            return Ok(());
        }
        if (va | size) & (Self::GEOM.page_size() - 1) != 0 {
            return Err(MapError::Misaligned);
        }
        let last = va_last::<C>(va, size)?;
        let req = MapReq {
            va,
            last,
            pa: 0,
            attrs: Attrs::NORMAL_RW,
            flags: MapFlags::PAGES,
            deepest: 2,
        };
        self.stage_and_commit(a, &req)
    }

    fn stage_and_commit(&mut self, a: &mut impl TableAlloc, req: &MapReq) -> Result<(), MapError> {
        let level = Self::GEOM.start_level();
        map::stage_all::<C, _>(a, req, self.root, level)?;
        map::commit_all::<C, _>(a, req, self.root, level);
        // Without this a real core may take a spurious translation fault on the first use
        // (TCG never does).
        if !mutant::on(Mutant::MissingMapBarrier) {
            arch::barrier::publish_new_mappings();
            a.published();
        }
        Ok(())
    }

    /// Translates `va` the way the MMU would, recording each descriptor read.
    pub fn walk(&self, a: &impl TableAlloc, va: VirtAddr) -> Walk {
        inspect::translate::<C, _>(a, self.root, Self::GEOM.start_level(), va)
    }

    /// Unmaps `[va, va + size)` and frees the table pages that became empty and lie wholly
    /// inside the range. See [`PageTable::unmap_within`].
    pub fn unmap(
        &mut self,
        a: &mut impl TableAlloc,
        tlb: &mut impl TlbInvalidate,
        va: VirtAddr,
        size: u64,
    ) -> Result<UnmapStats, MapError> {
        self.unmap_within(a, tlb, va, size, va, va.wrapping_add(size))
    }

    /// Unmaps `[va, va + size)`; a table page that is empty afterwards is freed when its whole
    /// span lies inside `[floor, ceiling)` (Linux `free_empty_tables` floor/ceiling rule;
    /// `ceiling == 0` means the top of the address space). Pass the region the range belongs
    /// to (linear map, vmemmap) to also free tables shared with other, already removed ranges
    /// of the region; `unmap` passes the range itself.
    ///
    /// Order: refuse (`Misaligned`, nothing changed) if a leaf or contiguous run crosses the
    /// range edge → clear every leaf → one `flush_kernel_range` → bottom-up, for each empty
    /// table: clear the parent entry → `flush_kernel_pgtable` → `free_table`. The root is
    /// never freed.
    pub fn unmap_within(
        &mut self,
        a: &mut impl TableAlloc,
        tlb: &mut impl TlbInvalidate,
        va: VirtAddr,
        size: u64,
        floor: VirtAddr,
        ceiling: VirtAddr,
    ) -> Result<UnmapStats, MapError> {
        if size == 0 {
            return Ok(UnmapStats::default());
        }
        if (va | size) & (Self::GEOM.page_size() - 1) != 0 {
            return Err(MapError::Misaligned);
        }
        let last = va_last::<C>(va, size)?;
        let ceil_last = ceiling.wrapping_sub(1);
        if va < floor || last > ceil_last {
            return Err(MapError::OutOfRange);
        }
        let level = Self::GEOM.start_level();
        unmap::check_split::<C, _>(a, self.root, level, va, last)?;
        let cleared = unmap::clear_leaves::<C, _, _>(a, tlb, self.root, level, (va, last));
        let mut stats = cleared.stats;
        // Mutant: the leaf invalidation is dropped.
        if stats.leaves > 0 && !mutant::on(Mutant::NoLeafTlbi) {
            tlb.flush_kernel_range(cleared.lo, cleared.hi.wrapping_add(1), cleared.min_shift);
        }
        let bounds = (floor, ceil_last);
        stats.tables_freed = unmap::free_empty::<C, _, _>(a, tlb, self.root, level, (va, last), bounds);
        Ok(stats)
    }

    /// Would unmapping `[va, va + size)` split a block or a contiguous run? `Misaligned` if so
    /// (the check `unmap` makes before changing anything), so callers can refuse a removal
    /// before doing any other work.
    pub fn check_unmap(&self, a: &impl TableAlloc, va: VirtAddr, size: u64) -> Result<(), MapError> {
        if (va | size) & (Self::GEOM.page_size() - 1) != 0 {
            return Err(MapError::Misaligned);
        }
        if size == 0 {
            return Ok(());
        }
        let last = va_last::<C>(va, size)?;
        unmap::check_split::<C, _>(a, self.root, Self::GEOM.start_level(), va, last)
    }

    /// Counts table pages and leaves of the whole tree.
    pub fn count(&self, a: &impl TableAlloc) -> Census {
        inspect::census::<C, _>(a, self.root, Self::GEOM.start_level())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers. Everything reachable from `map`/`walk` is plain integer/pointer code.

/// Last byte of `[va, va + size)` (`size > 0`), which must not wrap nor leave the TTBR0 or
/// TTBR1 half of the address space.
fn va_last<C: Config>(va: VirtAddr, size: u64) -> Result<VirtAddr, MapError> {
    let last = match va.checked_add(size - 1) {
        Some(l) => l,
        None => return Err(MapError::OutOfRange),
    };
    let bits = C::GEOM.va_bits;
    let top = va >> bits;
    if top != last >> bits || (top != 0 && top != u64::MAX >> bits) {
        return Err(MapError::OutOfRange);
    }
    Ok(last)
}

/// A table page from `a`, checked to be granule-aligned and inside the 48-bit PA space.
fn alloc_table<C: Config, A: TableAlloc>(a: &mut A) -> Result<PhysAddr, MapError> {
    let pa = match a.alloc_table() {
        Some(pa) => pa,
        None => return Err(MapError::NoMemory),
    };
    if pa & (C::GEOM.page_size() - 1) != 0 || pa >= PA_LIMIT {
        a.free_table(pa);
        return Err(MapError::NoMemory);
    }
    Ok(pa)
}

#[cfg(test)]
mod tests {
    use super::testing::{HostTables, RecordingTlb};
    use super::*;
    use crate::geometry::{Cfg16K36, Cfg4K48, Cfg64K48};

    const KVA: u64 = 0xffff_8000_0000_0000;

    #[test]
    fn map_walk_unmap_4k() {
        let mut a = HostTables::new(4096);
        let mut tlb = RecordingTlb::default();
        let mut pt = PageTable::<Cfg4K48>::new(&mut a).unwrap();
        // 1 GiB + 2 MiB + 64 KiB + 4 KiB, everything aligned: one of each leaf kind.
        let size = (1 << 30) + (2 << 20) + (64 << 10) + 4096;
        pt.map(&mut a, KVA, 0x40_0000_0000, size, Attrs::NORMAL_RW, MapFlags::LARGEST)
            .unwrap();
        let c = pt.count(&a);
        assert_eq!(c.leaves, [0, 1, 1, 17]);
        assert_eq!(c.cont, [0, 0, 0, 16]);
        assert_eq!(c.tables, 4); // pgd, pud, pmd, pte
        assert_eq!(c.bytes, size);
        let w = pt.walk(&a, KVA + (1 << 30) + (2 << 20) + 0xf123);
        assert_eq!(w.n, 4);
        let leaf = w.leaf.unwrap();
        assert_eq!(leaf.pa, 0x40_0000_0000 + (1 << 30) + (2 << 20) + 0xf123);
        assert_eq!((leaf.level, leaf.size, leaf.contiguous), (3, 4096, true));
        assert_eq!(pt.walk(&a, KVA + size).leaf, None);
        let s = pt.unmap_within(&mut a, &mut tlb, KVA, size, KVA, 0).unwrap();
        assert_eq!((s.leaves, s.cont_leaves, s.bytes, s.tables_freed), (19, 16, size, 3));
        assert_eq!(pt.count(&a).tables, 1);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn two_level_16k_and_64k() {
        let mut a = HostTables::new(16384);
        let mut pt = PageTable::<Cfg16K36>::new(&mut a).unwrap();
        pt.map(&mut a, 0, 0x8000_0000, 64 << 20, Attrs::NORMAL_RW, MapFlags::LARGEST)
            .unwrap();
        assert_eq!(pt.count(&a).leaves, [0, 0, 2, 0]);
        assert_eq!(pt.walk(&a, 0x10_0000).leaf.unwrap().pa, 0x8010_0000);
        let mut a = HostTables::new(65536);
        let mut pt = PageTable::<Cfg64K48>::new(&mut a).unwrap();
        pt.map(&mut a, KVA, 0x8000_0000, 2 << 20, Attrs::NORMAL_RW, MapFlags::LARGEST)
            .unwrap();
        let c = pt.count(&a);
        assert_eq!((c.leaves, c.cont, c.tables), ([0, 0, 0, 32], [0, 0, 0, 32], 3));
    }

    #[test]
    fn argument_errors() {
        let mut a = HostTables::new(4096);
        let mut tlb = RecordingTlb::default();
        let mut pt = PageTable::<Cfg4K48>::new(&mut a).unwrap();
        let rw = Attrs::NORMAL_RW;
        let f = MapFlags::LARGEST;
        assert_eq!(pt.map(&mut a, KVA + 1, 0, 4096, rw, f), Err(MapError::Misaligned));
        assert_eq!(pt.map(&mut a, KVA, 0x800, 4096, rw, f), Err(MapError::Misaligned));
        assert_eq!(pt.map(&mut a, KVA, 0, 100, rw, f), Err(MapError::Misaligned));
        assert_eq!(
            pt.map(&mut a, KVA, PA_LIMIT - 4096, 8192, rw, f),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            pt.map(&mut a, 0x0001_0000_0000_0000, 0, 4096, rw, f),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            pt.map(&mut a, 0xffff_0000_0000_0000 - 4096, 0, 8192, rw, f),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            pt.map(&mut a, u64::MAX - 4095, 0, 8192, rw, f),
            Err(MapError::OutOfRange)
        );
        assert_eq!(pt.map(&mut a, KVA, 0, 0, rw, f), Ok(()));
        // The very top page of the address space is fine.
        pt.map(&mut a, u64::MAX - 4095, 0x1000, 4096, rw, f).unwrap();
        assert_eq!(pt.walk(&a, u64::MAX).leaf.unwrap().pa, 0x1fff);
        let s = pt.unmap(&mut a, &mut tlb, u64::MAX - 4095, 4096).unwrap();
        assert_eq!((s.leaves, s.tables_freed), (1, 0)); // the pte table spans 2 MiB
        assert_eq!(pt.unmap(&mut a, &mut tlb, KVA, 4096), Ok(UnmapStats::default()));
        assert_eq!(pt.unmap(&mut a, &mut tlb, KVA + 4, 4096), Err(MapError::Misaligned));
        assert_eq!(
            pt.unmap_within(&mut a, &mut tlb, KVA, 4096, KVA + 4096, 0),
            Err(MapError::OutOfRange)
        );
        assert_eq!(pt.count(&a).bad, 0);
    }
}
