//! Movable memory: handles whose backing frames the mm may move, and the offline path that
//! moves them (Linux `offline_pages`: isolate → migrate → take out of the allocator).
//!
//! A movable allocation is reached only through its [`Handle`]; the handle table maps it to
//! its current PFN and the head `struct page` records the handle in `private`, so migration
//! can find the owner of a page, copy the data to a new frame and switch the handle over.
//! Users touch the data only under the same lock that migration takes.

use crate::{
    buddy::{AllocKind, BuddyError, PageAlloc},
    geometry::Config,
    numa::NodeId,
    page::{flags, Memmap, Page},
    pgtable::{Attrs, MapError, MapFlags, PageTable, TableAlloc},
};
use alloc::vec::Vec;
use arch::mutant::{self, Mutant};
use arch::tlb::{Mapping, TlbInvalidate};

/// A movable allocation (index into the handle table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u32);

/// Handle-table slots per chunk: the table grows a chunk (64 KiB) at a time, so it never needs
/// one large contiguous allocation from the kernel heap.
const CHUNK: usize = 4096;

/// One handle-table entry: in use (where the allocation is) or free (next free slot).
#[derive(Clone, Copy, Debug)]
enum Slot {
    Used { pfn: u64, order: u32 },
    Free { next: u32 },
}

const NO_SLOT: u32 = u32::MAX;

/// Where each movable allocation lives now.
pub struct Handles {
    /// Slot `i` is `chunks[i / CHUNK][i % CHUNK]`; chunks are allocated fallibly.
    chunks: Vec<Vec<Slot>>,
    /// Slots handed out so far (the rest of the last chunk is untouched).
    used_slots: usize,
    /// Head of the free-slot list threaded through `Slot::Free`.
    free_head: u32,
    /// Live handles.
    live: usize,
    /// Pages moved by migration so far.
    pub migrated_pages: u64,
}

impl Default for Handles {
    fn default() -> Self {
        Self::new()
    }
}

impl Handles {
    pub const fn new() -> Self {
        Handles {
            chunks: Vec::new(),
            used_slots: 0,
            free_head: NO_SLOT,
            live: 0,
            migrated_pages: 0,
        }
    }

    fn slot(&self, i: usize) -> Option<&Slot> {
        if i >= self.used_slots {
            return None;
        }
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn slot_mut(&mut self, i: usize) -> Option<&mut Slot> {
        if i >= self.used_slots {
            return None;
        }
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    pub fn get(&self, h: Handle) -> Option<(u64, u32)> {
        match self.slot(h.0 as usize)? {
            Slot::Used { pfn, order } => Some((*pfn, *order)),
            Slot::Free { .. } => None,
        }
    }

    /// Point a live handle at its new frame (migration).
    fn set(&mut self, h: Handle, pfn: u64, order: u32) {
        if let Some(s @ Slot::Used { .. }) = self.slot_mut(h.0 as usize) {
            *s = Slot::Used { pfn, order };
        }
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn iter(&self) -> impl Iterator<Item = (Handle, u64, u32)> + '_ {
        (0..self.used_slots).filter_map(|i| self.get(Handle(i as u32)).map(|(p, o)| (Handle(i as u32), p, o)))
    }

    /// Allocate 2^order movable pages.
    pub fn alloc<M: Memmap>(&mut self, a: &mut PageAlloc<M>, order: u32) -> Option<Handle> {
        self.try_alloc(a, order).ok()
    }

    /// A free slot index, growing the table by a chunk (fallibly) when none is left.
    fn take_slot(&mut self) -> Result<usize, HandleError> {
        if self.free_head != NO_SLOT {
            let i = self.free_head as usize;
            if let Some(Slot::Free { next }) = self.slot(i) {
                self.free_head = *next;
                return Ok(i);
            }
        }
        if self.used_slots >= NO_SLOT as usize {
            return Err(HandleError::NoBookkeeping);
        }
        if self.used_slots == self.chunks.len() * CHUNK {
            let mut chunk = Vec::new();
            chunk.try_reserve_exact(CHUNK).map_err(|_| HandleError::NoBookkeeping)?;
            self.chunks.try_reserve(1).map_err(|_| HandleError::NoBookkeeping)?;
            chunk.resize(CHUNK, Slot::Free { next: NO_SLOT });
            self.chunks.push(chunk);
        }
        self.used_slots += 1;
        Ok(self.used_slots - 1)
    }

    /// Allocate 2^order movable pages; the handle table grows fallibly (its memory is the
    /// kernel heap, which a large request can exhaust), and nothing is taken when it cannot.
    pub fn try_alloc<M: Memmap>(&mut self, a: &mut PageAlloc<M>, order: u32) -> Result<Handle, HandleError> {
        let pfn = a.alloc(order, AllocKind::Movable).ok_or(HandleError::NoMemory)?;
        let i = match self.take_slot() {
            Ok(i) => i,
            Err(e) => {
                // Give the block straight back: it was never handed out.
                let _ = a.free(pfn, order);
                return Err(e);
            }
        };
        if let Some(s) = self.slot_mut(i) {
            *s = Slot::Used { pfn, order };
        }
        self.live += 1;
        set_owner(a, pfn, Some(Handle(i as u32)));
        Ok(Handle(i as u32))
    }

    /// Put slot `i` on the free list; once no handle is live, give the table's heap memory back.
    fn put_slot(&mut self, i: usize) {
        let next = self.free_head;
        if let Some(s) = self.slot_mut(i) {
            *s = Slot::Free { next };
            self.free_head = i as u32;
        }
        if self.live == 0 {
            self.chunks = Vec::new();
            self.used_slots = 0;
            self.free_head = NO_SLOT;
        }
    }

    pub fn free<M: Memmap>(&mut self, a: &mut PageAlloc<M>, h: Handle) -> Result<(), BuddyError> {
        let (pfn, order) = self.get(h).ok_or(BuddyError::NotAllocated { pfn: u64::MAX })?;
        set_owner(a, pfn, None);
        a.free(pfn, order)?;
        self.live -= 1;
        self.put_slot(h.0 as usize);
        Ok(())
    }

    /// Number of slots (live and free): handle indices are below it.
    pub fn slot_count(&self) -> usize {
        self.used_slots
    }

    /// Bytes of kernel heap the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * core::mem::size_of::<Slot>()
            + self.chunks.capacity() * core::mem::size_of::<Vec<Slot>>()
    }
}

/// Why [`Handles::try_alloc`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// No free movable page block of the order.
    NoMemory,
    /// The handle table cannot grow (kernel heap exhausted).
    NoBookkeeping,
}

