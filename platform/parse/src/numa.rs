//! NUMA topology from the device tree (the `numa-node-id` binding and `numa-distance-map-v1`),
//! decoded and checked: which nodes exist, each CPU's and each boot memory range's node, and
//! the node distance table. Input is what the kernel's DTB walker found: one [`MemNode`] per
//! `/memory` `reg` range, each `/cpus/cpu@N`'s `numa-node-id`, and the raw `distance-matrix`
//! bytes of `/distance-map`.
//!
//! Rules (each broken rule is a [`NumaError`]; the kernel then boots with
//! [`Topology::single`] and prints the error):
//! - No `numa-node-id` anywhere: one node, 0, holding every CPU and every address (a distance
//!   map is then ignored). Not an error.
//! - Some CPUs or memory ranges have a node and some do not: an error. Linux puts such a CPU on
//!   node 0 (`early_map_cpu_to_node`) and gives up on NUMA when memory is left out
//!   (`numa_meminfo_cover_memory`); here both are refused, so a half-described machine is
//!   reported rather than guessed at.
//! - Node ids are below [`MAX_NUMNODES`]. Linux warns about a CPU's out-of-range id and
//!   ignores it; here it is refused like a memory range's (which Linux refuses too).
//! - Memory ranges of different nodes do not overlap (Linux `numa_cleanup_meminfo`).
//! - The distance matrix, when present, is a non-empty whole number of `<from to distance>`
//!   u32 triplets; a node's distance to itself is 10 ([`LOCAL_DISTANCE`]); between different
//!   nodes it is 11 to 255. These are Linux's checks (`of_numa_parse_distance_map_v1`), except
//!   that Linux drops a trailing partial triplet and ignores (with a warning) ids and distances
//!   out of range, where here the map is refused.
//! - A pair given in one direction holds in both (as Linux fills B→A from A→B); given in both
//!   directions with different values, or twice with different values, it is refused (Linux
//!   keeps whichever came last, which makes the table depend on the order of the entries).
//! - With a map, every pair of existing nodes has a distance (QEMU writes all of them; Linux
//!   would silently use 20 for a missing pair). Without a map, distances are 10 local and 20
//!   remote ([`REMOTE_DISTANCE`]), Linux's defaults.
//! - A node that only the map names exists: QEMU lists hotplug-only nodes (no CPUs, no boot
//!   memory) there, and Linux marks matrix nodes parsed too. A node with neither CPUs, memory
//!   nor a map entry is not in the device tree at all; the kernel meets it first through a
//!   hot-added device's node.

use core::fmt;

/// The most nodes the kernel supports (node ids `0..MAX_NUMNODES`).
pub const MAX_NUMNODES: usize = 8;
/// The most CPUs a topology records (a device tree with more is refused).
pub const NR_CPUS: usize = 64;
/// The most boot memory ranges with a node a topology records: two per node, Linux's
/// `NR_NODE_MEMBLKS`.
pub const NR_NODE_MEMBLKS: usize = 2 * MAX_NUMNODES;
/// A node's distance to itself (Linux `LOCAL_DISTANCE`).
pub const LOCAL_DISTANCE: u8 = 10;
/// The distance between two different nodes when the device tree gives none (Linux
/// `REMOTE_DISTANCE`).
pub const REMOTE_DISTANCE: u8 = 20;

/// One `/memory` `reg` range and its node's `numa-node-id`, as found in the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemNode {
    pub base: u64,
    pub size: u64,
    pub node: Option<u32>,
}

/// A boot memory range of a checked topology.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRange {
    pub base: u64,
    pub size: u64,
    pub node: u8,
}

impl NodeRange {
    /// Does the range hold `pa`? (No overflow at the top of the address space.)
    pub fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa - self.base < self.size
    }
}

/// The machine's nodes, CPUs, boot memory and distances: a plain value (no allocation), so the
/// kernel can keep it in a static from its first DTB walk on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Bit `n` set: node `n` exists.
    nodes: u16,
    /// Bit `n` set: node `n` has boot memory.
    memory_nodes: u16,
    /// `true` when the device tree described the nodes (`numa-node-id` present).
    described: bool,
    cpus: [u8; NR_CPUS],
    nr_cpus: usize,
    ranges: [NodeRange; NR_NODE_MEMBLKS],
    nr_ranges: usize,
    distance: [[u8; MAX_NUMNODES]; MAX_NUMNODES],
}

