//! Bad inputs get a clear answer: each test gives the kernel one kind of
//! input that used to panic it, hang it, kill its boot or leave a DIMM stuck, asserts the exact
//! error line, and then that the kernel still answers a command with its counters (free pages,
//! page-table pages, memmap bytes, heap in use) back at their baseline.
//!
//! RAM sizes that are not whole GiB are in the boot matrix (`ram_*`).

use hotmem_qemu::cli::{self, Action};
use hotmem_qemu::config::BootMode::Firmware;
use hotmem_qemu::config::Granule::{K16, K4, K64};
use hotmem_qemu::console::Console;
use hotmem_qemu::console::ConsoleError;
use hotmem_qemu::run::QemuRun;
use hotmem_qemu::util::tail_lines;
use hotmem_tests::dimm::DimmCase;
use hotmem_tests::parse::{kv, parse_blocks, parse_meminfo, DimmEvent, Meminfo};
use hotmem_tests::{
    cases, check_ktest_passed, failure_report, kernel, qemu_path, run_timeout, BootCase, QemuSlot, TAIL_LINES,
};

/// A booted shell kernel driven command by command.
struct Shell {
    what: String,
    con: Console,
    boot_log: String,
    _slot: QemuSlot,
}

impl Shell {
    fn boot(case: BootCase) -> Shell {
        let (r, con, slot) = case.ktest(false).spawn();
        let mut s = Shell {
            what: r.describe(),
            con,
            boot_log: String::new(),
            _slot: slot,
        };
        match s.con.wait_for_prompt() {
            Ok(t) => s.boot_log = t,
            Err(e) => s.fail(&format!("no prompt after boot: {e}")),
        }
        s
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "\n[{}] {why}\n--- console tail ---\n{}\n--- stderr ---\n{}\n",
            self.what,
            tail_lines(&self.con.output(), TAIL_LINES),
            self.con.stderr_output()
        )
    }

    fn cmd(&mut self, cmd: &str) -> String {
        match self.con.command(cmd) {
            Ok(resp) => resp,
            Err(e @ (ConsoleError::Timeout { .. } | ConsoleError::Exited { .. } | ConsoleError::Io(_))) => {
                self.fail(&format!("`{cmd}`: {e}"))
            }
        }
    }

    /// `meminfo`'s counters and heap in use.
    fn counters(&mut self) -> (Meminfo, u64) {
        let out = self.cmd("meminfo");
        let heap = out
            .lines()
            .find(|l| l.starts_with("meminfo: ram_bytes="))
            .and_then(|l| kv(l, "heap_used"))
            .and_then(|v| v.parse().ok());
        match (parse_meminfo(&out), heap) {
            (Some(m), Some(h)) => (m, h),
            _ => self.fail(&format!("cannot parse meminfo: {out:?}")),
        }
    }

    /// The response must contain exactly the line `want`.
    fn expect_line(&self, cmd: &str, resp: &str, want: &str) {
        if !resp.lines().any(|l| l.trim_end() == want) {
            self.fail(&format!("`{cmd}`: expected the line\n  {want}\ngot:\n{resp}"));
        }
    }

    /// The kernel still answers, and its counters are back at `base` (the heap may differ by
    /// the shell's line buffer growing).
    fn expect_baseline(&mut self, base: (Meminfo, u64)) {
        let now = self.counters();
        if now.0 != base.0 || now.1 > base.1 + 512 {
            self.fail(&format!("counters not at baseline: before {base:?}, now {now:?}"));
        }
    }
}

fn shell_4k() -> BootCase {
    BootCase::new(K4, 48, Firmware)
}

/// `stress` of 768 MiB on 4K used to panic ("memory allocation of 6291456 bytes
/// failed": its bookkeeping Vec outgrew the kernel heap). Now it succeeds, and `stress free`
/// gives the heap back.
#[test]
fn stress_beyond_old_heap_limit() {
    let mut s = Shell::boot(shell_4k());
    let base = s.counters();
    let r = s.cmd("stress 768M");
    let want = "stress: allocated=196608 bytes=805306368 verified=196608 bad=0 result=ok";
    if !r.lines().any(|l| l.starts_with(want)) {
        s.fail(&format!(
            "`stress 768M`: expected a line starting with `{want}`, got:\n{r}"
        ));
    }
    let r = s.cmd("stress verify");
    s.expect_line(
        "stress verify",
        &r,
        "stress: verify allocations=196608 verified=196608 bad=0 result=ok nodes=0:196608",
    );
    let r = s.cmd("stress free");
    s.expect_line("stress free", &r, "stress: freed=196608");
    s.expect_baseline(base);
}

