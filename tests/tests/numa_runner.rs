//! The runner's NUMA options against a real QEMU: `--numa` nodes (one of them memory-less, the
//! hotplug target) with a DIMM plugged on that node and a virtio-mem device on it. Host-side
//! facts only: QEMU accepts the machine without a warning, the guest boots and takes the DIMM,
//! QEMU places the DIMM and the device on the node asked for (`:dimms`, `:vmems`), and a `:plug` typed for a node the machine lacks is refused
//! before anything is added.

use hotmem_qemu::cli::{self, Action};
use hotmem_qemu::config::Granule;
use hotmem_qemu::session::Session;
use hotmem_tests::{cases, kernel, qemu_path, run_timeout, CliRun, QemuSlot};

/// `--exec` as a person would type it.
fn dimm_on_a_memoryless_node(g: Granule) {
    let r = CliRun::run(&[
        "--granule",
        g.name(),
        "--boot",
        "firmware",
        "--numa",
        "1G,1G,0",
        "--virtio-mem",
        "1G,node=2",
        "--exec",
        ":plug 1G node=2; :dimms; :vmems; poweroff",
    ]);
    r.expect_ok(&[
        "plug: id=dimm0 ost_status=0x0 ok",
        "size=1G node=2 hotplugged=true",
        "region=1G",
        "node=2 memdev=mem-vmem0",
    ]);
    if let Some(w) = r.out.stderr.lines().find(|l| l.contains("warning")) {
        r.fail(&format!("QEMU warned about the machine: {w}"));
    }
}

/// A host command typed at the prompt (not checked with the options, as `--exec` is): the
/// node count comes from QEMU, and nothing is added for a node it lacks.
fn plug_on_a_missing_node_is_refused(g: Granule) {
    let args = ["--granule", g.name(), "--numa", "1G,0"];
    let Ok(Action::Run(o)) = cli::parse_args(args) else {
        panic!("{args:?} do not parse");
    };
    let run = o
        .qemu_run(qemu_path(), kernel(o.kernel), None)
        .echo(false)
        .timeout(Some(run_timeout()));
    let _slot = QemuSlot::acquire();
    let mut s = Session::start(run).unwrap_or_else(|e| panic!("{e}"));
    let r = s.host(":plug 1G node=2");
    assert_eq!(
        r.lines,
        ["plug: error: node=2 does not exist: the machine has 2 NUMA nodes (0-1; add nodes with --numa, e.g. --numa 1G,0)"]
    );
    assert!(r.error);
    assert!(
        !s.qmp.objects().unwrap().iter().any(|o| o.starts_with("mem-")),
        "a backend was added"
    );
    assert_eq!(s.host(":dimms").lines, ["dimms: none"]);
    let st = s.guest_exit("poweroff").unwrap();
    assert!(st.success(), "{st}");
}

cases! { dimm_on_a_memoryless_node =>
    dimm_on_a_memoryless_node_4k: Granule::K4;
}

cases! { plug_on_a_missing_node_is_refused =>
    plug_on_a_missing_node_is_refused_4k: Granule::K4;
}