/// The default distance table: 10 on the diagonal, 20 elsewhere.
const fn default_distances() -> [[u8; MAX_NUMNODES]; MAX_NUMNODES] {
    let mut d = [[REMOTE_DISTANCE; MAX_NUMNODES]; MAX_NUMNODES];
    let mut i = 0;
    while i < MAX_NUMNODES {
        d[i][i] = LOCAL_DISTANCE;
        i += 1;
    }
    d
}

impl Topology {
    /// One node, 0, holding every CPU and every address: the machine without a NUMA
    /// description, and the kernel's fallback when the description is refused.
    pub const fn single() -> Topology {
        Topology {
            nodes: 1,
            memory_nodes: 1,
            described: false,
            cpus: [0; NR_CPUS],
            nr_cpus: 0,
            ranges: [NodeRange {
                base: 0,
                size: 0,
                node: 0,
            }; NR_NODE_MEMBLKS],
            nr_ranges: 0,
            distance: default_distances(),
        }
    }

    /// The nodes that exist, bit `n` for node `n`.
    pub fn nodes(&self) -> u16 {
        self.nodes
    }

    /// How many nodes exist.
    pub fn node_count(&self) -> u32 {
        self.nodes.count_ones()
    }

    /// The nodes with boot memory, bit `n` for node `n`.
    pub fn memory_nodes(&self) -> u16 {
        self.memory_nodes
    }

    /// Did the device tree describe the nodes? `false` for [`Topology::single`].
    pub fn is_described(&self) -> bool {
        self.described
    }

    /// CPU `cpu`'s node (0 for a CPU the device tree did not list).
    pub fn cpu_node(&self, cpu: usize) -> u8 {
        self.cpus()[..].get(cpu).copied().unwrap_or(0)
    }

    /// Each listed CPU's node, by CPU index (empty for [`Topology::single`]).
    pub fn cpus(&self) -> &[u8] {
        &self.cpus[..self.nr_cpus]
    }

    /// The boot memory ranges with their nodes (empty for [`Topology::single`]).
    pub fn ranges(&self) -> &[NodeRange] {
        &self.ranges[..self.nr_ranges]
    }

    /// The node of physical address `pa`: with one undescribed node, node 0 for every
    /// address; otherwise the node of the boot range that holds it, `None` outside them
    /// (hot-added memory: its device says the node).
    pub fn node_of(&self, pa: u64) -> Option<u8> {
        if !self.described {
            return Some(0);
        }
        self.ranges().iter().find(|r| r.contains(pa)).map(|r| r.node)
    }

    /// The distance from node `a` to node `b` (ids at or above [`MAX_NUMNODES`]: 10 to
    /// itself, 20 otherwise).
    pub fn distance(&self, a: u8, b: u8) -> u8 {
        match self
            .distance
            .get(usize::from(a))
            .and_then(|row| row.get(usize::from(b)))
        {
            Some(&d) => d,
            None if a == b => LOCAL_DISTANCE,
            None => REMOTE_DISTANCE,
        }
    }
}

/// Where a node id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cpu(usize),
    Memory {
        base: u64,
        size: u64,
    },
    /// The `entry`-th triplet (from 0) of `distance-matrix`.
    Matrix {
        entry: usize,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cpu(i) => write!(f, "cpu {i}"),
            Source::Memory { base, size } => write!(f, "memory {base:#x}+{size:#x}"),
            Source::Matrix { entry } => write!(f, "distance-matrix entry {entry}"),
        }
    }
}

