//! virtio-mem in real QEMU, every granule (default VA sizes), `debug_vm` on (every
//! allocator and hotplug invariant checked after each hotplug operation), `-kernel` boots
//! unless said otherwise; after every resize QEMU (`query-memory-devices`) and the guest
//! (`vmem`, `blocks`, `meminfo check`) must agree.
//!
//! - `grow_shrink_*`: 0 → 1 GiB → 3 GiB → 512 MiB → 0; RAM follows; at 0 the free pages, page
//!   tables and memmap are back at their boot values and nothing of the region is mapped.
//! - `stress_*`: shrink with stress data in the device's memory (migrated, each page once,
//!   checksums hold);
//!   with a pinned kernel page in it the shrink gives back all but the pinned page's device
//!   block and says why it stopped, memory stays usable, and after `unpin` the next request
//!   completes.
//! - `bad_input_*`: QEMU's refusals (not a block multiple, beyond the region) are reported; a
//!   device whose region is not aligned to a memory block is refused and left untouched; sizes
//!   that are not memory-block multiples work in sub-block mode (one block past a memory block,
//!   then one device block).
//! - `reset_*`: `system_reset` with memory plugged (QEMU unplugs it all on reset): the new
//!   boot plugs the still-requested size again by itself.
//! - `big_block_*`: `block=1G` (several memory blocks per device block); `small_block_4k`:
//!   `block=1M` (smaller than a pageblock: whole memory blocks, a size between stops short).
//! - `two_devices_firmware_*`: two devices and a DIMM in a `-bios` boot, each its own group.
//! - `burst_*`: 50 random resize requests in a row without waiting (Image boot), then one
//!   waited for: the guest ends at the last one and agrees with QEMU.
//! - `split_*`: a shrink that ends inside a memory block, below a free max-order block
//!   (`2 blocks → 1 block + 38 MiB → 2 blocks → 0`, eager memmap init): the free block is cut at the device
//!   block's edge, `meminfo check` and the managed pages hold after every step, and the memory
//!   is usable afterwards (all free memory filled, verified, freed).
//! - `retry_*`: a shrink stopped by a pinned page is retried: on the next request for the same
//!   size, and by the driver's timer with nobody asking (`vmem` shows `state=stopped` with the
//!   reason and the next retry meanwhile).
//! - `reproductions_*`: the shrink-split and retry scripts exactly as a user types them (exit
//!   0, `meminfo check: ok` after every step); a script whose host command fails exits 1.
//! - `acceptance_*`: the docs/hotplug.md command (virtio-mem section) through the runner's own option parsing and `--exec`.

use std::time::Instant;

use hotmem_qemu::config::BootMode;
use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_qemu::host_cmd::{vmem_set_requested, VmemResult};
use hotmem_qemu::run::VirtioMem;
use hotmem_tests::dimm::{block_size, DimmSession, GIB, MIB};
use hotmem_tests::parse::{kv, parse_blocks, parse_dimms, parse_vmem};
use hotmem_tests::vmem::vmem_case;
use hotmem_tests::{cases, CliRun};

/// Region of the device in the default case (QEMU places it right after 1 GiB of RAM).
const REGION: u64 = 0x8000_0000;

/// Pages the allocator manages (all zones), from `meminfo`.
fn managed_pages(d: &mut DimmSession) -> u64 {
    let t = d.guest("meminfo");
    t.lines()
        .filter(|l| l.trim().starts_with("meminfo: zone="))
        .filter_map(|l| kv(l, "managed_pages")?.parse::<u64>().ok())
        .sum()
}

/// Only plugged memory reaches the allocator: managed pages = boot + plugged pages − the
/// self-hosted memmap pages of the device's blocks.
fn check_managed(d: &mut DimmSession, boot: u64, plugged: u64, when: &str) {
    let page_shift = d.config.granule.page_shift();
    let blocks = parse_blocks(&d.guest("blocks"));
    let memmap: u64 = blocks.iter().filter(|b| !b.early).map(|b| b.vmemmap_pages).sum();
    let want = boot + (plugged >> page_shift) - memmap;
    let got = managed_pages(d);
    if got != want {
        d.fail(&format!(
            "{when}: the allocator manages {got} pages, expected {boot} + {} plugged − {memmap} memmap",
            plugged >> page_shift
        ));
    }
}

