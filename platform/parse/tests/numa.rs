//! `parse::numa`: the topology QEMU virt describes (`-numa node,...`, `-numa dist,...`), each
//! rule of the module's documentation, and properties over random and hostile input: nothing
//! panics, and every error names the piece of input it is about.

use parse::numa::{
    topology, MemNode, NodeRange, NumaError, Source, Topology, LOCAL_DISTANCE, MAX_NUMNODES, NR_CPUS, NR_NODE_MEMBLKS,
    REMOTE_DISTANCE,
};
use proptest::prelude::*;

const GIB: u64 = 1 << 30;

fn mem(base: u64, size: u64, node: Option<u32>) -> MemNode {
    MemNode { base, size, node }
}

/// `distance-matrix` bytes from `<from to distance>` triplets.
fn matrix(entries: &[(u32, u32, u32)]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|&(a, b, d)| [a, b, d])
        .flat_map(u32::to_be_bytes)
        .collect()
}

/// Every ordered pair of `n` nodes, as QEMU writes the matrix: 10 on the diagonal, `d(a, b)`
/// elsewhere.
fn full_matrix(n: u32, d: impl Fn(u32, u32) -> u32) -> Vec<u8> {
    let e: Vec<(u32, u32, u32)> = (0..n)
        .flat_map(|a| (0..n).map(move |b| (a, b)))
        .map(|(a, b)| (a, b, if a == b { 10 } else { d(a.min(b), a.max(b)) }))
        .collect();
    matrix(&e)
}

/// QEMU's two nodes of 1 GiB with a CPU each, and a third node only in the distance map.
#[test]
fn qemu_two_nodes_and_a_hotplug_only_node() {
    let m = [mem(0x4000_0000, GIB, Some(0)), mem(0x8000_0000, GIB, Some(1))];
    let dist = full_matrix(3, |a, b| 10 * (a + b + 1));
    let t = topology(&m, &[Some(0), Some(1)], Some(&dist)).unwrap();
    assert!(t.is_described());
    assert_eq!((t.nodes(), t.memory_nodes(), t.node_count()), (0b111, 0b011, 3));
    assert_eq!((t.cpu_node(0), t.cpu_node(1), t.cpu_node(7)), (0, 1, 0));
    assert_eq!(t.cpus(), [0, 1]);
    assert_eq!(t.node_of(0x4000_0000), Some(0));
    assert_eq!(t.node_of(0x7fff_ffff), Some(0));
    assert_eq!(t.node_of(0x8000_0000), Some(1));
    assert_eq!(
        t.node_of(0xc000_0000),
        None,
        "hot-added memory: its device says the node"
    );
    assert_eq!(t.node_of(0x3fff_ffff), None);
    assert_eq!((t.distance(0, 1), t.distance(1, 0)), (20, 20));
    assert_eq!((t.distance(0, 2), t.distance(2, 1)), (30, 40));
    assert_eq!((t.distance(2, 2), t.distance(9, 9), t.distance(0, 9)), (10, 10, 20));
    assert_eq!(
        t.ranges(),
        [
            NodeRange {
                base: 0x4000_0000,
                size: GIB,
                node: 0
            },
            NodeRange {
                base: 0x8000_0000,
                size: GIB,
                node: 1
            }
        ]
    );
}

#[test]
fn no_node_ids_is_one_node_and_the_fallback_is_the_same() {
    let m = [mem(0x4000_0000, GIB, None), mem(0x1_0000_0000, GIB, None)];
    let t = topology(&m, &[None, None, None], Some(&[1, 2, 3])).unwrap();
    assert_eq!(t, Topology::single(), "a map without node ids is ignored");
    assert!(!t.is_described());
    assert_eq!((t.nodes(), t.memory_nodes(), t.node_count()), (1, 1, 1));
    assert_eq!((t.cpu_node(0), t.cpu_node(63)), (0, 0));
    assert_eq!((t.node_of(0), t.node_of(u64::MAX)), (Some(0), Some(0)));
    assert_eq!((t.distance(0, 0), t.distance(0, 1)), (LOCAL_DISTANCE, REMOTE_DISTANCE));
    assert_eq!(topology(&[], &[], None), Ok(Topology::single()));
}

#[test]
fn without_a_map_distances_are_linux_defaults() {
    let m = [mem(0x4000_0000, GIB, Some(1))];
    let t = topology(&m, &[Some(1), Some(3)], None).unwrap();
    assert_eq!((t.nodes(), t.memory_nodes()), (0b1010, 0b0010), "node 0 need not exist");
    assert_eq!(t.node_of(0x4000_0000), Some(1));
    for a in 0..MAX_NUMNODES as u8 {
        for b in 0..MAX_NUMNODES as u8 {
            assert_eq!(t.distance(a, b), if a == b { 10 } else { 20 });
        }
    }
}

