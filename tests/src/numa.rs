//! NUMA scenarios in real QEMU (`tests/tests/numa.rs`, and the NUMA mutants): machines built
//! with the runner's `--numa`, and the check that the guest's three views of its nodes — `numa`,
//! `meminfo`'s node lines and the `blocks` node column — put every byte where the test expects,
//! with the allocator's checker (`meminfo check`) ok.

use std::collections::BTreeMap;

use hotmem_qemu::config::{BootMode, Granule};
use hotmem_qemu::numa::Numa;
use hotmem_qemu::run::VirtioMem;

use crate::dimm::{DimmCase, DimmSession, GIB};
use crate::parse::{kv, lines_with, num, parse_blocks};

/// A machine with `--numa spec` (and `--numa-dist dist`), `smp` CPUs, room for DIMMs.
pub fn numa_case(g: Granule, boot: BootMode, smp: u32, spec: &str, dist: Option<&str>) -> DimmCase {
    let mut numa = Numa::parse(spec).unwrap_or_else(|e| panic!("{e}"));
    if let Some(d) = dist {
        numa.set_distances(d).unwrap_or_else(|e| panic!("{e}"));
    }
    numa.check(g, smp).unwrap_or_else(|e| panic!("{e}"));
    let mut c = DimmCase::new(g, 2);
    c.boot = boot;
    c.machine.smp = smp;
    c.machine.mem = format!("{}G,slots=8,maxmem=24G", numa.total_mem() / GIB);
    c.machine.numa = Some(Box::new(numa));
    c
}

/// Bytes of memory per node, as a test expects them (nodes absent: no memory, not listed).
pub type NodeBytes = BTreeMap<u32, u64>;

/// `[(node, GiB)]` as [`NodeBytes`].
pub fn gib(nodes: &[(u32, u64)]) -> NodeBytes {
    nodes.iter().map(|&(n, g)| (n, g * GIB)).collect()
}

/// `key=` of the `PREFIX node=N ...` lines (the first such line per node), by node.
fn per_node(text: &str, prefix: &str, key: &str, skip_zone_lines: bool) -> BTreeMap<u32, u64> {
    lines_with(text, &[prefix])
        .into_iter()
        .filter(|l| !skip_zone_lines || kv(l, "zone").is_none())
        .filter_map(|l| Some((kv(l, "node")?.parse().ok()?, num(kv(l, key)?)?)))
        .collect()
}

/// Nodes with memory in a `per_node` map (zero-byte nodes dropped).
fn with_memory(m: BTreeMap<u32, u64>) -> NodeBytes {
    m.into_iter().filter(|&(_, b)| b > 0).collect()
}

impl DimmSession {
    /// The guest's `numa`, `meminfo` and `blocks` all put `want` bytes on each node (and none
    /// elsewhere), every node with memory is online in `numa`, and `meminfo check` is ok.
    pub fn check_nodes(&mut self, when: &str, want: &NodeBytes) {
        let numa = self.guest("numa");
        let meminfo = self.guest("meminfo");
        let blocks = self.guest("blocks");
        let check = self.guest("meminfo check");
        let from_numa = with_memory(per_node(&numa, "numa: node=", "present_bytes", true));
        let from_meminfo = with_memory(per_node(&meminfo, "meminfo: node=", "present_bytes", true));
        let mut from_blocks = NodeBytes::new();
        for b in parse_blocks(&blocks) {
            *from_blocks.entry(b.node).or_default() += b.end - b.start;
        }
        let mut errs = Vec::new();
        for (view, got) in [
            ("numa", &from_numa),
            ("meminfo", &from_meminfo),
            ("blocks", &from_blocks),
        ] {
            if got != want {
                errs.push(format!("`{view}` has {got:?} bytes per node, want {want:?}"));
            }
        }
        let online = lines_with(&numa, &["numa: nodes="])
            .first()
            .and_then(|l| kv(l, "memory"))
            .unwrap_or("")
            .to_string();
        let want_online: Vec<String> = want.keys().map(|n| n.to_string()).collect();
        if online != want_online.join(",") {
            errs.push(format!("`numa` says memory={online}, want {}", want_online.join(",")));
        }
        if !check.contains("meminfo check: ok") {
            errs.push(format!("`meminfo check` is not ok:\n{check}"));
        }
        if !errs.is_empty() {
            self.fail(&format!("{when}:\n  {}\n--- numa\n{numa}", errs.join("\n  ")));
        }
    }

    /// `stress verify` is ok and the stress pages sit on `want` (node → pages).
    pub fn check_stress_nodes(&mut self, when: &str, want: &BTreeMap<u32, u64>) {
        let t = self.guest("stress verify");
        let got: BTreeMap<u32, u64> = lines_with(&t, &["stress: verify"])
            .first()
            .and_then(|l| kv(l, "nodes"))
            .unwrap_or("-")
            .split(',')
            .filter_map(|w| {
                let (n, p) = w.split_once(':')?;
                Some((n.parse().ok()?, p.parse().ok()?))
            })
            .collect();
        if !t.contains("result=ok") || &got != want {
            self.fail(&format!("{when}: stress pages per node {got:?}, want {want:?}:\n{t}"));
        }
    }
}

