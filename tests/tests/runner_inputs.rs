//! The runner's side of bad inputs: every runner input gets a clear answer, and DIMM state on the
//! host cannot get stuck.
//!
//! Host-only (fast: argument parsing, no QEMU):
//! - `bad_runner_arguments_get_clear_errors`: the table of bad inputs and their exact answers;
//! - `exec_host_commands_are_checked_up_front`: unknown or malformed `:` commands, and
//!   `:plug`/`:unplug`/`:powerdown` without `--boot firmware`, are refused before building;
//! - `gdb_port_zero_and_gdb_timeouts`;
//! - `smp_above_the_kernel_limit_is_refused`;
//! - `mem_slots_without_maxmem`.
//!
//! With QEMU (4k-48, a few seconds each):
//! - `late_eject_deletes_the_backend`: the VM is paused (QMP `stop`, as gdb holds it)
//!   so `:unplug` gets no answer in time; after `cont` the guest ejects, and the runner deletes
//!   the backend at its next host command (the next `:plug` gets `dimm0` again);
//! - `exit_reports_what_is_left`: DIMMs and backends still present when a run ends are
//!   reported, and a late eject after which QEMU exited is reported too;
//! - `kernel_boot_refuses_ged_commands` (items 7 and 10): `--boot kernel --mem 1G,slots=4`
//!   boots (QEMU used to refuse `slots=` without `maxmem=`), `:powerdown` and `:plug` answer
//!   "needs --boot firmware" at once instead of hanging, and the guest still answers.

use std::time::{Duration, Instant};

use hotmem_qemu::cli::{self, Action, Options};
use hotmem_qemu::config::{kernel_max_cpus, Granule, KernelConfig};
use hotmem_qemu::host_cmd::UnplugResult;
use hotmem_qemu::run::QemuRun;
use hotmem_qemu::session::{is_dimm_event_line, Session};
use hotmem_tests::{kernel, qemu_path, run_timeout, QemuSlot};

const MIB: u64 = 1 << 20;

fn parse(args: &[&str]) -> Result<Options, String> {
    match cli::parse_args(args.iter().copied())? {
        Action::Run(o) => Ok(o),
        Action::Help => Err("help".into()),
    }
}

fn err(args: &[&str]) -> String {
    match parse(args) {
        Ok(o) => panic!("{args:?} was accepted: {o:?}"),
        Err(e) => e,
    }
}