fn meminfo_check(d: &mut DimmSession, when: &str) {
    let t = d.guest("meminfo check");
    if !t.contains("meminfo check: ok") {
        d.fail(&format!("invariants broken {when}: {t}"));
    }
}

fn grow_shrink(g: Granule) {
    let mut d = vmem_case(g).start();
    let boot = d.meminfo();
    d.check_vmem_agree("after boot");
    for size in [GIB, 3 * GIB, 512 * MIB, 0] {
        d.vmem_ok("vmem0", size);
        let when = format!("at {size:#x}");
        d.check_vmem_agree(&when);
        let m = d.meminfo();
        if m.ram_bytes != boot.ram_bytes + size {
            d.fail(&format!(
                "{when}: RAM {:#x}, expected {:#x} + {size:#x}",
                m.ram_bytes, boot.ram_bytes
            ));
        }
    }
    let m = d.meminfo();
    if (m.free_pages, m.pt_pages, m.memmap_bytes) != (boot.free_pages, boot.pt_pages, boot.memmap_bytes) {
        d.fail(&format!("back at 0: {m:?}, at boot {boot:?}"));
    }
    d.check_unmapped(REGION, 3 * GIB);
    d.poweroff();
}

fn stress(g: Granule) {
    let unit = block_size(g);
    let mut d = vmem_case(g).start();
    let boot = d.meminfo();
    // Movable device memory fills first: half of it holds stress data when it goes.
    d.vmem_ok("vmem0", GIB);
    d.stress(GIB / 2);
    let r = d.vmem_ok("vmem0", 0);
    d.stress_verify();
    // Each used page moves once: targets come from below what the shrink takes away.
    let used = (GIB / 2) >> g.page_shift();
    let migrated = r
        .guest_line
        .as_deref()
        .and_then(|l| kv(l, "migrated_pages"))
        .and_then(|v| v.parse::<u64>().ok());
    if migrated.is_none_or(|m| m > used) {
        d.fail(&format!(
            "the shrink moved {migrated:?} pages for {used} used: {}",
            r.line()
        ));
    }
    d.check_vmem_agree("after the shrink with data");
    d.guest("stress free");

    // A kernel page pinned in the first unit (onlined to the kernel zone): that unit cannot go.
    d.guest("policy default online_kernel");
    d.vmem_ok("vmem0", 2 * unit);
    let t = d.guest(&format!("pin {REGION:#x} {unit:#x}"));
    if !t.contains("pin: pfn=") {
        d.fail(&format!("pin: {t}"));
    }
    // Sub-block mode gives back every device block but the pinned one's.
    let r = d.vmem_stopped("vmem0", 0, "memory busy");
    if r.plugged_after == 0 || r.plugged_after > unit {
        d.fail(&format!(
            "expected part of the pinned block to stay plugged: {}",
            r.line()
        ));
    }
    let q = d.qemu_vmems();
    if q[0].size != r.plugged_after || q[0].requested != 0 {
        d.fail(&format!("QEMU should show plugged > requested: {q:?}"));
    }
    d.check_vmem_agree("after the refused shrink");
    d.stress(unit / 2);
    d.stress_verify();
    d.guest("stress free");
    d.guest("unpin");
    // The next request completes.
    d.vmem_ok("vmem0", unit);
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("after unpin");
    let m = d.meminfo();
    if (m.free_pages, m.pt_pages, m.memmap_bytes) != (boot.free_pages, boot.pt_pages, boot.memmap_bytes) {
        d.fail(&format!("back at 0: {m:?}, at boot {boot:?}"));
    }
    d.poweroff();
}

