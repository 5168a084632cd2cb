//! The read-only walks: one VA translated the way the MMU would ([`translate`]) and the census
//! of a whole tree ([`census`]), both visitors of the entry walk that never write.

use core::marker::PhantomData;

use super::walk::{walk, Entry, PteState, Visit};
use super::{Census, Config, Descriptor, Leaf, PhysAddr, Step, TableAlloc, VirtAddr, Walk};

/// Translates `va` from `root` (at `level`), recording each descriptor read.
pub(super) fn translate<C: Config, A: TableAlloc>(a: &A, root: PhysAddr, level: u32, va: VirtAddr) -> Walk {
    let mut v = Translate::<C, A> {
        a,
        va,
        w: Walk {
            steps: [Walk::EMPTY_STEP; 4],
            n: 0,
            leaf: None,
        },
        _cfg: PhantomData,
    };
    let Ok(()) = walk::<C, _>(&mut v, root, level, va, va);
    v.w
}

struct Translate<'a, C, A> {
    a: &'a A,
    va: VirtAddr,
    w: Walk,
    _cfg: PhantomData<C>,
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid table
// entries; nothing is freed.
unsafe impl<C: Config, A: TableAlloc> Visit for Translate<'_, C, A> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        let w = &mut self.w;
        let Some(s) = w.steps.get_mut(w.n) else {
            return Ok(None);
        };
        *s = Step {
            level: e.level,
            index: e.index,
            table_pa: e.table,
            desc: Descriptor::from_raw(e.raw),
        };
        w.n += 1;
        let block_ok = e.level == 3 || C::GEOM.block_allowed(e.level);
        match e.state {
            PteState::Table(next) => return Ok(Some(next)),
            PteState::Block(d) | PteState::Page(d) if block_ok => {
                let size = e.size();
                w.leaf = Some(Leaf {
                    pa: (d.output_address() & !(size - 1)) | (self.va & (size - 1)),
                    level: e.level,
                    size,
                    contiguous: d.is_contiguous(),
                });
            }
            _ => {}
        }
        Ok(None)
    }
}

/// Counts the table pages and leaves of the tree below `root` (at `level`, spanning
/// `[0, 2^va_bits)`).
pub(super) fn census<C: Config, A: TableAlloc>(a: &A, root: PhysAddr, level: u32) -> Census {
    let mut v = Count::<C, A> {
        a,
        c: Census::default(),
        _cfg: PhantomData,
    };
    v.table(level);
    let last = (1u64 << C::GEOM.va_bits) - 1;
    let Ok(()) = walk::<C, _>(&mut v, root, level, 0, last);
    v.c
}

struct Count<'a, C, A> {
    a: &'a A,
    c: Census,
    _cfg: PhantomData<C>,
}

impl<C, A> Count<'_, C, A> {
    /// One more table page at `level`.
    fn table(&mut self, level: u32) {
        self.c.tables += 1;
        self.c.tables_at[level as usize & 3] += 1;
    }
}

// SAFETY: `table_ptr` is the tree allocator's; `enter` descends only into tables of valid table
// entries; nothing is freed.
unsafe impl<C: Config, A: TableAlloc> Visit for Count<'_, C, A> {
    type Error = core::convert::Infallible;

    #[inline(always)]
    fn table_ptr(&self, table: PhysAddr) -> *mut u64 {
        self.a.table_ptr(table)
    }

    #[inline(always)]
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error> {
        let geo = C::GEOM;
        let lvl = e.level as usize & 3;
        match e.state {
            PteState::Absent => {}
            PteState::Table(next) => {
                self.table(e.level + 1);
                return Ok(Some(next));
            }
            PteState::Block(d) | PteState::Page(d) if e.level == 3 || geo.block_allowed(e.level) => {
                let c = &mut self.c;
                c.leaves[lvl] += 1;
                c.cont[lvl] += d.is_contiguous() as u64;
                c.bytes = c.bytes.wrapping_add(e.size());
            }
            _ => self.c.bad += 1,
        }
        Ok(None)
    }
}
