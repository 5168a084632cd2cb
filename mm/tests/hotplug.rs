//! Host tests of the hotplug core for every configuration, against the platform double of
//! [`mm::testing`] (the real page-table engine, vmemmap, buddy and migration, a teardown checker
//! and a 4-CPU TLB model; it can fail the N-th fallible operation). Every operation of the
//! [`Checked`] core is followed by the allocator's and the hotplug accounting's invariant checks.

use mm::buddy::{AllocKind, BuddyError, MemmapInit};
use mm::geometry::*;
use mm::hotplug::*;
use mm::migrate::Handle;
use mm::page::{flags, ZoneId};
use mm::testing::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

const MOM: AddFlags = AddFlags { memmap_on_memory: true };

/// `matrix_modes!(test_a, ...)`: [`mm::matrix_tests!`] as is (eager memmap init), and the same
/// tests again with deferred memmap init in `deferred_mode::<cfg>::...`.
macro_rules! matrix_modes {
    ($($test:ident),* $(,)?) => {
        mm::matrix_tests!($($test),*);
        mod deferred_mode {
            $( fn $test<C: mm::geometry::Config>() { super::with_deferred(super::$test::<C>); } )*
            mm::matrix_tests!($($test),*);
        }
    };
}

matrix_modes!(
    add_online_offline_remove_round_trip,
    memmap_on_memory_geometry,
    fault_injection_at_every_step_of_add,
    state_machine_transitions_and_vetoes,
    counters_identical_after_cycles,
    offline_migrates_movable_pages,
    batch_cut_by_an_unmovable_page_moves_none_of_it,
    unmovable_page_makes_offline_busy,
    offline_and_remove_rolls_back_on_veto,
    failed_offline_rolls_back_cleanly,
    bad_requests_change_nothing,
    leaf_splitting_removal_is_rejected,
    dimm_stays_in_one_zone,
    dimm_memory_is_not_removed_behind_its_driver,
    handle_table_grows_and_gives_its_memory_back,
    tlb_model_flows_with_and_without_range_tlbi,
    offline_and_remove_reonlines_when_remove_is_refused,
);

fn add_online_offline_remove_round_trip<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let before = m.snapshot();
    let present = hp.present();
    let size = 2 * g.section_size();
    let ids = hp.add_memory(&mut m, 0, None, base::<C>(), size, MOM).unwrap();
    assert_eq!(ids, vec![8, 9]);
    for &id in &ids {
        assert_eq!(hp.block(id).unwrap().state, BlockState::Offline);
        assert_eq!(hp.online_block(&mut m, id, OnlineType::Movable), Ok(ZoneId::Movable));
    }
    let usable = 2 * (g.pages_per_section() - g.memmap_pages_per_block());
    assert_eq!(m.alloc.counters(ZoneId::Movable).managed, usable);
    assert_eq!(hp.present().movable, 2 * g.pages_per_section());
    for &id in &ids {
        hp.offline_block(&mut m, id).unwrap();
    }
    hp.remove_memory(&mut m, base::<C>(), size).unwrap();
    assert!(hp.block(8).is_none());
    assert_eq!(m.snapshot(), before);
    assert_eq!(hp.present(), present);
}

fn memmap_on_memory_geometry<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let boot_backing = m.source.live.len();
    let ids = hp
        .add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
        .unwrap();
    let b = *hp.block(ids[0]).unwrap();
    let n_vm = b.nr_vmemmap_pages();
    assert_eq!(n_vm, g.memmap_pages_per_block());
    let alt = b.altmap.unwrap();
    assert_eq!(
        (alt.alloc, alt.base_pfn),
        (n_vm, b.start_pfn),
        "the whole memmap came from the block's own first pages"
    );
    // Every memmap page of the block is backed by the block itself.
    let vm = Machine::<C>::vmemmap_region().0 + b.start_pfn * 64;
    for va in (vm..vm + g.memmap_per_section()).step_by(g.page_size() as usize) {
        let pa = m.pt.walk(&m.tables, va).leaf.unwrap().pa;
        assert!(
            (b.start_pfn..b.start_pfn + n_vm).contains(&(pa >> g.page_shift)),
            "memmap page at {pa:#x} outside the vmemmap pages"
        );
    }
    assert_eq!(m.source.live.len(), boot_backing, "no memmap from pre-existing memory");
    hp.online_block(&mut m, ids[0], OnlineType::Movable).unwrap();
    // The first onlined PFN is pageblock-aligned; self-hosted pages never reach the allocator.
    let first = b.start_pfn + n_vm;
    assert_eq!(first % (1 << g.pageblock_order()), 0);
    let mut got = Vec::new();
    while let Some(p) = m.alloc.alloc(0, AllocKind::Movable) {
        got.push(p);
    }
    assert!(
        got.iter().all(|&p| p >= first || p < b.start_pfn),
        "a self-hosted memmap page was handed out"
    );
    assert!(vmemmap_online(&m, b.start_pfn));
}

/// Whether `pfn` is a self-hosted memmap page of an online block: its struct page says so
/// (eager), or the allocator answers it from the block (deferred: never written).
fn vmemmap_online<C: Config>(m: &Machine<C>, pfn: u64) -> bool {
    use mm::buddy::{DeferredState, PageLookup};
    match m.alloc.lookup(pfn) {
        PageLookup::Page(p) => p.has(flags::VMEMMAP_SELF_HOSTED),
        PageLookup::Deferred(DeferredState::SelfHosted { zone }) => zone.is_some(),
        _ => false,
    }
}

/// Struct pages of `[s, s + n)` still to initialise: not initialised, and not self-hosted
/// memmap (whose struct pages never are).
fn to_init<C: Config>(m: &Machine<C>, s: u64, n: u64) -> u64 {
    m.alloc.uninit_pages(s, n) - m.alloc.vmemmap_pages(s, n)
}

fn fault_injection_at_every_step_of_add<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let before = m.snapshot();
    let size = 3 * g.section_size();
    // Operation failures (map, populate of each block).
    for k in 0..4 {
        m.fail_in = Some(k);
        let r = hp.add_memory(&mut m, 0, None, base::<C>(), size, MOM);
        assert_eq!(r, Err(HotplugError::Injected), "k={k}");
        assert_eq!(m.snapshot(), before, "state left behind after failure at step {k}");
        assert_eq!(hp.blocks().count(), 2);
    }
    // Allocation failures: the n-th page-table page.
    for budget in 0..12 {
        m.fail_in = None;
        m.tables.set_budget(Some(budget));
        let r = hp.add_memory(&mut m, 0, None, base::<C>(), size, MOM);
        m.tables.set_budget(None);
        match r {
            Err(_) => assert_eq!(m.snapshot(), before, "table budget {budget}"),
            Ok(_) => {
                hp.remove_memory(&mut m, base::<C>(), size).unwrap();
                assert_eq!(m.snapshot(), before);
            }
        }
    }
    // Online failure: the block stays offline, nothing accounted.
    hp.add_memory(&mut m, 0, None, base::<C>(), size, MOM).unwrap();
    let present = hp.present();
    m.fail_in = Some(0);
    assert_eq!(
        hp.online_block(&mut m, 8, OnlineType::Auto),
        Err(HotplugError::Injected)
    );
    assert_eq!(hp.block(8).unwrap().state, BlockState::Offline);
    assert_eq!(hp.present(), present);
    assert!(!vmemmap_online(&m, 8 * g.pages_per_section()));
}