fn bad_input(g: Granule) {
    let unit = block_size(g);
    let mut c = vmem_case(g);
    // A second device placed 2 MiB past a memory block boundary (room: maxmem given).
    c.machine.mem = "1G,maxmem=8G".into();
    let bad = REGION + 5 * GIB + 2 * MIB;
    c.args = vec![
        "-object".into(),
        "memory-backend-ram,id=mem-bad,size=1G".into(),
        "-device".into(),
        format!("virtio-mem-pci,id=bad,memdev=mem-bad,memaddr={bad:#x}"),
    ];
    let mut d = c.start();
    let boot_managed = managed_pages(&mut d);
    let want = format!("region {bad:#x}+1 GiB is not aligned to the ");
    if !d.boot_log.contains(&want) {
        d.fail(&format!(
            "no refusal of the misaligned device ({want:?}) in the boot log"
        ));
    }
    for (cmd, qemu_says) in [
        (":vmem vmem0 3M", "has to be multiples of 'block-size'"),
        (":vmem vmem0 8G", "cannot exceed"),
    ] {
        let r = d.session().host(cmd);
        if !r.error || !r.text().contains(qemu_says) {
            d.fail(&format!("{cmd}: expected QEMU's error {qemu_says:?}, got {}", r.text()));
        }
    }
    // Requests the guest cannot answer are answered at once, not after a timeout.
    for (cmd, says, before) in [
        (":vmem bad 128M", "the guest does not drive this device", None),
        (":vmem vmem0 512M", "the VM is paused", Some(":qmp stop")),
    ] {
        if let Some(b) = before {
            d.session().host(b);
        }
        let t0 = Instant::now();
        let r = d.session().host(cmd);
        if !r.error || !r.text().contains(says) || t0.elapsed().as_secs() > 5 {
            d.fail(&format!(
                "{cmd}: expected {says:?} at once, got {} after {:.1} s",
                r.text(),
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    d.session().host(":qmp cont");
    // Sub-block mode: one device block past a memory block is a second block, 1/N plugged.
    d.vmem_ok("vmem0", unit + 2 * MIB);
    let v = d.check_vmem_agree("one device block past a memory block");
    if v[0].mode != "sub-block" || v[0].sub_blocks.len() != 2 {
        d.fail(&format!("expected two memory blocks in sub-block mode: {v:?}"));
    }
    check_managed(
        &mut d,
        boot_managed,
        unit + 2 * MIB,
        "one device block past a memory block",
    );
    d.vmem_ok("vmem0", 2 * MIB);
    d.check_vmem_agree("at one device block");
    check_managed(&mut d, boot_managed, 2 * MIB, "at one device block");
    d.vmem_ok("vmem0", 0);
    let q = d.qemu_vmems();
    match q.iter().find(|v| v.id == "bad") {
        Some(v) if v.size == 0 && v.memaddr == bad => {}
        v => d.fail(&format!("the refused device should be untouched at {bad:#x}: {v:?}")),
    }
    let t = d.guest("vmem");
    let listed = t
        .lines()
        .filter(|l| l.trim().starts_with("vmem: dev=") && l.contains(" pci="))
        .count();
    if listed != 1 || t.contains(&format!("addr={bad:#x}")) {
        d.fail(&format!("the guest should list vmem0 only: {t}"));
    }
    meminfo_check(&mut d, "after the bad requests");
    d.poweroff();
}

fn reset(g: Granule) {
    let mut d = vmem_case(g).start();
    d.vmem_ok("vmem0", GIB);
    let from = d.session().console.output_len();
    // QEMU unplugs everything on a reset; the new boot finds nothing plugged (or, were
    // something left, sends UNPLUG_ALL) ...
    let log = d.reset();
    if !log.contains("virtio-mem: dev=0 ") || !log.contains("unplugged_at_start=0 B") {
        d.fail("the new boot did not find the device with nothing plugged");
    }
    // ... and plugs the still-requested size again by itself.
    let line = d
        .session()
        .wait_line(from, std::time::Duration::from_secs(30), "re-plug", |l| {
            l.contains("virtio-mem: dev=0") && l.contains("requested=0x40000000") && l.contains("event=done")
        });
    if !matches!(line, Ok(Some(_))) {
        d.fail(&format!("no virtio-mem re-plug after the reset: {line:?}"));
    }
    d.check_vmem_agree("after the reset");
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("at 0 after the reset");
    d.poweroff();
}

fn big_block(g: Granule) {
    let mut c = vmem_case(g);
    c.machine.virtio_mem = vec![VirtioMem::parse("4G,block=1G").unwrap()];
    let mut d = c.start();
    d.vmem_ok("vmem0", 2 * GIB);
    let v = d.check_vmem_agree("at 2G");
    if v[0].unit != GIB || v[0].units_plugged != 2 {
        d.fail(&format!("expected two 1 GiB units: {v:?}"));
    }
    d.vmem_ok("vmem0", GIB);
    d.check_vmem_agree("at 1G");
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("at 0");
    d.poweroff();
}

/// Device blocks smaller than a pageblock (1 MiB on 4K, pageblock 2 MiB): whole memory blocks
/// at a time; a size between two stops at the lower one and says why.
fn small_block(g: Granule) {
    let unit = block_size(g);
    let mut c = vmem_case(g);
    c.machine.virtio_mem = vec![VirtioMem::parse("4G,block=1M").unwrap()];
    let mut d = c.start();
    let r = d.vmem_stopped("vmem0", unit + MIB, "not a multiple of the");
    if r.plugged_after != unit {
        d.fail(&format!("expected {unit:#x} plugged: {}", r.line()));
    }
    let v = d.check_vmem_agree("between two memory blocks");
    if v[0].mode != "memory-block" {
        d.fail(&format!("expected memory-block mode: {v:?}"));
    }
    d.vmem_ok("vmem0", 2 * unit);
    d.check_vmem_agree("at two memory blocks");
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("at 0");
    d.poweroff();
}

fn two_devices_firmware(g: Granule) {
    let mut c = vmem_case(g);
    c.boot = BootMode::Firmware;
    // DIMM slots too: QEMU creates the GED's memory hotplug block only with slots.
    c.machine.mem = "1G,slots=4,maxmem=12G".into();
    c.machine.virtio_mem = vec![VirtioMem::new(2 * GIB), VirtioMem::new(GIB)];
    let mut d = c.start();
    d.vmem_ok("vmem0", GIB);
    d.plug_ok(GIB, "dimm0");
    d.vmem_ok("vmem1", GIB);
    let v = d.check_vmem_agree("with both grown and a DIMM");
    let dimm_group = parse_dimms(&d.guest("dimms")).dimms.first().map(|x| x.group.clone());
    if v.len() != 2 || v[0].group == v[1].group || dimm_group.as_ref().is_some_and(|g| v.iter().any(|x| x.group == *g))
    {
        d.fail(&format!(
            "expected two devices and the DIMM in three groups: {v:?}, DIMM group {dimm_group:?}"
        ));
    }
    d.check_agree("with both devices grown");
    d.vmem_ok("vmem0", 0);
    d.unplug_ok("dimm0");
    d.vmem_ok("vmem1", 0);
    d.check_vmem_agree("with both at 0");
    d.check_agree("with the DIMM gone");
    let r = d.vmem("vmem1", 0);
    if r.result != VmemResult::Already {
        d.fail(&format!(
            "a request for the plugged size needs no guest work: {}",
            r.line()
        ));
    }
    d.powerdown();
}

fn burst(g: Granule) {
    let unit = block_size(g);
    let mut c = vmem_case(g);
    c.boot = BootMode::Image;
    let mut d = c.start();
    let boot = d.meminfo();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let units = 3 * GIB / unit;
    for _ in 0..50 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = (x % (units + 1)) * unit;
        if let Err(e) = vmem_set_requested(&mut d.session().qmp, "vmem0", size) {
            d.fail(&format!("qom-set {size:#x}: {e}"));
        }
    }
    d.steps.push("50 requests sent".into());
    d.vmem_ok("vmem0", 4 * GIB);
    d.check_vmem_agree("after the burst");
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("at 0 after the burst");
    let m = d.meminfo();
    if (m.free_pages, m.pt_pages, m.memmap_bytes) != (boot.free_pages, boot.pt_pages, boot.memmap_bytes) {
        d.fail(&format!("back at 0: {m:?}, at boot {boot:?}"));
    }
    d.poweroff();
}

/// Fill all free memory but `keep` bytes with stress data, verify it, free it.
fn use_all_memory(d: &mut DimmSession, keep: u64) {
    let page = 1u64 << d.config.granule.page_shift();
    let free = d.meminfo().free_pages * page;
    d.stress(free.saturating_sub(keep) / page * page);
    d.stress_verify();
    d.guest("stress free");
    meminfo_check(d, "after filling all memory");
}

fn split(g: Granule) {
    let unit = block_size(g);
    // Struct pages written at add time, so free max-order blocks exist before the shrink (with
    // deferred init they exist once idle CPUs got to them).
    let mut d = vmem_case(g).append("memmap_init=eager").start();
    let boot_managed = managed_pages(&mut d);
    for size in [2 * unit, unit + 38 * MIB, 2 * unit, 0] {
        d.vmem_ok("vmem0", size);
        let when = format!("at {size:#x}");
        d.check_vmem_agree(&when);
        check_managed(&mut d, boot_managed, size, &when);
        if size == unit + 38 * MIB {
            use_all_memory(&mut d, 32 * MIB);
        }
    }
    d.vmem_ok("vmem0", 2 * unit);
    use_all_memory(&mut d, 32 * MIB);
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("at 0");
    d.poweroff();
}

fn retry(g: Granule) {
    let unit = block_size(g);
    let mut d = vmem_case(g).start();
    let boot_managed = managed_pages(&mut d);
    d.guest("policy default online_kernel");
    d.vmem_ok("vmem0", 2 * unit);
    let pin = REGION + unit;
    d.guest(&format!("pin {pin:#x} {unit:#x}"));
    d.vmem_stopped("vmem0", 0, "memory busy");
    let t = d.guest("vmem");
    if !(t.contains("state=stopped") && t.contains("next_retry_s=") && t.contains("unmovable page in use")) {
        d.fail(&format!("vmem should show the stopped request and its next retry: {t}"));
    }
    d.guest("unpin");
    // The same size again: a config change, so the driver retries now.
    d.vmem_ok("vmem0", 0);
    d.check_vmem_agree("after the retry of the same size");
    check_managed(&mut d, boot_managed, 0, "after the retry of the same size");
    // Nobody asks again: the driver's timer retries (first after 5 s).
    d.vmem_ok("vmem0", 2 * unit);
    d.guest(&format!("pin {pin:#x} {unit:#x}"));
    d.vmem_stopped("vmem0", 0, "memory busy");
    d.guest("unpin");
    let from = d.session().console.output_len();
    let line = d
        .session()
        .wait_line(from, std::time::Duration::from_secs(20), "timer retry", |l| {
            l.contains("virtio-mem: dev=0") && l.contains("requested=0x0 ") && l.contains("event=done")
        });
    if !matches!(line, Ok(Some(_))) {
        d.fail(&format!("no retry by the timer within 20 s: {line:?}"));
    }
    let t = d.guest("vmem");
    if !t.contains("state=idle") {
        d.fail(&format!("vmem should be idle after the retry: {t}"));
    }
    d.check_vmem_agree("after the timer's retry");
    use_all_memory(&mut d, 32 * MIB);
    d.poweroff();
}

/// The two reproductions of the data-loss and retry bugs, as a user types them: exit 0 with
/// `meminfo check: ok` throughout; and a script whose host command fails exits non-zero.
fn reproductions(g: Granule) {
    let (big, small) = match g {
        K4 => ("256M", "166M"),
        _ => ("1G", "550M"),
    };
    let split = format!(
        ":vmem vmem0 {big}; meminfo check; :vmem vmem0 {small}; meminfo check; :vmem vmem0 {big}; meminfo check; :vmem vmem0 0; meminfo check; poweroff"
    );
    let retry = format!(
        "policy default online_kernel; :vmem vmem0 {big}; pin {:#x} {:#x}; :vmem vmem0 0; unpin; :vmem vmem0 0; meminfo check; poweroff",
        REGION + block_size(g),
        block_size(g)
    );
    for script in [&split, &retry] {
        let args = [
            "--granule",
            g.name(),
            "--virtio-mem",
            "4G",
            "--append",
            "memmap_init=eager",
            "--exec",
            script,
        ];
        let r = CliRun::run(&args);
        r.expect_ok(&["vmem: id=vmem0 requested=0 plugged=0 done"]);
        let checks = r.out.console.matches("meminfo check: ok").count();
        if checks != script.matches("meminfo check").count() || r.out.console.contains("FAILED") {
            r.fail("expected `meminfo check: ok` after every step");
        }
    }
    let r = CliRun::run(&[
        "--granule",
        g.name(),
        "--virtio-mem",
        "4G",
        "--exec",
        ":vmem vmem0 3M; poweroff",
    ]);
    if r.out.host_exit_code() != 1 || !r.out.host_failed.iter().any(|c| c.contains("3M")) {
        r.fail("a failed host command must make the run exit 1");
    }
}

fn acceptance(g: Granule) {
    let script = ":vmem vmem0 2G; vmem; blocks; meminfo; :vmem vmem0 0; vmem; poweroff";
    let args = [
        "--granule",
        g.name(),
        "--boot",
        "kernel",
        "--virtio-mem",
        "4G",
        "--exec",
        script,
    ];
    let t = Instant::now();
    let r = CliRun::run(&args);
    r.expect_ok(&[
        "vmem: id=vmem0 requested=2G plugged=2G done",
        "vmem: id=vmem0 requested=0 plugged=0 done",
    ]);
    let (out, fail, what) = (&r.out, |why: &str| r.fail(why), &r.what);
    let parts: Vec<&str> = out.console.split("hotmem> vmem").collect();
    let v: Vec<_> = parts.iter().skip(1).map(|p| parse_vmem(p)).collect();
    if v.len() != 2 || v[0].first().map(|d| d.plugged) != Some(2 * GIB) || v[1].first().map(|d| d.plugged) != Some(0) {
        fail(&format!("expected `vmem` to show 2 GiB then 0 plugged: {v:?}"));
    }
    let online = out
        .console
        .lines()
        .filter(|l| l.starts_with("block: id=") && l.contains("early=false") && l.contains("state=online"))
        .count() as u64;
    if online * block_size(g) != 2 * GIB {
        fail(&format!("expected 2 GiB of online hot-added blocks, got {online}"));
    }
    eprintln!("[{what}] acceptance in {:.1} s", t.elapsed().as_secs_f64());
}

cases! { reproductions =>
    reproductions_4k: K4;
    reproductions_16k: K16;
    reproductions_64k: K64;
}

cases! { split =>
    split_4k: K4;
    split_16k: K16;
    split_64k: K64;
}

cases! { retry =>
    retry_4k: K4;
    retry_16k: K16;
    retry_64k: K64;
}

cases! { acceptance =>
    acceptance_4k: K4;
    acceptance_16k: K16;
    acceptance_64k: K64;
}

cases! { burst =>
    burst_4k: K4;
    burst_16k: K16;
    burst_64k: K64;
}

cases! { grow_shrink =>
    grow_shrink_4k: K4;
    grow_shrink_16k: K16;
    grow_shrink_64k: K64;
}

cases! { stress =>
    stress_4k: K4;
    stress_16k: K16;
    stress_64k: K64;
}

cases! { bad_input =>
    bad_input_4k: K4;
    bad_input_16k: K16;
    bad_input_64k: K64;
}

cases! { reset =>
    reset_4k: K4;
    reset_16k: K16;
    reset_64k: K64;
}

cases! { big_block =>
    big_block_4k: K4;
    big_block_16k: K16;
}

cases! { small_block =>
    small_block_4k: K4;
}

cases! { two_devices_firmware =>
    two_devices_firmware_64k: K64;
}