/// Input → the exact error the runner prints after `hotmem: ` (exit status 2).
const BAD: &[(&[&str], &str)] = &[
    (&["--mem", "0"], "invalid value '0' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': memory size `0` must be larger than zero"),
    (&["--mem", "1.5G"], "invalid value '1.5G' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': invalid memory size `1.5G` (examples: 1G, 512M, 2048 = MiB)"),
    (&["--mem", "64M"], "invalid value '64M' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': memory size `64M` is too small (at least 128M)"),
    (&["--mem", "1G,"], "invalid value '1G,' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': empty memory option in `1G,` (a stray `,`?)"),
    (&["--mem", "1G,foo=1"], "invalid value '1G,foo=1' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': invalid memory option `foo=1` in `1G,foo=1` (expected slots=N or maxmem=SIZE)"),
    (&["--mem", "1G,slots=300,maxmem=40G"], "invalid value '1G,slots=300,maxmem=40G' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': slots=300 in `1G,slots=300,maxmem=40G`: QEMU supports at most 256 DIMM slots"),
    (&["--mem", "1G,slots=4,maxmem=512M"], "invalid value '1G,slots=4,maxmem=512M' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': maxmem=512M in `1G,slots=4,maxmem=512M` is below the RAM size 1G (maxmem is RAM + room for DIMMs)"),
    (&["--mem", "1G,slots=4,maxmem=1G"], "invalid value '1G,slots=4,maxmem=1G' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': maxmem=1G in `1G,slots=4,maxmem=1G` leaves no room for DIMMs: make it larger than the RAM size 1G, or leave it out"),
    (&["--mem", "1G,slots=1,slots=2"], "invalid value '1G,slots=1,slots=2' for '--mem <SIZE[,slots=N,maxmem=SIZE]>': `slots=` given twice in `1G,slots=1,slots=2`"),
    (&["--granule", "8k"], "invalid value '8k' for '--granule <4k|16k|64k>': unknown granule `8k` (expected 4k, 16k or 64k)"),
    (&["--granule"], "a value is required for '--granule <4k|16k|64k>' but none was supplied"),
    (&["--va", "47", "--granule", "4k"], "invalid configuration: granule 4k with 47-bit VA is not supported; valid pairs are 4k: 39, 48 (default 48); 16k: 36, 47, 48 (default 47); 64k: 42, 48 (default 48)"),
    (&["--smp", "1.5"], "invalid value '1.5' for '--smp <N>': invalid digit found in string"),
    (&["--gic", "4"], "invalid value '4' for '--gic <2|3>': unknown GIC version `4` (expected 2 or 3)"),
    (&["--boot", "uefi"], "invalid value 'uefi' for '--boot <firmware|kernel|image|pflash>': unknown boot mode `uefi` (expected firmware, kernel, image or pflash)"),
    (&["--timeout", "-1"], "invalid value '-1' for '--timeout <SECS>': expected seconds >= 0"),
    (&["--gdb-port", "70000"], "invalid value '70000' for '--gdb-port <N>': expected a TCP port, 1 to 65535 (or 0: any free port)"),
    (&["--cpu", " "], "invalid value ' ' for '--cpu <NAME>': needs a CPU model name"),
    (&["--exec", " ; "], "--exec ` ; ` has no commands (e.g. --exec 'meminfo; poweroff')"),
    (&["--exec", ":bogus"], "--exec `:bogus`: unknown host command `:bogus` (`:help` lists them: :plug, :unplug, :dimms, :vmem, :vmems, :qmp, :hmp, :reset, :powerdown)"),
    (&["--exec", ":plug 1X"], "--exec `:plug 1X`: `1X` is not a size (examples: 1G, 512M, 0x8000000)"),
    (&["--exec", ":unplug"], "--exec `:unplug`: usage: :unplug ID"),
    (&["--exec", ":plug 0"], "--exec `:plug 0`: size `0` must be larger than zero"),
    (&["--exec", ":qmp {bad"], "--exec `:qmp {bad`: invalid JSON: key must be a string at line 1 column 2"),
    (&["--ktest=1"], "unexpected value '1' for '--ktest' found; no more were expected"),
    (&["-x"], "unexpected argument '-x' found"),
];

#[test]
fn bad_runner_arguments_get_clear_errors() {
    let mut wrong = Vec::new();
    for (args, want) in BAD {
        let got = err(args);
        if got != *want {
            wrong.push(format!("{args:?}\n   got:  {got}\n   want: {want}"));
        }
    }
    assert!(wrong.is_empty(), "unclear or changed answers:\n{}", wrong.join("\n"));
}

/// Commands that need the GED (firmware boot) are refused before anything runs.
#[test]
fn exec_host_commands_are_checked_up_front() {
    for boot in ["kernel", "image"] {
        for cmd in [":powerdown", ":plug 128M", ":unplug dimm0"] {
            let e = err(&["--boot", boot, "--exec", &format!("meminfo; {cmd}; poweroff")]);
            assert!(
                e.starts_with(&format!(
                    "--exec `{cmd}`: {} needs --boot firmware",
                    cmd.split(' ').next().unwrap()
                )) && e.ends_with(&format!("not with --boot {boot}")),
                "{e}"
            );
        }
        // What works without the GED stays allowed.
        parse(&["--boot", boot, "--exec", ":dimms; :qmp query-status; :reset; poweroff"]).unwrap();
    }
    parse(&["--exec", ":plug 128M; :unplug dimm0; :powerdown"]).unwrap();
}

/// A script that never ends the guest is pointed out before it waits a whole timeout.
#[test]
fn script_without_poweroff_is_noted() {
    let note = |args: &[&str]| cli::script_end_note(&parse(args).unwrap());
    assert_eq!(
        note(&["--exec", "meminfo"]).as_deref(),
        Some("note: the script ends with `meminfo`, not `poweroff`: QEMU keeps running until its timeout (60 s, --timeout)")
    );
    assert_eq!(
        note(&["--gdb", "--exec", ":dimms"]).as_deref(),
        Some("note: the script ends with `:dimms`, not `poweroff`: QEMU keeps running until you quit it (no timeout)")
    );
    assert_eq!(note(&["--exec", "meminfo; poweroff"]), None);
    assert_eq!(note(&["--exec", ":plug 1G; :powerdown"]), None);
    assert_eq!(note(&["--ktest"]), None);
    assert_eq!(note(&[]), None);
}