fn state_machine_transitions_and_vetoes<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
        .unwrap();
    assert_eq!(
        hp.offline_block(&mut m, 8),
        Err(HotplugError::BadState {
            block: 8,
            state: BlockState::Offline
        })
    );
    hp.online_block(&mut m, 8, OnlineType::Kernel).unwrap();
    assert_eq!(
        hp.online_block(&mut m, 8, OnlineType::Kernel),
        Err(HotplugError::BadState {
            block: 8,
            state: BlockState::Online
        })
    );
    assert_eq!(
        hp.remove_memory(&mut m, base::<C>(), g.section_size()),
        Err(HotplugError::NotOffline(8))
    );
    assert_eq!(hp.offline_block(&mut m, 2), Err(HotplugError::EarlyMemory(2)));
    assert_eq!(
        hp.remove_memory(&mut m, 2 * g.section_size(), g.section_size()),
        Err(HotplugError::EarlyMemory(2))
    );
    assert_eq!(
        hp.online_block(&mut m, 99, OnlineType::Kernel),
        Err(HotplugError::NoSuchBlock(99))
    );
    // Injected offline failure: back to online, counters unchanged.
    let present = hp.present();
    m.fail_in = Some(0);
    assert_eq!(hp.offline_block(&mut m, 8), Err(HotplugError::Injected));
    assert_eq!(hp.block(8).unwrap().state, BlockState::Online);
    assert_eq!(hp.present(), present);
    hp.offline_block(&mut m, 8).unwrap();
    assert_eq!(hp.block(8).unwrap().state, BlockState::Offline);
}

fn counters_identical_after_cycles<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let grp = hp.register_static_group(0, 2 * g.pages_per_section()).unwrap();
    hp.add_memory(&mut m, 0, Some(grp), base::<C>(), 2 * g.section_size(), MOM)
        .unwrap();
    let (present, group, alloc) = (hp.present(), *hp.group(grp).unwrap(), m.snapshot());
    for t in [
        OnlineType::Kernel,
        OnlineType::Movable,
        OnlineType::Auto,
        OnlineType::Movable,
    ] {
        for id in [8, 9] {
            hp.online_block(&mut m, id, t).unwrap();
        }
        let h: Vec<_> = (0..5).filter_map(|_| m.alloc_movable(0)).collect();
        for id in [9, 8] {
            hp.offline_block(&mut m, id).unwrap();
        }
        for x in h {
            m.free_movable(x);
        }
        assert_eq!(
            (hp.present(), *hp.group(grp).unwrap()),
            (present, group),
            "after a {t:?} cycle"
        );
        assert_eq!(m.snapshot(), alloc);
    }
}

fn offline_migrates_movable_pages<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
    let mut hs = Vec::new();
    for i in 0..64u64 {
        let h = m.alloc_movable((i % 3) as u32).unwrap();
        let (pfn, _) = m.handles.get(h).unwrap();
        assert!(
            pfn >= 8 * g.pages_per_section(),
            "movable allocations prefer ZONE_MOVABLE"
        );
        m.contents.insert(pfn, i * 7919);
        hs.push((h, i * 7919));
    }
    hp.offline_block(&mut m, 8).unwrap();
    assert!(m.handles.migrated_pages > 0);
    for (h, v) in hs {
        let (pfn, _) = m.handles.get(h).unwrap();
        assert!(pfn < 8 * g.pages_per_section(), "handle still in the offlined block");
        assert_eq!(m.contents.get(&pfn), Some(&v), "data lost in migration");
    }
}

/// Offline migrates a batch at a time; a batch cut by an unmovable page gives its
/// destinations back before anything of it moves. Batches of 1, 2, 7 and the most: the batches
/// wholly before the pin moved (their data where the handles now say), nothing of the pin's
/// batch or after it moved, nothing leaked; once the pin is gone the offline moves the rest.
fn batch_cut_by_an_unmovable_page_moves_none_of_it<C: Config>() {
    let g = C::GEOM;
    let in_block = |pfn: u64| pfn / g.pages_per_section() == 8;
    for batch in [1, 2, 7, mm::migrate::MIGRATE_BATCH_PAGES] {
        let (mut m, mut hp) = boot::<C>();
        hp.add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
            .unwrap();
        hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
        let mut data = Vec::new();
        let mut put = |m: &mut Machine<C>, i: u64| {
            let h = m.alloc_movable(0).unwrap();
            let (pfn, _) = m.handles.get(h).unwrap();
            assert!(in_block(pfn), "movable allocations prefer ZONE_MOVABLE");
            m.contents.insert(pfn, i * 7919);
            data.push((h, i * 7919));
        };
        for i in 0..20 {
            put(&mut m, i);
        }
        // A movable page without a handle: nothing can move it.
        let pin = m.alloc.alloc(0, AllocKind::Movable).unwrap();
        assert!(in_block(pin));
        for i in 20..40 {
            put(&mut m, i);
        }
        m.handles.batch_pages = batch;
        let before: Vec<u64> = data.iter().map(|&(h, _)| m.handles.get(h).unwrap().0).collect();
        let free = m.alloc.counters(ZoneId::Normal).free + m.alloc.counters(ZoneId::Movable).free;
        let migrated = m.handles.migrated_pages;
        let r = hp.offline_block(&mut m, 8);
        assert!(
            matches!(r, Err(HotplugError::Busy { pfn, .. }) if pfn == pin),
            "batch {batch}: {r:?}"
        );
        let below = before.iter().filter(|&&p| p < pin).count() as u64;
        assert_eq!(
            m.handles.migrated_pages - migrated,
            below / batch * batch,
            "batch {batch}: only whole batches before the pin move"
        );
        for (&(h, v), &old) in data.iter().zip(&before) {
            let (pfn, _) = m.handles.get(h).unwrap();
            assert_eq!(m.contents.get(&pfn), Some(&v), "batch {batch}: data lost");
            assert!(
                pfn == old || old < pin,
                "batch {batch}: {old:#x} moved from the pin's batch or after it"
            );
        }
        assert_eq!(
            m.alloc.counters(ZoneId::Normal).free + m.alloc.counters(ZoneId::Movable).free,
            free,
            "batch {batch}: a destination leaked"
        );
        assert_eq!(hp.block(8).unwrap().state, BlockState::Online);
        m.alloc.free(pin, 0).unwrap();
        hp.offline_block(&mut m, 8).unwrap();
        for &(h, v) in &data {
            let (pfn, _) = m.handles.get(h).unwrap();
            assert!(!in_block(pfn) && m.contents.get(&pfn) == Some(&v), "batch {batch}");
        }
    }
}

fn unmovable_page_makes_offline_busy<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Kernel).unwrap();
    // Exhaust the boot blocks so a kernel allocation lands in block 8.
    let mut pinned = None;
    let mut others = Vec::new();
    while let Some(p) = m.alloc.alloc(0, AllocKind::Kernel) {
        if p >= 8 * g.pages_per_section() {
            pinned = Some(p);
            break;
        }
        others.push(p);
    }
    for p in others {
        m.alloc.free(p, 0).unwrap();
    }
    let pinned = pinned.expect("a kernel page in the new block");
    let (present, free) = (hp.present(), m.alloc.counters(ZoneId::Normal));
    assert!(matches!(
        hp.offline_block(&mut m, 8),
        Err(HotplugError::Busy { block: 8, .. })
    ));
    assert_eq!(hp.block(8).unwrap().state, BlockState::Online);
    assert_eq!(
        (hp.present(), m.alloc.counters(ZoneId::Normal)),
        (present, free),
        "veto restored the counters"
    );
    // Still usable: allocations come from it.
    assert!(m.alloc.alloc(0, AllocKind::Kernel).is_some());
    m.alloc.free(pinned, 0).unwrap();
}

fn bad_requests_change_nothing<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let before = m.snapshot();
    let bs = g.section_size();
    let cases = [
        (base::<C>() + g.page_size(), bs),
        (base::<C>(), bs / 2),
        (base::<C>(), 0),
        (2 * bs, bs), // boot RAM
        ((1 << 40) - bs, 2 * bs),
    ];
    for (s, l) in cases {
        assert!(
            hp.add_memory(&mut m, 0, None, s, l, MOM).is_err(),
            "{s:#x}+{l:#x} accepted"
        );
        assert_eq!(m.snapshot(), before);
    }
    hp.add_memory(&mut m, 0, None, base::<C>(), 2 * bs, MOM).unwrap();
    assert_eq!(
        hp.add_memory(&mut m, 0, None, base::<C>() + bs, bs, MOM),
        Err(HotplugError::Overlap {
            start: base::<C>() + bs,
            size: bs
        })
    );
    // Self-hosted memmap: remove whole ranges as added.
    assert_eq!(
        hp.remove_memory(&mut m, base::<C>(), bs),
        Err(HotplugError::Granularity {
            start: base::<C>(),
            size: bs
        })
    );
    assert_eq!(
        hp.remove_memory(&mut m, base::<C>() + 4 * bs, bs),
        Err(HotplugError::NotAdded {
            start: base::<C>() + 4 * bs,
            size: bs
        })
    );
}

