//! Hotplug under fire in real QEMU, every granule, GICv2 and GICv3, 4 CPUs, `debug_vm` on:
//! `torture` runs on every CPU but the boot CPU (random allocations from every zone, per-CPU
//! patterns written through the movable window and the linear map, verified) while the host
//! plugs and unplugs a DIMM and grows and shrinks a virtio-mem device, twice; the hot-added
//! memory is onlined movable, so the workers' window pages land in it and are migrated under
//! their writes when it goes. After each step QEMU and the guest agree on the memory and the
//! workers report no lost write; at the end `meminfo check` is ok.
//!
//! `torture_soak_*` (ignored: `cargo test -p hotmem-tests --test torture -- --ignored`) is the
//! long run: `HOTMEM_SOAK_SECS` (default 600) of the same cycle with `HOTMEM_SOAK_SMP` CPUs
//! (default 8), printing the workers' figures each cycle.

use std::time::{Duration, Instant};

use hotmem_qemu::config::BootMode;
use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_qemu::run::VirtioMem;
use hotmem_tests::cases;
use hotmem_tests::dimm::{DimmSession, GIB};
use hotmem_tests::parse::kv;
use hotmem_tests::vmem::vmem_case;

/// A firmware boot with DIMM slots, one 2 GiB virtio-mem device and `smp` CPUs.
fn start(g: Granule, gic: u32, smp: u32, timeout: Duration) -> DimmSession {
    let mut c = vmem_case(g);
    c.boot = BootMode::Firmware;
    c.machine.mem = "1G,slots=4,maxmem=12G".into();
    c.machine.smp = smp;
    c.machine.gic = if gic == 3 {
        hotmem_qemu::config::GicVersion::V3
    } else {
        hotmem_qemu::config::GicVersion::V2
    };
    c.machine.virtio_mem = vec![VirtioMem::new(2 * GIB)];
    c.timeout = timeout;
    c.append("memhp_default_state=online_movable").start()
}

/// The workers' figures from a `torture:` line.
struct Figures {
    workers: u64,
    ops: u64,
    violations: u64,
    waits: u64,
}

fn figures(d: &mut DimmSession, cmd: &str) -> Figures {
    let t = d.guest(cmd);
    let Some(line) = t
        .lines()
        .find(|l| l.trim_start().starts_with("torture: ") && l.contains("ops="))
    else {
        d.fail(&format!("`{cmd}` printed no figures: {t}"));
    };
    let n = |k: &str| kv(line, k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
    Figures {
        workers: n("workers"),
        ops: n("ops"),
        violations: n("violations"),
        waits: n("migration_waits"),
    }
}

/// DIMM in, virtio-mem grown, then both taken away under the workers' writes.
fn cycle(d: &mut DimmSession, round: u32) -> Figures {
    d.plug_ok(GIB, "dimm0");
    d.vmem_ok("vmem0", GIB);
    // Let the workers' allocations reach the new memory.
    std::thread::sleep(Duration::from_millis(500));
    let during = figures(d, "torture status");
    d.vmem_ok("vmem0", 0);
    d.unplug_ok("dimm0");
    d.check_agree(&format!("after round {round}"));
    d.check_vmem_agree(&format!("after round {round}"));
    let after = figures(d, "torture status");
    if after.violations != 0 || after.ops <= during.ops {
        d.fail(&format!(
            "round {round}: violations={} (want 0), ops {} → {} (the workers must keep going)",
            after.violations, during.ops, after.ops
        ));
    }
    after
}

fn torture(g: Granule, gic: u32) {
    let mut d = start(g, gic, 4, hotmem_tests::dimm::GUEST_STEP_TIMEOUT * 20);
    let t = d.guest("torture start");
    if !t.contains("torture: started workers=3") {
        d.fail(&format!("torture start: {t}"));
    }
    for round in 0..2 {
        cycle(&mut d, round);
    }
    let end = figures(&mut d, "torture stop");
    if end.violations != 0 || end.workers != 3 {
        d.fail(&format!(
            "at the end: violations={} workers={} (want 0 and 3)",
            end.violations, end.workers
        ));
    }
    let t = d.guest("meminfo check");
    if !t.contains("meminfo check: ok") {
        d.fail(&format!("invariants after the torture: {t}"));
    }
    d.powerdown();
}

cases! { torture =>
    torture_4k_gic2: K4, 2;
    torture_16k_gic3: K16, 3;
    torture_64k_gic2: K64, 2;
}

fn soak(g: Granule) {
    let secs: u64 = std::env::var("HOTMEM_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let smp: u32 = std::env::var("HOTMEM_SOAK_SMP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut d = start(g, 3, smp, Duration::from_secs(secs + 600));
    let t = d.guest("torture start");
    if !t.contains("torture: started") {
        d.fail(&format!("torture start: {t}"));
    }
    let t0 = Instant::now();
    let mut round = 0;
    while t0.elapsed().as_secs() < secs {
        let f = cycle(&mut d, round);
        eprintln!(
            "soak {g:?} round={round} s={} ops={} ops_per_s={} migration_waits={} violations={}",
            t0.elapsed().as_secs(),
            f.ops,
            f.ops / t0.elapsed().as_secs().max(1),
            f.waits,
            f.violations
        );
        round += 1;
    }
    let end = figures(&mut d, "torture stop");
    eprintln!(
        "soak {g:?} done: rounds={round} seconds={} workers={} ops={} violations={} migration_waits={}",
        t0.elapsed().as_secs(),
        end.workers,
        end.ops,
        end.violations,
        end.waits
    );
    if end.violations != 0 {
        d.fail(&format!("soak: {} violations", end.violations));
    }
    let t = d.guest("meminfo check");
    if !t.contains("meminfo check: ok") {
        d.fail(&format!("invariants after the soak: {t}"));
    }
    d.powerdown();
}

macro_rules! soaks {
    ($($name:ident: $g:expr;)*) => {$(
        #[test]
        #[ignore = "long run: cargo test -p hotmem-tests --test torture -- --ignored"]
        fn $name() {
            soak($g);
        }
    )*};
}

soaks! {
    torture_soak_4k: K4;
    torture_soak_16k: K16;
    torture_soak_64k: K64;
}
