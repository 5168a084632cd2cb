//! Movable memory: handles whose backing frames the mm may move, and the offline path that
//! moves them (Linux `offline_pages`: isolate → migrate → take out of the allocator).
//!
//! A movable allocation is reached only through its [`Handle`]; the handle table maps it to
//! its current PFN and the head `struct page` records the handle in `private`, so migration
//! can find the owner of a page, copy the data to a new frame and switch the handle over.
//! Users touch the data only under the same lock that migration takes.

use crate::{
    buddy::{AllocKind, BuddyError, PageAlloc},
    page::{flags, Memmap},
};
use alloc::vec::Vec;

/// A movable allocation (index into the handle table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub u32);

/// Where each movable allocation lives now.
#[derive(Default)]
pub struct Handles {
    /// (pfn, order) per handle; `None` = free slot.
    slots: Vec<Option<(u64, u32)>>,
    free_slots: Vec<u32>,
    /// Pages moved by migration so far.
    pub migrated_pages: u64,
}

impl Handles {
    pub const fn new() -> Self {
        Handles {
            slots: Vec::new(),
            free_slots: Vec::new(),
            migrated_pages: 0,
        }
    }

    pub fn get(&self, h: Handle) -> Option<(u64, u32)> {
        self.slots.get(h.0 as usize).copied().flatten()
    }

    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Handle, u64, u32)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|(p, o)| (Handle(i as u32), p, o)))
    }

    /// Allocate 2^order movable pages.
    pub fn alloc<M: Memmap>(&mut self, a: &mut PageAlloc<M>, order: u32) -> Option<Handle> {
        let pfn = a.alloc(order, AllocKind::Movable)?;
        let idx = match self.free_slots.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[idx as usize] = Some((pfn, order));
        set_owner(a, pfn, Some(Handle(idx)));
        Some(Handle(idx))
    }

    pub fn free<M: Memmap>(&mut self, a: &mut PageAlloc<M>, h: Handle) -> Result<(), BuddyError> {
        let (pfn, order) = self.get(h).ok_or(BuddyError::NotAllocated { pfn: u64::MAX })?;
        set_owner(a, pfn, None);
        a.free(pfn, order)?;
        self.slots[h.0 as usize] = None;
        self.free_slots.push(h.0);
        Ok(())
    }
}

fn set_owner<M: Memmap>(a: &mut PageAlloc<M>, pfn: u64, h: Option<Handle>) {
    // SAFETY: `pfn` is the head of a block we just allocated (valid memmap); the caller holds
    // the allocator exclusively (`&mut`), so no other reference to this struct page exists.
    unsafe { (*a.memmap().page(pfn)).private = h.map_or(0, |h| h.0 as u64 + 1) };
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

/// Isolate `[start, start + nr)`, migrate every movable allocation in it elsewhere (copying
/// with `copy(src_pfn, dst_pfn, order)`), and take the range out of the allocator. Each
/// migrated-from block is passed to `freeing(pfn, order)` before it goes back to the
/// allocator (the kernel runs the teardown checker there).
/// If an unmovable page is in use, or no memory is left to migrate to, the range is
/// unisolated and the reason returned: everything is back in the allocator and usable, and the
/// allocations already migrated stay valid where they are now.
pub fn offline_pages<M: Memmap>(
    a: &mut PageAlloc<M>,
    handles: &mut Handles,
    start: u64,
    nr: u64,
    mut copy: impl FnMut(u64, u64, u32),
    mut freeing: impl FnMut(u64, u32),
) -> Result<u64, OfflineError> {
    a.isolate_range(start, nr).map_err(OfflineError::Range)?;
    // One pass is enough: the range is isolated, so nothing in it is handed out again, and
    // what migration frees in it is parked.
    let mut moved = 0;
    let result = (|| {
        let mut pfn = start;
        while let Some((busy, page)) = a.first_busy(pfn, start + nr - pfn) {
            let owner = page.private.checked_sub(1).map(|h| Handle(h as u32));
            let order = page.order as u32;
            let movable = page.has(flags::MOVABLE) && owner.is_some_and(|h| handles.get(h) == Some((busy, order)));
            let (true, Some(h)) = (movable, owner) else {
                return Err(OfflineError::Unmovable { pfn: busy });
            };
            // The isolated range cannot be handed out, so the target is always elsewhere.
            let Some(dst) = a.alloc(order, AllocKind::Movable) else {
                let left = a.busy_pages(busy, start + nr - busy);
                return Err(OfflineError::NoTarget { moved, left });
            };
            copy(busy, dst, order);
            handles.slots[h.0 as usize] = Some((dst, order));
            set_owner(a, dst, Some(h));
            set_owner(a, busy, None);
            freeing(busy, order);
            a.free(busy, order).map_err(OfflineError::Range)?; // parked: the range is isolated
            handles.migrated_pages += 1 << order;
            moved += 1 << order;
            pfn = busy + (1 << order);
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
