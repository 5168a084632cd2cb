//! Movable memory: handles whose backing frames the mm may move, and the offline path that
//! moves them (Linux `offline_pages`: isolate → migrate → take out of the allocator).
//!
//! A movable allocation is reached only through its [`Handle`]; the handle table maps it to
//! its current PFN and the head `struct page` records the handle in `private`, so migration
//! can find the owner of a page, copy the data to a new frame and switch the handle over.
//! Users touch the data only under the same lock that migration takes.

use crate::{
    buddy::{AllocKind, BuddyError, BusyPage, PageAlloc},
    geometry::Config,
    numa::{NodeId, MAX_NUMNODES},
    page::{flags, Memmap},
    pgtable::{Attrs, MapError, MapFlags, PageTable, TableAlloc},
};
use alloc::vec::Vec;
use arch::mutant::{self, Mutant};
use arch::tlb::{Mapping, TlbInvalidate, MAX_TLBI_OPS};

mod handles;
use handles::set_owner;
pub use handles::{Handle, HandleError, Handles};

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

/// Pages migrated together at most, with one TLB invalidation for all of them (Linux batches
/// `migrate_pages` the same way, flushing once per batch). Each batch's invalidation costs
/// about as much as a full flush wherever a broadcast TLBI stops every CPU (as under TCG), so
/// batches are large; the kernel bounds them further by bytes ([`Handles::with_batch_pages`]),
/// since a CPU that touches a page of the batch waits for the whole batch.
pub const MIGRATE_BATCH_PAGES: u64 = 4096;

/// One block of a migration batch: the allocation `handle` moves from `src` to `dst` (PFNs,
/// 2^`order` pages each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub handle: Handle,
    pub src: u64,
    pub dst: u64,
    pub order: u32,
}

/// Isolate `[start, start + nr)`, migrate every movable allocation in it elsewhere, and take
/// the range out of the allocator. Allocations move in batches of up to
/// [`MIGRATE_BATCH_PAGES`]: every destination of a batch is allocated first, then
/// `copy(batch)` moves them all (the kernel unmaps every window VA of the batch, invalidates
/// once, copies, and maps the new frames: [`move_window_batch`]); only then do the handles
/// point at the new frames, and each migrated-from block is passed to `freeing(pfn, order)`
/// before it goes back to the allocator (the kernel runs the teardown checker there).
///
/// If an unmovable page is in use, the batch it cuts is given up before anything of it moved
/// (its destinations go back); if no memory is left to migrate to, the part of the batch that
/// has destinations moves. Either way the range is unisolated and the reason returned:
/// everything is back in the allocator and usable, and the allocations already migrated stay
/// valid where they are now.
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
    mut copy: impl FnMut(&[Move]),
    mut freeing: impl FnMut(u64, u32),
) -> Result<u64, OfflineError> {
    let mut mig = Migration {
        batch: batch_buffer(handles.batch_pages.clamp(1, MIGRATE_BATCH_PAGES)),
        target_below,
        moved: 0,
        reserve: None,
    };
    let result = mig.offline(a, handles, start, nr, &mut copy, &mut freeing);
    mig.release_reserve(a);
    result
}

/// A batch buffer from the kernel heap, taken fallibly: room for a full batch (`pages` moves), else a single move (the
/// migration is then per block, but still correct), else none (the offline says `NoTarget`).
fn batch_buffer(pages: u64) -> Vec<Move> {
    let mut v = Vec::new();
    if v.try_reserve_exact(pages as usize).is_err() {
        let _ = v.try_reserve_exact(1);
    }
    v
}

/// An offline's migration state: the batch being assembled and the pages moved so far.
struct Migration {
    /// Moves whose destinations are allocated and which nothing has started to move yet.
    batch: Vec<Move>,
    target_below: u64,
    moved: u64,
    /// Single-page destinations taken as one block and not used yet.
    reserve: Option<Reserve>,
}