/// Why a NUMA description is refused; each names the piece of input it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumaError {
    /// A node id at or above [`MAX_NUMNODES`].
    NodeTooLarge { node: u32, of: Source },
    /// A CPU without `numa-node-id` while other CPUs or memory have one.
    CpuWithoutNode { cpu: usize },
    /// A memory range without `numa-node-id` while CPUs or other memory have one.
    MemoryWithoutNode { base: u64, size: u64 },
    /// More CPUs than [`NR_CPUS`].
    TooManyCpus { count: usize },
    /// More memory ranges than [`NR_NODE_MEMBLKS`].
    TooManyRanges { count: usize },
    /// Two memory ranges of different nodes overlap.
    Overlap { a: NodeRange, b: NodeRange },
    /// `distance-matrix` is empty or not a whole number of 12-byte triplets.
    MatrixLength { len: usize },
    /// A node's distance to itself is not 10.
    LocalDistance { node: u8, distance: u32, entry: usize },
    /// A distance between different nodes is not 11 to 255.
    RemoteDistance {
        from: u8,
        to: u8,
        distance: u32,
        entry: usize,
    },
    /// `from → to` and `to → from` are both given, with different values.
    Asymmetric { from: u8, to: u8, there: u8, back: u8 },
    /// `from → to` is given twice with different values.
    Conflict { from: u8, to: u8, first: u8, second: u8 },
    /// No distance for a pair of existing nodes.
    MissingDistance { a: u8, b: u8 },
}

impl fmt::Display for NumaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NumaError::*;
        const ALL_OR_NONE: &str = "give every cpu and memory range a numa-node-id, or none (one node)";
        match *self {
            NodeTooLarge { node, of } => write!(f, "node {node} of {of}: at most {MAX_NUMNODES} nodes (0-{})", MAX_NUMNODES - 1),
            CpuWithoutNode { cpu } => write!(f, "cpu {cpu} has no numa-node-id but others do: {ALL_OR_NONE}"),
            MemoryWithoutNode { base, size } => {
                write!(f, "memory {base:#x}+{size:#x} has no numa-node-id but others do: {ALL_OR_NONE}")
            }
            TooManyCpus { count } => write!(f, "{count} cpus with a numa-node-id: at most {NR_CPUS}"),
            TooManyRanges { count } => write!(
                f,
                "{count} memory ranges with a numa-node-id: at most {NR_NODE_MEMBLKS} (2 per node)"
            ),
            Overlap { a, b } => write!(
                f,
                "memory {:#x}+{:#x} of node {} overlaps memory {:#x}+{:#x} of node {}: a range belongs to one node",
                a.base, a.size, a.node, b.base, b.size, b.node
            ),
            MatrixLength { len } => write!(
                f,
                "distance-matrix of {len} bytes: want one or more <from to distance> triplets of u32 (12 bytes each)"
            ),
            LocalDistance { node, distance, entry } => write!(
                f,
                "distance {distance} from node {node} to itself (distance-matrix entry {entry}): must be {LOCAL_DISTANCE}"
            ),
            RemoteDistance { from, to, distance, entry } => write!(
                f,
                "distance {distance} from node {from} to node {to} (distance-matrix entry {entry}): want {} to 255 between different nodes",
                LOCAL_DISTANCE + 1
            ),
            Asymmetric { from, to, there, back } => write!(
                f,
                "distance-matrix: node {from} to node {to} is {there} but node {to} to node {from} is {back}: want the same both ways"
            ),
            Conflict { from, to, first, second } => write!(
                f,
                "distance-matrix: node {from} to node {to} given as {first} and as {second}: give each pair once"
            ),
            MissingDistance { a, b } => write!(
                f,
                "distance-matrix has no distance between node {a} and node {b}: a map gives every pair of nodes that exist"
            ),
        }
    }
}

/// A node id checked against [`MAX_NUMNODES`].
fn node_id(node: u32, of: Source) -> Result<u8, NumaError> {
    match u8::try_from(node) {
        Ok(n) if usize::from(n) < MAX_NUMNODES => Ok(n),
        _ => Err(NumaError::NodeTooLarge { node, of }),
    }
}

