//! The one entry walk of the page-table engine. Every operation is a visitor of [`walk`]:
//! `map` (stage, commit, rollback), `populate_tables`, `unmap` (split check, clear, free of
//! empty tables), the census and the MMU-style translation. The walk visits, in VA order, every
//! entry that translates part of a VA range, hands the visitor the entry typed ([`PteState`])
//! with its level and the VA span it covers ([`Entry`]), and descends into the table the
//! visitor names, calling it once more when the table below is done (children before parents,
//! the order commit and the free of empty tables need).
//!
//! It is also the only code that reads or writes a descriptor ([`rd`], [`wr`]): a visitor
//! writes the entry it is given through [`Entry::write`], whose soundness rests on the
//! [`Visit`] contract.
//!
//! Generic and statically dispatched (no trait objects, no allocation, no panics, no
//! `core::fmt`): `map` runs before the MMU is on, from an address other than the link address.

use core::cmp::min;
use core::ptr;

use super::{Config, Descriptor, PhysAddr, VirtAddr, STAGED};

/// What one entry holds, decoded for its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PteState {
    /// Zero: nothing mapped, nothing staged.
    Absent,
    /// A valid table descriptor: the next-level table.
    Table(PhysAddr),
    /// A valid block descriptor (levels 0-2; whether the level allows blocks is the
    /// visitor's business, see `Geometry::block_allowed`).
    Block(Descriptor),
    /// A valid page descriptor (level 3).
    Page(Descriptor),
    /// Written by a `map` in progress: the intended descriptor, VALID clear, [`STAGED`] set.
    Staged(Descriptor),
    /// Any other non-zero value: invalid and not staged, or a pattern the level has no
    /// meaning for (`0b01` at level 3).
    Invalid,
}

impl PteState {
    #[inline(always)]
    fn decode(raw: u64, level: u32) -> Self {
        let d = Descriptor::from_raw(raw);
        let is_last = level == 3;
        if raw == 0 {
            PteState::Absent
        } else if is_staged(raw) {
            PteState::Staged(d)
        } else if d.is_table(is_last) {
            PteState::Table(d.output_address())
        } else if d.is_leaf(is_last) {
            if is_last {
                PteState::Page(d)
            } else {
                PteState::Block(d)
            }
        } else {
            PteState::Invalid
        }
    }

    /// The descriptor of a valid leaf (block or page).
    #[inline(always)]
    pub(super) fn leaf(self) -> Option<Descriptor> {
        match self {
            PteState::Block(d) | PteState::Page(d) => Some(d),
            _ => None,
        }
    }
}

/// One entry as the walk hands it to a visitor: where it is, what it holds, and which part
/// of the walked range it translates.
pub(super) struct Entry {
    pub(super) level: u32,
    /// First and last byte of the walked range that this entry translates.
    pub(super) first: VirtAddr,
    pub(super) last: VirtAddr,
    /// The raw descriptor, as read, and its decoding.
    pub(super) raw: u64,
    pub(super) state: PteState,
    /// The table holding the entry and the entry's index in it.
    pub(super) table: PhysAddr,
    pub(super) index: usize,
    shift: u32,
    ptr: *mut u64,
}

impl Entry {
    /// log2 of the bytes the entry maps.
    #[inline(always)]
    pub(super) fn shift(&self) -> u32 {
        self.shift
    }

    /// Bytes the entry maps (its whole span, not only the walked part).
    #[inline(always)]
    pub(super) fn size(&self) -> u64 {
        1 << self.shift
    }

    /// First byte of the entry's span.
    #[inline(always)]
    pub(super) fn base(&self) -> VirtAddr {
        self.first & !(self.size() - 1)
    }

    /// Last byte of the entry's span.
    #[inline(always)]
    pub(super) fn end(&self) -> VirtAddr {
        self.first | (self.size() - 1)
    }

    /// Whether the walked range covers the entry's whole span.
    #[inline(always)]
    pub(super) fn whole(&self) -> bool {
        self.first == self.base() && self.last == self.end()
    }