/// Order-0 destinations split from one allocated block (Linux `alloc_pages_bulk`'s role): a
/// run of base pages costs one allocator search per block instead of one per page. The block
/// is the front of the one a page's own search finds first (its node, below the offline's
/// limit), so placement is the same; released ([`Migration::release_reserve`]) when the offline
/// ends or a page of another node comes.
#[derive(Clone, Copy, Debug)]
struct Reserve {
    next: u64,
    end: u64,
    node: NodeId,
}

/// The order of a [`Reserve`] block (2 MiB of 4K pages), at most the allocator's max order.
const RESERVE_ORDER: u32 = 9;

impl Migration {
    /// [`offline_pages`]: isolate `[start, start + nr)`, move every busy block out, take it
    /// offline.
    fn offline<M: Memmap>(
        &mut self,
        a: &mut PageAlloc<M>,
        handles: &mut Handles,
        start: u64,
        nr: u64,
        copy: &mut impl FnMut(&[Move]),
        freeing: &mut impl FnMut(u64, u32),
    ) -> Result<u64, OfflineError> {
        // An allocated block that straddles an edge (larger than the range's alignment, e.g. a
        // max-order block across a 2 MiB sub-block) cannot be isolated in part: move it out first.
        // Free blocks across an edge are cut there by the isolation itself, so the new frame never
        // straddles.
        let mut tries = 0;
        loop {
            match a.isolate_range(start, nr) {
                Ok(_) => break,
                Err(BuddyError::Straddles { pfn, .. }) if tries < 2 => {
                    tries += 1;
                    let page = a
                        .page_ref(pfn)
                        .map(|p| BusyPage::of(pfn, p))
                        .ok_or(OfflineError::Unmovable { pfn })?;
                    // Cut the free blocks across the edges, so the new frame cannot straddle one.
                    a.split_free_at(start);
                    a.split_free_at(start + nr);
                    let m = self.prepare(a, handles, page)?;
                    self.batch.push(m);
                    // A straddling block is never a base page: no reserve is taken here, before
                    // the range is isolated (it could lie in the range).
                    self.commit(a, handles, copy, freeing)?;
                }
                Err(BuddyError::Straddles { pfn, .. }) => return Err(OfflineError::Unmovable { pfn }),
                Err(e) => return Err(OfflineError::Range(e)),
            }
        }
        // One pass is enough: the range is isolated, so nothing in it is handed out again, and
        // what migration frees in it is parked.
        let result = self
            .migrate_isolated(a, handles, start, start + nr, copy, freeing)
            .and_then(|()| match a.offline_isolated(start, nr) {
                Err(BuddyError::Busy { pfn }) => Err(OfflineError::Unmovable { pfn }),
                r => r.map_err(OfflineError::Range),
            });
        if result.is_err() {
            let _ = a.unisolate_range(start, nr);
        }
        result
    }

    /// Move every busy block of the isolated `[start, end)`, a batch at a time.
    fn migrate_isolated<M: Memmap>(
        &mut self,
        a: &mut PageAlloc<M>,
        handles: &mut Handles,
        start: u64,
        end: u64,
        copy: &mut impl FnMut(&[Move]),
        freeing: &mut impl FnMut(u64, u32),
    ) -> Result<(), OfflineError> {
        let mut pfn = start;
        let limit = handles.batch_pages.clamp(1, MIGRATE_BATCH_PAGES);
        loop {
            let (mut pages, mut stop) = (0, None);
            while pages < limit && self.batch.len() < self.batch.capacity() {
                let Some(busy) = a.first_busy(pfn, end - pfn) else {
                    break;
                };
                match self.prepare(a, handles, busy) {
                    Ok(m) => {
                        pages += 1 << m.order;
                        pfn = busy.pfn + (1 << m.order);
                        self.batch.push(m);
                    }
                    Err(e) => {
                        stop = Some((busy.pfn, e));
                        break;
                    }
                }
            }
            match stop {
                None if self.batch.is_empty() => {
                    let left = a
                        .first_busy(pfn, end - pfn)
                        .map_or(0, |b| a.busy_pages(b.pfn, end - b.pfn));
                    // No room for even one move record: nothing can migrate.
                    return if left == 0 {
                        Ok(())
                    } else {
                        Err(OfflineError::NoTarget {
                            moved: self.moved,
                            left,
                        })
                    };
                }
                None => self.commit(a, handles, copy, freeing)?,
                Some((busy, OfflineError::NoTarget { .. })) => {
                    self.commit(a, handles, copy, freeing)?;
                    let left = a.busy_pages(busy, end - busy);
                    return Err(OfflineError::NoTarget {
                        moved: self.moved,
                        left,
                    });
                }
                Some((_, e)) => {
                    self.roll_back(a);
                    return Err(e);
                }
            }
        }
    }

