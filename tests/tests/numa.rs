//! NUMA in real QEMU, every granule (`hotmem_tests::numa`):
//! - `numa_acceptance_*`: two 1 GiB nodes with a CPU each and a memory-less third node; DIMMs on
//!   nodes 1 and 2, a virtio-mem device on node 2 grown and shrunk, a stress on node 1 migrated
//!   within node 1 when its DIMM goes; after every step `numa`, `meminfo` and `blocks` put every
//!   byte on the right node and `meminfo check` is ok.
//! - `topologies_*`: four nodes with distances — node 1 has CPUs and no memory, node 3 memory
//!   and no CPUs — as the device tree gives them (`numa`), each CPU allocating from its node or
//!   the nearest one with memory (`numa locality`), `stress node=N` landing on node N; and the
//!   default machine (no `--numa`) as one node holding everything.
//!
//! The NUMA mutants (`tests/tests/mutants.rs`) make these scenarios fail.

use hotmem_qemu::config::{BootMode, Granule};
use hotmem_tests::cases;
use hotmem_tests::dimm::DimmCase;
use hotmem_tests::numa::{acceptance, acceptance_case, check_locality, four_nodes_case, gib, FOUR_NODES_LOCALITY};
use hotmem_tests::parse::{kv, lines_with};

fn acceptance_in(g: Granule) {
    acceptance(&acceptance_case(g));
}

/// The `numa: node=N` line's `key`.
fn node_field(numa: &str, node: u32, key: &str) -> String {
    lines_with(numa, &[&format!("numa: node={node} ")])
        .first()
        .and_then(|l| kv(l, key))
        .unwrap_or("?")
        .to_string()
}

fn four_nodes(g: Granule) {
    let mut d = four_nodes_case(g).start();
    d.check_nodes("at boot", &gib(&[(0, 1), (2, 1), (3, 1)]));
    let numa = d.guest("numa");
    let want = [
        (0, "0", "10,15,20,30"),
        (1, "1", "15,10,25,35"),
        (2, "2,3", "20,25,10,40"),
        (3, "-", "30,35,40,10"),
    ];
    for (node, cpus, distances) in want {
        let got = (node_field(&numa, node, "cpus"), node_field(&numa, node, "distances"));
        if got != (cpus.to_string(), distances.to_string()) {
            d.fail(&format!(
                "node {node}: cpus={} distances={}, want cpus={cpus} distances={distances}:\n{numa}",
                got.0, got.1
            ));
        }
    }
    check_locality(&mut d, FOUR_NODES_LOCALITY);
    d.guest("stress 16M node=3");
    let pages = (16 << 20) >> g.page_shift();
    d.check_stress_nodes("stress 16M node=3", &[(3, pages)].into());
    d.guest("stress free");
    d.check_nodes("at the end", &gib(&[(0, 1), (2, 1), (3, 1)]));
    d.poweroff();
}

fn one_node(g: Granule) {
    let mut c = DimmCase::new(g, 2);
    c.boot = BootMode::Kernel;
    c.machine.mem = "2G".into();
    let mut d = c.start();
    d.check_nodes("one node", &gib(&[(0, 2)]));
    check_locality(&mut d, &[(0, 0), (1, 0)]);
    d.poweroff();
}

fn topologies(g: Granule) {
    four_nodes(g);
    one_node(g);
}

cases! { acceptance_in =>
    numa_acceptance_4k: Granule::K4;
    numa_acceptance_16k: Granule::K16;
    numa_acceptance_64k: Granule::K64;
}

cases! { topologies =>
    topologies_4k: Granule::K4;
    topologies_16k: Granule::K16;
    topologies_64k: Granule::K64;
}