#[test]
fn gdb_port_zero_and_gdb_timeouts() {
    let o = parse(&["--gdb-port", "0"]).unwrap();
    let p = o.resolve_gdb_port().unwrap().expect("a port");
    assert_ne!(p, 0, "--gdb-port 0 must pick a real port");
    // The port is free: QEMU can listen on it.
    std::net::TcpListener::bind(("127.0.0.1", p)).expect("the chosen port is free");
    assert_eq!(
        parse(&["--gdb-port", "4444"]).unwrap().resolve_gdb_port().unwrap(),
        Some(4444)
    );
    assert_eq!(parse(&[]).unwrap().resolve_gdb_port().unwrap(), None);
    // A person at the debugger: no timeout unless one is given.
    for args in [
        &["--gdb", "--exec", "poweroff"][..],
        &["--gdb", "--ktest"],
        &["--gdb-port", "0", "--exec", "x"],
    ] {
        assert_eq!(parse(args).unwrap().effective_timeout(), None, "{args:?}");
    }
    assert_eq!(
        parse(&["--gdb", "--exec", "x", "--timeout", "5"])
            .unwrap()
            .effective_timeout(),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        parse(&["--exec", "x"]).unwrap().effective_timeout(),
        Some(cli::DEFAULT_BATCH_TIMEOUT)
    );
}

#[test]
fn smp_above_the_kernel_limit_is_refused() {
    // The kernel's own constant (platform/src/kernel/smp.rs), whatever it is (docs/runner.md: 8).
    let max = kernel_max_cpus();
    assert_eq!(
        parse(&["--smp", &max.to_string(), "--gic", "3"]).unwrap().machine.smp,
        max
    );
    for n in [max + 1, 300, 512] {
        assert_eq!(
            err(&["--smp", &n.to_string(), "--gic", "3"]),
            format!("invalid value '{n}' for '--smp <N>': the kernel runs at most {max} CPUs (MAX_CPUS in platform/src/kernel/smp.rs); give --smp 1 to {max}")
        );
    }
    assert_eq!(
        err(&["--smp", "0"]),
        format!("invalid value '0' for '--smp <N>': expected 1 to {max} CPUs")
    );
}

#[test]
fn mem_slots_without_maxmem() {
    let k = |o: &Options| hotmem_qemu::kernel::Kernel::paths(std::path::Path::new("/ws"), o.kernel);
    for boot in ["firmware", "kernel"] {
        let o = parse(&["--boot", boot, "--mem", "1G,slots=4"]).unwrap();
        assert_eq!(
            o.qemu_run("qemu".into(), k(&o), None).machine.mem,
            "1G,slots=4,maxmem=33G"
        );
    }
    let o = parse(&["--mem", "2G,slots=2,maxmem=4G"]).unwrap();
    assert_eq!(
        o.qemu_run("qemu".into(), k(&o), None).machine.mem,
        "2G,slots=2,maxmem=4G"
    );
}

fn k4() -> hotmem_qemu::kernel::Kernel {
    kernel(KernelConfig::default_for(Granule::K4))
}

fn start(run: QemuRun) -> Session {
    let mut s = Session::start(run).unwrap_or_else(|e| panic!("{e}"));
    s.guest_timeout = Some(Duration::from_secs(30));
    s.boot().unwrap_or_else(|e| panic!("boot: {e}"));
    s
}

fn firmware_run() -> QemuRun {
    QemuRun::new(k4())
        .qemu(qemu_path())
        .mem("1G,slots=4,maxmem=9G")
        .timeout(Some(run_timeout()))
}

/// Plugs 128 MiB as dimm0, pauses the VM, and lets `:unplug dimm0` time out.
fn unplug_while_paused(s: &mut Session) {
    let p = s.plug(128 * MIB, None).unwrap();
    assert!(p.ok() && p.id == "dimm0", "{}", p.line());
    s.qmp.execute("stop", None).unwrap();
    s.timeouts.unplug = Duration::from_secs(2);
    let u = s.unplug("dimm0").unwrap();
    assert!(matches!(u.result, UnplugResult::NoAnswer { .. }), "{:?}", u.lines());
    let line = &u.lines()[0];
    assert!(
        line.contains("if the guest ejects it later the runner deletes its backend then"),
        "{line}"
    );
}

