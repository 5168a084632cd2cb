//! Host tests of the page allocator's nodes, for every configuration: per-node zones and
//! counters, node-ordered zonelists (own node first, then by distance), memory-less nodes,
//! buddies that never merge across a node boundary, deferred memory initialised for its node,
//! and migration targets on the source page's node first. The allocator's checker (per node
//! and zone) runs after every operation.

use mm::buddy::{deferred_init_step, AllocKind, NodeCensus, PageAlloc};
use mm::geometry::Config;
use mm::migrate::{offline_pages, Handle, Handles, Move};
use mm::numa::{Distances, NodeId, NodeMask, MAX_NUMNODES};
use mm::page::{Memmap, Page, ZoneId};
use mm::testing::SharedMemmap;

mm::matrix_tests!(
    one_two_and_four_nodes_allocate_locally,
    a_memoryless_node_falls_back_by_distance,
    movable_allocations_try_a_whole_node_before_the_next,
    buddies_at_a_node_boundary_never_merge,
    deferred_ranges_on_two_nodes_initialise_with_their_node,
    migration_targets_the_source_node_then_the_nearest,
);

/// The first PFN of the test memory (aligned to every configuration's max order).
const BASE: u64 = 1 << 16;

/// An allocator over the struct pages of `[BASE, BASE + nr)`, all initialised (reserved,
/// offline memory: nothing online yet).
fn allocator<C: Config>(nr: u64) -> PageAlloc<SharedMemmap> {
    let m = SharedMemmap::new(BASE, nr);
    // SAFETY: the memmap of the range is the test's own, populated, and nothing else reads or
    // writes it yet.
    unsafe { m.init_pages(BASE, nr, Page::INIT) };
    PageAlloc::new(m, C::GEOM.max_order())
}

/// Every allocator invariant over `[BASE, BASE + nr)`, and each node's census against its
/// counters.
#[track_caller]
fn check(a: &PageAlloc<SharedMemmap>, nr: u64) -> NodeCensus {
    let census = a
        .check_nodes(&[(BASE, nr)], true)
        .unwrap_or_else(|v| panic!("allocator invariant broken: {v}"));
    for nid in 0..MAX_NUMNODES as NodeId {
        for zone in ZoneId::ALL {
            let (c, k) = (census[nid as usize][zone as usize], a.node_counters(nid, zone));
            assert_eq!((c.free, c.deferred), (k.free, k.deferred), "node {nid} {zone:?}");
        }
    }
    census
}

/// Node `i` owns `[BASE + i * per, BASE + (i + 1) * per)`.
fn node_range(i: u64, per: u64) -> core::ops::Range<u64> {
    BASE + i * per..BASE + (i + 1) * per
}

/// The node whose range holds `pfn`.
fn node_of(pfn: u64, per: u64) -> NodeId {
    ((pfn - BASE) / per) as NodeId
}

