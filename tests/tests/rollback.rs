//! A failed offline or unplug leaves the allocator exactly as a successful online would,
//! on every granule (default VA sizes), in real QEMU with `debug_vm` on (the kernel
//! checks every allocator and hotplug invariant after each hotplug operation and stops on the
//! first broken one) and `meminfo check` after every step:
//!
//! - `probe_*`: `probe` a block held back by `mem=`, online it movable, fill all memory with
//!   `stress`, `offline` → refused with "no memory left to migrate into (N pages moved, M
//!   left)"; the data verifies, all free memory can be allocated, verified and freed; after
//!   `stress free` the offline succeeds and the block is removed.
//! - `dimm_*`: the same through an ACPI DIMM: the unplug is refused (`_OST` failure to QEMU),
//!   the DIMM stays usable, and after `stress free` a second `device_del` ejects it.

use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_tests::cases;
use hotmem_tests::dimm::{block_size, DimmCase, DimmSession};

/// Guest RAM base on QEMU virt.
const RAM_BASE: u64 = 0x4000_0000;

/// `meminfo check` → ok.
fn check(d: &mut DimmSession, when: &str) {
    let t = d.guest("meminfo check");
    if !t.contains("meminfo check: ok") {
        d.fail(&format!("invariants broken {when}: {t}"));
    }
}

/// Allocate all free pages but `leave` with `stress` (ZONE_MOVABLE fills first, so the pages
/// left are in ZONE_NORMAL), verify all stress data (old and new).
fn fill_all(d: &mut DimmSession, leave: u64) {
    let page = 1u64 << d.config.granule.page_shift();
    let free = d.meminfo().free_pages;
    if free > leave {
        d.stress((free - leave) * page);
    }
    let left = d.meminfo().free_pages;
    if left != leave.min(free) {
        d.fail(&format!("{left} pages free after allocating {free} - {leave}"));
    }
    d.stress_verify();
}

/// Room for a quarter of a block: the failing offline migrates that much, then runs out, so
/// the rollback has migrated (parked) pages next to parked free blocks to merge.
fn room(d: &DimmSession) -> u64 {
    (d.block >> d.config.granule.page_shift()) / 4
}

/// All free memory can be allocated, verified and freed; then the stress data is freed too.
fn fill_verify_free(d: &mut DimmSession, when: &str) {
    fill_all(d, 0);
    d.guest("stress free");
    check(d, when);
}

/// A refusal line says migration ran out of room after moving `moved` pages.
fn expect_no_room(d: &mut DimmSession, what: &str, text: &str, moved: u64) {
    let want = format!("no memory left to migrate into ({moved} pages moved, ");
    if !text.contains(&want) {
        d.fail(&format!("{what}: expected \"{want}M left)\", got {text:?}"));
    }
}

fn probe(g: Granule) {
    let b = block_size(g);
    let mut case = DimmCase::new(g, 3).append("mem=1G");
    case.machine.mem = "2G,slots=4,maxmem=4G".into();
    let mut d = case.start();
    let addr = RAM_BASE + (1 << 30);
    let block = addr / b;
    check(&mut d, "after boot");
    let t = d.guest(&format!("probe {addr:#x} {b:#x}"));
    if !t.contains("probe:") || t.contains("error") {
        d.fail(&format!("probe: {t}"));
    }
    d.guest(&format!("online {block} movable"));
    let room = room(&d);
    fill_all(&mut d, room);
    let t = d.guest(&format!("offline {block}"));
    expect_no_room(
        &mut d,
        "offline of a full block with room for a quarter of it",
        &t,
        room,
    );
    check(&mut d, "after the failed offline");
    d.stress_verify();
    // The block is online and usable: what migration freed in it can be allocated again.
    fill_verify_free(&mut d, "after filling the memory left by the failed offline");
    let t = d.guest(&format!("offline {block}"));
    if t.contains("error") {
        d.fail(&format!("retry of the offline after `stress free`: {t}"));
    }
    check(&mut d, "after the offline");
    let t = d.guest(&format!("remove {addr:#x} {b:#x}"));
    if t.contains("error") {
        d.fail(&format!("remove: {t}"));
    }
    fill_verify_free(&mut d, "after the remove");
}

fn dimm(g: Granule) {
    let mut d = DimmCase::new(g, 3).start();
    d.plug_ok(512 << 20, "dimm0");
    let room = room(&d);
    fill_all(&mut d, room);
    let u = d.unplug_refused("dimm0");
    let line = u.guest_line.clone().unwrap_or_default();
    expect_no_room(&mut d, "unplug of a full DIMM", &line, room);
    check(&mut d, "after the refused unplug");
    d.check_agree("after the refused unplug");
    d.stress_verify();
    fill_verify_free(&mut d, "after filling the memory left by the refused unplug");
    d.unplug_ok("dimm0");
    check(&mut d, "after the unplug");
    fill_verify_free(&mut d, "after the unplug");
    d.powerdown();
}

cases! { probe =>
    probe_4k: K4;
    probe_16k: K16;
    probe_64k: K64;
}

cases! { dimm =>
    dimm_4k: K4;
    dimm_16k: K16;
    dimm_64k: K64;
}
