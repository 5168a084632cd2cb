//! Offline refusals and rollbacks: an unmovable page, bad requests, running out of migration
//! targets half-way.

use super::*;

/// A kernel (unmovable) page in a block makes offline fail with Busy; the block stays online
/// and usable; once the page is freed, offline succeeds.
fn offline_with_unmovable_page_is_busy(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let (s_pfn, e_pfn) = (start >> PAGE_SHIFT, (start + bs) >> PAGE_SHIFT);
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let id = ids[0];
    hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Kernel)).map_err(|e| format!("online: {e}"))?;
    // Kernel allocations until one lands in the new block.
    let mut others = Vec::new();
    let mut pinned = None;
    while let Some(pa) = page_alloc::alloc_pages(0) {
        if (s_pfn..e_pfn).contains(&(pa >> PAGE_SHIFT)) {
            pinned = Some(pa);
            break;
        }
        others.push(pa);
    }
    for pa in others {
        page_alloc::free_pages(pa, 0).map_err(|e| format!("{e:?}"))?;
    }
    let pinned = pinned.ok_or_else(|| String::from("no kernel page landed in the new block"))?;
    let before = snapshot();
    let r = hp::with_hotplug(|h, ops| h.offline_block(ops, id));
    kassert!(
        matches!(r, Err(HotplugError::Busy { block, pfn }) if block == id && pfn == pinned >> PAGE_SHIFT),
        "offline with a pinned page: {r:?}"
    );
    let state = hp::with_hotplug(|h, _| h.block(id).map(|b| b.state));
    kassert!(
        state == Some(mm::hotplug::BlockState::Online),
        "block state after veto: {state:?}"
    );
    kassert!(snapshot() == before, "the veto changed counters");
    // Still usable.
    let extra = page_alloc::alloc_pages(0).ok_or_else(|| String::from("allocation after veto failed"))?;
    page_alloc::free_pages(extra, 0).map_err(|e| format!("{e:?}"))?;
    page_alloc::free_pages(pinned, 0).map_err(|e| format!("{e:?}"))?;
    hp::with_hotplug(|h, ops| h.offline_block(ops, id)).map_err(|e| format!("offline after free: {e}"))?;
    hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}"))?;
    Ok(())
}
ktest!(offline_with_unmovable_page_is_busy);

/// Bad requests get typed errors and change nothing; boot memory can never go.
fn bad_hotplug_requests_change_nothing(plat: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let before = snapshot();
    let boot = plat.memory[0].base;
    let limit = memmap::sparse().max_pa();
    let cases: [(u64, u64); 5] = [
        (start + layout::PAGE_SIZE, bs),
        (start, bs / 2),
        (start, 0),
        (boot, bs),
        (limit, bs),
    ];
    for (s, l) in cases {
        let r = hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, s, l, MOM));
        kassert!(r.is_err(), "add {s:#x}+{l:#x} accepted");
    }
    let boot_block = boot / bs;
    kassert!(
        hp::with_hotplug(|h, ops| h.offline_block(ops, boot_block)) == Err(HotplugError::EarlyMemory(boot_block)),
        "boot block offlined"
    );
    kassert!(
        hp::with_hotplug(|h, ops| h.remove_memory(ops, boot, bs)).is_err(),
        "boot memory removed"
    );
    kassert!(
        hp::with_hotplug(|h, ops| h.online_block(ops, 1 << 40, OnlineType::Auto)).is_err(),
        "nonexistent block onlined"
    );
    kassert!(snapshot() == before, "a refused request changed counters");
    Ok(())
}
ktest!(bad_hotplug_requests_change_nothing);

/// An offline that runs out of memory to migrate into after moving some pages. All
/// memory is filled with stress data except room for a quarter of a block; the offline moves
/// that much, fails, and un-isolates a range full of parked, migrated-from pages next to parked
/// free blocks. The allocator must come back exactly consistent (`debug_vm`, on in this build,
/// checks it after the operation and stops the kernel if not), the data must verify, and the
/// offline must succeed once the data is freed.
fn failed_offline_rolls_back_cleanly(_: &Platform) -> Result<(), String> {
    let (start, _) = held_back(1)?;
    let bs = G.section_size();
    let ids =
        hp::with_hotplug(|h, ops| h.add_memory(ops, 0, None, start, bs, MOM)).map_err(|e| format!("probe: {e}"))?;
    let id = ids[0];
    hp::with_hotplug(|h, ops| h.online_block(ops, id, OnlineType::Movable)).map_err(|e| format!("online: {e}"))?;
    // The block full of stress data (movable allocations prefer ZONE_MOVABLE), then ZONE_NORMAL
    // taken by kernel allocations (not written, so cheap) down to room for a quarter block.
    let movable_free = page_alloc::with_page_alloc(|a| a.counters(ZoneId::Movable).available());
    stress::fill(movable_free << PAGE_SHIFT).map_err(|e| format!("stress: {e:?}"))?;
    let room = G.pages_per_section() / 4;
    let mut held = Vec::new();
    for order in (0..=G.max_order()).rev() {
        while page_alloc::free_page_count() >= room + (1 << order) {
            match page_alloc::alloc_pages(order) {
                Some(pa) => held.push((pa, order)),
                None => break,
            }
        }
    }
    let r = hp::with_hotplug(|h, ops| h.offline_block(ops, id));
    let census = hp::with_hotplug(|h, _| hp::check_invariants(h));
    let v = stress::verify();
    for (pa, order) in held {
        page_alloc::free_pages(pa, order).map_err(|e| format!("free: {e:?}"))?;
    }
    stress::free();
    // Retry and remove before judging, so a failed check leaves the held-back range free for
    // the next test (a broken migration then fails every test that migrates, not just this).
    let retry = hp::with_hotplug(|h, ops| h.offline_block(ops, id))
        .map_err(|e| format!("offline after stress free: {e}"))
        .and_then(|_| hp::with_hotplug(|h, ops| h.remove_memory(ops, start, bs)).map_err(|e| format!("remove: {e}")));
    let census = census.map_err(|e| format!("after the failed offline: {e}"))?;
    let moved = match r {
        Err(HotplugError::NoMigrationTarget { moved, left, .. }) if left > 0 => moved,
        other => return Err(format!("offline of a full block with room for {room} pages: {other:?}")),
    };
    kassert!(moved == room, "{moved} pages moved, room was {room}");
    kassert!(
        census.iter().all(|c| c.isolated == 0),
        "pages left isolated: {census:?}"
    );
    kassert!(
        v.bad == 0 && v.verified == v.allocations,
        "stress data after the rollback: {v:?}"
    );
    retry
}
ktest!(failed_offline_rolls_back_cleanly);