fn set_owner<M: Memmap>(a: &mut PageAlloc<M>, pfn: u64, h: Option<Handle>) {
    // `pfn` is the head of a block just allocated or being freed: it has a memmap.
    let r = a.update_page(pfn, |p| p.private = h.map_or(0, |h| h.0 as u64 + 1));
    debug_assert!(r.is_ok(), "set_owner: pfn {pfn:#x} has no memmap");
}

/// Why [`offline_pages`] failed. Either way the range is back in the allocator and usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineError {
    /// The range cannot be isolated (no memmap, or a block straddles its edge).
    Range(BuddyError),
    /// A page that cannot be migrated (kernel, pinned, reserved) is in use at `pfn`.
    Unmovable { pfn: u64 },
    /// Migration ran out of memory outside the range to move into: `moved` pages were moved
    /// (they stay valid where they are now), `left` pages are still in use in the range.
    NoTarget { moved: u64, left: u64 },
}

/// Isolate `[start, start + nr)`, migrate every movable allocation in it elsewhere (moving
/// with `copy(handle, src_pfn, dst_pfn, order)`: the kernel unmaps the handle's window VA,
/// invalidates, copies and maps the new frame there), and take the range out of the allocator. Each
/// migrated-from block is passed to `freeing(pfn, order)` before it goes back to the
/// allocator (the kernel runs the teardown checker there).
/// If an unmovable page is in use, or no memory is left to migrate to, the range is
/// unisolated and the reason returned: everything is back in the allocator and usable, and the
/// allocations already migrated stay valid where they are now.
///
/// New frames come from below `target_below` (a PFN; `u64::MAX`: anywhere) while there is
/// room there: a shrink that takes away more than this range passes the lowest PFN it takes,
/// so no page moves into memory the same shrink offlines next.
pub fn offline_pages<M: Memmap>(
    a: &mut PageAlloc<M>,
    handles: &mut Handles,
    start: u64,
    nr: u64,
    target_below: u64,
    mut copy: impl FnMut(Handle, u64, u64, u32),
    mut freeing: impl FnMut(u64, u32),
) -> Result<u64, OfflineError> {
    // An allocated block that straddles an edge (larger than the range's alignment, e.g. a
    // max-order block across a 2 MiB sub-block) cannot be isolated in part: move it out first.
    // Free blocks across an edge are cut there by the isolation itself, so the new frame never
    // straddles.
    let mut moved = 0;
    let mut tries = 0;
    loop {
        match a.isolate_range(start, nr) {
            Ok(_) => break,
            Err(BuddyError::Straddles { pfn, .. }) if tries < 2 => {
                tries += 1;
                let page = a.page(pfn).ok_or(OfflineError::Unmovable { pfn })?;
                // Cut the free blocks across the edges, so the new frame cannot straddle one.
                a.split_free_at(start);
                a.split_free_at(start + nr);
                moved += migrate_block(a, handles, pfn, page, target_below, &mut copy, &mut freeing)?;
            }
            Err(BuddyError::Straddles { pfn, .. }) => return Err(OfflineError::Unmovable { pfn }),
            Err(e) => return Err(OfflineError::Range(e)),
        }
    }
    // One pass is enough: the range is isolated, so nothing in it is handed out again, and
    // what migration frees in it is parked.
    let result = (|| {
        let mut pfn = start;
        while let Some((busy, page)) = a.first_busy(pfn, start + nr - pfn) {
            moved +=
                migrate_block(a, handles, busy, page, target_below, &mut copy, &mut freeing).map_err(|e| match e {
                    OfflineError::NoTarget { .. } => OfflineError::NoTarget {
                        moved,
                        left: a.busy_pages(busy, start + nr - busy),
                    },
                    e => e,
                })?;
            pfn = busy + (1 << page.order);
        }
        match a.offline_isolated(start, nr) {
            Err(BuddyError::Busy { pfn }) => Err(OfflineError::Unmovable { pfn }),
            r => r.map_err(OfflineError::Range),
        }
    })();
    if result.is_err() {
        let _ = a.unisolate_range(start, nr);
    }
    result
}

