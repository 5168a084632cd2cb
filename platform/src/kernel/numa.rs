//! NUMA nodes (Linux `numa_node_id`, `node_distance`, `cpu_to_node`): which node each CPU and
//! each boot memory range is on, and the distances between nodes, from the device tree. A node
//! that the device tree does not name (QEMU leaves out a node with neither memory nor CPUs) is
//! still a valid hotplug target: any node below [`MAX_NUMNODES`] may receive memory, at the
//! default remote distance from the others unless the distance map names it.

use crate::boot::numa::{NumaError, Topology};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};
use mm::numa::{Distances, NodeId, NodeMask, MAX_NUMNODES};
use parse::numa::NR_CPUS;

struct Numa {
    topology: Topology,
    /// The device tree's CPUs (MPIDR affinities), in its order: the topology's CPU indices.
    dt_cpus: Vec<u64>,
    /// Why the device tree's topology was not used, if it was not.
    fallback: Option<NumaError>,
}

static NUMA: spin::Once<Numa> = spin::Once::new();

fn numa() -> &'static Numa {
    NUMA.get().expect("NUMA topology read at boot")
}

/// Take the device tree's topology (once, before memory is initialised), or one node with the
/// reason printed if it is unusable.
pub fn init(topology: &Result<Topology, NumaError>, dt_cpus: &[u64]) {
    let n = NUMA.call_once(|| match topology {
        Ok(t) => Numa {
            topology: *t,
            dt_cpus: dt_cpus.to_vec(),
            fallback: None,
        },
        Err(e) => Numa {
            topology: Topology::single(),
            dt_cpus: dt_cpus.to_vec(),
            fallback: Some(*e),
        },
    });
    cpu_up(0, arch::cpu::mpidr_affinity());
    if let Some(e) = &n.fallback {
        crate::println!("numa: the device tree's topology is unusable: {e}; running with one node");
    }
    crate::println!(
        "numa: device tree: nodes={} ids={} distances={}",
        nodes_in_dtb().count(),
        mask_list(nodes_in_dtb()),
        distance_rows(nodes_in_dtb())
    );
}

/// Nodes the device tree names (memory, CPUs or the distance map).
pub fn nodes_in_dtb() -> NodeMask {
    let mut m = NodeMask::empty();
    for nid in 0..MAX_NUMNODES as NodeId {
        if numa().topology.nodes() & (1 << nid) != 0 {
            m.set(nid);
        }
    }
    m
}

/// Why the device tree's topology was not used (one node instead), if it was not.
pub fn fallback() -> Option<&'static NumaError> {
    numa().fallback.as_ref()
}

/// Node of each kernel CPU (index 0 = the boot CPU), set as each comes up ([`cpu_up`]).
static CPU_NODE: [AtomicU8; NR_CPUS] = [const { AtomicU8::new(0) }; NR_CPUS];

/// Kernel CPU `cpu` has the MPIDR affinity `mpidr`: record its node (the device tree's CPU
/// with that MPIDR; node 0 for one it does not list). Called for the boot CPU at [`init`] and by
/// the CPU bring-up before each secondary starts.
pub fn cpu_up(cpu: usize, mpidr: u64) {
    let Some(slot) = CPU_NODE.get(cpu) else { return };
    let n = numa();
    let node = n
        .dt_cpus
        .iter()
        .position(|&m| m == mpidr)
        .map_or(0, |i| n.topology.cpu_node(i));
    slot.store(node, Ordering::Relaxed);
}

/// The node of the kernel's CPU `cpu` (0 = the boot CPU).
pub fn cpu_node(cpu: usize) -> NodeId {
    CPU_NODE.get(cpu).map_or(0, |n| n.load(Ordering::Relaxed))
}

/// The node of the calling CPU (Linux `numa_node_id`).
pub fn this_node() -> NodeId {
    if arch::mutant::on(arch::mutant::Mutant::NumaNodeIgnored) {
        return 0;
    }
    cpu_node(arch::cpu::cpu_index())
}

/// The node of boot memory at `pa` (node 0 for memory the device tree does not place).
pub fn boot_node_of(pa: u64) -> NodeId {
    numa().topology.node_of(pa).unwrap_or(0)
}

/// Distance between two nodes (Linux `node_distance`): the device tree's, or 10 local, 20
/// remote.
pub fn distance(a: NodeId, b: NodeId) -> u8 {
    numa().topology.distance(a, b)
}

/// The distance table the page allocator's zonelists follow.
pub fn distances() -> Distances {
    let mut d = Distances::uniform();
    for a in 0..MAX_NUMNODES as NodeId {
        for b in 0..MAX_NUMNODES as NodeId {
            d.set(a, b, distance(a, b));
        }
    }
    d
}

/// A mask as a list, `0,1,5` (`-`: empty).
pub fn mask_list(m: NodeMask) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    for nid in m.iter() {
        let _ = write!(s, "{}{nid}", if s.is_empty() { "" } else { "," });
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// The distance rows of `nodes`, `10,20;20,10`.
pub fn distance_rows(nodes: NodeMask) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    for a in nodes.iter() {
        if !s.is_empty() {
            s.push(';');
        }
        for (i, b) in nodes.iter().enumerate() {
            let _ = write!(s, "{}{}", if i == 0 { "" } else { "," }, distance(a, b));
        }
    }
    s
}
