//! The handle table: where each movable allocation lives now. A handle is the owner's name for
//! its pages; the head `struct page` records it in `private` ([`set_owner`]), so migration can
//! find a page's owner and switch the handle over to the new frame.

use super::MIGRATE_BATCH_PAGES;
use crate::buddy::{AllocKind, BuddyError, PageAlloc};
use crate::numa::NodeId;
use crate::page::Memmap;
use alloc::vec::Vec;

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
    /// Pages a migration batch holds at most (1 to [`MIGRATE_BATCH_PAGES`]; 1 moves block by
    /// block, one invalidation each: the benchmark compares the two).
    pub batch_pages: u64,
}

impl Default for Handles {
    fn default() -> Self {
        Self::new()
    }
}

impl Handles {
    pub const fn new() -> Self {
        Self::with_batch_pages(MIGRATE_BATCH_PAGES)
    }

    /// An empty table whose migrations move at most `batch_pages` pages a batch (clamped to
    /// 1..=[`MIGRATE_BATCH_PAGES`] when used).
    pub const fn with_batch_pages(batch_pages: u64) -> Self {
        Handles {
            chunks: Vec::new(),
            used_slots: 0,
            free_head: NO_SLOT,
            live: 0,
            migrated_pages: 0,
            batch_pages,
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
    pub(super) fn set(&mut self, h: Handle, pfn: u64, order: u32) {
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
        self.try_alloc_node(a, order, 0)
    }

    /// [`try_alloc`](Self::try_alloc) from node `nid` first, then by distance.
    pub fn try_alloc_node<M: Memmap>(
        &mut self,
        a: &mut PageAlloc<M>,
        order: u32,
        nid: NodeId,
    ) -> Result<Handle, HandleError> {
        let pfn = a
            .alloc_node(order, AllocKind::Movable, nid)
            .ok_or(HandleError::NoMemory)?;
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

pub(super) fn set_owner<M: Memmap>(a: &mut PageAlloc<M>, pfn: u64, h: Option<Handle>) {
    // `pfn` is the head of a block just allocated or being freed: it has a memmap.
    let r = a.update_page(pfn, |p| p.private = h.map_or(0, |h| h.0 as u64 + 1));
    debug_assert!(r.is_ok(), "set_owner: pfn {pfn:#x} has no memmap");
}