    /// Check that the allocated block `page` can move and allocate its destination.
    fn prepare<M: Memmap>(
        &mut self,
        a: &mut PageAlloc<M>,
        handles: &Handles,
        page: BusyPage,
    ) -> Result<Move, OfflineError> {
        let busy = page.pfn;
        let owner = page.private.checked_sub(1).map(|h| Handle(h as u32));
        let order = page.order;
        let movable = page.has(flags::MOVABLE) && owner.is_some_and(|h| handles.get(h) == Some((busy, order)));
        let (true, Some(handle)) = (movable, owner) else {
            return Err(OfflineError::Unmovable { pfn: busy });
        };
        // An isolated range cannot be handed out, so the target is always elsewhere.
        let dst = self
            .destination(a, order, page.node)
            .ok_or(OfflineError::NoTarget { moved: 0, left: 0 })?;
        Ok(Move {
            handle,
            src: busy,
            dst,
            order,
        })
    }

    /// The new frame for a block of `order` from node `nid`: a base page from the reserve, or
    /// [`migration_target`]'s first choice, taken with up to a reserve's worth of the pages
    /// after it (the ones the next base pages' searches would get).
    fn destination<M: Memmap>(&mut self, a: &mut PageAlloc<M>, order: u32, nid: NodeId) -> Option<u64> {
        if order != 0 || mutant::on(Mutant::MigrateIgnoresNode) {
            return migration_target(a, order, self.target_below, nid);
        }
        if let Some(r) = self.reserve.as_mut().filter(|r| r.node == nid && r.next < r.end) {
            r.next += 1;
            return Some(r.next - 1);
        }
        self.release_reserve(a);
        let upto = RESERVE_ORDER.min(a.max_order());
        match a.alloc_below_this_node_upto(0, upto, AllocKind::Movable, self.target_below, nid) {
            Some((pfn, taken)) => {
                let split = a.split_allocated(pfn, taken);
                debug_assert!(split.is_ok(), "a block just allocated splits");
                self.reserve = Some(Reserve {
                    next: pfn + 1,
                    end: pfn + (1 << taken),
                    node: nid,
                });
                Some(pfn)
            }
            None => migration_target(a, order, self.target_below, nid),
        }
    }

    /// Free the reserve's unused pages (they merge back into the block they came from).
    fn release_reserve<M: Memmap>(&mut self, a: &mut PageAlloc<M>) {
        if let Some(r) = self.reserve.take() {
            for pfn in r.next..r.end {
                let freed = a.free(pfn, 0);
                debug_assert!(freed.is_ok(), "reserve page {pfn:#x} not allocated");
            }
        }
    }

    /// Give back the destinations of a batch nothing of which has moved.
    fn roll_back<M: Memmap>(&mut self, a: &mut PageAlloc<M>) {
        for m in self.batch.drain(..) {
            let r = a.free(m.dst, m.order);
            debug_assert!(r.is_ok(), "migration target {:#x} not allocated", m.dst);
        }
    }