#[test]
fn a_half_described_machine_is_refused() {
    let m = [mem(0x4000_0000, GIB, Some(0))];
    assert_eq!(
        topology(&m, &[Some(0), None], None),
        Err(NumaError::CpuWithoutNode { cpu: 1 })
    );
    let m2 = [mem(0x4000_0000, GIB, Some(0)), mem(0x8000_0000, GIB, None)];
    let e = topology(&m2, &[Some(0)], None).unwrap_err();
    assert_eq!(
        e,
        NumaError::MemoryWithoutNode {
            base: 0x8000_0000,
            size: GIB
        }
    );
    assert_eq!(
        e.to_string(),
        "memory 0x80000000+0x40000000 has no numa-node-id but others do: give every cpu and memory range a numa-node-id, or none (one node)"
    );
    // CPUs with nodes and memory without: the memory is in no node.
    assert!(matches!(
        topology(&[mem(0, GIB, None)], &[Some(0)], None),
        Err(NumaError::MemoryWithoutNode { .. })
    ));
}

#[test]
fn node_ids_are_below_max_numnodes() {
    let cpus = [Some(0), Some(0), Some(0), Some(9)];
    let e = topology(&[mem(0, GIB, Some(0))], &cpus, None).unwrap_err();
    assert_eq!(e.to_string(), "node 9 of cpu 3: at most 8 nodes (0-7)");
    let e = topology(&[mem(0x4000_0000, GIB, Some(8))], &[Some(0)], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node 8 of memory 0x40000000+0x40000000: at most 8 nodes (0-7)"
    );
    let e = topology(&[mem(0, GIB, Some(u32::MAX))], &[], None).unwrap_err();
    assert!(matches!(e, NumaError::NodeTooLarge { node: u32::MAX, .. }), "{e}");
    let d = matrix(&[(0, 0, 10), (0, 256, 20)]);
    let e = topology(&[mem(0, GIB, Some(0))], &[Some(0)], Some(&d)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node 256 of distance-matrix entry 1: at most 8 nodes (0-7)"
    );
    assert!(topology(&[mem(0, GIB, Some(7))], &[Some(7)], None).is_ok());
}

#[test]
fn counts_beyond_the_fixed_tables_are_refused() {
    let cpus = vec![Some(0); NR_CPUS + 1];
    assert_eq!(
        topology(&[], &cpus, None),
        Err(NumaError::TooManyCpus { count: NR_CPUS + 1 })
    );
    assert!(topology(&[], &cpus[..NR_CPUS], None).is_ok());
    let m: Vec<MemNode> = (0..=NR_NODE_MEMBLKS as u64)
        .map(|i| mem(i * GIB, GIB, Some(0)))
        .collect();
    let e = topology(&m, &[], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "17 memory ranges with a numa-node-id: at most 16 (2 per node)"
    );
    assert!(topology(&m[..NR_NODE_MEMBLKS], &[], None).is_ok());
}

#[test]
fn ranges_of_different_nodes_do_not_overlap() {
    let m = [mem(0x4000_0000, GIB, Some(0)), mem(0x7000_0000, GIB, Some(1))];
    let e = topology(&m, &[], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "memory 0x40000000+0x40000000 of node 0 overlaps memory 0x70000000+0x40000000 of node 1: a range belongs to one node"
    );
    let same = [mem(0x4000_0000, GIB, Some(0)), mem(0x7000_0000, GIB, Some(0))];
    assert!(topology(&same, &[], None).is_ok(), "same node: Linux merges them");
    let touching = [mem(0x4000_0000, GIB, Some(0)), mem(0x8000_0000, GIB, Some(1))];
    assert!(topology(&touching, &[], None).is_ok());
    let top = [mem(u64::MAX - 10, 100, Some(0)), mem(u64::MAX - 5, 100, Some(1))];
    assert!(matches!(topology(&top, &[], None), Err(NumaError::Overlap { .. })));
    let empty = [mem(0x4000_0000, 0, Some(0)), mem(0x4000_0000, GIB, Some(1))];
    assert!(topology(&empty, &[], None).is_ok(), "an empty range holds nothing");
}

