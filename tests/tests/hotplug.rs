//! Memory hotplug in QEMU (issue: hotplug core). Two kinds of cases per configuration:
//! - the in-guest test kernel with `-smp 4`, 2 GiB held back by `mem=1G` and 50
//!   probe → online (each policy) → stress → offline (migrating) → remove cycles, plus the
//!   fault-on-every-CPU, Busy and bad-request cases;
//! - the shell scenario of docs/hotplug.md ("Try it"), driven through the console of the normal kernel.

use hotmem_qemu::config::BootMode::{self, Firmware, Kernel};
use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_tests::{cases, failure_report, BootCase};

/// The in-guest hotplug cycles on 4 vCPUs; 50 cycles take 15-100 s of a loaded 2-core host: a
/// longer deadline.
fn cycles(g: Granule, va: u32, boot: BootMode) {
    BootCase::new(g, va, boot)
        .smp(4)
        .long(3)
        .append("mem=1G ktest.hotplug_cycles=50")
        .expect_ktest_pass();
}

cases! { cycles =>
    hotplug_cycles_4k_39: K4, 39, Firmware;
    hotplug_cycles_4k_48: K4, 48, Kernel;
    hotplug_cycles_16k_36: K16, 36, Kernel;
    hotplug_cycles_16k_47: K16, 47, Firmware;
    hotplug_cycles_16k_48: K16, 48, Firmware;
    hotplug_cycles_64k_42: K64, 42, Firmware;
    hotplug_cycles_64k_48: K64, 48, Kernel;
}

/// `probe 0x80000000 SIZE; online N movable; blocks; stress; offline N; remove; blocks; poweroff`.
fn shell_scenario(g: Granule, va: u32) {
    let (size, id) = match g {
        K64 => (0x2000_0000u64, 4),
        _ => (0x800_0000u64, 16),
    };
    let probe = format!("probe 0x80000000 {size:#x}");
    let online = format!("online {id} movable");
    let offline = format!("offline {id}");
    let remove = format!("remove 0x80000000 {size:#x}");
    let cmds = [
        probe.as_str(),
        online.as_str(),
        "blocks",
        "stress 8M",
        offline.as_str(),
        "stress verify",
        remove.as_str(),
        "blocks",
        "stress free",
        "poweroff",
    ];
    let (r, out) = BootCase::new(g, va, Firmware).run(&cmds);
    let text = out.console.clone();
    let fail = |why: &str| -> ! { panic!("{}", failure_report(&r, &out, why)) };
    if !out.success() {
        fail("did not exit 0");
    }
    let block_line = format!("block: id={id} range=0x80000000-");
    let appearances = text.lines().filter(|l| l.starts_with(&block_line)).count();
    if appearances != 1 {
        fail(&format!(
            "block {id} listed {appearances} times (want once: online before remove, gone after)"
        ));
    }
    if !text
        .lines()
        .any(|l| l.starts_with(&block_line) && l.contains("state=online zone=Movable") && l.contains("vmemmap_pages="))
    {
        fail("the new block is not listed online in ZONE_MOVABLE");
    }
    for want in [
        "probe: added=",
        "online: block=",
        "offline: block=",
        "remove: removed=",
        "stress: verify",
        "result=ok",
    ] {
        if !text.contains(want) {
            fail(&format!("missing `{want}`"));
        }
    }
    if text.contains("error:") || text.contains("result=FAILED") {
        fail("a command reported an error");
    }
}

#[test]
fn hotplug_shell_4k() {
    shell_scenario(K4, 48);
}
#[test]
fn hotplug_shell_16k() {
    shell_scenario(K16, 47);
}
#[test]
fn hotplug_shell_64k() {
    shell_scenario(K64, 48);
}

/// One hot-add of a huge held-back range (`mem=1G` of `-m 1G+SIZE`, RAM behind a
/// `reserve=off` backend, so QEMU allocates only what the guest touches) → online → allocate
/// 1 GiB → offline → remove, in the test kernel's `held_back_range_add_allocate_offline_remove`
/// with deferred struct page init. One CPU (no idle CPU initialises the rest in the
/// background, which would touch all of its memmap), `debug_vm=off` (its full recount after
/// each of thousands of operations would dominate; the case checks the invariants once at the
/// end) and `memmap_poison=off` (poisoning writes the whole memmap).
fn huge_range_cycle(g: Granule, va: u32, total: &str) {
    let case = BootCase::new(g, va, Kernel)
        .ktest(true)
        .smp(1)
        .long(3)
        .mem(total)
        .append("mem=1G debug_vm=off memmap_poison=off ktest.only=held_back_range_add_allocate_offline_remove");
    let backend = format!("memory-backend-ram,id=ram0,size={total},reserve=off");
    let r = case
        .qemu_run()
        .args(["-object", backend.as_str(), "-machine", "memory-backend=ram0"]);
    let _slot = hotmem_tests::QemuSlot::acquire();
    let out = r
        .run::<&str>(&[])
        .unwrap_or_else(|e| panic!("[{}] cannot start QEMU: {e}", r.describe()));
    if let Err(why) = hotmem_tests::check_ktest_passed(&out) {
        panic!("{}", failure_report(&r, &out, &why));
    }
    if let Some(line) = out.console.lines().find(|l| l.starts_with("ktest: held_back_range")) {
        eprintln!("{line}");
    }
}

#[test]
fn huge_range_cycle_4k_256g() {
    huge_range_cycle(K4, 48, "257G");
}

#[test]
fn huge_range_cycle_64k_1t() {
    huge_range_cycle(K64, 48, "1025G");
}
