//! The kernel on hand-edited device trees with NUMA topologies QEMU cannot produce
//! ([hotplug.md](../../docs/hotplug.md#numa-nodes)): the machine's own DTB, dumped by QEMU with
//! the runner's arguments for that machine (`-M ...,dumpdtb=FILE`), is edited
//! ([`hotmem_tests::fdt_edit`]) and booted. Each bad topology must be refused with its one-line
//! error naming the input, and the kernel must then run with one node holding all memory:
//! `numa` says `nodes=1 ... source=fallback`, node 0's `present_bytes` is the machine's RAM,
//! `meminfo check` is ok, a stress allocates and verifies, `poweroff` stops QEMU cleanly. The
//! unchanged dump boots with QEMU's two nodes, which shows the harness itself hands the kernel
//! the edited tree.
//!
//! How the edited tree reaches the guest: QEMU's `-dtb FILE` cannot be used. In kernel boot mode
//! QEMU (10.0) takes the file, turns every `/memory` node of it into NOP tokens and writes its
//! own memory nodes from `-m`/`-numa` (no complaint about the dump's nodes; they are replaced, so
//! a tree's memory nodes cannot be edited that way), and the NOP tokens it leaves between the
//! root's children stop the kernel's device-tree reader (crate `fdt` 0.1.5 finds no `/cpus`
//! past them): the kernel dies before its console with exit status 2, for an unchanged dump too.
//! So the machine starts halted (`-gdb ... -S`), gdb writes the edited blob over QEMU's own
//! device tree at the base of RAM (where the kernel takes it in ELF boots), and detaching lets
//! the CPUs run; the tree the kernel reads is then exactly the edited one.

use std::path::Path;
use std::sync::Mutex;

use hotmem_qemu::config::{BootMode, Granule};
use hotmem_qemu::gdb::GdbBatch;
use hotmem_qemu::run::{free_gdb_port, QemuRun, DEFAULT_GDB_PORT};
use hotmem_qemu::session::Session;
use hotmem_tests::dimm::{DimmCase, GIB};
use hotmem_tests::fdt_edit::{cells, Fdt};
use hotmem_tests::numa::numa_case;
use hotmem_tests::parse::{kv, lines_with};
use hotmem_tests::{cases, gdb_path, QemuSlot, TAIL_LINES};

/// Where the kernel takes the device tree in an ELF boot: the base of RAM.
const RAM_BASE: u64 = 0x4000_0000;
/// The machine's RAM: two nodes of 1 GiB.
const RAM: u64 = 2 * GIB;

/// Two 1 GiB nodes with one CPU each and a distance map (node 0 to node 1: 25), kernel boot.
fn machine(g: Granule) -> DimmCase {
    numa_case(g, BootMode::Kernel, 2, "1G:cpus=0,1G:cpus=1", Some("0-1=25"))
}

/// The machine's own device tree: QEMU run with `c`'s arguments plus `dumpdtb=`.
fn dump(c: &DimmCase, dir: &Path) -> Fdt {
    let file = dir.join("machine.dtb");
    let mut args = c.qemu_run().qemu_args();
    let Some(m) = args.iter().position(|a| a == "-M") else {
        panic!("no -M in {args:?}");
    };
    args[m + 1] = format!("{},dumpdtb={}", args[m + 1], file.display());
    let out = std::process::Command::new(hotmem_tests::qemu_path())
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("QEMU {args:?}: {e}"));
    assert!(
        out.status.success(),
        "QEMU could not dump the device tree ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    Fdt::decode(&blob).unwrap_or_else(|e| panic!("QEMU's dump {}: {e}", file.display()))
}

/// A booted machine running on an edited device tree.
struct Booted {
    s: Option<Session>,
    boot_log: String,
    what: String,
    _slot: QemuSlot,
}

impl Booted {
    fn session(&mut self) -> &mut Session {
        self.s.as_mut().expect("the session is running")
    }

    /// Panics with the configuration, the QEMU command line and the console tail.
    fn fail(&mut self, why: &str) -> ! {
        let (cmd, tail) = match self.s.take() {
            Some(s) => (s.run.command_line(), s.finish().tail(TAIL_LINES)),
            None => (String::new(), String::new()),
        };
        panic!("\n[{}] {why}\n  qemu: {cmd}\n--- console tail ---\n{tail}\n", self.what)
    }