/// With 1, 2 and 4 nodes of two max-order blocks each: a node's allocations come from its own
/// memory until it is used up, then from the next node in its fallback order (uniform
/// distances: by id); each page is tagged with its node; freed, each node merges back whole.
fn one_two_and_four_nodes_allocate_locally<C: Config>() {
    let max = C::GEOM.max_order();
    let per = 2 << max;
    let order = max - 3; // 16 allocations per node
    for nodes in [1u64, 2, 4] {
        let mut a = allocator::<C>(nodes * per);
        let mut want = NodeMask::empty();
        for i in 0..nodes {
            assert_eq!(
                a.online_range(ZoneId::Movable, i as NodeId, node_range(i, per).start, per),
                Ok(per)
            );
            want.set(i as NodeId);
        }
        assert_eq!(a.nodes_with_memory(), want);
        check(&a, nodes * per);
        let mut held = Vec::new();
        // The nodes take turns, highest first: each one's memory serves it while it lasts.
        for _ in 0..per >> order {
            for i in (0..nodes as NodeId).rev() {
                let p = a.alloc_node(order, AllocKind::Movable, i).unwrap();
                assert_eq!(
                    node_of(p, per),
                    i,
                    "{nodes} nodes: node {i}'s allocation from elsewhere"
                );
                assert_eq!(a.page(p).unwrap().node, i);
                held.push((p, order));
            }
            check(&a, nodes * per);
        }
        for i in 0..nodes as NodeId {
            assert_eq!(a.node_counters(i, ZoneId::Movable).free, 0);
        }
        // With every node full, nothing is left anywhere.
        assert_eq!(a.alloc_node(0, AllocKind::Movable, 0), None);
        // Free node 0's and node 2's pages: node 1 falls back to node 0 (distance ties: by id).
        for &(p, o) in held.iter().filter(|&&(p, _)| node_of(p, per).is_multiple_of(2)) {
            a.free(p, o).unwrap();
        }
        held.retain(|&(p, _)| node_of(p, per) % 2 == 1);
        check(&a, nodes * per);
        if nodes > 1 {
            let p = a.alloc_node(order, AllocKind::Movable, 1).unwrap();
            assert_eq!(node_of(p, per), 0, "node 1 falls back to node 0 first");
            held.push((p, order));
        }
        for (p, o) in held {
            a.free(p, o).unwrap();
        }
        check(&a, nodes * per);
        for i in 0..nodes as NodeId {
            assert_eq!(
                a.node_free_blocks(i, ZoneId::Movable)[max as usize],
                2,
                "node {i} merged back"
            );
        }
        assert_eq!(a.free_blocks(ZoneId::Movable)[max as usize], 2 * nodes);
        assert_eq!(a.counters(ZoneId::Movable).free, nodes * per);
    }
}

/// A node without memory allocates from its nearest node by distance; a non-uniform table
/// changes that order (uniform: by id).
fn a_memoryless_node_falls_back_by_distance<C: Config>() {
    let max = C::GEOM.max_order();
    let per = 1 << max;
    let mut a = allocator::<C>(4 * per);
    for i in [0, 1, 3] {
        a.online_range(ZoneId::Normal, i as NodeId, node_range(i, per).start, per)
            .unwrap();
    }
    assert_eq!(a.nodes_with_memory().iter().collect::<Vec<_>>(), [0, 1, 3]);
    // Uniform: node 2's allocations go to node 0 first.
    let p = a.alloc_node(0, AllocKind::Kernel, 2).unwrap();
    assert_eq!(node_of(p, per), 0);
    a.free(p, 0).unwrap();
    // From node 2: node 3 nearest, then 1, then 0 (the nodes that do not exist farther).
    let mut d = Distances::uniform();
    for (b, dist) in [(0, 30), (1, 15), (3, 12), (4, 40), (5, 40), (6, 40), (7, 40)] {
        d.set(2, b, dist);
    }
    a.set_distances(d);
    assert_eq!(a.fallback_nodes(2)[..4], [2, 3, 1, 0]);
    let order = max - 2;
    let mut got = Vec::new();
    while let Some(p) = a.alloc_node(order, AllocKind::Kernel, 2) {
        got.push(node_of(p, per));
        check(&a, 4 * per);
    }
    assert_eq!(got, [3, 3, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0], "nearest node first");
    // The other nodes' zonelists did not change.
    assert_eq!(a.fallback_nodes(0)[..4], [0, 1, 2, 3]);
}