/// Resumes the VM and waits for the guest's eject line.
fn resume_and_wait_for_eject(s: &mut Session) {
    let from = s.console.output_len();
    s.qmp.execute("cont", None).unwrap();
    let l = s
        .wait_line(from, Duration::from_secs(30), "the late eject", |l| {
            is_dimm_event_line(l, 0, true)
        })
        .unwrap();
    assert!(
        l.is_some_and(|l| l.contains("ejected")),
        "the guest did not eject dimm0 after cont"
    );
    // The guest prints its line as it ejects; QEMU's DEVICE_DELETED follows on the QMP socket.
    // Give it time to arrive, so the next host command sees it (under load it can lag).
    std::thread::sleep(Duration::from_secs(1));
}

#[test]
fn late_eject_deletes_the_backend() {
    let _slot = QemuSlot::acquire();
    let mut s = start(firmware_run());
    unplug_while_paused(&mut s);
    resume_and_wait_for_eject(&mut s);
    // The next host command (any) first handles the late DEVICE_DELETED.
    let r = s.host(":dimms");
    assert!(
        r.lines[0].starts_with("unplug: id=dimm0 deleted late: the guest ejected it ")
            && r.lines[0].ends_with("after device_del, after the runner stopped waiting; backend mem-dimm0 deleted"),
        "{:?}",
        r.lines
    );
    assert_eq!(r.lines[1..], ["dimms: none"]);
    let objects = s.qmp.objects().unwrap();
    assert!(!objects.iter().any(|o| o == "mem-dimm0"), "backend leaked: {objects:?}");
    // So the name is free again, and the DIMM machinery works as before.
    let p = s.plug(128 * MIB, None).unwrap();
    assert!(p.ok() && p.id == "dimm0", "{}", p.line());
    s.timeouts.unplug = Duration::from_secs(30);
    let u = s.unplug("dimm0").unwrap();
    assert!(u.deleted(), "{:?}", u.lines());
    assert!(s.guest("meminfo").unwrap().contains("meminfo:"));
    let st = s.guest_exit("poweroff").unwrap();
    assert!(st.success(), "{st}");
    let out = s.finish();
    assert!(out.exit_report.is_empty(), "{:?}", out.exit_report);
}

/// On exit the runner reports what is still there.
#[test]
fn exit_reports_what_is_left() {
    let _slot = QemuSlot::acquire();
    // QEMU still running at the end (killed): asked of QEMU.
    let mut s = start(firmware_run());
    unplug_while_paused(&mut s);
    let out = s.finish();
    assert_eq!(
        out.exit_report,
        ["exit: DIMM dimm0 (backend mem-dimm0) was still plugged at exit (its unplug got no answer)"]
    );
    // The guest ejects late and powers off before another host command: reported, with QEMU
    // gone; a DIMM plugged and left is reported from the runner's own records.
    let mut s = start(firmware_run());
    unplug_while_paused(&mut s);
    resume_and_wait_for_eject(&mut s);
    let p = s.plug(128 * MIB, Some("left")).unwrap();
    assert!(p.ok(), "{}", p.line());
    let st = s.guest_exit("poweroff").unwrap();
    assert!(st.success(), "{st}");
    let out = s.finish();
    assert_eq!(out.exit_report.len(), 2, "{:?}", out.exit_report);
    assert!(
        out.exit_report[0].starts_with("unplug: id=dimm0 deleted late")
            && out.exit_report[0].ends_with("; QEMU has exited (backend mem-dimm0 went with it)"),
        "{:?}",
        out.exit_report
    );
    assert_eq!(
        out.exit_report[1],
        "exit: DIMM left (backend mem-left) was still plugged when QEMU exited"
    );
}