    fn guest(&mut self, cmd: &str) -> String {
        match self.session().guest(cmd) {
            Ok(t) => t,
            Err(e) => self.fail(&format!("`{cmd}`: {e}")),
        }
    }
}

/// Boots `c`'s machine on `tree`: QEMU halted, the blob written over QEMU's device tree by gdb,
/// then run to the prompt.
fn boot_on(c: &DimmCase, tree: &Fdt, dir: &Path) -> Booted {
    let file = dir.join("edited.dtb");
    std::fs::write(&file, tree.encode()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let slot = QemuSlot::acquire();
    // A free port stays free until QEMU binds it: one test of this process at a time picks a
    // port and starts QEMU (which binds it before its QMP socket answers).
    static PORT: Mutex<()> = Mutex::new(());
    let picking = PORT.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_gdb_port(DEFAULT_GDB_PORT + 17).unwrap_or_else(|e| panic!("no gdb port: {e}"));
    let run: QemuRun = c.qemu_run().gdb(Some(port));
    let what = format!("{}{}", run.describe(), hotmem_tests::logs_line(&run));
    let elf = run.kernel.elf.clone();
    let s = Session::start(run).unwrap_or_else(|e| panic!("[{what}] {e}"));
    drop(picking);
    let gdb = GdbBatch::new(gdb_path(), elf, port)
        .no_connect()
        .command(format!("target remote 127.0.0.1:{port}"))
        .command(format!("restore {} binary {RAM_BASE:#x}", file.display()))
        .command("detach")
        .spawn()
        .unwrap_or_else(|e| panic!("[{what}] gdb: {e}"))
        .wait();
    let mut b = Booted {
        s: Some(s),
        boot_log: String::new(),
        what,
        _slot: slot,
    };
    if !gdb.success() || !gdb.output.contains("Restoring binary file") {
        b.fail(&format!("gdb did not write the device tree:\n{}", gdb.output));
    }
    b.session().guest_timeout = Some(hotmem_tests::dimm::GUEST_STEP_TIMEOUT);
    match b.session().boot() {
        Ok(log) => b.boot_log = log,
        Err(e) => b.fail(&format!("no prompt after boot: {e}")),
    }
    let size = format!("dtb_size={} ", tree.encode().len());
    if !b.boot_log.contains(&size) {
        b.fail(&format!(
            "the kernel did not read the edited tree (no `{size}` in the boot line)"
        ));
    }
    b
}

/// The `numa: node=N` line's `key`.
fn node_field(numa: &str, node: u32, key: &str) -> String {
    lines_with(numa, &[&format!("numa: node={node} ")])
        .first()
        .and_then(|l| kv(l, key))
        .unwrap_or("?")
        .to_string()
}

/// The kernel keeps running: a stress allocates and verifies, `poweroff` stops QEMU cleanly.
fn keeps_running(mut b: Booted) {
    let t = b.guest("stress 16M");
    if !t.contains("result=ok") {
        b.fail(&format!("stress 16M:\n{t}"));
    }
    let t = b.guest("stress verify");
    if !t.contains("result=ok") {
        b.fail(&format!("stress verify:\n{t}"));
    }
    b.guest("stress free");
    match b.session().guest_exit("poweroff") {
        Ok(st) if st.success() => {}
        Ok(st) => b.fail(&format!("poweroff: QEMU exited {st}")),
        Err(e) => b.fail(&format!("poweroff: {e}")),
    }
}

/// Boots `c`'s dump after `edit`, and checks the refusal `error` and the one-node fallback.
fn refused(c: &DimmCase, edit: impl FnOnce(&mut Fdt), error: &str) {
    let dir = hotmem_tests::test_log_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut tree = dump(c, &dir);
    edit(&mut tree);
    let mut b = boot_on(c, &tree, &dir);
    let line = format!("numa: the device tree's topology is unusable: {error}; running with one node");
    if !b.boot_log.contains(&line) {
        b.fail(&format!("no `{line}` in the boot log"));
    }
    let numa = b.guest("numa");
    let head = lines_with(&numa, &["numa: nodes="])
        .first()
        .map(|l| l.to_string())
        .unwrap_or_default();
    let nodes = lines_with(&numa, &["numa: node="]).len();
    if kv(&head, "nodes") != Some("1") || kv(&head, "source") != Some("fallback") || nodes != 1 {
        b.fail(&format!("`numa` is not one fallback node:\n{numa}"));
    }
    let present = node_field(&numa, 0, "present_bytes");
    if present != RAM.to_string() {
        b.fail(&format!(
            "node 0 has present_bytes={present}, want the machine's {RAM}:\n{numa}"
        ));
    }
    let check = b.guest("meminfo check");
    if !check.contains("meminfo check: ok") {
        b.fail(&format!("meminfo check:\n{check}"));
    }
    keeps_running(b);
}

/// The edited `/distance-map`: `<from to distance>` triplets.
fn set_matrix(t: &mut Fdt, triplets: &[[u32; 3]]) {
    let v: Vec<u32> = triplets.iter().flatten().copied().collect();
    t.set_prop("/distance-map", "distance-matrix", cells(&v))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn cpu_without_node(g: Granule) {
    refused(
        &machine(g),
        |t| {
            t.remove_prop("/cpus/cpu@1", "numa-node-id")
                .unwrap_or_else(|e| panic!("{e}"))
        },
        "cpu 1 has no numa-node-id but others do: give every cpu and memory range a numa-node-id, or none (one node)",
    );
}

fn cpu_node_beyond_max(g: Granule) {
    refused(
        &machine(g),
        |t| {
            t.set_u32("/cpus/cpu@1", "numa-node-id", 9)
                .unwrap_or_else(|e| panic!("{e}"))
        },
        "node 9 of cpu 1: at most 8 nodes (0-7)",
    );
}

fn asymmetric_distances(g: Granule) {
    refused(
        &machine(g),
        |t| set_matrix(t, &[[0, 0, 10], [0, 1, 25], [1, 0, 30], [1, 1, 10]]),
        "distance-matrix: node 0 to node 1 is 25 but node 1 to node 0 is 30: want the same both ways",
    );
}

fn self_distance_20(g: Granule) {
    refused(
        &machine(g),
        |t| set_matrix(t, &[[0, 0, 10], [0, 1, 25], [1, 0, 25], [1, 1, 20]]),
        "distance 20 from node 1 to itself (distance-matrix entry 3): must be 10",
    );
}

fn missing_distance_pair(g: Granule) {
    refused(
        &machine(g),
        |t| set_matrix(t, &[[0, 0, 10], [1, 1, 10]]),
        "distance-matrix has no distance between node 0 and node 1: a map gives every pair of nodes that exist",
    );
}

/// The harness's own check: the dump re-encoded unchanged boots with QEMU's two nodes and
/// distance 25, no refusal.
fn unchanged_dump_boots_two_nodes(g: Granule) {
    let c = machine(g);
    let dir = hotmem_tests::test_log_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let tree = dump(&c, &dir);
    let mut b = boot_on(&c, &tree, &dir);
    if b.boot_log.contains("unusable") {
        b.fail("the unchanged dump was refused");
    }
    let numa = b.guest("numa");
    let head = lines_with(&numa, &["numa: nodes="])
        .first()
        .map(|l| l.to_string())
        .unwrap_or_default();
    let want = [(0, "0", "10,25"), (1, "1", "25,10")];
    let ok = kv(&head, "nodes") == Some("2")
        && kv(&head, "source") == Some("device-tree")
        && want.iter().all(|&(n, cpus, d)| {
            node_field(&numa, n, "cpus") == cpus
                && node_field(&numa, n, "distances") == d
                && node_field(&numa, n, "present_bytes") == GIB.to_string()
        });
    if !ok {
        b.fail(&format!(
            "`numa` is not QEMU's two nodes of 1 GiB at distance 25:\n{numa}"
        ));
    }
    let check = b.guest("meminfo check");
    if !check.contains("meminfo check: ok") {
        b.fail(&format!("meminfo check:\n{check}"));
    }
    keeps_running(b);
}

cases! { unchanged_dump_boots_two_nodes =>
    unchanged_dump_boots_two_nodes_4k: Granule::K4;
}

cases! { cpu_without_node =>
    cpu_without_node_4k: Granule::K4;
}

cases! { cpu_node_beyond_max =>
    cpu_node_beyond_max_4k: Granule::K4;
    cpu_node_beyond_max_16k: Granule::K16;
    cpu_node_beyond_max_64k: Granule::K64;
}

cases! { asymmetric_distances =>
    asymmetric_distances_4k: Granule::K4;
}

cases! { self_distance_20 =>
    self_distance_20_4k: Granule::K4;
}

cases! { missing_distance_pair =>
    missing_distance_pair_4k: Granule::K4;
}