/// The topology the device tree describes (rules: the module documentation).
pub fn topology(
    memory: &[MemNode],
    cpus: &[Option<u32>],
    distance_matrix: Option<&[u8]>,
) -> Result<Topology, NumaError> {
    if cpus.iter().all(Option::is_none) && memory.iter().all(|m| m.node.is_none()) {
        return Ok(Topology::single());
    }
    let mut t = Topology {
        nodes: 0,
        memory_nodes: 0,
        described: true,
        ..Topology::single()
    };
    if cpus.len() > NR_CPUS {
        return Err(NumaError::TooManyCpus { count: cpus.len() });
    }
    for (i, c) in cpus.iter().enumerate() {
        let n = c.ok_or(NumaError::CpuWithoutNode { cpu: i })?;
        t.cpus[i] = node_id(n, Source::Cpu(i))?;
        t.nodes |= 1 << t.cpus[i];
    }
    t.nr_cpus = cpus.len();
    if memory.len() > NR_NODE_MEMBLKS {
        return Err(NumaError::TooManyRanges { count: memory.len() });
    }
    for (i, m) in memory.iter().enumerate() {
        let (base, size) = (m.base, m.size);
        let n = m.node.ok_or(NumaError::MemoryWithoutNode { base, size })?;
        let node = node_id(n, Source::Memory { base, size })?;
        t.ranges[i] = NodeRange { base, size, node };
        t.nodes |= 1 << node;
        t.memory_nodes |= 1 << node;
    }
    t.nr_ranges = memory.len();
    check_overlaps(t.ranges())?;
    if let Some(m) = distance_matrix {
        distances(&mut t, m)?;
    }
    Ok(t)
}

/// Ranges of different nodes must not overlap.
fn check_overlaps(ranges: &[NodeRange]) -> Result<(), NumaError> {
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let end = |r: &NodeRange| r.base.saturating_add(r.size);
            let overlap = a.base < end(b) && b.base < end(a) && a.size > 0 && b.size > 0;
            if overlap && a.node != b.node {
                return Err(NumaError::Overlap { a: *a, b: *b });
            }
        }
    }
    Ok(())
}

/// The `distance-matrix` into `t`'s table; the nodes it names join `t`'s nodes.
fn distances(t: &mut Topology, m: &[u8]) -> Result<(), NumaError> {
    if m.is_empty() || !m.len().is_multiple_of(12) {
        return Err(NumaError::MatrixLength { len: m.len() });
    }
    let mut given = [[None::<u8>; MAX_NUMNODES]; MAX_NUMNODES];
    for (entry, c) in m.chunks_exact(12).enumerate() {
        let cell = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
        let of = Source::Matrix { entry };
        let (from, to, distance) = (node_id(cell(0), of)?, node_id(cell(4), of)?, cell(8));
        let d = if from == to {
            (distance == u32::from(LOCAL_DISTANCE))
                .then_some(LOCAL_DISTANCE)
                .ok_or(NumaError::LocalDistance {
                    node: from,
                    distance,
                    entry,
                })?
        } else {
            u8::try_from(distance)
                .ok()
                .filter(|&d| d > LOCAL_DISTANCE)
                .ok_or(NumaError::RemoteDistance {
                    from,
                    to,
                    distance,
                    entry,
                })?
        };
        let slot = &mut given[usize::from(from)][usize::from(to)];
        if let Some(first) = slot.filter(|&f| f != d) {
            return Err(NumaError::Conflict {
                from,
                to,
                first,
                second: d,
            });
        }
        *slot = Some(d);
        t.nodes |= (1 << from) | (1 << to);
    }
    for from in 0..MAX_NUMNODES as u8 {
        for to in from + 1..MAX_NUMNODES as u8 {
            let (a, b) = (usize::from(from), usize::from(to));
            let d = match (given[a][b], given[b][a]) {
                (Some(there), Some(back)) if there != back => {
                    return Err(NumaError::Asymmetric { from, to, there, back })
                }
                (Some(d), _) | (None, Some(d)) => d,
                (None, None) if t.nodes & (1 << a) != 0 && t.nodes & (1 << b) != 0 => {
                    return Err(NumaError::MissingDistance { a: from, b: to })
                }
                (None, None) => REMOTE_DISTANCE,
            };
            t.distance[a][b] = d;
            t.distance[b][a] = d;
        }
    }
    Ok(())
}