/// A removal that would split a linear-map leaf is rejected before anything changes.
fn leaf_splitting_removal_is_rejected<C: Config>() {
    let g = C::GEOM;
    // A range large and aligned enough for a leaf spanning several blocks: 4K → a 1 GiB PUD
    // block, 16K → a 1 GiB CONT_PMD run; 64K blocks are PMD blocks themselves (the CONT_PMD run
    // is 16 GiB: 32 blocks).
    let span = match g.page_shift {
        12 | 14 => 1u64 << 30,
        _ => 16u64 << 30,
    };
    let (mut m, mut hp) = boot::<C>();
    hp.add_memory(&mut m, 0, None, span, span, AddFlags::default()).unwrap();
    let first = span / g.section_size();
    assert_eq!(hp.block(first).unwrap().state, BlockState::Offline);
    let before = m.snapshot();
    let r = hp.remove_memory(&mut m, span, g.section_size());
    assert_eq!(r, Err(HotplugError::WouldSplitLeaf { pa: span }));
    assert_eq!(m.snapshot(), before);
    assert!(hp.block(first).is_some());
    hp.remove_memory(&mut m, span, span).unwrap();
}

/// The auto-movable example of the Linux series: a dynamic group with unit = one block, a
/// ratio of 301 % and KERNEL_EARLY of 2.8 blocks: 8 MOVABLE blocks, then one NORMAL block
/// raises the group's own budget, and the pattern 1 NORMAL : 3 MOVABLE repeats.
#[test]
fn auto_movable_vector() {
    type C = Cfg4K48;
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.policy = OnlinePolicy::AutoMovable;
    hp.ratio = 301;
    hp.assume_kernel_early(0, g.pages_per_section() * 28 / 10).unwrap();
    let grp = hp.register_dynamic_group(0, g.pages_per_section()).unwrap();
    let mut got = String::new();
    for i in 0..16 {
        let ids = hp
            .add_memory(
                &mut m,
                0,
                Some(grp),
                base::<C>() + i * g.section_size(),
                g.section_size(),
                MOM,
            )
            .unwrap();
        let z = hp.online_block(&mut m, ids[0], OnlineType::Auto).unwrap();
        got.push_str(if z == ZoneId::Movable { "[M]" } else { "[N]" });
    }
    assert_eq!(got, "[M][M][M][M][M][M][M][M][N][M][M][M][N][M][M][M]");
    // Static groups are all-or-nothing: a DIMM that does not fit goes NORMAL as a whole.
    let dimm = hp.register_static_group(0, 40 * g.pages_per_section()).unwrap();
    let ids = hp
        .add_memory(
            &mut m,
            0,
            Some(dimm),
            base::<C>() + 32 * g.section_size(),
            40 * g.section_size(),
            MOM,
        )
        .unwrap();
    let zones: Vec<_> = ids
        .iter()
        .map(|&id| hp.online_block(&mut m, id, OnlineType::Auto).unwrap())
        .collect();
    assert!(zones.iter().all(|&z| z == ZoneId::Normal), "{zones:?}");
}

#[test]
fn static_group_fits_goes_movable_as_a_whole() {
    type C = Cfg16K47;
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.assume_kernel_early(0, 32 * g.pages_per_section()).unwrap(); // a 4 GiB VM
    hp.default_online = Some(OnlineType::Auto);
    let mut zones = Vec::new();
    for d in 0..4 {
        let grp = hp.register_static_group(0, 32 * g.pages_per_section()).unwrap();
        let ids = hp
            .add_memory(
                &mut m,
                0,
                Some(grp),
                base::<C>() + d * 32 * g.section_size(),
                32 * g.section_size(),
                MOM,
            )
            .unwrap();
        hp.auto_online(&mut m, &ids);
        let z: Vec<_> = ids.iter().map(|&id| hp.block(id).unwrap().zone.unwrap()).collect();
        assert!(z.windows(2).all(|w| w[0] == w[1]), "DIMM {d} split across zones");
        zones.push(z[0]);
    }
    // 3 × 4 GiB fit in 3.01 × 4 GiB; the fourth DIMM does not.
    assert_eq!(
        zones,
        [ZoneId::Movable, ZoneId::Movable, ZoneId::Movable, ZoneId::Normal]
    );
}

/// The eject path: a veto on the second block re-onlines the first into its zone.
fn offline_and_remove_rolls_back_on_veto<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    // A dynamic group (virtio-mem style) may span zones; a static one (a DIMM) may not.
    let grp = hp.register_dynamic_group(0, g.pages_per_section()).unwrap();
    hp.add_memory(&mut m, 0, Some(grp), base::<C>(), 2 * g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
    hp.online_block(&mut m, 9, OnlineType::Kernel).unwrap();
    let in9 = |p: u64| (9 * g.pages_per_section()..10 * g.pages_per_section()).contains(&p);
    let mut others = Vec::new();
    let pinned = loop {
        let p = m.alloc.alloc(0, AllocKind::Kernel).unwrap();
        if in9(p) {
            break p;
        }
        others.push(p);
    };
    for p in others {
        m.alloc.free(p, 0).unwrap();
    }
    let (present, group) = (hp.present(), *hp.group(grp).unwrap());
    let r = hp.offline_and_remove(&mut m, base::<C>(), 2 * g.section_size());
    assert!(matches!(r, Err(HotplugError::Busy { block: 9, .. })), "{r:?}");
    assert_eq!(
        (hp.block(8).unwrap().state, hp.block(8).unwrap().zone),
        (BlockState::Online, Some(ZoneId::Movable))
    );
    assert_eq!((hp.present(), *hp.group(grp).unwrap()), (present, group));
    m.alloc.free(pinned, 0).unwrap();
    hp.offline_and_remove(&mut m, base::<C>(), 2 * g.section_size())
        .unwrap();
    assert!(hp.block(8).is_none() && hp.block(9).is_none());
    assert_eq!(hp.group(grp).unwrap().nr_blocks, 0);
}