/// More than the handle table can track: a clear error, the allocations kept, and
/// `stress free` releases them and the heap.
#[test]
fn stress_beyond_bookkeeping_is_an_error() {
    let mut s = Shell::boot(shell_4k().no_append());
    let base = s.counters();
    let r = s.cmd("stress 2900M");
    let line = r.lines().find(|l| l.starts_with("stress: "));
    let ok = line.is_some_and(|l| {
        l.starts_with("stress: error: the kernel heap cannot track more than ")
            && l.trim_end()
                .ends_with(" at once) (the allocations made are kept; 'stress free' releases them)")
    });
    if !ok {
        s.fail(&format!(
            "`stress 2900M`: expected the bookkeeping error line, got:\n{r}"
        ));
    }
    let r = s.cmd("stress free");
    if !r.contains("stress: freed=") {
        s.fail(&format!("`stress free`: {r}"));
    }
    s.expect_baseline(base);
}

/// `bench reps=1000000 128M` used to run for minutes and then panic.
#[test]
fn bench_reps_are_bounded() {
    let mut s = Shell::boot(shell_4k());
    let base = s.counters();
    let r = s.cmd("bench reps=1000000 128M");
    s.expect_line(
        "bench reps=1000000 128M",
        &r,
        "bench: error: reps=1000000 is more than 1000 (every rep adds, onlines, offlines and removes each size twice)",
    );
    s.expect_baseline(base);
}

/// `pin` of a range with no free kernel page walked all of RAM collecting the pages it passed
/// over in a heap Vec, which outgrew the heap on 3 GiB (panic). Now they are chained through
/// the pages themselves.
#[test]
fn pin_without_a_page_in_range() {
    let mut s = Shell::boot(shell_4k().no_append());
    let base = s.counters();
    let r = s.cmd("pin 0 0x1000");
    s.expect_line(
        "pin 0 0x1000",
        &r,
        "pin: error: no free kernel page in 0x0+0x1000 (is it online in ZONE_NORMAL?)",
    );
    s.expect_baseline(base);
}

/// Argument errors say what was wrong, not just the usage; a zero size
/// is "empty", not "not aligned"; `touch` refuses device memory; arrow keys and Ctrl-U edit
/// the line instead of typing `[A`.
#[test]
fn argument_errors_say_what_was_wrong() {
    let mut s = Shell::boot(shell_4k());
    let base = s.counters();
    for (cmd, want) in [
        ("online 16 bogus", "error: 'bogus' is not a zone (kernel, movable or auto)"),
        ("online 16 kernel extra", "error: unexpected argument 'extra'"),
        ("probe a b extra", "error: unexpected argument 'extra'"),
        ("probe 0x80000000", "error: missing argument(s)"),
        (
            "probe 0x80000000 0",
            "probe: error: range 0x80000000+0x0 is empty: the size must be a non-zero multiple of the memory block size 0x8000000",
        ),
        (
            "touch 0xffff820000000000",
            "touch: error: 0xffff820000000000 is in the ioremap window (device registers: a read can have side effects)",
        ),
    ] {
        let r = s.cmd(cmd);
        s.expect_line(cmd, &r, want);
    }
    // Up/down arrows, then the command; a mistyped line erased with Ctrl-U, then the command.
    for typed in ["\x1b[A\x1b[Bcpus", "bogus\x15cpus"] {
        let r = s.cmd(typed);
        if !r.lines().any(|l| l.starts_with("cpus: online=2 ")) {
            s.fail(&format!("{typed:?} should run `cpus`, got:\n{r}"));
        }
    }
    s.expect_baseline(base);
}

