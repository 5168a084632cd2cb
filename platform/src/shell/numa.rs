//! `numa`: the nodes (Linux `/sys/devices/system/node`): their CPUs, memory and distances.

use super::*;
use crate::kernel::numa;
use mm::numa::{NodeId, NodeMask, MAX_NUMNODES};
use mm::page::ZoneId;

/// One node's memory as the memory blocks and the page allocator see it.
#[derive(Clone, Copy, Default)]
pub(super) struct NodeMemory {
    /// Bytes of the node's memory blocks, online or not (Linux `node_present_pages`).
    pub present: u64,
    /// Bytes of its online blocks.
    pub online: u64,
    pub blocks: u64,
}

/// Per node: its memory blocks' bytes.
pub(super) fn node_memory() -> [NodeMemory; MAX_NUMNODES] {
    let mut m = [NodeMemory::default(); MAX_NUMNODES];
    crate::kernel::mem::hotplug::with_hotplug(|hp, _| {
        for b in hp.blocks() {
            let n = &mut m[b.node as usize];
            let bytes = b.nr_pages << layout::PAGE_SHIFT;
            n.present += bytes;
            n.blocks += 1;
            if b.zone.is_some() {
                n.online += bytes;
            }
        }
    });
    m
}

/// Nodes with online CPUs.
fn nodes_with_cpus() -> NodeMask {
    let mut m = NodeMask::empty();
    for cpu in (0..smp::MAX_CPUS).filter(|&c| smp::online_mask() & (1 << c) != 0) {
        m.set(numa::cpu_node(cpu));
    }
    m
}

/// Online nodes (Linux `N_ONLINE`): named by the device tree, or holding memory or CPUs.
pub(super) fn online_nodes(mem: &[NodeMemory; MAX_NUMNODES]) -> NodeMask {
    let mut m = numa::nodes_in_dtb();
    for nid in 0..MAX_NUMNODES as NodeId {
        if mem[nid as usize].present > 0 || nodes_with_cpus().contains(nid) {
            m.set(nid);
        }
    }
    m
}

pub(super) fn cmd_numa(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    let mem = node_memory();
    let online = online_nodes(&mem);
    let mut with_memory = NodeMask::empty();
    for nid in online.iter().filter(|&n| mem[n as usize].online > 0) {
        with_memory.set(nid);
    }
    println!(
        "numa: nodes={} online={} memory={} cpus={} max_nodes={} source={}",
        online.count(),
        numa::mask_list(online),
        numa::mask_list(with_memory),
        numa::mask_list(nodes_with_cpus()),
        MAX_NUMNODES,
        if numa::fallback().is_some() {
            "fallback"
        } else {
            "device-tree"
        }
    );
    for nid in online.iter() {
        print_node(nid, &mem[nid as usize], online);
    }
    Ok(())
}

fn print_node(nid: NodeId, m: &NodeMemory, online: NodeMask) {
    let mut cpus = String::new();
    for cpu in (0..smp::MAX_CPUS).filter(|&c| smp::online_mask() & (1 << c) != 0 && numa::cpu_node(c) == nid) {
        if !cpus.is_empty() {
            cpus.push(',');
        }
        cpus.push_str(&alloc::format!("{cpu}"));
    }
    let (managed, free) = page_alloc::with_page_alloc(|a| {
        ZoneId::ALL.iter().fold((0, 0), |(m, f), &z| {
            let c = a.node_counters(nid, z);
            (m + c.managed, f + c.available())
        })
    });
    let distances: alloc::vec::Vec<String> = online
        .iter()
        .map(|b| alloc::format!("{}", numa::distance(nid, b)))
        .collect();
    println!(
        "numa: node={nid} cpus={} present_bytes={} online_bytes={} blocks={} managed_pages={managed} free_pages={free} distances={}",
        if cpus.is_empty() { "-" } else { &cpus },
        m.present,
        m.online,
        m.blocks,
        distances.join(",")
    );
}