/// An offline that fails halfway (migration target exhausted at a random point, or
/// a pinned page found after some pages moved) must leave the zone as a successful online
/// would. Fill memory with movable data and random pins, leave a random amount of room to
/// migrate into, offline (or offline-and-remove) and check every invariant, the data, that all
/// free memory can be allocated and freed, and that the retry succeeds once room is made.
fn failed_offline_rolls_back_cleanly<C: Config>() {
    let cases = std::env::var("ROLLBACK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let cfg = PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    };
    let strategy = (
        0u32..4,
        prop::option::of(2u64..400),
        0u64..=110,
        any::<bool>(),
        any::<u64>(),
    );
    TestRunner::new(cfg)
        .run(&strategy, |(max_order, pin_one_in, room_pct, remove, seed)| {
            rollback_case::<C>(max_order, pin_one_in, room_pct, remove, seed)
        })
        .unwrap();
}

fn rollback_case<C: Config>(
    max_order: u32,
    pin_one_in: Option<u64>,
    room_pct: u64,
    remove: bool,
    mut seed: u64,
) -> Result<(), TestCaseError> {
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let fail = |e: HotplugError| TestCaseError::fail(format!("{e}"));
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let grp = hp.register_static_group(0, 2 * g.pages_per_section()).unwrap();
    hp.add_memory(&mut m, 0, Some(grp), base::<C>(), 2 * g.section_size(), MOM)
        .map_err(fail)?;
    for b in [8, 9] {
        hp.online_block(&mut m, b, OnlineType::Movable).map_err(fail)?;
    }
    let (mut data, pins) = fill_with_data_and_pins(&mut m, max_order, pin_one_in, &mut rand);
    prop_assert_eq!(
        m.alloc.counters(ZoneId::Normal).free + m.alloc.counters(ZoneId::Movable).free,
        0
    );
    leave_room(&mut m, &mut data, room_pct);
    check_all(&m, &hp);
    let (present, group) = (hp.present(), *hp.group(grp).unwrap());
    let migrated = m.handles.migrated_pages;

    let r = if remove {
        hp.offline_and_remove(&mut m, base::<C>(), 2 * g.section_size())
    } else {
        hp.offline_block(&mut m, 8)
    };
    check_all(&m, &hp);
    verify_data(&m, &data)?;
    let moved = m.handles.migrated_pages - migrated;
    check_offline_outcome(&m, r, remove, moved, &pins)?;
    if r.is_err() {
        for b in [8, 9] {
            let blk = hp.block(b).unwrap();
            prop_assert_eq!((blk.state, blk.zone), (BlockState::Online, Some(ZoneId::Movable)));
        }
        prop_assert_eq!((hp.present(), *hp.group(grp).unwrap()), (present, group));
    }
    allocate_every_free_page(&mut m)?;
    check_all(&m, &hp);
    if r.is_ok() {
        return Ok(());
    }
    // Retry once room is made: free the pins and the data outside block 8.
    for (p, o) in pins {
        m.alloc.free(p, o).unwrap();
    }
    data.retain(|&(h, _)| {
        let (pfn, _) = m.handles.get(h).unwrap();
        if in_block8::<C>(pfn) {
            return true;
        }
        m.contents.remove(&pfn);
        m.free_movable(h);
        false
    });
    hp.offline_block(&mut m, 8).map_err(fail)?;
    check_all(&m, &hp);
    verify_data(&m, &data)?;
    prop_assert!(!m.handles.iter().any(|(_, p, _)| in_block8::<C>(p)));
    Ok(())
}

/// Movable allocations: each handle and the value its data holds.
type MovableData = Vec<(Handle, u64)>;

/// Whether `pfn` is in block 8 (the block a rollback case offlines).
fn in_block8<C: Config>(pfn: u64) -> bool {
    let pps = C::GEOM.pages_per_section();
    (8 * pps..9 * pps).contains(&pfn)
}

/// Fill everything: movable data (a handle and a value), and pins (no handle, `(pfn, order)`)
/// one in `pin_one_in` at random, of random orders up to `max_order` (at most what is free).
fn fill_with_data_and_pins<C: Config>(
    m: &mut Machine<C>,
    max_order: u32,
    pin_one_in: Option<u64>,
    rand: &mut impl FnMut(u64) -> u64,
) -> (MovableData, Vec<(u64, u32)>) {
    let g = C::GEOM;
    let (mut data, mut pins) = (Vec::new(), Vec::new());
    let mut next_value = 1u64;
    loop {
        let order = (rand(u64::from(max_order) + 1) as u32).min(
            (0..=max_order)
                .rev()
                .find(|&o| {
                    (o..=g.max_order()).any(|k| {
                        m.alloc.free_blocks(ZoneId::Movable)[k as usize]
                            + m.alloc.free_blocks(ZoneId::Normal)[k as usize]
                            > 0
                    })
                })
                .unwrap_or(0),
        );
        if pin_one_in.is_some_and(|n| rand(n) == 0) {
            let Some(p) = m.alloc.alloc(order, AllocKind::Movable) else {
                break;
            };
            pins.push((p, order));
        } else {
            let Some(h) = m.alloc_movable(order) else {
                break;
            };
            let (pfn, _) = m.handles.get(h).unwrap();
            m.contents.insert(pfn, next_value);
            data.push((h, next_value));
            next_value += 1;
        }
    }
    (data, pins)
}

/// Room to migrate into: free data outside block 8 worth `room_pct`% of the data in it.
fn leave_room<C: Config>(m: &mut Machine<C>, data: &mut MovableData, room_pct: u64) {
    let in_block8_pages: u64 = m
        .handles
        .iter()
        .filter(|&(_, p, _)| in_block8::<C>(p))
        .map(|(_, _, o)| 1 << o)
        .sum();
    let mut room = 0;
    data.retain(|&(h, _)| {
        let (pfn, order) = m.handles.get(h).unwrap();
        if in_block8::<C>(pfn) || room * 100 >= in_block8_pages * room_pct {
            return true;
        }
        room += 1 << order;
        m.contents.remove(&pfn);
        m.free_movable(h);
        false
    });
}

/// Every handle of `data` still reaches its value.
fn verify_data<C: Config>(m: &Machine<C>, data: &[(Handle, u64)]) -> Result<(), TestCaseError> {
    for &(h, v) in data {
        let (pfn, _) = m.handles.get(h).unwrap();
        prop_assert_eq!(m.contents.get(&pfn), Some(&v), "data of handle {:?} lost", h);
    }
    Ok(())
}

/// The offline (or offline-and-remove) succeeded with block 8 emptied, or was refused for a
/// reason the case allows: a pin (`Busy` names one), or no room left (`moved` pages moved).
fn check_offline_outcome<C: Config>(
    m: &Machine<C>,
    r: Result<(), HotplugError>,
    remove: bool,
    moved: u64,
    pins: &[(u64, u32)],
) -> Result<(), TestCaseError> {
    match r {
        Ok(()) => prop_assert!(remove || !m.handles.iter().any(|(_, p, _)| in_block8::<C>(p))),
        Err(HotplugError::Busy { pfn, .. }) => {
            prop_assert!(pins.iter().any(|&(p, _)| p == pfn), "Busy names a pin, not {:#x}", pfn)
        }
        Err(HotplugError::NoMigrationTarget { moved: n, left, .. }) => {
            prop_assert!(left > 0);
            if !remove {
                prop_assert_eq!(n, moved);
            }
        }
        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
    }
    Ok(())
}

/// All free memory can be allocated (each page once) and freed again.
fn allocate_every_free_page<C: Config>(m: &mut Machine<C>) -> Result<(), TestCaseError> {
    let free = m.alloc.counters(ZoneId::Normal).free + m.alloc.counters(ZoneId::Movable).free;
    let all: Vec<u64> = std::iter::from_fn(|| m.alloc.alloc(0, AllocKind::Movable)).collect();
    prop_assert_eq!(all.len() as u64, free);
    for p in all {
        m.alloc.free(p, 0).unwrap();
    }
    Ok(())
}

/// A DIMM (static group) is onlined into one zone. Onlining one of its blocks into
/// another zone than its online blocks is refused and changes nothing; `Auto` follows the
/// DIMM's zone whatever the policy would pick for the block alone.
fn dimm_stays_in_one_zone<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    let grp = hp.register_static_group(0, 3 * g.pages_per_section()).unwrap();
    hp.add_memory(&mut m, 0, Some(grp), base::<C>(), 3 * g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
    let before = (m.snapshot(), hp.present(), *hp.group(grp).unwrap());
    let r = hp.online_block(&mut m, 9, OnlineType::Kernel);
    assert_eq!(
        r,
        Err(HotplugError::GroupSplit {
            block: 9,
            group: grp,
            zone: ZoneId::Movable
        })
    );
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("a DIMM stays in one zone (online it as movable"));
    assert_eq!((m.snapshot(), hp.present(), *hp.group(grp).unwrap()), before);
    assert_eq!(hp.block(9).unwrap().state, BlockState::Offline);
    check_all(&m, &hp);
    // Auto follows the DIMM even under a policy that would pick NORMAL for the block alone.
    hp.policy = OnlinePolicy::AutoMovable;
    hp.ratio = 0;
    assert_eq!(hp.online_block(&mut m, 9, OnlineType::Auto), Ok(ZoneId::Movable));
    hp.policy = OnlinePolicy::ContigZones;
    assert_eq!(hp.online_block(&mut m, 10, OnlineType::Auto), Ok(ZoneId::Movable));
    check_all(&m, &hp);
    // Offline the whole DIMM, then it may go to the other zone (as a whole).
    for id in 8..11 {
        hp.offline_block(&mut m, id).unwrap();
    }
    hp.online_block(&mut m, 9, OnlineType::Kernel).unwrap();
    assert_eq!(
        hp.online_block(&mut m, 8, OnlineType::Movable),
        Err(HotplugError::GroupSplit {
            block: 8,
            group: grp,
            zone: ZoneId::Normal
        })
    );
    assert_eq!(hp.online_block(&mut m, 8, OnlineType::Auto), Ok(ZoneId::Normal));
    check_all(&m, &hp);
    // Memory without a group is not constrained.
    hp.add_memory(&mut m, 0, None, 12 * g.section_size(), 2 * g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 12, OnlineType::Movable).unwrap();
    hp.online_block(&mut m, 13, OnlineType::Kernel).unwrap();
    check_all(&m, &hp);
}

