//! Memory blocks, groups and zones per node: a block keeps the node it was added to through
//! online, offline and removal, the platform hears the node of every online and offline, a
//! group takes memory of its own node only, a node whose memory is all gone is memory-less
//! (and gets memory again), and the auto-movable policy counts per node as Linux does, with
//! Linux's rounding.

use super::MOM;
use mm::geometry::*;
use mm::hotplug::*;
use mm::numa::{NodeId, MAX_NUMNODES};
use mm::page::ZoneId;
use mm::testing::*;

mm::matrix_tests!(
    blocks_and_groups_keep_their_node,
    last_memory_removed_leaves_the_node_memoryless,
    group_refuses_memory_of_another_node,
);

fn nodes(v: impl Iterator<Item = NodeId>) -> Vec<NodeId> {
    v.collect()
}

/// Add, online, offline, remove and add again memory of node 1 in a group of node 1: the
/// blocks, the group, the present pages and every call to the platform name node 1.
fn blocks_and_groups_keep_their_node<C: Config>() {
    let g = C::GEOM;
    let (bs, bp) = (g.section_size(), g.pages_per_section());
    let (mut m, mut hp) = boot::<C>();
    let grp = hp.register_dynamic_group(1, bp).unwrap();
    let ids = hp.add_memory(&mut m, 1, Some(grp), base::<C>(), 2 * bs, MOM).unwrap();
    let node_of =
        |hp: &Hotplug, ids: &[BlockId]| -> Vec<NodeId> { ids.iter().map(|&id| hp.block(id).unwrap().node).collect() };
    assert_eq!(node_of(&hp, &ids), [1, 1]);
    let first: Vec<u64> = ids.iter().map(|&id| id * bp).collect();
    let usable: Vec<u64> = ids
        .iter()
        .map(|&id| id * bp + hp.block(id).unwrap().nr_vmemmap_pages())
        .collect();
    assert_eq!(
        hp.online_block(&mut m, ids[0], OnlineType::Movable),
        Ok(ZoneId::Movable)
    );
    assert_eq!(hp.online_block(&mut m, ids[1], OnlineType::Kernel), Ok(ZoneId::Normal));
    assert_eq!(node_of(&hp, &ids), [1, 1]);
    // The platform onlined each block's pages into node 1, its memmap pages included.
    assert_eq!(m.onlined_nodes, [(usable[0], 1), (usable[1], 1)]);
    for i in 0..2 {
        assert_eq!(
            m.memmap.peek(first[i]).node,
            1,
            "a self-hosted memmap page of block {}",
            ids[i]
        );
        assert_eq!(
            m.memmap.peek(usable[i]).node,
            1,
            "the first usable page of block {}",
            ids[i]
        );
    }
    let one = ZonePresent {
        normal: bp,
        movable: bp,
        kernel_early: 0,
    };
    assert_eq!(hp.present_node(1), one);
    assert_eq!(hp.present_node(0).movable, 0);
    assert_eq!(hp.present().movable, bp);
    assert_eq!(hp.present().normal, hp.present_node(0).normal + bp);
    hp.offline_block(&mut m, ids[0]).unwrap();
    // Offline tells the platform the block's node (migration prefers it).
    assert_eq!(m.offlined_nodes, [(usable[0], 1)]);
    assert_eq!(node_of(&hp, &ids), [1, 1]);
    assert_eq!(hp.present_node(1), ZonePresent { movable: 0, ..one });
    hp.offline_and_remove(&mut m, base::<C>(), 2 * bs).unwrap();
    assert_eq!(m.offlined_nodes.last(), Some(&(usable[1], 1)));
    assert!(hp.block(ids[0]).is_none());
    let group = hp.group(grp).unwrap();
    assert_eq!((group.nid, group.nr_blocks), (1, 0));
    // The range is free again: added to node 1 once more, in the same group.
    let again = hp.add_memory(&mut m, 1, Some(grp), base::<C>(), bs, MOM).unwrap();
    assert_eq!(node_of(&hp, &again), [1]);
    assert_eq!(hp.group(grp).unwrap().nr_blocks, 1);
}

/// Linux `N_MEMORY`: node 2 has memory exactly while a block of it is online; when its last
/// memory is removed it is memory-less (no blocks, nothing present, the accounting sound), and
/// memory added and onlined again brings it back.
fn last_memory_removed_leaves_the_node_memoryless<C: Config>() {
    let g = C::GEOM;
    let (bs, bp) = (g.section_size(), g.pages_per_section());
    let (mut m, mut hp) = boot::<C>();
    assert_eq!(nodes(hp.nodes_with_memory()), [0]);
    for round in 0..2 {
        let ids = hp.add_memory(&mut m, 2, None, base::<C>(), 2 * bs, MOM).unwrap();
        assert_eq!(nodes(hp.nodes_with_blocks()), [0, 2], "round {round}");
        assert_eq!(
            nodes(hp.nodes_with_memory()),
            [0],
            "offline blocks are not memory, round {round}"
        );
        hp.online_block(&mut m, ids[0], OnlineType::Movable).unwrap();
        assert_eq!(nodes(hp.nodes_with_memory()), [0, 2], "round {round}");
        assert_eq!(hp.present_node(2).total(), bp);
        hp.online_block(&mut m, ids[1], OnlineType::Kernel).unwrap();
        hp.offline_block(&mut m, ids[0]).unwrap();
        assert_eq!(
            nodes(hp.nodes_with_memory()),
            [0, 2],
            "one block is left, round {round}"
        );
        hp.offline_and_remove(&mut m, base::<C>(), 2 * bs).unwrap();
        assert_eq!(nodes(hp.nodes_with_memory()), [0], "round {round}");
        assert_eq!(nodes(hp.nodes_with_blocks()), [0], "round {round}");
        assert_eq!(hp.present_node(2), ZonePresent::default());
    }
    hp.check().unwrap();
}