/// Move the allocated block at `busy` to a new movable block (see [`offline_pages`]); returns
/// the pages moved. `NoTarget`'s figures are the caller's to fill in.
fn migrate_block<M: Memmap>(
    a: &mut PageAlloc<M>,
    handles: &mut Handles,
    busy: u64,
    page: Page,
    target_below: u64,
    copy: &mut impl FnMut(Handle, u64, u64, u32),
    freeing: &mut impl FnMut(u64, u32),
) -> Result<u64, OfflineError> {
    let owner = page.private.checked_sub(1).map(|h| Handle(h as u32));
    let order = page.order as u32;
    let movable = page.has(flags::MOVABLE) && owner.is_some_and(|h| handles.get(h) == Some((busy, order)));
    let (true, Some(h)) = (movable, owner) else {
        return Err(OfflineError::Unmovable { pfn: busy });
    };
    // An isolated range cannot be handed out, so the target is always elsewhere.
    let Some(dst) = migration_target(a, order, target_below, page.node) else {
        return Err(OfflineError::NoTarget { moved: 0, left: 0 });
    };
    copy(h, busy, dst, order);
    handles.set(h, dst, order);
    set_owner(a, dst, Some(h));
    set_owner(a, busy, None);
    freeing(busy, order);
    a.free(busy, order).map_err(OfflineError::Range)?; // parked if the range is isolated
    handles.migrated_pages += 1 << order;
    Ok(1 << order)
}

/// The new frame for a block of `order` migrated off node `nid` (Linux
/// `alloc_migration_target` with the page's node preferred): the nodes in `nid`'s fallback
/// order (its own first, then by distance), and on each node memory below `target_below` first,
/// then any. A page stays on its node when the node has room, even above `target_below`:
/// moving again later within the node costs a copy, while a move to another node costs every
/// later access.
fn migration_target<M: Memmap>(a: &mut PageAlloc<M>, order: u32, target_below: u64, nid: NodeId) -> Option<u64> {
    let (nodes, len) = a.distances().fallback_order(nid);
    nodes[..len].iter().find_map(|&n| {
        a.alloc_below_this_node(order, AllocKind::Movable, target_below, n)
            .or_else(|| a.alloc_this_node(order, AllocKind::Movable, n))
    })
}

/// Move a block that users reach through a kernel VA window (`[va, va + size)`, base pages)
/// to the frame at `dst_pa`, in the only safe order:
/// 1. clear its PTEs and broadcast-invalidate them (the engine's unmap), so no CPU can read or
///    write the old frame through the window any more;
/// 2. `copy()` the data (the caller reaches both frames through the linear map);
/// 3. map `dst_pa` at the same VA (the engine publishes it: `DSB ISHST; ISB`).
///
/// Only then may the old frame be freed (`offline_pages`' `freeing`, where the teardown checker
/// runs). The unmap's floor and ceiling are the block itself, so no table page is freed: the
/// window's tables stay, and the map allocates none.
pub fn move_window_block<C: Config>(
    pt: &mut PageTable<C>,
    tables: &mut impl TableAlloc,
    tlb: &mut impl TlbInvalidate,
    va: u64,
    size: u64,
    dst_pa: u64,
    copy: impl FnOnce(),
) -> Result<(), MapError> {
    let end = va.wrapping_add(size);
    if mutant::on(Mutant::MigrateNoTlbi) {
        pt.unmap_within(tables, &mut NoFlush(tlb), va, size, va, end)?;
    } else {
        pt.unmap_within(tables, tlb, va, size, va, end)?;
    }
    copy();
    if mutant::on(Mutant::MigrateNoRemap) {
        return Ok(());
    }
    pt.map(tables, va, dst_pa, size, Attrs::NORMAL_RW, MapFlags::PAGES)
}

/// Mutant `migrate-no-tlbi`: clears are reported (to the checker) but nothing is invalidated.
struct NoFlush<'a, T: TlbInvalidate>(&'a mut T);

impl<T: TlbInvalidate> TlbInvalidate for NoFlush<'_, T> {
    fn flush_kernel_range(&mut self, _: u64, _: u64, _: u32) {}
    fn flush_kernel_pgtable(&mut self, _: u64) {}
    fn flush_all(&mut self) {}
    fn cleared(&mut self, m: Mapping) {
        self.0.cleared(m);
    }
}
