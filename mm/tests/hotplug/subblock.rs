//! Sub-block plug and unplug (virtio-mem's sub-block mode) in the double: random sequences of
//! unplugging and plugging device blocks of one online memory block, at every device block size
//! the granule allows (a power of two from a pageblock up to half a memory block), interleaved
//! with movable allocations of every order (so max-order blocks straddle small device blocks),
//! frees, pins and whole-block offline/online. After every step: the allocator's and the
//! hotplug accounting's invariants, every page of an unplugged device block offline, the zone's
//! managed pages equal to a recount of the plugged ones, and every movable allocation's data
//! where its handle says. At the end all memory is allocated, counted and freed.

use super::*;

mm::matrix_tests!(subblock_plug_unplug_sequences);

#[derive(Clone, Copy, Debug)]
enum Step {
    Unplug(usize),
    Plug(usize),
    Alloc(u32),
    Free(usize),
    Pin(u32),
    Unpin(usize),
    /// Offline the whole memory block and online it again (its unplugged device blocks stay
    /// offline).
    Cycle,
}

fn step(nsubs: usize, max_order: u32) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..nsubs).prop_map(Step::Unplug),
        2 => (0..nsubs).prop_map(Step::Plug),
        3 => (0..=max_order).prop_map(Step::Alloc),
        1 => any::<usize>().prop_map(Step::Free),
        1 => (0..=max_order).prop_map(Step::Pin),
        1 => any::<usize>().prop_map(Step::Unpin),
        1 => Just(Step::Cycle),
    ]
}

/// The device block sizes (bytes) a granule supports in sub-block mode.
fn sub_block_sizes(g: Geometry) -> Vec<u64> {
    let mut v = Vec::new();
    let mut b = g.page_size() << g.pageblock_order();
    while b < g.section_size() {
        v.push(b);
        b <<= 1;
    }
    v
}