/// `bench` sizes that cannot be hot-added are refused before anything runs.
#[test]
fn bench_sizes_are_checked() {
    let mut s = Shell::boot(shell_4k());
    let base = s.counters();
    for (cmd, want) in [
        (
            "bench 0",
            "bench: error: size 0x0 is not a non-zero multiple of the memory block size (128 MiB)",
        ),
        (
            "bench 0xffffffffffffffff",
            "bench: error: size 0xffffffffffffffff is not a non-zero multiple of the memory block size (128 MiB)",
        ),
    ] {
        let r = s.cmd(cmd);
        s.expect_line(cmd, &r, want);
        if r.lines().filter(|l| l.starts_with("bench:")).count() > 1 {
            s.fail(&format!("`{cmd}`: expected only the error line, got:\n{r}"));
        }
    }
    s.expect_baseline(base);
}

/// `mem=1` used to boot into a FATAL; it is refused like `mem=0`.
#[test]
fn tiny_mem_limit_is_refused() {
    for (arg, shown) in [("mem=1", "mem=1"), ("mem=0", "mem=0"), ("mem=63M", "mem=63M")] {
        let mut s = Shell::boot(shell_4k().mem("1G").append(arg));
        s.expect_line(
            arg,
            &s.boot_log,
            &format!("cmdline: bad value in '{shown}' (want a size of at least 64M, like 1G), ignored"),
        );
        let (m, _) = s.counters();
        if m.ram_bytes != 1 << 30 {
            s.fail(&format!("{arg} ignored: expected all 1 GiB of RAM in use, got {m:?}"));
        }
    }
}

/// More CPUs than the kernel supports: it says how many stay off and why.
#[test]
fn cpus_beyond_the_limit_are_explained() {
    let mut s = Shell::boot(shell_4k().smp(12).gic(3));
    s.expect_line(
        "--smp 12",
        &s.boot_log,
        "smp: 4 of the 12 CPUs in the device tree stay off: this kernel brings up at most 8 (smp::MAX_CPUS: per-CPU stacks, mailboxes and timer state are fixed arrays)",
    );
    let r = s.cmd("cpus");
    s.expect_line("cpus", &r, "cpus: online=8 mask=0xff");
}

/// `help` is aligned (every help text starts in one column) and the first prompt
/// comes with a hint of what to type.
#[test]
fn help_is_aligned_and_the_first_prompt_has_a_hint() {
    let mut s = Shell::boot(shell_4k());
    s.expect_line(
        "boot",
        &s.boot_log,
        "Type 'help' for the commands; 'meminfo' shows memory, 'blocks' the memory blocks, 'poweroff' quits.",
    );
    let r = s.cmd("help");
    const COL: usize = 2 + 36 + 1;
    let lines: Vec<&str> = r.lines().map(str::trim_end).filter(|l| l.starts_with("  ")).collect();
    let mut rows = 0;
    for (i, l) in lines.iter().enumerate() {
        let b = l.as_bytes();
        let aligned = b.len() > COL && b[COL - 1] == b' ' && b[COL] != b' ';
        // A usage too long for the column stands alone, its help on the next line.
        let long_usage = !aligned
            && b[2] != b' '
            && lines
                .get(i + 1)
                .is_some_and(|n| n.len() > COL && n[..COL].trim().is_empty());
        if aligned {
            rows += 1;
        } else if !long_usage {
            s.fail(&format!("help line not aligned at column {COL}: {l:?}\n{r}"));
        }
    }
    if rows < 20 {
        s.fail(&format!("expected at least 20 help rows, saw {rows}:\n{r}"));
    }
}

/// The README's (and docs/runner.md's) `cargo run -- --granule 64k --ktest --gic 3 --el2`
/// through the runner's own option parsing: `--ktest` holds RAM back by default, so every case passes.
#[test]
fn ktest_readme_example_passes() {
    let args = ["--granule", "64k", "--ktest", "--gic", "3", "--el2"];
    let Ok(Action::Run(o)) = cli::parse_args(args) else {
        panic!("cannot parse {args:?}");
    };
    let run: QemuRun = o
        .qemu_run(qemu_path(), kernel(o.kernel), None)
        .echo(false)
        .timeout(Some(run_timeout()));
    let _slot = QemuSlot::acquire();
    let out = run
        .run::<&str>(&[])
        .unwrap_or_else(|e| panic!("[{}] cannot start QEMU: {e}", run.describe()));
    if let Err(why) = check_ktest_passed(&out) {
        panic!("{}", failure_report(&run, &out, &why));
    }
}

