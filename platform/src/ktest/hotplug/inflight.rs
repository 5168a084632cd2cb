//! A deferred chunk in flight: this CPU takes one as an idle CPU does and holds it; an offline
//! of the block holding it refuses with `InitInProgress` (the kernel's wait for the hand-over
//! turned off, so the refusal itself is seen), changing nothing; once the chunk is handed back
//! the offline succeeds. Idle CPUs never hold a chunk during a hotplug operation long enough for
//! another guest test to meet one, so this case is what sees that refusal.

use super::*;
use mm::buddy::{BuddyError, MemmapInit};

/// The block's offline while this CPU holds one of its deferred chunks.
fn offline_refuses_chunk_in_flight(_: &Platform) -> Result<(), String> {
    if page_alloc::memmap_init() == MemmapInit::Eager {
        // Nothing is deferred: no chunk to hold.
        return Ok(());
    }
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let (pfn0, nr) = (start >> PAGE_SHIFT, bs >> PAGE_SHIFT);
    // Boot memory's deferred chunks first, so the chunk taken below is the new block's.
    page_alloc::deferred_init_complete();
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let id = ids[0];
    // Online and take a chunk in one hotplug operation: idle CPUs keep off it meanwhile.
    let chunk = hp::with_hotplug(|h, ops| {
        h.online_block(ops, id, OnlineType::Movable)
            .map(|_| page_alloc::deferred_take_one())
    })
    .map_err(|e| format!("online: {e}"))?
    .ok_or_else(|| String::from("no deferred chunk left in the new block"))?;
    let r = refused_while_held(id, &chunk, pfn0, nr);
    let back = page_alloc::deferred_hand_back(chunk).map_err(|e| format!("hand back: {e:?}"));
    r?;
    back?;
    hp::with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("offline after hand-back: {e}"))?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}"))?;
    Ok(())
}
ktest!(offline_refuses_chunk_in_flight);

/// The offline of block `id` (`[pfn0, pfn0 + nr)`) while `chunk` is held: refused with
/// `InitInProgress` inside the chunk, the block still online and the counters unchanged.
fn refused_while_held(id: u64, chunk: &mm::buddy::DeferredChunk, pfn0: u64, nr: u64) -> Result<(), String> {
    kassert!(
        (pfn0..pfn0 + nr).contains(&chunk.start),
        "chunk at pfn {:#x} outside the block [{pfn0:#x}, {:#x})",
        chunk.start,
        pfn0 + nr
    );
    let before = snapshot();
    hp::OFFLINE_WAITS_FOR_INIT.store(false, Relaxed);
    let r = hp::with_hotplug(|h, ops| h.offline_block(ops, id));
    hp::OFFLINE_WAITS_FOR_INIT.store(true, Relaxed);
    kassert!(
        matches!(r, Err(HotplugError::Allocator(BuddyError::InitInProgress { pfn }))
            if (chunk.start..chunk.end).contains(&pfn)),
        "offline over a chunk in flight: {r:?}"
    );
    let state = hp::with_hotplug(|h, _| h.block(id).map(|b| b.state));
    kassert!(
        state == Some(mm::hotplug::BlockState::Online),
        "block state after the refusal: {state:?}"
    );
    kassert!(snapshot() == before, "the refusal changed counters");
    Ok(())
}