fn subblock_plug_unplug_sequences<C: Config>() {
    let g = C::GEOM;
    let cases = std::env::var("SUBBLOCK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let old = WINDOW_ORDER.with(|w| w.replace(g.max_order()));
    for mode in [MemmapInit::Eager, MemmapInit::Deferred] {
        for bs in sub_block_sizes(g) {
            let nsubs = (g.section_size() / bs) as usize;
            let cfg = PtConfig {
                cases,
                failure_persistence: None,
                ..PtConfig::default()
            };
            let steps = prop::collection::vec(step(nsubs, g.max_order()), 8..24);
            TestRunner::new(cfg)
                .run(&(steps, any::<bool>()), |(steps, movable)| {
                    subblock_case::<C>(mode, bs, movable, &steps)
                })
                .unwrap_or_else(|e| panic!("{mode:?}, device block {bs:#x}: {e}"));
        }
    }
    WINDOW_ORDER.with(|w| w.set(old));
}

fn subblock_case<C: Config>(mode: MemmapInit, bs: u64, movable: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let g = C::GEOM;
    let fail = |what: &str, e: HotplugError| TestCaseError::fail(format!("{what}: {e}"));
    let (mut m, mut hp) = boot_in::<C>(mode);
    let id = 8;
    hp.add_memory(&mut m, None, base::<C>(), g.section_size(), MOM)
        .map_err(|e| fail("add", e))?;
    let (online, zone) = if movable {
        (OnlineType::Movable, ZoneId::Movable)
    } else {
        (OnlineType::Kernel, ZoneId::Normal)
    };
    let boot_managed = m.alloc.counters(zone).managed;
    hp.online_block(&mut m, id, online).map_err(|e| fail("online", e))?;
    let sub_pages = bs >> g.page_shift;
    let first_pfn = base::<C>() >> g.page_shift;
    let vm = g.memmap_pages_per_block();
    // Device blocks holding the self-hosted memmap stay plugged while the block exists.
    let meta = vm.div_ceil(sub_pages) as usize;
    let nsubs = (g.section_size() / bs) as usize;
    let mut plugged = vec![true; nsubs];
    let mut block_online = true;
    // Movable data (handle, value) and pins (pfn, order).
    let mut data: Vec<(Handle, u64)> = Vec::new();
    let mut pins: Vec<(u64, u32)> = Vec::new();
    let mut next_value = 1;
    let range = |i: usize| (first_pfn + i as u64 * sub_pages, sub_pages);
    for (n, &s) in steps.iter().enumerate() {
        match s {
            Step::Unplug(i) if i >= meta && plugged[i] && block_online => {
                let (pfn, nr) = range(i);
                // Targets below the device block: the shrink path's placement.
                match m.offline_pages(pfn, nr, id, pfn) {
                    Ok(()) => plugged[i] = false,
                    Err(HotplugError::Busy { .. } | HotplugError::NoMigrationTarget { .. }) => {}
                    Err(e) => return Err(fail("unplug", e)),
                }
            }
            Step::Plug(i) if !plugged[i] && block_online => {
                let (pfn, nr) = range(i);
                m.online_pages(pfn, nr, zone).map_err(|e| fail("plug", e))?;
                plugged[i] = true;
            }
            Step::Alloc(order) => {
                if let Some(h) = m.alloc_movable(order) {
                    let (pfn, _) = m.handles.get(h).unwrap();
                    m.contents.insert(pfn, next_value);
                    data.push((h, next_value));
                    next_value += 1;
                }
            }
            Step::Free(k) if !data.is_empty() => {
                let (h, _) = data.swap_remove(k % data.len());
                let (pfn, _) = m.handles.get(h).unwrap();
                m.contents.remove(&pfn);
                m.free_movable(h);
            }
            Step::Pin(order) => {
                if let Some(p) = m.alloc.alloc(order, AllocKind::Movable) {
                    pins.push((p, order));
                }
            }
            Step::Unpin(k) if !pins.is_empty() => {
                let (p, o) = pins.swap_remove(k % pins.len());
                m.alloc.free(p, o).unwrap();
            }
            Step::Cycle if block_online => match hp.offline_block(&mut m, id) {
                Ok(()) => block_online = false,
                Err(HotplugError::Busy { .. } | HotplugError::NoMigrationTarget { .. }) => {}
                Err(e) => return Err(fail("offline block", e)),
            },
            Step::Cycle => {
                // Online the plugged parts only (what virtio-mem's online filter hands over).
                hp.online_block(&mut m, id, online)
                    .map_err(|e| fail("online block", e))?;
                for i in (0..nsubs).filter(|&i| !plugged[i]) {
                    let (pfn, nr) = range(i);
                    m.offline_pages(pfn, nr, id, u64::MAX)
                        .map_err(|e| fail("re-offline unplugged", e))?;
                }
                block_online = true;
            }
            _ => continue,
        }
        check_all(&m, &hp);
        let ctx = format!("after step {n} ({s:?}) of {steps:?}");
        // Every page of an unplugged device block is offline (or never initialised).
        for i in (0..nsubs).filter(|&i| !plugged[i]) {
            let (pfn, nr) = range(i);
            for p in pfn..pfn + nr {
                if let Some(page) = m.alloc.page(p) {
                    prop_assert!(
                        page.has(flags::OFFLINE),
                        "pfn {:#x} of unplugged device block {} is online {}",
                        p,
                        i,
                        ctx
                    );
                }
            }
        }
        // Managed pages: the plugged device blocks, less the self-hosted memmap.
        let want = boot_managed
            + if block_online {
                plugged.iter().filter(|&&p| p).count() as u64 * sub_pages - vm
            } else {
                0
            };
        prop_assert_eq!(m.alloc.counters(zone).managed, want, "managed pages {}", ctx);
        for &(h, v) in &data {
            let (pfn, _) = m.handles.get(h).unwrap();
            prop_assert_eq!(m.contents.get(&pfn), Some(&v), "data of {:?} lost {}", h, ctx);
        }
    }
    // The memory is usable: every free page can be allocated once, and freed again.
    for (p, o) in pins.drain(..) {
        m.alloc.free(p, o).unwrap();
    }
    for (h, _) in data.drain(..) {
        let (pfn, _) = m.handles.get(h).unwrap();
        m.contents.remove(&pfn);
        m.free_movable(h);
    }
    let free =
        |m: &Machine<C>| m.alloc.counters(ZoneId::Normal).available() + m.alloc.counters(ZoneId::Movable).available();
    let before = free(&m);
    let all: Vec<u64> = std::iter::from_fn(|| m.alloc.alloc(0, AllocKind::Movable)).collect();
    prop_assert_eq!(all.len() as u64, before);
    let mut seen = std::collections::HashSet::new();
    for &p in &all {
        prop_assert!(seen.insert(p), "pfn {:#x} handed out twice", p);
        if let Some(i) = (p >= first_pfn)
            .then(|| ((p - first_pfn) / sub_pages) as usize)
            .filter(|&i| i < nsubs)
        {
            prop_assert!(
                plugged[i] && block_online,
                "pfn {:#x} of an unplugged device block handed out",
                p
            );
        }
    }
    for p in all {
        m.alloc.free(p, 0).unwrap();
    }
    check_all(&m, &hp);
    Ok(())
}