/// A guest `remove` of a DIMM's memory behind the DIMM
/// driver is refused; `dimms` and QEMU still agree, and the DIMM unplugs normally.
fn remove_behind_dimm(g: hotmem_qemu::config::Granule) {
    let mut d = DimmCase::new(g, 2).start();
    let base = d.meminfo();
    let size = 2 * d.block;
    let p = d.plug_ok(size, "dimm0");
    let addr = p.addr.unwrap();
    let blocks: Vec<_> = parse_blocks(&d.guest("blocks"))
        .into_iter()
        .filter(|b| b.start >= addr && b.end <= addr + size)
        .collect();
    for b in &blocks {
        let r = d.guest(&format!("offline {}", b.id));
        if !r.contains("offline: block=") {
            d.fail(&format!("offline {}: {r}", b.id));
        }
    }
    let dimms_before = d.guest("dimms");
    let cmd = format!("remove {addr:#x} {size:#x}");
    let r = d.guest(&cmd);
    let want = format!(
        "remove: error: memory block {} belongs to DIMM group {}: DIMM memory is removed by unplugging the DIMM (:unplug on the host), not by remove",
        blocks[0].id, blocks[0].group
    );
    if !r.lines().any(|l| l.trim_end() == want) {
        d.fail(&format!("`{cmd}`: expected\n  {want}\ngot:\n{r}"));
    }
    if d.guest("dimms") != dimms_before {
        d.fail("`dimms` changed after a refused remove");
    }
    // Still usable: online again (QEMU and the guest agree), then unplug through the driver.
    for b in &blocks {
        let r = d.guest(&format!("online {}", b.id));
        if !r.contains("online: block=") {
            d.fail(&format!("online {}: {r}", b.id));
        }
    }
    d.check_agree("after the refused remove");
    d.unplug_ok("dimm0");
    let now = d.meminfo();
    if now != base {
        d.fail(&format!("counters not at baseline after unplug: {base:?} -> {now:?}"));
    }
    d.powerdown();
}

cases! { remove_behind_dimm =>
    remove_behind_dimm_refused_4k: K4;
    remove_behind_dimm_refused_64k: K64;
}

/// One DIMM split across zones (`offline 16; online 16 kernel` with block 17
/// MOVABLE) is refused; the block can be onlined into the DIMM's zone, and the DIMM unplugs.
fn dimm_zone_split(g: hotmem_qemu::config::Granule) {
    let mut d = DimmCase::new(g, 2).start();
    let base = d.meminfo();
    let size = 2 * d.block;
    let p = d.plug_ok(size, "dimm0");
    let ev = DimmEvent::parse(p.guest_line.as_deref().unwrap_or("")).unwrap();
    let zone = ev.zones[0].clone();
    let (other, other_kw) = if zone == "Movable" {
        ("kernel", "movable")
    } else {
        ("movable", "kernel")
    };
    let first = ev.blocks[0];
    let r = d.guest(&format!("offline {first}"));
    if !r.contains("offline: block=") {
        d.fail(&format!("offline {first}: {r}"));
    }
    let group = parse_blocks(&d.guest("blocks"))
        .into_iter()
        .find(|b| b.id == first)
        .map(|b| b.group)
        .unwrap_or_default();
    let cmd = format!("online {first} {other}");
    let r = d.guest(&cmd);
    let want = format!(
        "online: error: memory block {first} is part of DIMM group {group}, whose other blocks are online in {zone}: a DIMM stays in one zone (online it as {other_kw}, or offline the whole DIMM first)"
    );
    if !r.lines().any(|l| l.trim_end() == want) {
        d.fail(&format!("`{cmd}`: expected\n  {want}\ngot:\n{r}"));
    }
    let r = d.guest(&format!("online {first}"));
    if !r.contains(&format!("online: block={first} zone={zone} ")) {
        d.fail(&format!("`online {first}` should follow the DIMM into {zone}: {r}"));
    }
    d.check_agree("after the refused split");
    d.unplug_ok("dimm0");
    let now = d.meminfo();
    if now != base {
        d.fail(&format!("counters not at baseline after unplug: {base:?} -> {now:?}"));
    }
    d.powerdown();
}

cases! { dimm_zone_split =>
    dimm_zone_split_refused_4k: K4;
    dimm_zone_split_refused_16k: K16;
}