    /// Move the whole batch (`copy`), switch every handle over, then free the old frames.
    fn commit<M: Memmap>(
        &mut self,
        a: &mut PageAlloc<M>,
        handles: &mut Handles,
        copy: &mut impl FnMut(&[Move]),
        freeing: &mut impl FnMut(u64, u32),
    ) -> Result<(), OfflineError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        copy(&self.batch);
        for m in &self.batch {
            handles.set(m.handle, m.dst, m.order);
            set_owner(a, m.dst, Some(m.handle));
            set_owner(a, m.src, None);
        }
        let mut result = Ok(());
        for m in self.batch.drain(..) {
            freeing(m.src, m.order);
            // Parked if the range is isolated.
            if let Err(e) = a.free(m.src, m.order) {
                result = Err(OfflineError::Range(e));
            }
            handles.migrated_pages += 1 << m.order;
            self.moved += 1 << m.order;
        }
        result
    }
}

/// The new frame for a block of `order` migrated off node `nid` (Linux
/// `alloc_migration_target` with the page's node preferred): the nodes in `nid`'s fallback
/// order (its own first, then by distance), and on each node memory below `target_below` first,
/// then any. A page stays on its node when the node has room, even above `target_below`:
/// moving again later within the node costs a copy, while a move to another node costs every
/// later access.
fn migration_target<M: Memmap>(a: &mut PageAlloc<M>, order: u32, target_below: u64, nid: NodeId) -> Option<u64> {
    let nid = if mutant::on(Mutant::MigrateIgnoresNode) { 0 } else { nid };
    // The cached zonelist, copied out so the walk may allocate.
    let mut nodes = [0; MAX_NUMNODES];
    let cached = a.fallback_nodes(nid);
    let len = cached.len();
    nodes[..len].copy_from_slice(cached);
    nodes[..len].iter().find_map(|&n| {
        a.alloc_below_this_node(order, AllocKind::Movable, target_below, n)
            .or_else(|| a.alloc_this_node(order, AllocKind::Movable, n))
    })
}

