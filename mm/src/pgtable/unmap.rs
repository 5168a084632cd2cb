//! `unmap` as visitors of the entry walk, in the teardown order of Linux
//! `unmap_hotplug_range` and `free_empty_tables`: refuse a range that would split a leaf or a
//! contiguous run, clear every leaf (the caller then issues one leaf invalidation for their
//! span), and only then, bottom-up, unlink each empty table inside the floor/ceiling bounds:
//! clear the parent entry → walk-cache invalidation → free the table page.

use core::cmp::{max, min};
use core::marker::PhantomData;

use super::walk::{table_is_empty, walk, Entry, PteState, Visit};
use super::{Config, MapError, PhysAddr, TableAlloc, UnmapStats, VirtAddr};
use arch::mutant::{self, Mutant};
use arch::tlb::{Mapping, TlbInvalidate};

/// `Misaligned` if a leaf or contiguous run overlapping `[first, last]` is not inside it.
pub(super) fn check_split<C: Config, A: TableAlloc>(
    a: &A,
    root: PhysAddr,
    level: u32,
    first: VirtAddr,
    last: VirtAddr,
) -> Result<(), MapError> {
    let mut v = SplitCheck::<C, A> {
        a,
        first,
        last,
        _cfg: PhantomData,
    };
    walk::<C, _>(&mut v, root, level, first, last)
}

struct SplitCheck<'a, C, A> {
    a: &'a A,
    first: VirtAddr,
    last: VirtAddr,
    _cfg: PhantomData<C>,
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid table
// entries; nothing is freed.
unsafe impl<C: Config, A: TableAlloc> Visit for SplitCheck<'_, C, A> {
    type Error = MapError;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, MapError> {
        if let PteState::Table(next) = e.state {
            return Ok(Some(next));
        }
        if let Some(d) = e.state.leaf() {
            let mut mask = e.size() - 1;
            if d.is_contiguous() {
                if let Some(s) = C::GEOM.cont_shift(e.level) {
                    mask = (1u64 << (e.shift() + s)) - 1;
                }
            }
            if e.first & !mask < self.first || e.first | mask > self.last {
                return Err(MapError::Misaligned);
            }
        }
        Ok(None)
    }
}

/// The leaves one unmap cleared: their span and smallest leaf, for the one leaf flush.
pub(super) struct Cleared {
    pub(super) stats: UnmapStats,
    pub(super) lo: VirtAddr,
    pub(super) hi: VirtAddr,
    pub(super) min_shift: u32,
}

/// Clears every leaf in `[first, last]` (all lie wholly inside, see [`check_split`]) and
/// reports each to [`TlbInvalidate::cleared`]. Invalidates nothing.
pub(super) fn clear_leaves<C: Config, A: TableAlloc, T: TlbInvalidate>(
    a: &A,
    tlb: &mut T,
    root: PhysAddr,
    level: u32,
    range: (VirtAddr, VirtAddr),
) -> Cleared {
    let mut v = ClearLeaves::<A, T> {
        a,
        tlb,
        done: Cleared {
            stats: UnmapStats::default(),
            lo: u64::MAX,
            hi: 0,
            min_shift: 63,
        },
    };
    let Ok(()) = walk::<C, _>(&mut v, root, level, range.0, range.1);
    v.done
}

struct ClearLeaves<'a, A, T> {
    a: &'a A,
    tlb: &'a mut T,
    done: Cleared,
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid table
// entries; nothing is freed.
unsafe impl<A: TableAlloc, T: TlbInvalidate> Visit for ClearLeaves<'_, A, T> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        if let PteState::Table(next) = e.state {
            return Ok(Some(next));
        }
        if let Some(d) = e.state.leaf() {
            e.write(0);
            self.tlb.cleared(Mapping {
                va: e.base(),
                size: e.size(),
                pa: d.output_address(),
                pa_size: e.size(),
                table: false,
            });
            let c = &mut self.done;
            c.stats.leaves += 1;
            c.stats.cont_leaves += d.is_contiguous() as u64;
            c.stats.bytes = c.stats.bytes.wrapping_add(e.size());
            c.lo = min(c.lo, e.first);
            c.hi = max(c.hi, e.last);
            c.min_shift = min(c.min_shift, e.shift());
        }
        Ok(None)
    }
}

/// Bottom-up: unlinks and frees each table below `root` on the path of `[first, last]` whose
/// span is inside `bounds` (inclusive `(floor, ceiling_last)`) and that is empty once its own
/// children are done; counts them in `stats`.
pub(super) fn free_empty<C: Config, A: TableAlloc, T: TlbInvalidate>(
    a: &mut A,
    tlb: &mut T,
    root: PhysAddr,
    level: u32,
    range: (VirtAddr, VirtAddr),
    bounds: (VirtAddr, VirtAddr),
) -> u64 {
    let mut v = FreeEmpty::<C, A, T> {
        a,
        tlb,
        bounds,
        freed: 0,
        _cfg: PhantomData,
    };
    let Ok(()) = walk::<C, _>(&mut v, root, level, range.0, range.1);
    v.freed
}

struct FreeEmpty<'a, C, A, T> {
    a: &'a mut A,
    tlb: &'a mut T,
    bounds: (VirtAddr, VirtAddr),
    freed: u64,
    _cfg: PhantomData<C>,
}

impl<C: Config, A: TableAlloc, T: TlbInvalidate> FreeEmpty<'_, C, A, T> {
    /// Table `child` below entry `e` is done: unlink and free it if it is empty and its span
    /// lies inside the bounds. Clear → walk-cache invalidation → free.
    fn release(&mut self, e: &Entry, child: PhysAddr) {
        let (base, end) = (e.base(), e.end());
        if base < self.bounds.0 || end > self.bounds.1 || !table_is_empty::<C, _>(self, child, e.level + 1) {
            return;
        }
        e.write(0);
        self.tlb.cleared(Mapping {
            va: base,
            size: e.size(),
            pa: child,
            pa_size: C::GEOM.page_size(),
            table: true,
        });
        // Mutant: a last-level flush, which leaves walk caches holding the table.
        if mutant::on(Mutant::LeafTlbiForTable) {
            self.tlb
                .flush_kernel_range(base, base.wrapping_add(e.size()), e.shift());
        } else {
            self.tlb.flush_kernel_pgtable(base);
        }
        self.a.free_table(child);
        self.freed += 1;
    }
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid table
// entries above the pte level, and a table is freed only once the walk is done with it: in
// `leave`, or in `enter` for a pte table, which is never walked.
unsafe impl<C: Config, A: TableAlloc, T: TlbInvalidate> Visit for FreeEmpty<'_, C, A, T> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        match e.state {
            // A pte table has no tables below it: only its own emptiness counts.
            PteState::Table(next) if e.level + 1 >= 3 => {
                self.release(e, next);
                Ok(None)
            }
            PteState::Table(next) => Ok(Some(next)),
            _ => Ok(None),
        }
    }

    #[inline(always)]
    fn leave(&mut self, e: &Entry, next: PhysAddr) -> Result<(), Self::Error> {
        self.release(e, next);
        Ok(())
    }
}
