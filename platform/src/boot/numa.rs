//! The NUMA properties of the device tree (Linux `drivers/of/of_numa.c`): `numa-node-id` of
//! every `/memory` node and every CPU, and `/distance-map`'s `distance-matrix`. This file only
//! finds them; [`parse::numa::topology`] (host-tested) decodes and checks them.

use alloc::vec::Vec;
use fdt::Fdt;
use parse::numa::MemNode;
pub use parse::numa::{NumaError, Topology};

/// The machine's topology as the device tree describes it, or why it is unusable (the kernel
/// then runs with one node and says so).
pub fn topology(fdt: &Fdt) -> Result<Topology, NumaError> {
    let memory: Vec<MemNode> = fdt
        .find_all_nodes("/memory")
        .flat_map(|n| {
            let node = n.property("numa-node-id").and_then(|p| p.as_usize()).map(|v| v as u32);
            n.reg()
                .into_iter()
                .flatten()
                .filter_map(move |r| {
                    Some(MemNode {
                        base: r.starting_address as u64,
                        size: r.size? as u64,
                        node,
                    })
                })
                .filter(|m| m.size > 0)
        })
        .collect();
    let cpus: Vec<Option<u32>> = fdt
        .cpus()
        .map(|c| c.property("numa-node-id").and_then(|p| p.as_usize()).map(|v| v as u32))
        .collect();
    let matrix = fdt
        .find_node("/distance-map")
        .and_then(|n| n.property("distance-matrix"))
        .map(|p| p.value);
    parse::numa::topology(&memory, &cpus, matrix)
}