/// Move a batch of blocks that users reach through a kernel VA window (block `m` at
/// `va(m.handle)`, base pages) to their new frames, in the only safe order:
/// 1. clear the PTEs of every block (the engine's unmap, its invalidation held back), then
///    invalidate them all at once: the TLBIs back to back and one `DSB ISH`, or one
///    `TLBI VMALLE1IS` past `full_above` instructions ([`TlbInvalidate::flush_kernel_batch`]),
///    so no CPU can read or write an old frame through the window any more;
/// 2. `copy()` the data (the caller reaches both frames through the linear map);
/// 3. map every new frame at its VA (the engine publishes each: `DSB ISHST; ISB`).
///
/// Only then may the old frames be freed (`offline_pages`' `freeing`, where the teardown
/// checker runs). No unmap frees a table page (floor and ceiling are one page): the window's
/// tables stay, and the map allocates none.
pub fn move_window_batch<C: Config>(
    pt: &mut PageTable<C>,
    tables: &mut impl TableAlloc,
    tlb: &mut impl TlbInvalidate,
    moves: &[Move],
    va: impl Fn(Handle) -> u64,
    full_above: u64,
    copy: impl FnOnce(),
) -> Result<(), MapError> {
    let shift = C::GEOM.page_shift;
    let span = |m: &Move| (va(m.handle), C::GEOM.page_size() << m.order);
    let ranges = Coalesced { moves, span: &span };
    // One unmap per run of adjacent window blocks, in pieces that never cover a whole
    // last-level table's span (each span is cut one page before its end), floor and ceiling
    // the piece: no table page is freed.
    let page = C::GEOM.page_size();
    let table_span = page << (shift - 3);
    for (v, end) in ranges.clone() {
        let mut at = v;
        while at != end {
            let span_end = (at / table_span + 1).wrapping_mul(table_span);
            let cut = span_end.wrapping_sub(page);
            let to = if at < cut { cut } else { span_end };
            let to = if to.wrapping_sub(v) > end.wrapping_sub(v) {
                end
            } else {
                to
            };
            pt.unmap_within(tables, &mut HeldBack(tlb), at, to - at, at, to)?;
            at = to;
        }
    }
    if mutant::on(Mutant::MigrateBatchFlushFirst) {
        tlb.flush_kernel_batch(ranges.take(1), shift, full_above);
    } else if !mutant::on(Mutant::MigrateNoTlbi) {
        tlb.flush_kernel_batch(ranges, shift, full_above);
    }
    copy();
    if mutant::on(Mutant::MigrateNoRemap) {
        return Ok(());
    }
    // One map per run of blocks adjacent both in the window and in their new frames.
    let mut rest = moves;
    while let Some((first, _)) = rest.split_first() {
        let (v, mut size) = span(first);
        let n = 1 + rest[1..]
            .iter()
            .take_while(|m| {
                let (w, s) = span(m);
                let adjacent = w == v.wrapping_add(size) && m.dst << shift == (first.dst << shift) + size;
                size += if adjacent { s } else { 0 };
                adjacent
            })
            .count();
        pt.map(tables, v, first.dst << shift, size, Attrs::NORMAL_RW, MapFlags::PAGES)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// [`move_window_batch`] of one block at `va` (`size` bytes) to the frame at `dst_pa`.
pub fn move_window_block<C: Config>(
    pt: &mut PageTable<C>,
    tables: &mut impl TableAlloc,
    tlb: &mut impl TlbInvalidate,
    va: u64,
    size: u64,
    dst_pa: u64,
    copy: impl FnOnce(),
) -> Result<(), MapError> {
    let g = C::GEOM;
    let m = Move {
        handle: Handle(0),
        src: 0,
        dst: dst_pa >> g.page_shift,
        order: (size >> g.page_shift).trailing_zeros(),
    };
    move_window_batch(pt, tables, tlb, &[m], |_| va, MAX_TLBI_OPS, copy)
}

/// The window ranges of a batch, adjacent blocks merged (`[start, end)` each), in batch order.
/// Under the mutant `migrate-batch-flush-first` only the first block's range is flushed, so
/// blocks are not merged there.
struct Coalesced<'a, F> {
    moves: &'a [Move],
    span: &'a F,
}

impl<F> Clone for Coalesced<'_, F> {
    fn clone(&self) -> Self {
        Coalesced {
            moves: self.moves,
            span: self.span,
        }
    }
}

impl<F: Fn(&Move) -> (u64, u64)> Iterator for Coalesced<'_, F> {
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        let (first, rest) = self.moves.split_first()?;
        let (start, size) = (self.span)(first);
        let mut end = start.wrapping_add(size);
        self.moves = rest;
        let merge = !mutant::on(Mutant::MigrateBatchFlushFirst);
        while let Some((m, rest)) = self.moves.split_first() {
            let (v, size) = (self.span)(m);
            if !merge || v != end {
                break;
            }
            end = v.wrapping_add(size);
            self.moves = rest;
        }
        Some((start, end))
    }
}

/// The engine's unmap inside a batch: clears are reported (to the checker) and leaf
/// invalidations held back for the batch's single flush; walk-cache and full invalidations
/// (none, as the unmap frees no table) go through at once.
struct HeldBack<'a, T: TlbInvalidate>(&'a mut T);

impl<T: TlbInvalidate> TlbInvalidate for HeldBack<'_, T> {
    fn flush_kernel_range(&mut self, _: u64, _: u64, _: u32) {}
    fn flush_kernel_pgtable(&mut self, va: u64) {
        self.0.flush_kernel_pgtable(va);
    }
    fn flush_all(&mut self) {
        self.0.flush_all();
    }
    fn cleared(&mut self, m: Mapping) {
        self.0.cleared(m);
    }
}