/// A group is one device on one node: memory of another node is refused before anything
/// changes, and so is a node beyond `MAX_NUMNODES`, for groups, adds and boot blocks.
fn group_refuses_memory_of_another_node<C: Config>() {
    let g = C::GEOM;
    let (bs, bp) = (g.section_size(), g.pages_per_section());
    let (mut m, mut hp) = boot::<C>();
    let dimm = hp.register_static_group(1, 2 * bp).unwrap();
    let vmem = hp.register_dynamic_group(1, bp).unwrap();
    let before = (
        m.snapshot(),
        hp.present(),
        *hp.group(dimm).unwrap(),
        *hp.group(vmem).unwrap(),
    );
    for grp in [dimm, vmem] {
        assert_eq!(
            hp.add_memory(&mut m, 0, Some(grp), base::<C>(), bs, MOM),
            Err(HotplugError::GroupNode {
                group: grp,
                group_node: 1,
                node: 0
            })
        );
    }
    let bad = MAX_NUMNODES as NodeId;
    assert_eq!(
        hp.add_memory(&mut m, bad, None, base::<C>(), bs, MOM),
        Err(HotplugError::NoSuchNode(bad))
    );
    assert_eq!(hp.register_static_group(bad, bp), Err(HotplugError::NoSuchNode(bad)));
    assert_eq!(hp.register_dynamic_group(bad, bp), Err(HotplugError::NoSuchNode(bad)));
    assert_eq!(hp.add_boot_block(100, bad), Err(HotplugError::NoSuchNode(bad)));
    assert_eq!(hp.assume_kernel_early(bad, bp), Err(HotplugError::NoSuchNode(bad)));
    assert!(hp.blocks().all(|b| b.early), "a refused add left a block");
    let after = (
        m.snapshot(),
        hp.present(),
        *hp.group(dimm).unwrap(),
        *hp.group(vmem).unwrap(),
    );
    assert_eq!(after, before);
    // Memory of the group's own node joins it.
    hp.add_memory(&mut m, 1, Some(dimm), base::<C>(), 2 * bs, MOM).unwrap();
}

/// The zone auto-movable chooses for `id` after setting node 0's KERNEL_EARLY to `early`.
fn auto_zone(hp: &mut Hotplug, id: BlockId, early: u64) -> ZoneId {
    hp.assume_kernel_early(0, early).unwrap();
    hp.zone_for(id, OnlineType::Auto)
}

/// Add `n` blocks at block `first` to `group` on node `nid` and online them into `zones`.
fn add_online<C: Config>(
    m: &mut Machine<C>,
    hp: &mut Checked,
    nid: NodeId,
    group: Option<GroupId>,
    first: u64,
    zones: &[OnlineType],
) -> Vec<BlockId> {
    let bs = C::GEOM.section_size();
    let ids = hp
        .add_memory(m, nid, group, first * bs, zones.len() as u64 * bs, MOM)
        .unwrap();
    for (&id, &t) in ids.iter().zip(zones) {
        hp.online_block(m, id, t).unwrap();
    }
    ids
}

use OnlineType::{Kernel as K, Movable as M};

