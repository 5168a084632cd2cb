//! `map` and `populate_tables` as visitors of the entry walk: stage every entry the call
//! writes (invisible to the MMU), then commit (make valid bottom-up) or roll back (clear the
//! staged entries, free the tables the call allocated). See the module documentation of
//! [`super`] for the all-or-nothing rule.

use core::marker::PhantomData;
use core::sync::atomic::{fence, Ordering};

use super::walk::{staged, walk, Entry, PteState, Visit};
use super::{alloc_table, Attrs, Config, Descriptor, MapError, MapFlags, PhysAddr, TableAlloc, VirtAddr};
use arch::tlb::Mapping;

/// One `map` or `populate_tables` call.
pub(super) struct MapReq {
    pub(super) va: VirtAddr,
    /// Last byte of the range.
    pub(super) last: VirtAddr,
    pub(super) pa: PhysAddr,
    pub(super) attrs: Attrs,
    pub(super) flags: MapFlags,
    /// The deepest level whose entries are staged: 3 (map), 2 (`populate_tables`: new pte
    /// tables stay empty).
    pub(super) deepest: u32,
}

impl MapReq {
    #[inline(always)]
    fn pa_of(&self, va: VirtAddr) -> PhysAddr {
        self.pa.wrapping_add(va.wrapping_sub(self.va))
    }
}

/// Stages the request below `root` (at `level`); on failure clears what was staged and frees
/// the tables the call allocated, leaving the tree as it was.
pub(super) fn stage_all<C: Config, A: TableAlloc>(
    a: &mut A,
    req: &MapReq,
    root: PhysAddr,
    level: u32,
) -> Result<(), MapError> {
    let mut v = Stage::<C, A> {
        a,
        req,
        runs: [Run::NONE; 4],
        _cfg: PhantomData,
    };
    let r = walk::<C, _>(&mut v, root, level, req.va, req.last);
    if r.is_err() {
        let mut v = Rollback::<C, A> { a, _cfg: PhantomData };
        let Ok(()) = walk::<C, _>(&mut v, root, level, req.va, req.last);
    }
    r
}

/// Makes the staged entries of the request valid, children before the entry linking them, and
/// reports each to [`TableAlloc::made_valid`]. Nothing below `req.deepest` was staged.
pub(super) fn commit_all<C: Config, A: TableAlloc>(a: &mut A, req: &MapReq, root: PhysAddr, level: u32) {
    let mut v = Commit::<C, A> {
        a,
        deepest: req.deepest,
        _cfg: PhantomData,
    };
    let Ok(()) = walk::<C, _>(&mut v, root, level, req.va, req.last);
}

/// The contiguous run being staged at one level: `[first, last]`, and whether it gets CONT.
#[derive(Clone, Copy)]
struct Run {
    first: VirtAddr,
    last: VirtAddr,
    cont: bool,
}

impl Run {
    const NONE: Run = Run {
        first: 1,
        last: 0,
        cont: false,
    };
}

/// Stages each entry of the range: a leaf where a whole entry is covered and a leaf may go,
/// else descend (allocating a staged table if the entry is empty). A contiguous run is checked
/// as a whole at its first entry (see [`run_is_free`]).
struct Stage<'a, C, A> {
    a: &'a mut A,
    req: &'a MapReq,
    /// Per level, the last contiguous run met.
    runs: [Run; 4],
    _cfg: PhantomData<C>,
}

impl<C: Config, A: TableAlloc> Stage<'_, C, A> {
    /// Whether entry `e` (where a leaf may go) is staged with CONT: it starts an aligned run
    /// inside the range whose entries are all free for it, or lies in such a run.
    fn cont(&mut self, e: &Entry) -> Result<bool, MapError> {
        let Some(s) = C::GEOM.cont_shift(e.level) else {
            return Ok(false);
        };
        let run = &mut self.runs[e.level as usize & 3];
        let run_mask = (1u64 << (e.shift() + s)) - 1;
        let run_last = e.first | run_mask;
        if (e.first | self.req.pa_of(e.first)) & run_mask == 0 && run_last <= self.req.last {
            let cont = run_is_free::<C, A>(self.a, self.req, e, run_last)?;
            *run = Run {
                first: e.first,
                last: run_last,
                cont,
            };
        }
        Ok(run.cont && run.first <= e.first && e.first <= run.last)
    }
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into the table of a valid
// table entry or the table it has just allocated and linked; nothing is freed.
unsafe impl<C: Config, A: TableAlloc> Visit for Stage<'_, C, A> {
    type Error = MapError;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, MapError> {
        let geo = C::GEOM;
        let is_last = e.level == 3;
        let leaf_ok = is_last || (self.req.flags.block && geo.block_allowed(e.level));
        let cont = leaf_ok && self.req.flags.cont && self.cont(e)?;
        let pa = self.req.pa_of(e.first);
        let whole = e.whole() && pa & (e.size() - 1) == 0;
        if whole && leaf_ok && !matches!(e.state, PteState::Table(_)) {
            let mut want = Descriptor::leaf(pa, self.req.attrs, is_last);
            if cont {
                want = want.with_contiguous();
            }
            return match e.state {
                PteState::Absent => {
                    e.write(staged(want));
                    Ok(None)
                }
                _ if e.raw == want.raw() => Ok(None),
                _ => Err(MapError::Reshape { va: e.first }),
            };
        }
        let child = match e.state {
            // At the pte level every (page-aligned) piece is a whole leaf: not reached.
            _ if is_last => return Err(MapError::Reshape { va: e.first }),
            PteState::Absent => {
                let t = alloc_table::<C, A>(self.a)?;
                e.write(staged(Descriptor::table(t)));
                t
            }
            PteState::Table(next) => next,
            _ => return Err(MapError::Reshape { va: e.first }),
        };
        Ok((e.level < self.req.deepest).then_some(child))
    }
}