/// Linux's node ordering: a movable allocation takes its own node's Normal memory before
/// another node's Movable memory; a kernel allocation never takes Movable memory.
fn movable_allocations_try_a_whole_node_before_the_next<C: Config>() {
    let max = C::GEOM.max_order();
    let per = 1 << max;
    let mut a = allocator::<C>(2 * per);
    a.online_range(ZoneId::Normal, 0, node_range(0, per).start, per)
        .unwrap();
    a.online_range(ZoneId::Movable, 1, node_range(1, per).start, per)
        .unwrap();
    let p = a.alloc_node(max, AllocKind::Movable, 0).unwrap();
    assert_eq!((node_of(p, per), a.page(p).unwrap().zone), (0, ZoneId::Normal as u8));
    assert_eq!(
        a.alloc_node(0, AllocKind::Kernel, 0),
        None,
        "node 1 has only Movable memory"
    );
    let q = a.alloc_node(max, AllocKind::Movable, 0).unwrap();
    assert_eq!(node_of(q, per), 1);
    check(&a, 2 * per);
    a.free(p, max).unwrap();
    a.free(q, max).unwrap();
    let k = a.alloc_node(0, AllocKind::Kernel, 1).unwrap();
    assert_eq!(
        node_of(k, per),
        0,
        "node 1's kernel allocations fall back to node 0's Normal"
    );
    a.free(k, 0).unwrap();
    check(&a, 2 * per);
    assert_eq!(a.node_counters(1, ZoneId::Movable).free, per);
    assert_eq!(a.node_counters(0, ZoneId::Normal).free, per);
}

/// A node boundary in the middle of a max-order block: the two halves are buddies of the same
/// zone but never merge, however they are freed.
fn buddies_at_a_node_boundary_never_merge<C: Config>() {
    let max = C::GEOM.max_order();
    let (nr, half) = (2 << max, 1 << (max - 1));
    let mut a = allocator::<C>(nr);
    // Node 0: the first block and the first half of the second; node 1: the second half.
    a.online_range(ZoneId::Movable, 0, BASE, (1 << max) + half).unwrap();
    a.online_range(ZoneId::Movable, 1, BASE + (1 << max) + half, half)
        .unwrap();
    check(&a, nr);
    let (b0, b1) = (
        a.node_free_blocks(0, ZoneId::Movable),
        a.node_free_blocks(1, ZoneId::Movable),
    );
    assert_eq!(
        (b0[max as usize], b0[max as usize - 1], b1[max as usize - 1]),
        (1, 1, 1)
    );
    // Take everything in small pieces, free it in an interleaved order.
    let order = max.saturating_sub(5);
    let mut held: Vec<u64> = std::iter::from_fn(|| a.alloc(order, AllocKind::Movable)).collect();
    assert_eq!(held.len() as u64, nr >> order);
    check(&a, nr);
    held.sort_by_key(|&p| (p >> order).reverse_bits());
    for p in held {
        a.free(p, order).unwrap();
    }
    check(&a, nr);
    assert_eq!(a.node_free_blocks(0, ZoneId::Movable), b0);
    assert_eq!(a.node_free_blocks(1, ZoneId::Movable), b1);
    assert_eq!(a.page(BASE + (1 << max)).unwrap().order as u32, max - 1);
}

/// Deferred memory onlined on two nodes: each node counts its own, an allocation for a node
/// initialises that node's deferred memory with the node, isolation and offline move the right
/// node's counters, and background completion initialises the rest with the right node.
fn deferred_ranges_on_two_nodes_initialise_with_their_node<C: Config>() {
    let max = C::GEOM.max_order();
    let per = 2 << max;
    let m = SharedMemmap::new(BASE, 2 * per);
    let mut a = PageAlloc::new(m.clone(), max);
    a.enable_deferred(C::GEOM, BASE + 2 * per).unwrap();
    a.defer_memmap(BASE, 2 * per).unwrap();
    for i in 0..2 {
        a.online_range(ZoneId::Movable, i as NodeId, node_range(i, per).start, per)
            .unwrap();
    }
    check(&a, 2 * per);
    let ranges: Vec<_> = a
        .deferred_ranges(ZoneId::Movable)
        .iter()
        .map(|r| (r.start, r.node))
        .collect();
    assert_eq!(ranges, [(BASE, 0), (BASE + per, 1)]);
    for i in 0..2 {
        assert_eq!(a.node_counters(i, ZoneId::Movable).deferred, per);
    }
    // Node 1's allocation initialises a chunk of node 1 only.
    let p = a.alloc_node(0, AllocKind::Movable, 1).unwrap();
    assert!(node_range(1, per).contains(&p));
    assert_eq!(a.page(p).unwrap().node, 1);
    assert_eq!(a.node_counters(1, ZoneId::Movable).deferred, per - (1 << max));
    assert_eq!(a.node_counters(0, ZoneId::Movable).deferred, per);
    check(&a, 2 * per);
    // Isolating and offlining node 1's still deferred block moves node 1's counters only.
    let last = BASE + 2 * per - (1 << max);
    assert_eq!(a.isolate_range(last, 1 << max), Ok(1 << max));
    assert_eq!(a.node_counters(1, ZoneId::Movable).isolated, 1 << max);
    assert_eq!(a.node_counters(0, ZoneId::Movable).isolated, 0);
    assert_eq!(a.offline_isolated(last, 1 << max), Ok(1 << max));
    assert_eq!(a.node_counters(1, ZoneId::Movable).managed, per - (1 << max));
    assert_eq!(a.node_counters(0, ZoneId::Movable).managed, per);
    check(&a, 2 * per);
    // Background completion: every chunk with its node.
    let mut done = 0;
    loop {
        let n = deferred_init_step(&m, 1, |f| f(&mut a));
        if n == 0 {
            break;
        }
        done += n;
        check(&a, 2 * per);
    }
    assert_eq!(done, per);
    for pfn in BASE..last {
        assert_eq!(a.page(pfn).unwrap().node, node_of(pfn, per), "pfn {pfn:#x}");
    }
    a.free(p, 0).unwrap();
    check(&a, 2 * per);
    assert_eq!(a.node_counters(0, ZoneId::Movable).free, per);
    assert_eq!(a.node_counters(1, ZoneId::Movable).free, per - (1 << max));
}