/// Memory of a DIMM is removed by its driver (offline_and_remove on eject), never
/// by a plain `remove` behind it; the refusal changes nothing and names the way out.
fn dimm_memory_is_not_removed_behind_its_driver<C: Config>() {
    let g = C::GEOM;
    let bs = g.section_size();
    let (mut m, mut hp) = boot::<C>();
    let grp = hp.register_static_group(0, 2 * g.pages_per_section()).unwrap();
    hp.add_memory(&mut m, 0, Some(grp), base::<C>(), 2 * bs, MOM).unwrap();
    let before = (m.snapshot(), hp.present(), *hp.group(grp).unwrap());
    for (start, size, block) in [
        (base::<C>(), 2 * bs, 8),
        (base::<C>() + bs, bs, 9),
        (base::<C>() - bs, 2 * bs, 8),
    ] {
        let r = hp.remove_unowned_memory(&mut m, start, size);
        assert_eq!(
            r,
            Err(HotplugError::OwnedByGroup { block, group: grp }),
            "{start:#x}+{size:#x}"
        );
        assert!(r.unwrap_err().to_string().contains("(:unplug on the host)"));
    }
    assert_eq!((m.snapshot(), hp.present(), *hp.group(grp).unwrap()), before);
    assert!(hp.block(8).is_some() && hp.block(9).is_some());
    check_all(&m, &hp);
    // Memory without a group: removed as before.
    hp.add_memory(&mut m, 0, None, 12 * bs, bs, MOM).unwrap();
    hp.remove_unowned_memory(&mut m, 12 * bs, bs).unwrap();
    // The driver's path still removes the DIMM.
    hp.offline_and_remove(&mut m, base::<C>(), 2 * bs).unwrap();
    assert!(hp.block(8).is_none() && hp.block(9).is_none());
    check_all(&m, &hp);
}

/// The handle table (stress bookkeeping) grows fallibly a chunk at a time, a failed
/// allocation takes nothing, and emptying it gives its heap memory back.
fn handle_table_grows_and_gives_its_memory_back<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
    assert_eq!((m.handles.heap_bytes(), m.handles.slot_count()), (0, 0));
    let mut hs = Vec::new();
    loop {
        match m.handles.try_alloc(&mut m.alloc, 0) {
            Ok(h) => hs.push(h),
            Err(e) => {
                assert_eq!(e, mm::migrate::HandleError::NoMemory);
                break;
            }
        }
    }
    assert!(hs.len() as u64 > g.pages_per_section() / 2, "{} handles", hs.len());
    assert_eq!((m.handles.live(), m.handles.slot_count()), (hs.len(), hs.len()));
    assert!(m.handles.heap_bytes() >= hs.len() * 16);
    // Free every other one, then reuse the freed slots before growing.
    for h in hs.iter().step_by(2) {
        m.handles.free(&mut m.alloc, *h).unwrap();
    }
    let n = hs.len();
    let again = m.handles.try_alloc(&mut m.alloc, 0).unwrap();
    assert!((again.0 as usize) < n && m.handles.slot_count() == n);
    m.handles.free(&mut m.alloc, again).unwrap();
    for h in hs.iter().skip(1).step_by(2) {
        m.handles.free(&mut m.alloc, *h).unwrap();
    }
    assert_eq!(
        (m.handles.live(), m.handles.heap_bytes(), m.handles.slot_count()),
        (0, 0, 0)
    );
    check_all(&m, &hp);
    hp.offline_block(&mut m, 8).unwrap();
}

/// Every flow against the TLB model and the checker, with FEAT_TLBIRANGE (range operations)
/// and without (per-leaf TLBIs, a full flush above 512): add (with and without memmap on
/// memory), online, migrate on offline, remove, `offline_and_remove`, and an add rolled back
/// after an injected failure. After each removal no CPU translates a removed VA (checked by
/// the double's `removed`), and every CPU touched every new mapping first.
fn tlb_model_flows_with_and_without_range_tlbi<C: Config>() {
    let g = C::GEOM;
    for range in [true, false] {
        for flags in [
            MOM,
            AddFlags {
                memmap_on_memory: false,
            },
        ] {
            let (mut m, mut hp) = boot::<C>();
            m.tlb.range = range;
            let size = 2 * g.section_size();
            hp.add_memory(&mut m, 0, None, base::<C>(), size, flags).unwrap();
            for id in [8, 9] {
                hp.online_block(&mut m, id, OnlineType::Movable).unwrap();
            }
            for i in 0..16u64 {
                let h = m.alloc_movable((i % 2) as u32).unwrap();
                let (pfn, _) = m.handles.get(h).unwrap();
                m.contents.insert(pfn, i);
            }
            let migrated = m.handles.migrated_pages;
            hp.offline_and_remove(&mut m, base::<C>(), size).unwrap();
            assert!(m.handles.migrated_pages > migrated, "nothing migrated");
            if !range {
                assert!(
                    !m.tlb
                        .executed
                        .iter()
                        .any(|op| matches!(op, arch::tlb::Tlbi::Rvaale1is(_))),
                    "a range TLBI without FEAT_TLBIRANGE"
                );
            }
            // A failed add (the second block's populate) is rolled back under the same checks.
            m.fail_in = Some(2);
            assert_eq!(
                hp.add_memory(&mut m, 0, None, base::<C>(), size, flags),
                Err(HotplugError::Injected)
            );
            m.assert_teardown_ok("a rolled-back add");
            let lin = Machine::<C>::linear(base::<C>());
            assert!(
                m.tlb.stale_leaf(lin, size).is_none(),
                "rolled-back linear map still cached"
            );
        }
    }
}

/// `offline_and_remove` of part of a range added with memmap on memory: the blocks are
/// offlined, then `remove_memory` refuses (`Granularity`); the blocks come back online in their
/// zones and nothing else changes.
fn offline_and_remove_reonlines_when_remove_is_refused<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot::<C>();
    hp.add_memory(&mut m, 0, None, base::<C>(), 2 * g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
    hp.online_block(&mut m, 9, OnlineType::Kernel).unwrap();
    let before = (m.snapshot(), hp.present());
    assert_eq!(
        hp.offline_and_remove(&mut m, base::<C>(), g.section_size()),
        Err(HotplugError::Granularity {
            start: base::<C>(),
            size: g.section_size()
        })
    );
    let b = hp.block(8).unwrap();
    assert_eq!((b.state, b.zone), (BlockState::Online, Some(ZoneId::Movable)));
    assert_eq!((m.snapshot(), hp.present()), before);
    check_all(&m, &hp);
}

// ---------------------------------------------------------------------------------------------
// Deferred struct page initialisation

#[path = "hotplug/subblock.rs"]
mod subblock;

#[path = "hotplug/numa.rs"]
mod numa;

/// Deferred-mode tests, per configuration: `deferred_init::cfg_4k_48::...`.
mod deferred_init {
    use super::*;
    mm::matrix_tests!(
        deferred_fresh_blocks_allocate_every_page,
        deferred_untouched_memory_costs_no_per_page_work,
        deferred_add_with_memmap_on_memory_writes_no_struct_page,
        deferred_partly_touched_block_offlines_through_migration,
        deferred_failed_offline_rolls_back_with_deferred_chunks,
        deferred_background_completion_in_bounded_steps,
        deferred_allocation_waits_for_chunks_in_flight,
    );
}

const NO_MOM: AddFlags = AddFlags {
    memmap_on_memory: false,
};

