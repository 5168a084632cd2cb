//! The machines of the benches: RAM behind `reserve=off` backends, so QEMU allocates only what
//! the guest touches and a large held-back range costs nothing until the bench adds it.

use std::path::Path;

use mm::size::Size;

use crate::kernel::Kernel;
use crate::run::{Machine, QemuRun};

const GIB: u64 = 1 << 30;

/// A run of `kernel` on `cpu` with `mem` bytes of RAM behind a `reserve=off` backend: QEMU
/// allocates only what the guest touches, so sizes far beyond the host's memory are cheap.
pub fn lazy_ram_run(qemu: &Path, kernel: Kernel, cpu: &str, mem: u64) -> QemuRun {
    let mem = Size(mem).to_string();
    QemuRun::new(kernel)
        .qemu(qemu)
        .machine(Machine {
            cpu: cpu.into(),
            mem: mem.clone(),
            ..Machine::default()
        })
        .args([
            "-object".to_string(),
            format!("memory-backend-ram,id=ram0,size={mem},reserve=off"),
            "-machine".into(),
            "memory-backend=ram0".into(),
        ])
}

/// [`lazy_ram_run`] with two NUMA nodes: node 0 the first GiB and both CPUs, node 1 `remote`
/// bytes and no CPU (what `mem=1G` holds back for the bench).
pub fn remote_node_run(qemu: &Path, kernel: Kernel, cpu: &str, remote: u64) -> QemuRun {
    let backend = |id: &str, size: u64| format!("memory-backend-ram,id={id},size={},reserve=off", Size(size));
    QemuRun::new(kernel)
        .qemu(qemu)
        .machine(Machine {
            cpu: cpu.into(),
            mem: Size(GIB + remote).to_string(),
            ..Machine::default()
        })
        .args([
            "-object".to_string(),
            backend("node0", GIB),
            "-object".into(),
            backend("node1", remote),
            "-numa".into(),
            "node,nodeid=0,cpus=0-1,memdev=node0".into(),
            "-numa".into(),
            "node,nodeid=1,memdev=node1".into(),
        ])
}