#[test]
fn distance_matrix_rules() {
    let m = [mem(0x4000_0000, GIB, Some(0)), mem(0x8000_0000, GIB, Some(1))];
    let cpus = [Some(0), Some(1)];
    let t = |d: &[u8]| topology(&m, &cpus, Some(d));
    let text = |d: &[u8]| t(d).unwrap_err().to_string();
    assert_eq!(
        text(&[0; 13]),
        "distance-matrix of 13 bytes: want one or more <from to distance> triplets of u32 (12 bytes each)"
    );
    assert_eq!(t(&[]), Err(NumaError::MatrixLength { len: 0 }));
    assert_eq!(
        text(&matrix(&[(0, 1, 20), (1, 1, 11)])),
        "distance 11 from node 1 to itself (distance-matrix entry 1): must be 10"
    );
    assert_eq!(
        text(&matrix(&[(0, 1, 10)])),
        "distance 10 from node 0 to node 1 (distance-matrix entry 0): want 11 to 255 between different nodes"
    );
    assert!(matches!(
        t(&matrix(&[(0, 1, 256)])),
        Err(NumaError::RemoteDistance { distance: 256, .. })
    ));
    assert_eq!(
        text(&matrix(&[(0, 1, 20), (1, 0, 30)])),
        "distance-matrix: node 0 to node 1 is 20 but node 1 to node 0 is 30: want the same both ways"
    );
    assert_eq!(
        text(&matrix(&[(1, 0, 20), (1, 0, 30)])),
        "distance-matrix: node 1 to node 0 given as 20 and as 30: give each pair once"
    );
    // One direction holds for both; repeating the same value is harmless; 255 is the top.
    let one_way = t(&matrix(&[(1, 0, 255), (1, 0, 255)])).unwrap();
    assert_eq!((one_way.distance(0, 1), one_way.distance(1, 0)), (255, 255));
    // A node only the map names exists, and then needs its distances.
    assert_eq!(
        text(&matrix(&[(0, 1, 20), (0, 2, 30)])),
        "distance-matrix has no distance between node 1 and node 2: a map gives every pair of nodes that exist"
    );
    let three = t(&matrix(&[(0, 1, 20), (0, 2, 30), (2, 1, 25)])).unwrap();
    assert_eq!((three.nodes(), three.memory_nodes()), (0b111, 0b011));
    assert_eq!((three.distance(1, 2), three.distance(2, 0)), (25, 30));
    // Pairs of nodes that do not exist keep the defaults.
    assert_eq!(three.distance(5, 6), 20);
}

/// The piece of input an error is about, as its text must name it, checked against the input
/// it came from.
fn named_input(e: &NumaError, memory: &[MemNode], cpus: &[Option<u32>], m: Option<&[u8]>) -> Vec<String> {
    let triplet = |entry: usize| {
        let c = &m.unwrap()[entry * 12..entry * 12 + 12];
        let cell = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
        (cell(0), cell(4), cell(8))
    };
    match *e {
        NumaError::NodeTooLarge { node, of } => {
            match of {
                Source::Cpu(i) => assert_eq!(cpus[i], Some(node)),
                Source::Memory { base, size } => assert!(memory.contains(&MemNode {
                    base,
                    size,
                    node: Some(node)
                })),
                Source::Matrix { entry } => {
                    let (a, b, _) = triplet(entry);
                    assert!(a == node || b == node);
                }
            }
            vec![format!("node {node} of {of}")]
        }
        NumaError::CpuWithoutNode { cpu } => {
            assert_eq!(cpus[cpu], None);
            vec![format!("cpu {cpu} ")]
        }
        NumaError::MemoryWithoutNode { base, size } => {
            assert!(memory.contains(&MemNode { base, size, node: None }));
            vec![format!("memory {base:#x}+{size:#x}")]
        }
        NumaError::TooManyCpus { count } => {
            assert_eq!(count, cpus.len());
            vec![format!("{count} cpus")]
        }
        NumaError::TooManyRanges { count } => {
            assert_eq!(count, memory.len());
            vec![format!("{count} memory ranges")]
        }
        NumaError::Overlap { a, b } => [a, b]
            .iter()
            .map(|r| {
                assert!(memory.contains(&MemNode {
                    base: r.base,
                    size: r.size,
                    node: Some(r.node.into())
                }));
                format!("memory {:#x}+{:#x} of node {}", r.base, r.size, r.node)
            })
            .collect(),
        NumaError::MatrixLength { len } => {
            assert_eq!(len, m.unwrap().len());
            vec![format!("distance-matrix of {len} bytes")]
        }
        NumaError::LocalDistance { node, distance, entry } => {
            assert_eq!(triplet(entry), (node.into(), node.into(), distance));
            vec![format!(
                "distance {distance} from node {node} to itself (distance-matrix entry {entry})"
            )]
        }
        NumaError::RemoteDistance {
            from,
            to,
            distance,
            entry,
        } => {
            assert_eq!(triplet(entry), (from.into(), to.into(), distance));
            vec![format!(
                "distance {distance} from node {from} to node {to} (distance-matrix entry {entry})"
            )]
        }
        NumaError::Asymmetric { from, to, there, back } => {
            vec![format!(
                "node {from} to node {to} is {there} but node {to} to node {from} is {back}"
            )]
        }
        NumaError::Conflict {
            from,
            to,
            first,
            second,
        } => {
            vec![format!("node {from} to node {to} given as {first} and as {second}")]
        }
        NumaError::MissingDistance { a, b } => vec![format!("between node {a} and node {b}")],
    }
}