/// The part of each block `[pfn + n_vm, pfn + pps)` whose struct pages are deferred.
fn deferred_parts<C: Config>(ids: &[BlockId], mom: bool) -> Vec<(u64, u64)> {
    let g = C::GEOM;
    let n_vm = if mom { g.memmap_pages_per_block() } else { 0 };
    ids.iter()
        .map(|&id| (id * g.pages_per_section() + n_vm, (id + 1) * g.pages_per_section()))
        .collect()
}

/// Every struct page of `parts` still holds the poison: nothing wrote them.
fn assert_poisoned<C: Config>(m: &Machine<C>, parts: &[(u64, u64)]) {
    for &(s, e) in parts {
        for pfn in s..e {
            assert!(
                m.memmap.peek(pfn).is_poison(),
                "deferred struct page of pfn {pfn:#x} written"
            );
        }
    }
}

/// A fresh add writes only the self-hosted memmap pages; onlining hands the rest over as one
/// deferred range per block; allocating every page of it initialises every chunk (order 0 and
/// max order), the counts match, and it all goes back, offline and away cleanly.
fn deferred_fresh_blocks_allocate_every_page<C: Config>() {
    let g = C::GEOM;
    let pps = g.pages_per_section();
    for (flags, order) in [(MOM, 0), (NO_MOM, g.max_order()), (MOM, g.max_order())] {
        let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
        let before = m.snapshot();
        let size = 2 * g.section_size();
        let ids = hp.add_memory(&mut m, 0, None, base::<C>(), size, flags).unwrap();
        let parts = deferred_parts::<C>(&ids, flags.memmap_on_memory);
        let usable: u64 = parts.iter().map(|&(s, e)| e - s).sum();
        assert_eq!(to_init(&m, 8 * pps, 2 * pps), usable);
        assert_poisoned(&m, &parts);
        for &id in &ids {
            hp.online_block(&mut m, id, OnlineType::Movable).unwrap();
        }
        assert_poisoned(&m, &parts);
        let c = m.alloc.counters(ZoneId::Movable);
        assert_eq!((c.managed, c.free, c.deferred), (usable, 0, usable));
        let ranges = m.alloc.deferred_ranges(ZoneId::Movable).len();
        assert_eq!(ranges, if flags.memmap_on_memory { 2 } else { 1 });
        // Every page (order 0), or every whole max-order block the chunks hold.
        let want = if order == 0 {
            usable
        } else {
            parts
                .iter()
                .map(|&(s, e)| (e / (1 << order)).saturating_sub(s.div_ceil(1 << order)) << order)
                .sum()
        };
        let mut got = std::collections::BTreeSet::new();
        while (got.len() as u64) < want >> order {
            let p = m
                .alloc
                .alloc(order, AllocKind::Movable)
                .expect("a page of the new blocks");
            assert!(
                parts.iter().any(|&(s, e)| p >= s && p + (1 << order) <= e),
                "pfn {p:#x} outside the new blocks' usable part"
            );
            assert!(got.insert(p), "pfn {p:#x} handed out twice");
        }
        check_all(&m, &hp);
        if order == 0 {
            let c = m.alloc.counters(ZoneId::Movable);
            assert_eq!((c.free, c.deferred), (0, 0), "every chunk initialised");
            assert_eq!(to_init(&m, 8 * pps, 2 * pps), 0);
            let p = m.alloc.alloc(0, AllocKind::Movable).unwrap();
            assert!(p < 8 * pps, "the next movable page falls back to NORMAL");
            m.alloc.free(p, 0).unwrap();
        }
        for p in got {
            m.alloc.free(p, order).unwrap();
        }
        check_all(&m, &hp);
        assert_eq!(m.alloc.counters(ZoneId::Movable).available(), usable);
        hp.offline_and_remove(&mut m, base::<C>(), size).unwrap();
        assert_eq!(m.snapshot(), before);
    }
}

/// An add with memmap on memory writes no struct page at all, the self-hosted memmap pages'
/// included (they live in the block's own first memmap page, which the host would have to
/// back): the poison stays over every block, and the self-hosted pages are answered from the
/// block, offline and online, through online, offline, re-online and removal, without a
/// struct page access.
fn deferred_add_with_memmap_on_memory_writes_no_struct_page<C: Config>() {
    use mm::buddy::{DeferredState, PageLookup};
    let g = C::GEOM;
    let pps = g.pages_per_section();
    let n_vm = g.memmap_pages_per_block();
    let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
    let before = m.snapshot();
    let nblocks = 3;
    let size = nblocks * g.section_size();
    let acc = |m: &Machine<C>| m.memmap.accesses.get();
    m.check_each_op = false;
    let a0 = acc(&m);
    let ids = hp.0.add_memory(&mut m, 0, None, base::<C>(), size, MOM).unwrap();
    assert_eq!(acc(&m) - a0, 0, "add: struct page accesses");
    let whole: Vec<(u64, u64)> = ids.iter().map(|&id| (id * pps, (id + 1) * pps)).collect();
    assert_poisoned(&m, &whole);
    let vm: Vec<(u64, u64)> = ids.iter().map(|&id| (id * pps, id * pps + n_vm)).collect();
    *m.memmap.watched.borrow_mut() = vm.clone();
    let self_hosted = |m: &Machine<C>, zone| {
        for &(s, e) in &vm {
            for pfn in [s, e - 1] {
                assert_eq!(
                    m.alloc.lookup(pfn),
                    PageLookup::Deferred(DeferredState::SelfHosted { zone }),
                    "pfn {pfn:#x}"
                );
                assert_eq!(m.alloc.is_online(pfn), Some(zone.is_some()));
            }
            assert_ne!(
                m.alloc.lookup(e),
                PageLookup::Deferred(DeferredState::SelfHosted { zone }),
                "the page after the self-hosted memmap"
            );
        }
        assert_eq!(
            m.alloc.vmemmap_pages(base::<C>() >> g.page_shift, nblocks * pps),
            nblocks * n_vm
        );
    };
    self_hosted(&m, None);
    check_all(&m, &hp);
    for &id in &ids {
        hp.0.online_block(&mut m, id, OnlineType::Movable).unwrap();
    }
    self_hosted(&m, Some(ZoneId::Movable));
    check_all(&m, &hp);
    for &id in &ids {
        hp.0.offline_block(&mut m, id).unwrap();
        hp.0.online_block(&mut m, id, OnlineType::Kernel).unwrap();
    }
    self_hosted(&m, Some(ZoneId::Normal));
    check_all(&m, &hp);
    hp.0.offline_and_remove(&mut m, base::<C>(), size).unwrap();
    check_all(&m, &hp);
    assert_eq!(
        m.memmap.watched_accesses.get(),
        0,
        "a self-hosted memmap struct page was accessed"
    );
    assert_eq!(m.alloc.lookup(vm[0].0), PageLookup::NoMemmap);
    assert_eq!(m.alloc.vmemmap_pages(base::<C>() >> g.page_shift, nblocks * pps), 0);
    assert_eq!(m.snapshot(), before);
    // Added again at the same place: nothing of the old state is left.
    let ids = hp.0.add_memory(&mut m, 0, None, base::<C>(), size, NO_MOM).unwrap();
    assert_eq!(
        m.alloc.lookup(ids[0] * pps),
        PageLookup::Deferred(DeferredState::Offline),
        "a block added without memmap on memory where one with it was"
    );
    check_all(&m, &hp);
}

