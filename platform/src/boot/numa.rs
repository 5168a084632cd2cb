//! The machine's NUMA topology (Linux `drivers/of/of_numa.c`) from what the device-tree walk
//! collected: the `numa-node-id` of every `/memory` range and every CPU, and `/distance-map`'s
//! `distance-matrix`. [`parse::numa::topology`] (host-tested) decodes and checks them.

use super::dtb::Platform;
use alloc::vec::Vec;
use parse::numa::MemNode;
pub use parse::numa::{NumaError, Topology};

/// The topology the device tree describes, or why it is unusable (the kernel then runs with
/// one node and says so).
pub fn topology(plat: &Platform) -> Result<Topology, NumaError> {
    let memory: Vec<MemNode> = plat
        .memory_nodes
        .iter()
        .filter(|(r, _)| r.size > 0)
        .map(|&(r, node)| MemNode {
            base: r.base,
            size: r.size,
            node,
        })
        .collect();
    parse::numa::topology(&memory, &plat.cpu_nodes, plat.distance_matrix.as_deref())
}
