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
//! Soundness rests on the [`TableAlloc`] contract: `table_ptr` gives a pointer through which
//! the whole granule-sized table page may be read and written.

use core::cmp::{max, min};
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{fence, Ordering};

use crate::geometry::{Config, Geometry};
pub use arch::descriptor::{Attrs, Descriptor, MemType, Perm};
use arch::mutant::{self, Mutant};
use arch::tlb::{Mapping, TlbInvalidate};

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
            pa,
            attrs,
            flags,
            deepest: 3,
        };
        self.stage_and_commit(a, &req, last)
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
            pa: 0,
            attrs: Attrs::NORMAL_RW,
            flags: MapFlags::PAGES,
            deepest: 2,
        };
        self.stage_and_commit(a, &req, last)
    }

    fn stage_and_commit(&mut self, a: &mut impl TableAlloc, req: &MapReq, last: VirtAddr) -> Result<(), MapError> {
        let va = req.va;
        let level = Self::GEOM.start_level();
        match stage::<C, _>(a, req, self.root, level, va, last) {
            Ok(()) => {
                commit::<C, _>(a, self.root, level, va, last, req.deepest);
                // Without this a real core may take a spurious translation fault on the first
                // use (TCG never does).
                if !mutant::on(Mutant::MissingMapBarrier) {
                    arch::barrier::publish_new_mappings();
                    a.published();
                }
                Ok(())
            }
            Err(e) => {
                rollback::<C, _>(a, self.root, level, va, last);
                Err(e)
            }
        }
    }

    /// Translates `va` the way the MMU would, recording each descriptor read.
    pub fn walk(&self, a: &impl TableAlloc, va: VirtAddr) -> Walk {
        let geo = Self::GEOM;
        let mut w = Walk {
            steps: [Walk::EMPTY_STEP; 4],
            n: 0,
            leaf: None,
        };
        let mut table = self.root;
        let mut level = geo.start_level();
        loop {
            let index = geo.index(va, level);
            // SAFETY: an entry of a live table page of `a`, index below the level's entries.
            let desc = Descriptor::from_raw(unsafe { rd(a.table_ptr(table).wrapping_add(index)) });
            match w.steps.get_mut(w.n) {
                Some(s) => {
                    *s = Step {
                        level,
                        index,
                        table_pa: table,
                        desc,
                    }
                }
                None => break,
            }
            w.n += 1;
            let is_last = level == 3;
            if desc.is_table(is_last) {
                table = desc.output_address();
                level += 1;
                continue;
            }
            if desc.is_leaf(is_last) && (is_last || geo.block_allowed(level)) {
                let size = geo.level_size(level);
                w.leaf = Some(Leaf {
                    pa: (desc.output_address() & !(size - 1)) | (va & (size - 1)),
                    level,
                    size,
                    contiguous: desc.is_contiguous(),
                });
            }
            break;
        }
        w
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
        let mut stats = UnmapStats::default();
        if size == 0 {
            return Ok(stats);
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
        check_split::<C, _>(a, self.root, level, va, last)?;
        let mut span = Span {
            lo: u64::MAX,
            hi: 0,
            min_shift: 63,
        };
        clear_leaves::<C, _, _>(a, tlb, self.root, level, va, last, &mut stats, &mut span);
        // Mutant: the leaf invalidation is dropped.
        if stats.leaves > 0 && !mutant::on(Mutant::NoLeafTlbi) {
            tlb.flush_kernel_range(span.lo, span.hi.wrapping_add(1), span.min_shift);
        }
        let bounds = (floor, ceil_last);
        free_empty::<C, _, _>(a, tlb, self.root, level, va, last, bounds, &mut stats);
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
        check_split::<C, _>(a, self.root, Self::GEOM.start_level(), va, last)
    }

    /// Counts table pages and leaves of the whole tree.
    pub fn count(&self, a: &impl TableAlloc) -> Census {
        let mut c = Census::default();
        census::<C, _>(a, self.root, Self::GEOM.start_level(), &mut c);
        c
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers. Everything reachable from `map`/`walk` is plain integer/pointer code.

/// Reads one descriptor.
///
/// # Safety
/// `p` is `table_ptr(table) + index` for a live table page of a [`TableAlloc`] and an index
/// below `Geometry::entries` of the table's level (never more than one page of entries).
#[inline(always)]
unsafe fn rd(p: *mut u64) -> u64 {
    // SAFETY: the caller's contract, with the `TableAlloc` contract for the whole page.
    unsafe { ptr::read_volatile(p) }
}

/// Writes one descriptor.
///
/// # Safety
/// As for [`rd`]; the engine is the only writer of the tables it manages.
#[inline(always)]
unsafe fn wr(p: *mut u64, v: u64) {
    // SAFETY: as for `rd`.
    unsafe { ptr::write_volatile(p, v) }
}

#[inline(always)]
fn is_staged(raw: u64) -> bool {
    raw & 1 == 0 && raw & STAGED != 0
}

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

/// Last byte of the entry (mapping `1 << shift` bytes) that contains `va`, clipped to `last`.
#[inline(always)]
fn entry_last(va: u64, last: u64, shift: u32) -> u64 {
    min(last, va | ((1u64 << shift) - 1))
}

struct MapReq {
    va: VirtAddr,
    pa: PhysAddr,
    attrs: Attrs,
    flags: MapFlags,
    /// The deepest level whose entries are staged: 3 (map), 2 (`populate_tables`: new pte
    /// tables stay empty).
    deepest: u32,
}

impl MapReq {
    #[inline(always)]
    fn pa_of(&self, va: VirtAddr) -> PhysAddr {
        self.pa.wrapping_add(va.wrapping_sub(self.va))
    }
}

/// Stages `[first, last]` (inside the span of `table`, which is at `level`).
fn stage<C: Config, A: TableAlloc>(
    a: &mut A,
    req: &MapReq,
    table: PhysAddr,
    level: u32,
    first: VirtAddr,
    last: VirtAddr,
) -> Result<(), MapError> {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let is_last = level == 3;
    let leaf_ok = is_last || (req.flags.block && geo.block_allowed(level));
    let cont_shift = if leaf_ok && req.flags.cont {
        geo.cont_shift(level)
    } else {
        None
    };
    let tp = a.table_ptr(table);
    let mut va = first;
    loop {
        // One step is a whole contiguous run when one starts here, else one entry.
        let mut step_last = entry_last(va, last, shift);
        let mut cont = false;
        if let Some(s) = cont_shift {
            let run_mask = (1u64 << (shift + s)) - 1;
            let run_last = va | run_mask;
            if (va | req.pa_of(va)) & run_mask == 0 && run_last <= last {
                step_last = run_last;
                cont = run_is_free::<C>(req, tp, level, va, run_last)?;
            }
        }
        let mut e = va;
        loop {
            let e_last = entry_last(e, step_last, shift);
            stage_entry::<C, A>(a, req, tp, level, leaf_ok, cont, e, e_last)?;
            if e_last >= step_last {
                break;
            }
            e = e_last + 1;
        }
        if step_last >= last {
            return Ok(());
        }
        va = step_last + 1;
    }
}

/// Whether the contiguous run `[va, run_last]` can be staged with CONT: every entry is empty
/// or already the wanted CONT leaf. An existing table in the run means "map it without CONT";
/// any other valid entry is a reshape.
fn run_is_free<C: Config>(
    req: &MapReq,
    tp: *mut u64,
    level: u32,
    va: VirtAddr,
    run_last: VirtAddr,
) -> Result<bool, MapError> {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let is_last = level == 3;
    let mut free = true;
    let mut e = va;
    loop {
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let old = Descriptor::from_raw(unsafe { rd(tp.wrapping_add(geo.index(e, level))) });
        let want = Descriptor::leaf(req.pa_of(e), req.attrs, is_last).with_contiguous();
        if old.is_table(is_last) {
            free = false;
        } else if old != Descriptor::INVALID && old != want {
            return Err(MapError::Reshape { va: e });
        }
        let e_last = entry_last(e, run_last, shift);
        if e_last >= run_last {
            return Ok(free);
        }
        e = e_last + 1;
    }
}

/// Stages the part `[e, e_last]` of one entry: a leaf if it covers the whole entry and a
/// leaf may go there, else descend (allocating a staged table if the entry is empty).
#[allow(clippy::too_many_arguments)]
fn stage_entry<C: Config, A: TableAlloc>(
    a: &mut A,
    req: &MapReq,
    tp: *mut u64,
    level: u32,
    leaf_ok: bool,
    cont: bool,
    e: VirtAddr,
    e_last: VirtAddr,
) -> Result<(), MapError> {
    let geo = C::GEOM;
    let mask = geo.level_size(level) - 1;
    let is_last = level == 3;
    let p = tp.wrapping_add(geo.index(e, level));
    // SAFETY: an entry of a live table page of `a`, index below the level's entries.
    let old = Descriptor::from_raw(unsafe { rd(p) });
    let pa = req.pa_of(e);
    let whole = e & mask == 0 && e_last - e == mask && pa & mask == 0;
    if whole && leaf_ok && !old.is_table(is_last) {
        let mut want = Descriptor::leaf(pa, req.attrs, is_last);
        if cont {
            want = want.with_contiguous();
        }
        if old == Descriptor::INVALID {
            // SAFETY: an entry of a live table page of `a`, index below the level's entries.
            unsafe { wr(p, (want.raw() & !1) | STAGED) };
            return Ok(());
        }
        if old == want {
            return Ok(());
        }
        return Err(MapError::Reshape { va: e });
    }
    if is_last {
        // Unreachable: at the pte level every (page-aligned) piece is a whole leaf.
        return Err(MapError::Reshape { va: e });
    }
    let child = if old == Descriptor::INVALID {
        let t = alloc_table::<C, A>(a)?;
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        unsafe { wr(p, (Descriptor::table(t).raw() & !1) | STAGED) };
        t
    } else if old.is_table(false) {
        old.output_address()
    } else {
        return Err(MapError::Reshape { va: e });
    };
    if level + 1 > req.deepest {
        return Ok(());
    }
    stage::<C, A>(a, req, child, level + 1, e, e_last)
}

/// Makes the staged entries of `[first, last]` valid, children before the entry linking them,
/// and reports each to [`TableAlloc::made_valid`]. Nothing below `deepest` was staged.
fn commit<C: Config, A: TableAlloc>(a: &mut A, table: PhysAddr, level: u32, first: u64, last: u64, deepest: u32) {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let is_last = level == 3;
    let tp = a.table_ptr(table);
    let mut e = first;
    loop {
        let e_last = entry_last(e, last, shift);
        let p = tp.wrapping_add(geo.index(e, level));
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let raw = unsafe { rd(p) };
        if is_staged(raw) {
            let valid = Descriptor::from_raw((raw & !STAGED) | 1);
            let table = valid.is_table(is_last);
            if table && level < deepest {
                commit::<C, A>(a, valid.output_address(), level + 1, e, e_last, deepest);
                // The new table's entries are written before the entry that publishes it.
                fence(Ordering::Release);
            }
            // SAFETY: an entry of a live table page of `a`, index below the level's entries.
            unsafe { wr(p, valid.raw()) };
            let size = 1u64 << shift;
            a.made_valid(Mapping {
                va: e & !(size - 1),
                size,
                pa: valid.output_address(),
                pa_size: if table { geo.page_size() } else { size },
                table,
            });
        } else if level < deepest && Descriptor::from_raw(raw).is_table(is_last) {
            commit::<C, A>(a, raw & Descriptor::OA_MASK, level + 1, e, e_last, deepest);
        }
        if e_last >= last {
            return;
        }
        e = e_last + 1;
    }
}

/// Clears the staged entries of `[first, last]` and frees the tables they held. Nothing
/// staged was ever valid, so no TLB maintenance is needed.
fn rollback<C: Config, A: TableAlloc>(a: &mut A, table: PhysAddr, level: u32, first: u64, last: u64) {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let is_last = level == 3;
    let tp = a.table_ptr(table);
    let mut e = first;
    loop {
        let e_last = entry_last(e, last, shift);
        let p = tp.wrapping_add(geo.index(e, level));
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let raw = unsafe { rd(p) };
        if is_staged(raw) {
            // SAFETY: an entry of a live table page of `a`, index below the level's entries.
            unsafe { wr(p, 0) };
            if !is_last && raw & 0b10 != 0 {
                free_new_tree::<C, A>(a, raw & Descriptor::OA_MASK, level + 1);
            }
        } else if Descriptor::from_raw(raw).is_table(is_last) {
            rollback::<C, A>(a, raw & Descriptor::OA_MASK, level + 1, e, e_last);
        }
        if e_last >= last {
            return;
        }
        e = e_last + 1;
    }
}

/// Frees a table allocated by the failed call and every (staged) table below it.
fn free_new_tree<C: Config, A: TableAlloc>(a: &mut A, table: PhysAddr, level: u32) {
    if level < 3 {
        let tp = a.table_ptr(table);
        for i in 0..C::GEOM.entries(level) {
            // SAFETY: an entry of a live table page of `a`, index below the level's entries.
            let raw = unsafe { rd(tp.wrapping_add(i)) };
            if is_staged(raw) && raw & 0b10 != 0 {
                free_new_tree::<C, A>(a, raw & Descriptor::OA_MASK, level + 1);
            }
        }
    }
    a.free_table(table);
}

/// Span of the leaves cleared by one unmap, for the TLB flush.
struct Span {
    lo: u64,
    hi: u64,
    min_shift: u32,
}

/// `Misaligned` if a leaf or contiguous run overlapping `[first, last]` is not inside it.
fn check_split<C: Config, A: TableAlloc>(
    a: &A,
    table: PhysAddr,
    level: u32,
    first: u64,
    last: u64,
) -> Result<(), MapError> {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let is_last = level == 3;
    let tp = a.table_ptr(table);
    let mut e = first;
    loop {
        let e_last = entry_last(e, last, shift);
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let d = Descriptor::from_raw(unsafe { rd(tp.wrapping_add(geo.index(e, level))) });
        if d.is_table(is_last) {
            check_split::<C, A>(a, d.output_address(), level + 1, e, e_last)?;
        } else if d.is_leaf(is_last) {
            let mut mask = (1u64 << shift) - 1;
            if d.is_contiguous() {
                if let Some(s) = geo.cont_shift(level) {
                    mask = (1u64 << (shift + s)) - 1;
                }
            }
            if e & !mask < first || e | mask > last {
                return Err(MapError::Misaligned);
            }
        }
        if e_last >= last {
            return Ok(());
        }
        e = e_last + 1;
    }
}

/// Clears every leaf in `[first, last]` (all lie wholly inside, see `check_split`).
#[allow(clippy::too_many_arguments)] // one level of the unmap walk: its state, passed down
fn clear_leaves<C: Config, A: TableAlloc, T: TlbInvalidate>(
    a: &A,
    tlb: &mut T,
    table: PhysAddr,
    level: u32,
    first: u64,
    last: u64,
    stats: &mut UnmapStats,
    span: &mut Span,
) {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let is_last = level == 3;
    let tp = a.table_ptr(table);
    let mut e = first;
    loop {
        let e_last = entry_last(e, last, shift);
        let p = tp.wrapping_add(geo.index(e, level));
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let d = Descriptor::from_raw(unsafe { rd(p) });
        if d.is_table(is_last) {
            clear_leaves::<C, A, T>(a, tlb, d.output_address(), level + 1, e, e_last, stats, span);
        } else if d.is_leaf(is_last) {
            // SAFETY: an entry of a live table page of `a`, index below the level's entries.
            unsafe { wr(p, 0) };
            tlb.cleared(Mapping {
                va: e & !((1 << shift) - 1),
                size: 1 << shift,
                pa: d.output_address(),
                pa_size: 1 << shift,
                table: false,
            });
            stats.leaves += 1;
            stats.cont_leaves += d.is_contiguous() as u64;
            stats.bytes = stats.bytes.wrapping_add(1 << shift);
            span.lo = min(span.lo, e);
            span.hi = max(span.hi, e_last);
            span.min_shift = min(span.min_shift, shift);
        }
        if e_last >= last {
            return;
        }
        e = e_last + 1;
    }
}

/// Bottom-up: unlinks and frees each table below `table` whose span is inside `bounds`
/// (inclusive `(floor, ceiling_last)`) and that is empty once its own children are done.
#[allow(clippy::too_many_arguments)]
fn free_empty<C: Config, A: TableAlloc, T: TlbInvalidate>(
    a: &mut A,
    tlb: &mut T,
    table: PhysAddr,
    level: u32,
    first: u64,
    last: u64,
    bounds: (u64, u64),
    stats: &mut UnmapStats,
) {
    if level >= 3 {
        return;
    }
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let mask = (1u64 << shift) - 1;
    let tp = a.table_ptr(table);
    let mut e = first;
    loop {
        let e_last = entry_last(e, last, shift);
        let p = tp.wrapping_add(geo.index(e, level));
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let d = Descriptor::from_raw(unsafe { rd(p) });
        if d.is_table(false) {
            let child = d.output_address();
            free_empty::<C, A, T>(a, tlb, child, level + 1, e, e_last, bounds, stats);
            let (base, end) = (e & !mask, e | mask);
            if base >= bounds.0 && end <= bounds.1 && table_is_empty::<C, A>(a, child, level + 1) {
                // SAFETY: an entry of a live table page of `a`, index below the level's entries.
                unsafe { wr(p, 0) };
                tlb.cleared(Mapping {
                    va: base,
                    size: 1 << shift,
                    pa: child,
                    pa_size: geo.page_size(),
                    table: true,
                });
                // Mutant: a last-level flush, which leaves walk caches holding the table.
                if mutant::on(Mutant::LeafTlbiForTable) {
                    tlb.flush_kernel_range(base, base.wrapping_add(1 << shift), shift);
                } else {
                    tlb.flush_kernel_pgtable(base);
                }
                a.free_table(child);
                stats.tables_freed += 1;
            }
        }
        if e_last >= last {
            return;
        }
        e = e_last + 1;
    }
}

fn table_is_empty<C: Config, A: TableAlloc>(a: &A, table: PhysAddr, level: u32) -> bool {
    let tp = a.table_ptr(table);
    // SAFETY: an entry of a live table page of `a`, index below the level's entries.
    (0..C::GEOM.entries(level)).all(|i| unsafe { rd(tp.wrapping_add(i)) } == 0)
}

fn census<C: Config, A: TableAlloc>(a: &A, table: PhysAddr, level: u32, c: &mut Census) {
    let geo = C::GEOM;
    let is_last = level == 3;
    let lvl = level as usize & 3;
    c.tables += 1;
    c.tables_at[lvl] += 1;
    let tp = a.table_ptr(table);
    for i in 0..geo.entries(level) {
        // SAFETY: an entry of a live table page of `a`, index below the level's entries.
        let d = Descriptor::from_raw(unsafe { rd(tp.wrapping_add(i)) });
        if d == Descriptor::INVALID {
            continue;
        }
        if d.is_table(is_last) {
            census::<C, A>(a, d.output_address(), level + 1, c);
        } else if d.is_leaf(is_last) && (is_last || geo.block_allowed(level)) {
            c.leaves[lvl] += 1;
            c.cont[lvl] += d.is_contiguous() as u64;
            c.bytes = c.bytes.wrapping_add(geo.level_size(level));
        } else {
            c.bad += 1;
        }
    }
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