/// Online, offline, re-online and remove of memory never used: O(blocks). The counting
/// double shows no access to a deferred struct page at any step (and the poison intact).
fn deferred_untouched_memory_costs_no_per_page_work<C: Config>() {
    let g = C::GEOM;
    for flags in [MOM, NO_MOM] {
        let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
        let before = m.snapshot();
        let nblocks = 4;
        let size = nblocks * g.section_size();
        // Not even the self-hosted memmap pages' struct pages are written.
        let per_op = 0;
        let acc = |m: &Machine<C>| m.memmap.accesses.get();
        m.check_each_op = false;
        let a0 = acc(&m);
        let ids = hp.0.add_memory(&mut m, 0, None, base::<C>(), size, flags).unwrap();
        let parts = deferred_parts::<C>(&ids, flags.memmap_on_memory);
        *m.memmap.watched.borrow_mut() = parts.clone();
        assert!(acc(&m) - a0 <= per_op, "add: {} struct page accesses", acc(&m) - a0);
        check_all(&m, &hp);
        let a1 = acc(&m);
        for &id in &ids {
            hp.0.online_block(&mut m, id, OnlineType::Movable).unwrap();
        }
        assert!(
            acc(&m) - a1 <= per_op + 64,
            "online: {} struct page accesses",
            acc(&m) - a1
        );
        check_all(&m, &hp);
        let a2 = acc(&m);
        for &id in &ids {
            hp.0.offline_block(&mut m, id).unwrap();
        }
        assert!(
            acc(&m) - a2 <= per_op + 64,
            "offline: {} struct page accesses",
            acc(&m) - a2
        );
        check_all(&m, &hp);
        let pfn = parts[0].0;
        assert_eq!(
            m.alloc.lookup(pfn),
            mm::buddy::PageLookup::Deferred(mm::buddy::DeferredState::Offline)
        );
        // Online again, with a different zone, and offline once more: still nothing written.
        for &id in &ids {
            hp.0.online_block(&mut m, id, OnlineType::Kernel).unwrap();
        }
        assert_eq!(
            m.alloc.lookup(pfn),
            mm::buddy::PageLookup::Deferred(mm::buddy::DeferredState::Zone {
                zone: ZoneId::Normal,
                isolated: false
            })
        );
        check_all(&m, &hp);
        let a3 = acc(&m);
        hp.0.offline_and_remove(&mut m, base::<C>(), size).unwrap();
        assert!(
            acc(&m) - a3 <= per_op + 64,
            "offline and remove: {} struct page accesses",
            acc(&m) - a3
        );
        assert_eq!(
            m.memmap.watched_accesses.get(),
            0,
            "a deferred struct page was accessed"
        );
        assert_eq!(m.alloc.lookup(pfn), mm::buddy::PageLookup::NoMemmap);
        assert_eq!(m.snapshot(), before);
        check_all(&m, &hp);
    }
}

/// Part of a block used (some chunks initialised, movable data in them), the rest deferred:
/// offline migrates the data out as before and drops the untouched chunks; onlining again
/// gives the used part back free and the rest deferred.
fn deferred_partly_touched_block_offlines_through_migration<C: Config>() {
    let g = C::GEOM;
    let pps = g.pages_per_section();
    let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
    let before = m.snapshot();
    let size = 2 * g.section_size();
    let ids = hp.add_memory(&mut m, 0, None, base::<C>(), size, MOM).unwrap();
    for &id in &ids {
        hp.online_block(&mut m, id, OnlineType::Movable).unwrap();
    }
    let usable = 2 * (pps - g.memmap_pages_per_block());
    let chunk = 1u64 << g.max_order();
    // About one and a half chunks of data: the lowest chunks of block 8 are initialised.
    let mut hs = Vec::new();
    for i in 0..(chunk * 3 / 2).min(pps / 2) {
        let h = m.alloc_movable(0).unwrap();
        let (pfn, _) = m.handles.get(h).unwrap();
        assert!((8 * pps..9 * pps).contains(&pfn), "data at {pfn:#x}, not in block 8");
        m.contents.insert(pfn, i + 1);
        hs.push((h, i + 1));
    }
    let uninit8 = to_init(&m, 8 * pps, pps);
    assert!(uninit8 < pps - g.memmap_pages_per_block(), "block 8 touched");
    // 64K: a max-order chunk is a whole block; elsewhere block 8 is only partly initialised.
    assert_eq!(uninit8 > 0, chunk < pps - g.memmap_pages_per_block());
    assert_eq!(to_init(&m, 9 * pps, pps), pps - g.memmap_pages_per_block());
    check_all(&m, &hp);
    hp.offline_block(&mut m, 8).unwrap();
    assert!(m.handles.migrated_pages >= hs.len() as u64);
    for &(h, v) in &hs {
        let (pfn, _) = m.handles.get(h).unwrap();
        assert!(!(8 * pps..9 * pps).contains(&pfn));
        assert_eq!(m.contents.get(&pfn), Some(&v), "data lost in migration");
    }
    // The untouched part of block 8 stayed untouched (and is offline, in no zone).
    assert_eq!(to_init(&m, 8 * pps, pps), uninit8);
    if uninit8 > 0 {
        assert_eq!(
            m.alloc.lookup(9 * pps - 1),
            mm::buddy::PageLookup::Deferred(mm::buddy::DeferredState::Offline)
        );
    }
    assert!(m
        .alloc
        .page(8 * pps + g.memmap_pages_per_block())
        .unwrap()
        .has(flags::OFFLINE));
    hp.online_block(&mut m, 8, OnlineType::Movable).unwrap();
    let c = m.alloc.counters(ZoneId::Movable);
    assert_eq!(c.managed, usable);
    // Everything available can be allocated, once.
    let avail = c.available();
    let mut all = Vec::new();
    while (all.len() as u64) < avail {
        all.push(m.alloc.alloc(0, AllocKind::Movable).unwrap());
    }
    assert_eq!(m.alloc.counters(ZoneId::Movable).available(), 0);
    check_all(&m, &hp);
    for p in all {
        m.alloc.free(p, 0).unwrap();
    }
    for (h, _) in hs {
        m.free_movable(h);
    }
    hp.offline_and_remove(&mut m, base::<C>(), size).unwrap();
    // Everything but the page-table pages: the movable window keeps its tables once made.
    let (now, before) = (m.snapshot(), before);
    assert_eq!((now.1, now.2, now.3, now.4), (before.1, before.2, before.3, before.4));
}

/// An offline refused by an unmovable page in a block with deferred chunks leaves the block
/// exactly as it was: same deferred ranges, same counters, still usable; then it succeeds.
fn deferred_failed_offline_rolls_back_with_deferred_chunks<C: Config>() {
    let g = C::GEOM;
    let pps = g.pages_per_section();
    let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
    hp.add_memory(&mut m, 0, None, base::<C>(), 2 * g.section_size(), MOM)
        .unwrap();
    hp.online_block(&mut m, 8, OnlineType::Kernel).unwrap();
    hp.online_block(&mut m, 9, OnlineType::Kernel).unwrap();
    // Exhaust the boot blocks so a kernel page lands in block 8 (growing its first chunk).
    let mut others = Vec::new();
    let pinned = loop {
        let p = m.alloc.alloc(0, AllocKind::Kernel).unwrap();
        if p >= 8 * pps {
            break p;
        }
        others.push(p);
    };
    assert!((8 * pps..9 * pps).contains(&pinned));
    for p in others {
        m.alloc.free(p, 0).unwrap();
    }
    let state = |m: &Machine<C>, hp: &Checked| {
        (
            m.snapshot(),
            hp.present(),
            m.alloc.deferred_ranges(ZoneId::Normal).to_vec(),
            m.alloc.uninit_pages(8 * pps, 2 * pps),
        )
    };
    let before = state(&m, &hp);
    assert!(before.3 > 0 && !before.2.is_empty());
    for remove in [false, true] {
        let r = if remove {
            hp.offline_and_remove(&mut m, base::<C>(), 2 * g.section_size())
        } else {
            hp.offline_block(&mut m, 8)
        };
        assert!(
            matches!(r, Err(HotplugError::Busy { block: 8, pfn }) if pfn == pinned),
            "{r:?}"
        );
        assert_eq!(state(&m, &hp), before, "a refused offline changed something");
        assert_eq!(hp.block(8).unwrap().state, BlockState::Online);
    }
    // Still usable: once the boot blocks are used up, kernel allocations grow its chunks.
    let mut held = Vec::new();
    while held.last().is_none_or(|&p| p < 8 * pps) {
        held.push(m.alloc.alloc(0, AllocKind::Kernel).unwrap());
    }
    assert!(m.alloc.uninit_pages(8 * pps, pps) < before.3);
    for p in held {
        m.alloc.free(p, 0).unwrap();
    }
    m.alloc.free(pinned, 0).unwrap();
    hp.offline_and_remove(&mut m, base::<C>(), 2 * g.section_size())
        .unwrap();
    check_all(&m, &hp);
}