/// Items 7 and 10 with QEMU: a kernel boot with `slots=` and no `maxmem=` starts, and the
/// commands that need the GED say so at once.
#[test]
fn kernel_boot_refuses_ged_commands() {
    let o = parse(&["--boot", "kernel", "--mem", "1G,slots=4", "--exec", "poweroff"]).unwrap();
    let run = o
        .qemu_run(qemu_path(), k4(), None)
        .echo(false)
        .timeout(Some(run_timeout()));
    let _slot = QemuSlot::acquire();
    let mut s = start(run);
    for (cmd, name) in [
        (":powerdown", "powerdown"),
        (":plug 128M", "plug"),
        (":unplug dimm0", "unplug"),
    ] {
        let t = Instant::now();
        let r = s.host(cmd);
        assert!(r.error, "{cmd}: {:?}", r.lines);
        assert_eq!(
            r.lines,
            [format!(
                "{name}: error: needs --boot firmware: this machine has no ACPI GED (QEMU gives `virt` one, \
                 with DIMM hotplug and the power button, only when the kernel is loaded with -bios)"
            )]
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{cmd} took {:?}", t.elapsed());
        assert!(
            s.guest("cpus").unwrap().contains("cpus: online="),
            "the guest stopped answering after {cmd}"
        );
    }
    // `:dimms` works without ACPI: nothing plugged.
    assert_eq!(s.host(":dimms").lines, ["dimms: none"]);
    let st = s.guest_exit("poweroff").unwrap();
    assert!(st.success(), "{st}");
    let out = s.finish();
    assert!(out.exit_report.is_empty(), "{:?}", out.exit_report);
}

/// Items 6 and 13 through the `--exec` driver: a script that pauses the VM goes on with its
/// host commands (the runner says the VM is paused instead of waiting for a prompt), and the
/// late eject after `:qmp cont` is handled at the next prompt, with no host command after it.
#[test]
fn paused_vm_in_a_script() {
    let _slot = QemuSlot::acquire();
    let mut s = Session::start(firmware_run()).unwrap_or_else(|e| panic!("{e}"));
    s.timeouts.unplug = Duration::from_secs(2);
    let out = s.run_script(&[
        ":plug 128M",
        ":qmp stop",
        ":unplug dimm0",
        ":qmp cont",
        "meminfo",
        "cpus",
        "cpus",
        "poweroff",
    ]);
    assert!(out.success(), "{}\n{}\n{}", out.describe(), out.host, out.tail(30));
    let host: Vec<&str> = out.host.lines().collect();
    let paused = "hotmem: the VM is paused: guest commands wait until it runs again (`:qmp cont`)";
    assert_eq!(host.iter().filter(|l| **l == paused).count(), 2, "{host:#?}");
    let late: Vec<&&str> = host
        .iter()
        .filter(|l| l.starts_with("unplug: id=dimm0 deleted late"))
        .collect();
    assert_eq!(late.len(), 1, "{host:#?}");
    // Deleted while QEMU ran, not merely gone with it at exit.
    assert!(late[0].ends_with("; backend mem-dimm0 deleted"), "{host:#?}");
    assert!(out.exit_report.is_empty(), "{:?}", out.exit_report);
}

/// A duplicate `:plug` id is refused before QEMU sees it, and a DIMM
/// refused only because a refused one sits below it says so.
#[test]
fn plug_answers_name_the_cause() {
    let _slot = QemuSlot::acquire();
    let mut s = start(firmware_run());
    let r = s.host(":plug 128M x");
    assert!(!r.error, "{:?}", r.lines);
    let r = s.host(":plug 128M x");
    assert_eq!(
        r.lines,
        ["plug: error: id `x` is in use (DIMM x is plugged): `:unplug x` first, or choose another ID"]
    );
    assert!(s.host(":unplug x").lines[0].starts_with("unplug: id=x deleted"));
    // 64 MiB is no memory block: refused. QEMU puts the next DIMM right after it, so a good
    // size is misaligned and refused too: the answer says which DIMM to unplug.
    let small = s.plug(64 * MIB, Some("small")).unwrap();
    assert!(
        matches!(small.result, hotmem_qemu::host_cmd::PlugResult::Refused { .. }),
        "{}",
        small.line()
    );
    assert!(!small.line().contains("still plugged below it"), "{}", small.line());
    let next = s.plug(128 * MIB, Some("next")).unwrap();
    assert!(
        next.line().ends_with(
            " (the refused DIMM small is still plugged below it and QEMU placed this one after it: `:unplug small` first)"
        ),
        "{}",
        next.line()
    );
    assert!(s.guest("cpus").unwrap().contains("cpus: online="));
    s.finish();
}
