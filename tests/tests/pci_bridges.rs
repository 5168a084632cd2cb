//! PCIe enumeration through bridges in real QEMU, every granule (default VA sizes), `-kernel`
//! boots with `debug_vm`: hotmem numbers the buses behind root ports and switches, opens their
//! windows, routes INTx through their swizzles, and finds the devices behind them.
//!
//! - `root_port_*`: a virtio-mem device behind a `pcie-root-port` (where libvirt puts it), an
//!   empty root port before it and a `virtio-rng-pci` on the root bus beside them. Resizes
//!   0 → 1 GiB → 3 GiB → 512 MiB → 0, QEMU and the guest agreeing after each, and the device's
//!   interrupt counter grows (the INTx reached the GIC through the root port).
//! - `switch_*`: two levels of ports: a root port, a switch (`x3130-upstream`) below it and two
//!   of its `xio3130-downstream` ports, a `virtio-rng-pci` behind one and the virtio-mem device
//!   behind the other; the same resizes and checks.
//! - `unplaceable_4k`: a device whose BAR cannot fit the host bridge's 32-bit window (a 1 GiB
//!   `ivshmem-plain` BAR) behind a root port gets one line saying it is left disabled, and the
//!   virtio-mem device beside it still works.

use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_tests::cases;
use hotmem_tests::dimm::{DimmCase, DimmSession, GIB, MIB};
use hotmem_tests::parse::{kv, virtio_mem_line};
use hotmem_tests::vmem::vmem_case;

/// A `-kernel` machine with 1 GiB of RAM, room for a 4 GiB virtio-mem device `vmem0` (backend
/// `mem-vmem0`), and `devices` (QEMU `-device` values, in order) before it; `bus` is where
/// the virtio-mem device goes.
fn bridged_case(g: Granule, devices: &[&str], bus: &str) -> DimmCase {
    let mut c = vmem_case(g);
    c.machine.virtio_mem.clear();
    c.machine.mem = "1G,maxmem=8G".into();
    for d in devices {
        c.args.extend(["-device".into(), (*d).into()]);
    }
    c.args.extend([
        "-object".into(),
        "memory-backend-ram,id=mem-vmem0,size=4G".into(),
        "-device".into(),
        format!("virtio-mem-pci,id=vmem0,memdev=mem-vmem0,bus={bus}"),
    ]);
    c
}

/// The guest's interrupt count for virtio-mem device 0 (`vmem`'s `irqs=`), and its `irq=`.
fn irqs(d: &mut DimmSession) -> (String, u64) {
    let t = d.guest("vmem");
    let line = t
        .lines()
        .find(|l| l.trim().starts_with("vmem: dev=0 pci="))
        .map(str::to_string);
    let Some(line) = line else {
        d.fail(&format!("no device in `vmem`: {t}"))
    };
    let irq = kv(&line, "irq").unwrap_or_default().to_string();
    let n = kv(&line, "irqs").and_then(|n| n.parse().ok());
    let Some(n) = n else {
        d.fail(&format!("no irqs= in {line}"))
    };
    (irq, n)
}

/// The device is found at `pci` (bus:device.function), resizes work there and are signalled by
/// its INTx.
fn resizes_behind_bridges(mut d: DimmSession, pci: &str) {
    let line = virtio_mem_line(&d.boot_log, 0).map(str::to_string);
    match line {
        Some(l) if kv(&l, "pci") == Some(pci) && l.contains("irq=intx:") => {}
        _ => d.fail(&format!("virtio-mem not found at {pci} with an INTx line: {line:?}")),
    }
    let (irq, before) = irqs(&mut d);
    d.check_vmem_agree("after boot");
    for size in [GIB, 3 * GIB, 512 * MIB, 0] {
        d.vmem_ok("vmem0", size);
        d.check_vmem_agree(&format!("at {size:#x}"));
    }
    let (_, after) = irqs(&mut d);
    // Each resize is one config-change interrupt at least (a request and its completion).
    if after < before + 4 {
        d.fail(&format!("{irq}: {before} interrupts before 4 resizes, {after} after"));
    }
    d.poweroff();
}

fn root_port(g: Granule) {
    let c = bridged_case(
        g,
        &[
            "pcie-root-port,id=rp0,chassis=1",
            "pcie-root-port,id=rp1,chassis=2",
            "virtio-rng-pci",
        ],
        "rp1",
    );
    resizes_behind_bridges(c.start(), "02:00.0");
}

fn switch(g: Granule) {
    let c = bridged_case(
        g,
        &[
            "pcie-root-port,id=rp0,chassis=1",
            "x3130-upstream,id=up0,bus=rp0",
            "xio3130-downstream,id=dn0,bus=up0,chassis=2,slot=0",
            "xio3130-downstream,id=dn1,bus=up0,chassis=3,slot=1",
            "virtio-rng-pci,bus=dn0",
        ],
        "dn1",
    );
    resizes_behind_bridges(c.start(), "04:00.0");
}

cases! { root_port =>
    root_port_4k: K4;
    root_port_16k: K16;
    root_port_64k: K64;
}

cases! { switch =>
    switch_4k: K4;
    switch_16k: K16;
    switch_64k: K64;
}

#[test]
fn unplaceable_4k() {
    let mut c = bridged_case(
        K4,
        &["pcie-root-port,id=rp0,chassis=1", "pcie-root-port,id=rp1,chassis=2"],
        "rp1",
    );
    c.args.extend([
        "-object".into(),
        "memory-backend-ram,id=shm0,size=1G".into(),
        "-device".into(),
        "ivshmem-plain,memdev=shm0,bus=rp0".into(),
    ]);
    let mut d = c.start();
    let want = "pci: 01:00.0 BAR2 of 0x40000000 bytes does not fit the 32-bit window: device left disabled";
    if !d.boot_log.lines().any(|l| l == want) {
        d.fail(&format!("no line {want:?} in the boot log"));
    }
    resizes_behind_bridges(d, "02:00.0");
}