/// Offlining a block of node 1 migrates its pages to node 1's other memory while it has room;
/// without room there, to the node nearest to node 1 by distance (here node 2, although node 0
/// has the lower id and uniform distances would pick it).
fn migration_targets_the_source_node_then_the_nearest<C: Config>() {
    let max = C::GEOM.max_order();
    let per = 2 << max;
    let order = max - 2;
    for room_on_node_1 in [true, false] {
        let mut a = allocator::<C>(3 * per);
        for i in 0..3 {
            a.online_range(ZoneId::Movable, i as NodeId, node_range(i, per).start, per)
                .unwrap();
        }
        let mut d = Distances::uniform();
        d.set(1, 0, 25);
        d.set(1, 2, 12);
        a.set_distances(d);
        // Fill node 0, so the handles (allocated with no node preference) land on node 1.
        let node0: Vec<u64> = std::iter::from_fn(|| a.alloc_this_node(max, AllocKind::Movable, 0)).collect();
        let mut handles = Handles::new();
        let hs: Vec<Handle> = (0..4).map(|_| handles.alloc(&mut a, order).unwrap()).collect();
        let block = handles.get(hs[0]).unwrap().0 & !((1 << max) - 1);
        assert_eq!(node_of(block, per), 1);
        assert!(hs
            .iter()
            .all(|&h| (block..block + (1 << max)).contains(&handles.get(h).unwrap().0)));
        let other = if room_on_node_1 {
            None
        } else {
            Some(a.alloc_this_node(max, AllocKind::Movable, 1).unwrap())
        };
        for p in node0 {
            a.free(p, max).unwrap();
        }
        check(&a, 3 * per);
        let mut moves = Vec::new();
        let r = offline_pages(
            &mut a,
            &mut handles,
            block,
            1 << max,
            u64::MAX,
            |batch: &[Move]| moves.extend(batch.iter().map(|m| (m.src, m.dst))),
            |_, _| {},
        );
        assert_eq!(r, Ok(1 << max));
        check(&a, 3 * per);
        let want = if room_on_node_1 { 1 } else { 2 };
        assert_eq!(moves.len(), 4);
        for (h, (_, dst)) in hs.iter().zip(&moves) {
            assert_eq!(node_of(*dst, per), want, "room on node 1: {room_on_node_1}");
            assert_eq!(handles.get(*h).unwrap().0, *dst);
            assert_eq!(a.page(*dst).unwrap().node, want);
        }
        if let Some(p) = other {
            a.free(p, max).unwrap();
        }
        check(&a, 3 * per);
    }
}