/// Background completion: each step initialises at least one chunk and stops at its budget,
/// taking the allocator "lock" (here: the closure) only for take and hand-over; a chunk being
/// initialised shows as in flight and makes an offline of its block refuse (typed, changing
/// nothing) until it is handed over.
fn deferred_background_completion_in_bounded_steps<C: Config>() {
    let g = C::GEOM;
    let pps = g.pages_per_section();
    let chunk = 1u64 << g.max_order();
    let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
    let nblocks = 3;
    let ids = hp
        .add_memory(&mut m, 0, None, base::<C>(), nblocks * g.section_size(), NO_MOM)
        .unwrap();
    for &id in &ids {
        hp.online_block(&mut m, id, OnlineType::Movable).unwrap();
    }
    // A chunk taken by an "idle CPU": in flight, its block cannot go offline yet.
    let c = m.alloc.deferred_take().unwrap();
    assert_eq!((c.start, c.nr_pages()), (8 * pps, chunk));
    assert_eq!(
        m.alloc.lookup(c.start),
        mm::buddy::PageLookup::Deferred(mm::buddy::DeferredState::InFlight { zone: ZoneId::Movable })
    );
    check_all(&m, &hp);
    let snap = (m.snapshot(), hp.present());
    assert_eq!(
        hp.offline_block(&mut m, 8),
        Err(HotplugError::Allocator(BuddyError::InitInProgress { pfn: c.start }))
    );
    assert_eq!((m.snapshot(), hp.present()), snap);
    c.init(&m.memmap);
    assert_eq!(m.alloc.deferred_finish(c), Ok(chunk));
    check_all(&m, &hp);
    // Steps of one chunk, then two chunks, until nothing is left.
    let memmap = m.memmap.clone();
    let mut steps = Vec::new();
    loop {
        let budget = if steps.len() % 2 == 0 { 1 } else { 2 * chunk };
        let mut locked = 0;
        let n = mm::buddy::deferred_init_step(&memmap, budget, |f| {
            locked += 1;
            f(&mut m.alloc)
        });
        if n == 0 {
            break;
        }
        assert!(n <= budget.max(chunk), "step of {n} pages over its budget {budget}");
        // Once to take and once to hand over each chunk (and once more to find none left).
        assert!(
            locked == 2 * n / chunk || locked == 2 * n / chunk + 1,
            "{locked} locks for {n} pages"
        );
        steps.push(n);
        check_all(&m, &hp);
    }
    let total: u64 = steps.iter().sum();
    assert_eq!(total + chunk, nblocks * pps);
    let c = m.alloc.counters(ZoneId::Movable);
    assert_eq!((c.free, c.deferred, c.managed), (nblocks * pps, 0, nblocks * pps));
    assert_eq!(
        m.alloc.free_blocks(ZoneId::Movable)[g.max_order() as usize],
        nblocks * pps / chunk
    );
    hp.offline_and_remove(&mut m, base::<C>(), nblocks * g.section_size())
        .unwrap();
    check_all(&m, &hp);
}

/// While every deferred chunk of ZONE_MOVABLE is being initialised by idle CPUs, a movable
/// allocation fails (the caller waits for the hand-over) instead of falling back to
/// ZONE_NORMAL, so where memory lands does not depend on how far background work got.
fn deferred_allocation_waits_for_chunks_in_flight<C: Config>() {
    let g = C::GEOM;
    let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
    let ids = hp
        .add_memory(&mut m, 0, None, base::<C>(), g.section_size(), NO_MOM)
        .unwrap();
    hp.online_block(&mut m, ids[0], OnlineType::Movable).unwrap();
    let held: Vec<_> = std::iter::from_fn(|| m.alloc.deferred_take()).collect();
    assert!(!held.is_empty());
    assert!(m.alloc.counters(ZoneId::Normal).available() > 0);
    assert_eq!(m.alloc.alloc(0, AllocKind::Movable), None, "fell back to ZONE_NORMAL");
    for c in held {
        c.init(&m.memmap);
        m.alloc.deferred_finish(c).unwrap();
    }
    let p = m.alloc.alloc(0, AllocKind::Movable).unwrap();
    assert!(m.alloc.page(p).unwrap().zone == ZoneId::Movable as u8);
    m.alloc.free(p, 0).unwrap();
    check_all(&m, &hp);
    hp.offline_and_remove(&mut m, base::<C>(), g.section_size()).unwrap();
    check_all(&m, &hp);
}

/// Host measurement (not a check; run by hand, in release):
/// `cargo test -p hotmem-mm --release --test hotplug measure_memmap_init -- --ignored --nocapture`.
/// Per granule and mode, for an add + online of SIZE (memmap on memory): struct page
/// accesses (`page()` calls) during add and during online, struct pages written (no longer
/// poison afterwards), and host wall time of each step (the double's populate includes the
/// TLB model and the host memmap's allocation and poisoning, the same in both modes).
/// `MEASURE_SIZES=1G,16G,256G` chooses the sizes (default 1G), `MEASURE_GRANULES=16k,64k`
/// the granules (default all three; 256G on 4K needs 4 GiB of host memmap).
#[test]
#[ignore]
fn measure_memmap_init() {
    let sizes: Vec<u64> = std::env::var("MEASURE_SIZES")
        .unwrap_or_else(|_| "1G".into())
        .split(',')
        .map(|s| s.trim_end_matches('G').parse::<u64>().unwrap() << 30)
        .collect();
    let granules = std::env::var("MEASURE_GRANULES").unwrap_or_else(|_| "4k,16k,64k".into());
    for size in sizes {
        let on = |g: &str| granules.split(',').any(|x| x == g);
        if on("4k") {
            measure::<Cfg4K48>(size);
        }
        if on("16k") {
            measure::<Cfg16K47>(size);
        }
        if on("64k") {
            measure::<Cfg64K48>(size);
        }
    }
}

fn measure<C: Config>(size: u64) {
    let g = C::GEOM;
    for mode in [MemmapInit::Eager, MemmapInit::Deferred] {
        let (mut m, mut hp) = boot_in::<C>(mode);
        m.check_each_op = false;
        // Above the boot blocks, block-aligned, inside every configuration's range.
        let base = size.max(16 * g.section_size());
        let acc = |m: &Machine<C>| m.memmap.accesses.get();
        let (a0, t0) = (acc(&m), std::time::Instant::now());
        let ids = hp.0.add_memory(&mut m, 0, None, base, size, MOM).unwrap();
        let (a1, t1) = (acc(&m), std::time::Instant::now());
        for &id in &ids {
            hp.0.online_block(&mut m, id, OnlineType::Movable).unwrap();
        }
        let (a2, t2) = (acc(&m), std::time::Instant::now());
        let first = base >> g.page_shift;
        let written = (first..first + (size >> g.page_shift))
            .filter(|&p| !m.memmap.peek(p).is_poison())
            .count();
        // First allocation (grows a chunk in deferred mode), then background completion.
        let t3 = std::time::Instant::now();
        let p = m.alloc.alloc(0, AllocKind::Movable).unwrap();
        let t4 = std::time::Instant::now();
        m.alloc.free(p, 0).unwrap();
        let memmap = m.memmap.clone();
        let t5 = std::time::Instant::now();
        while mm::buddy::deferred_init_step(&memmap, u64::MAX, |f| f(&mut m.alloc)) > 0 {}
        let t6 = std::time::Instant::now();
        println!(
            "measure: granule={} size={}G mode={} blocks={} add_accesses={} online_accesses={} \
             struct_pages_written={} ({} KiB) add_us={} online_us={} first_alloc_us={} complete_us={}",
            g.granule_name(),
            size >> 30,
            mode.name(),
            ids.len(),
            a1 - a0,
            a2 - a1,
            written,
            written as u64 * 64 / 1024,
            (t1 - t0).as_micros(),
            (t2 - t1).as_micros(),
            (t4 - t3).as_micros(),
            (t6 - t5).as_micros(),
        );
        check_all(&m, &hp);
        // Checked once at the end: after every block offline it would cost O(blocks * pages).
        hp.0.offline_and_remove(&mut m, base, size).unwrap();
        check_all(&m, &hp);
    }
}