/// Input that is mostly well formed (small node ids, QEMU-like matrices) with hostile pieces
/// mixed in, so every rule gets reached.
fn inputs() -> impl Strategy<Value = (Vec<MemNode>, Vec<Option<u32>>, Option<Vec<u8>>)> {
    let node = prop_oneof![
        6 => (0u32..4).prop_map(Some),
        1 => Just(None),
        1 => any::<u32>().prop_map(Some),
    ];
    let memory = prop::collection::vec(
        (
            prop_oneof![(0u64..8).prop_map(|i| 0x4000_0000 + i * GIB), any::<u64>()],
            prop_oneof![Just(GIB), any::<u64>(), Just(0)],
            node.clone(),
        )
            .prop_map(|(base, size, node)| MemNode { base, size, node }),
        0..20,
    );
    let cpus = prop::collection::vec(node, 0..70);
    let entry = prop_oneof![
        4 => (0u32..4, 0u32..4, prop_oneof![Just(10u32), Just(20), 11u32..40]),
        1 => (any::<u32>(), any::<u32>(), any::<u32>()),
    ];
    let m = prop_oneof![
        Just(None),
        prop::collection::vec(entry, 0..20).prop_map(|e| Some(matrix(&e))),
        (0u32..5).prop_map(|n| Some(full_matrix(n, |a, b| 10 + a + b + 1))),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(Some),
    ];
    (memory, cpus, m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_input_decodes_or_names_what_is_wrong((memory, cpus, m) in inputs()) {
        match topology(&memory, &cpus, m.as_deref()) {
            Ok(t) => {
                // What a topology promises: nodes below MAX_NUMNODES, a symmetric table with
                // 10 on the diagonal and 11..=255 elsewhere, every CPU and range in a node.
                prop_assert!(u32::from(t.nodes()) < 1 << MAX_NUMNODES);
                prop_assert_eq!(t.memory_nodes() & !t.nodes(), 0);
                for a in 0..MAX_NUMNODES as u8 {
                    for b in 0..MAX_NUMNODES as u8 {
                        prop_assert_eq!(t.distance(a, b), t.distance(b, a));
                        prop_assert_eq!(t.distance(a, b) == LOCAL_DISTANCE, a == b);
                    }
                }
                if t.is_described() {
                    prop_assert_eq!(t.cpus().len(), cpus.len());
                    for (i, c) in cpus.iter().enumerate() {
                        prop_assert_eq!(c.map(|n| n as u8), Some(t.cpu_node(i)));
                        prop_assert!(t.nodes() & (1 << t.cpu_node(i)) != 0);
                    }
                    for r in t.ranges() {
                        if r.size > 0 {
                            prop_assert_eq!(t.node_of(r.base), Some(r.node));
                        }
                    }
                } else {
                    prop_assert_eq!(t, Topology::single());
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.contains('\n'), "{}", text);
                for piece in named_input(&e, &memory, &cpus, m.as_deref()) {
                    prop_assert!(text.contains(&piece), "`{}` does not name `{}`", text, piece);
                }
            }
        }
    }

    #[test]
    fn qemu_matrices_of_any_size_are_accepted(n in 1u32..=8, seed in any::<u64>()) {
        let d = |a: u32, b: u32| 11 + ((seed >> ((a * 8 + b) % 60)) as u32 & 0xff) % 245;
        let memory: Vec<MemNode> = (0..n).map(|i| mem(0x4000_0000 + u64::from(i) * GIB, GIB, Some(i))).collect();
        let cpus: Vec<Option<u32>> = (0..n).map(Some).collect();
        let t = topology(&memory, &cpus, Some(&full_matrix(n, d))).unwrap();
        prop_assert_eq!(t.node_count(), n);
        for a in 0..n {
            for b in 0..n {
                let want = if a == b { 10 } else { d(a.min(b), a.max(b)) };
                prop_assert_eq!(u32::from(t.distance(a as u8, b as u8)), want);
            }
        }
    }

    #[test]
    fn a_map_missing_any_pair_is_refused(n in 2u32..=8, cut_a in 0u32..8, cut_b in 0u32..8) {
        let (a, b) = (cut_a % n, cut_b % n);
        prop_assume!(a != b);
        let entries: Vec<(u32, u32, u32)> = (0..n)
            .flat_map(|x| (0..n).map(move |y| (x, y)))
            .filter(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a))
            .map(|(x, y)| (x, y, if x == y { 10 } else { 20 }))
            .collect();
        let cpus: Vec<Option<u32>> = (0..n).map(Some).collect();
        let e = topology(&[], &cpus, Some(&matrix(&entries))).unwrap_err();
        prop_assert_eq!(e, NumaError::MissingDistance { a: a.min(b) as u8, b: a.max(b) as u8 });
    }
}