/// Linux's arithmetic on the rounding boundary. Two dynamic groups on node 0: A with 1 kernel
/// and 4 MOVABLE blocks, whose reserve `4 blocks × 100 / 301 − 1 block` is not a whole number
/// of pages; B with 1 MOVABLE block and one to online. With KERNEL_EARLY `E` exactly A's reserve
/// (rounded down, as Linux does) plus the least base on which B's 2 blocks fit the ratio, B's
/// block goes MOVABLE; one page less of KERNEL_EARLY, or A's reserve rounded up, and it goes
/// NORMAL.
#[test]
fn auto_movable_reserve_of_a_group_rounds_down() {
    type C = Cfg4K48;
    let bp = C::GEOM.pages_per_section();
    let (mut m, mut hp) = boot::<C>();
    hp.policy = OnlinePolicy::AutoMovable;
    hp.ratio = 301;
    let a = hp.register_dynamic_group(0, bp).unwrap();
    let b = hp.register_dynamic_group(0, bp).unwrap();
    add_online(&mut m, &mut hp, 0, Some(a), 8, &[K, M, M, M, M]);
    add_online(&mut m, &mut hp, 0, Some(b), 16, &[M]);
    let id = hp
        .add_memory(
            &mut m,
            0,
            Some(b),
            17 * C::GEOM.section_size(),
            C::GEOM.section_size(),
            MOM,
        )
        .unwrap()[0];
    assert_ne!(4 * bp * 100 % 301, 0, "A's reserve must need rounding");
    let reserve_a = 4 * bp * 100 / 301 - bp;
    // B: 1 MOVABLE block present plus the one to online, against KERNEL_EARLY less A's reserve.
    let base = (2 * bp * 100).div_ceil(301);
    let early = reserve_a + base;
    assert_eq!(auto_zone(&mut hp, id, early), ZoneId::Movable, "KERNEL_EARLY {early}");
    assert_eq!(
        auto_zone(&mut hp, id, early - 1),
        ZoneId::Normal,
        "KERNEL_EARLY {}",
        early - 1
    );
    hp.assume_kernel_early(0, early).unwrap();
    assert_eq!(hp.online_block(&mut m, id, OnlineType::Auto), Ok(ZoneId::Movable));
}

/// Linux takes every other dynamic group's MOVABLE pages out of the count, also when the
/// group's own kernel pages cover its ratio (it reserves nothing): A with 1 kernel and 3
/// MOVABLE blocks (3 × 100 / 301 < 1 block) does not count against B, whose 2 blocks fit the
/// least base exactly.
#[test]
fn auto_movable_group_without_reserve_still_leaves_the_count() {
    type C = Cfg16K47;
    let bp = C::GEOM.pages_per_section();
    let (mut m, mut hp) = boot::<C>();
    let a = hp.register_dynamic_group(0, bp).unwrap();
    let b = hp.register_dynamic_group(0, bp).unwrap();
    add_online(&mut m, &mut hp, 0, Some(a), 8, &[K, M, M, M]);
    add_online(&mut m, &mut hp, 0, Some(b), 16, &[M]);
    let id = hp
        .add_memory(
            &mut m,
            0,
            Some(b),
            17 * C::GEOM.section_size(),
            C::GEOM.section_size(),
            MOM,
        )
        .unwrap()[0];
    let base = (2 * bp * 100).div_ceil(301);
    assert_eq!(auto_zone(&mut hp, id, base), ZoneId::Movable, "KERNEL_EARLY {base}");
    assert_eq!(
        auto_zone(&mut hp, id, base - 1),
        ZoneId::Normal,
        "KERNEL_EARLY {}",
        base - 1
    );
}

/// `auto_movable_numa_aware`: node 1 has no kernel-early memory, node 0 plenty. Over all nodes
/// a block of node 1 fits the ratio; on node 1 alone it does not. NUMA-aware (the default) it
/// goes NORMAL, not NUMA-aware MOVABLE; a block of node 0 goes MOVABLE either way. And a
/// dynamic group of node 1 reserves kernel-early pages over all nodes and on node 1, never on
/// node 0.
#[test]
fn auto_movable_numa_aware_counts_the_node() {
    type C = Cfg64K48;
    let (bs, bp) = (C::GEOM.section_size(), C::GEOM.pages_per_section());
    let (mut m, mut hp) = boot::<C>();
    hp.assume_kernel_early(0, 10 * bp).unwrap();
    let on1 = hp.add_memory(&mut m, 1, None, 8 * bs, bs, MOM).unwrap()[0];
    let on0 = hp.add_memory(&mut m, 0, None, 9 * bs, bs, MOM).unwrap()[0];
    assert!(hp.auto_movable_numa_aware, "NUMA-aware by default");
    assert_eq!(hp.zone_for(on1, OnlineType::Auto), ZoneId::Normal);
    assert_eq!(hp.zone_for(on0, OnlineType::Auto), ZoneId::Movable);
    hp.auto_movable_numa_aware = false;
    assert_eq!(hp.zone_for(on1, OnlineType::Auto), ZoneId::Movable);
    assert_eq!(hp.zone_for(on0, OnlineType::Auto), ZoneId::Movable);
    // A dynamic group of node 1 with 30 MOVABLE blocks reserves 30 × 100 / 301 ≈ 9.97 blocks of
    // KERNEL_EARLY where it is counted: over all nodes, not on node 0.
    hp.auto_movable_numa_aware = true;
    let g1 = hp.register_dynamic_group(1, bp).unwrap();
    add_online(&mut m, &mut hp, 1, Some(g1), 16, &[M; 30]);
    hp.assume_kernel_early(1, 20 * bp).unwrap();
    assert_eq!(
        hp.zone_for(on0, OnlineType::Auto),
        ZoneId::Movable,
        "node 0 pays node 1's reserve"
    );
    hp.assume_kernel_early(1, 0).unwrap();
    assert_eq!(
        hp.zone_for(on0, OnlineType::Auto),
        ZoneId::Normal,
        "all nodes do not pay node 1's reserve"
    );
}