/// Whether the contiguous run `[e.first, run_last]` (starting at `e`) can be staged with CONT:
/// every entry is empty or already the wanted CONT leaf. An existing table in the run means
/// "map it without CONT"; any other valid entry is a reshape.
fn run_is_free<C: Config, A: TableAlloc>(a: &A, req: &MapReq, e: &Entry, run_last: VirtAddr) -> Result<bool, MapError> {
    let mut v = RunCheck::<A> { a, req, free: true };
    walk::<C, _>(&mut v, e.table, e.level, e.first, run_last)?;
    Ok(v.free)
}

/// The entries of one contiguous run, read without descending.
struct RunCheck<'a, A> {
    a: &'a A,
    req: &'a MapReq,
    free: bool,
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` never descends and nothing is freed.
unsafe impl<A: TableAlloc> Visit for RunCheck<'_, A> {
    type Error = MapError;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, MapError> {
        let want = Descriptor::leaf(self.req.pa_of(e.first), self.req.attrs, e.level == 3).with_contiguous();
        match e.state {
            PteState::Table(_) => self.free = false,
            PteState::Absent => {}
            _ if e.raw == want.raw() => {}
            _ => return Err(MapError::Reshape { va: e.first }),
        }
        Ok(None)
    }
}

/// Makes staged entries valid, children first.
struct Commit<'a, C, A> {
    a: &'a mut A,
    deepest: u32,
    _cfg: PhantomData<C>,
}

impl<C: Config, A: TableAlloc> Commit<'_, C, A> {
    /// Makes staged entry `e` valid and reports it.
    fn validate(&mut self, e: &Entry, valid: Descriptor, table: bool) {
        e.write(valid.raw());
        self.a.made_valid(Mapping {
            va: e.base(),
            size: e.size(),
            pa: valid.output_address(),
            pa_size: if table { C::GEOM.page_size() } else { e.size() },
            table,
        });
    }
}

/// The valid descriptor a staged entry stands for.
#[inline(always)]
fn unstaged(d: Descriptor) -> Descriptor {
    Descriptor::from_raw((d.raw() & !super::STAGED) | 1)
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid or
// staged table entries; nothing is freed.
unsafe impl<C: Config, A: TableAlloc> Visit for Commit<'_, C, A> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        let deeper = e.level < self.deepest;
        match e.state {
            PteState::Staged(d) => {
                let valid = unstaged(d);
                let table = valid.is_table(e.level == 3);
                if table && deeper {
                    // Made valid in `leave`, once its table is.
                    return Ok(Some(valid.output_address()));
                }
                self.validate(e, valid, table);
                Ok(None)
            }
            PteState::Table(next) if deeper => Ok(Some(next)),
            _ => Ok(None),
        }
    }

    #[inline(always)]
    fn leave(&mut self, e: &Entry, _next: PhysAddr) -> Result<(), Self::Error> {
        if let PteState::Staged(d) = e.state {
            // The new table's entries are written before the entry that publishes it.
            fence(Ordering::Release);
            self.validate(e, unstaged(d), true);
        }
        Ok(())
    }
}

/// Clears the staged entries of a failed call and frees the tables it allocated. Nothing
/// staged was ever valid, so no TLB maintenance is needed.
struct Rollback<'a, C, A> {
    a: &'a mut A,
    _cfg: PhantomData<C>,
}

/// A staged table entry (above level 3): the call allocated the table below it.
#[inline(always)]
fn staged_table(e: &Entry) -> Option<PhysAddr> {
    match e.state {
        PteState::Staged(d) if e.level < 3 && d.raw() & 0b10 != 0 => Some(d.output_address()),
        _ => None,
    }
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid table
// entries, and frees only the table below a staged entry (after clearing it), which it never
// walks: [`free_new_tree`] walks it with its own visitor before giving it back.
unsafe impl<C: Config, A: TableAlloc> Visit for Rollback<'_, C, A> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        match e.state {
            PteState::Staged(_) => {
                e.write(0);
                if let Some(child) = staged_table(e) {
                    free_new_tree::<C, A>(self.a, child, e.level + 1, e.first, e.last);
                }
                Ok(None)
            }
            PteState::Table(next) => Ok(Some(next)),
            _ => Ok(None),
        }
    }
}

/// Frees `table` (at `level`), allocated by the failed call, and every table below it. Only
/// the part `[first, last]` of a new table was ever staged: the rest is empty.
fn free_new_tree<C: Config, A: TableAlloc>(a: &mut A, table: PhysAddr, level: u32, first: VirtAddr, last: VirtAddr) {
    if level < 3 {
        let mut v = FreeNew::<A> { a };
        let Ok(()) = walk::<C, _>(&mut v, table, level, first, last);
    }
    a.free_table(table);
}

/// Frees the tables below a new table, bottom-up, without writing any entry.
struct FreeNew<'a, A> {
    a: &'a mut A,
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into the table of a staged
// table entry (allocated by this call) and frees a table only once the walk is done with it:
// in `leave`, or in `enter` for a pte table, which is never walked.
unsafe impl<A: TableAlloc> Visit for FreeNew<'_, A> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        match staged_table(e) {
            Some(child) if e.level + 1 < 3 => Ok(Some(child)),
            Some(child) => {
                self.a.free_table(child);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    #[inline(always)]
    fn leave(&mut self, _e: &Entry, next: PhysAddr) -> Result<(), Self::Error> {
        self.a.free_table(next);
        Ok(())
    }
}