    /// Writes the entry.
    #[inline(always)]
    pub(super) fn write(&self, raw: u64) {
        // SAFETY: an entry of the table the walk is in (index below the level's entries), which
        // the `Visit` contract keeps live while any of its entries is being visited.
        unsafe { wr(self.ptr, raw) }
    }
}

/// A visitor of [`walk`].
///
/// # Safety
/// The walk reads and writes (through [`Entry::write`]) table pages without checks, so an
/// implementation promises: `table_ptr` is the [`super::TableAlloc::table_ptr`] of the
/// allocator owning the tables walked; the table a walk with this visitor starts at and every
/// table `enter` returns is a live table page of that allocator (the root, the table below a
/// valid or staged table entry of the tree, or the table just linked there); and no table is
/// given back while the walk is in it: a visitor frees only the table below an entry, in
/// `leave` (its walk is over) or in an `enter` that does not descend.
pub(super) unsafe trait Visit {
    type Error;

    /// How the walk reaches table page `table`.
    fn table_ptr(&self, table: PhysAddr) -> *mut u64;

    /// Visits one entry; `Some(table)` walks the part `[e.first, e.last]` of that table (the
    /// entry's next level) and then calls [`Visit::leave`]. Ignored at level 3.
    fn enter(&mut self, e: &Entry) -> Result<Option<PhysAddr>, Self::Error>;

    /// The walk of `next`, the table below `e`, is done.
    #[inline(always)]
    fn leave(&mut self, _e: &Entry, _next: PhysAddr) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Visits the entries of `table` (a live table of the visitor's allocator, at `level`) that
/// translate part of `[first, last]`, in VA order, descending where the visitor asks.
/// `[first, last]` lies inside the table's span. Stops at the visitor's first error.
pub(super) fn walk<C: Config, V: Visit>(
    v: &mut V,
    table: PhysAddr,
    level: u32,
    first: VirtAddr,
    last: VirtAddr,
) -> Result<(), V::Error> {
    let geo = C::GEOM;
    let shift = geo.level_shift(level);
    let mask = (1u64 << shift) - 1;
    let tp = v.table_ptr(table);
    // Consecutive entries: `[first, last]` lies inside the table's span.
    let mut index = geo.index(first, level);
    let mut va = first;
    loop {
        let p = tp.wrapping_add(index);
        // SAFETY: an entry of a live table page (the `Visit` contract), index below the level's
        // entries.
        let raw = unsafe { rd(p) };
        let e = Entry {
            level,
            first: va,
            last: min(last, va | mask),
            raw,
            state: PteState::decode(raw, level),
            table,
            index,
            shift,
            ptr: p,
        };
        if let Some(next) = v.enter(&e)? {
            if level < 3 {
                walk::<C, V>(v, next, level + 1, e.first, e.last)?;
                v.leave(&e, next)?;
            }
        }
        if e.last >= last {
            return Ok(());
        }
        va = e.last + 1;
        index += 1;
    }
}

/// Whether every entry of `table`, a live table of the visitor's allocator at `level`, is zero.
/// A plain scan of the page rather than a walk: it runs before every free of an emptied
/// table (8192 entries on 64K) and stays one load and one test per entry.
pub(super) fn table_is_empty<C: Config, V: Visit>(v: &V, table: PhysAddr, level: u32) -> bool {
    let tp = v.table_ptr(table);
    (0..C::GEOM.entries(level)).all(|i| {
        let p = tp.wrapping_add(i);
        // SAFETY: an entry of a live table page (the caller's promise, the `Visit` contract for
        // `table_ptr`), index below the level's entries.
        unsafe { rd(p) == 0 }
    })
}

/// Reads one descriptor.
///
/// # Safety
/// `p` is `table_ptr(table) + index` for a live table page of a [`super::TableAlloc`] and an
/// index below `Geometry::entries` of the table's level (never more than one page of entries).
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

/// An entry `map` has written but not yet made valid.
#[inline(always)]
pub(super) fn is_staged(raw: u64) -> bool {
    raw & 1 == 0 && raw & STAGED != 0
}

/// The staged form of `d`: VALID clear, [`STAGED`] set.
#[inline(always)]
pub(super) fn staged(d: Descriptor) -> u64 {
    (d.raw() & !1) | STAGED
}