/// The NUMA acceptance scenario: two nodes of 1 GiB with one CPU each and a memory-less third
/// node; a DIMM on node 1 (movable: a 64 MiB stress there is migrated within node 1 when the
/// DIMM goes), a DIMM on node 2 (bringing it online), a virtio-mem device on node 2 grown to
/// 1 GiB and shrunk back, both DIMMs unplugged (node 2 goes memory-less again). Every step
/// checks each node's memory in all three views and the allocator.
pub fn acceptance(c: &DimmCase) {
    let mut d = c.start();
    let page = 1u64 << c.config.granule.page_shift();
    let stress_pages = (64 << 20) / page;
    d.check_nodes("at boot", &gib(&[(0, 1), (1, 1)]));
    d.plug_node_ok(GIB, "dimm0", Some(1));
    d.check_nodes("dimm0 on node 1", &gib(&[(0, 1), (1, 2)]));
    d.plug_node_ok(GIB, "dimm1", Some(2));
    d.check_nodes("dimm1 on node 2", &gib(&[(0, 1), (1, 2), (2, 1)]));
    d.vmem_ok("vmem0", GIB);
    d.check_nodes("vmem0 grown to 1 GiB on node 2", &gib(&[(0, 1), (1, 2), (2, 2)]));
    d.vmem_ok("vmem0", 0);
    d.check_nodes("vmem0 shrunk to 0", &gib(&[(0, 1), (1, 2), (2, 1)]));
    let t = d.guest("stress 64M node=1");
    if !t.contains("result=ok") {
        d.fail(&format!("stress 64M node=1: {t}"));
    }
    d.check_stress_nodes("stress on node 1", &BTreeMap::from([(1, stress_pages)]));
    d.unplug_ok("dimm0");
    d.check_stress_nodes("after dimm0 (node 1) went", &BTreeMap::from([(1, stress_pages)]));
    d.guest("stress free");
    d.check_nodes("dimm0 unplugged", &gib(&[(0, 1), (1, 1), (2, 1)]));
    d.unplug_ok("dimm1");
    d.check_nodes("dimm1 unplugged", &gib(&[(0, 1), (1, 1)]));
    d.check_agree("at the end");
    d.check_vmem_agree("at the end");
    d.powerdown();
}

/// [`acceptance`]'s machine: `--numa 1G:cpus=0,1G:cpus=1,0`, firmware (DIMMs), a 1 GiB
/// virtio-mem device on node 2.
pub fn acceptance_case(g: Granule) -> DimmCase {
    let mut c = numa_case(g, BootMode::Firmware, 2, "1G:cpus=0,1G:cpus=1,0", None);
    let mut v = VirtioMem::new(GIB);
    v.node = Some(2);
    c.machine.virtio_mem = vec![v];
    c
}

/// Four nodes with distances: node 1 has a CPU and no memory, node 3 memory and no CPUs
/// (`--numa 1G:cpus=0,0:cpus=1,1G:cpus=2+3,1G`), kernel boot.
pub fn four_nodes_case(g: Granule) -> DimmCase {
    numa_case(
        g,
        BootMode::Kernel,
        4,
        "1G:cpus=0,0:cpus=1,1G:cpus=2+3,1G",
        Some("0-1=15,0-2=20,0-3=30,1-2=25,1-3=35,2-3=40"),
    )
}

/// Where each CPU of [`four_nodes_case`] allocates: its own node, and CPU 1 (memory-less node
/// 1) on node 0, the nearest (15) with memory.
pub const FOUR_NODES_LOCALITY: &[(u32, u32)] = &[(0, 0), (1, 0), (2, 2), (3, 2)];

/// `numa locality` answers ok for every CPU, and each `(cpu, node)` of `want` allocated there.
pub fn check_locality(d: &mut DimmSession, want: &[(u32, u32)]) {
    let t = d.guest("numa locality");
    let got: Vec<(u32, u32)> = lines_with(&t, &["numa: locality cpu="])
        .into_iter()
        .filter_map(|l| Some((kv(l, "cpu")?.parse().ok()?, kv(l, "allocated_on")?.parse().ok()?)))
        .collect();
    if !t.contains("numa: locality ok") || got != want {
        d.fail(&format!("numa locality: got {got:?}, want {want:?}:\n{t}"));
    }
}

/// [`four_nodes_case`]'s locality check alone (the mutant runs).
pub fn locality(c: &DimmCase) {
    let mut d = c.start();
    check_locality(&mut d, FOUR_NODES_LOCALITY);
    d.poweroff();
}
