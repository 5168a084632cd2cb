//! Shared helpers of the hotmem integration tests (`tests/tests/*.rs`).
//!
//! - Kernels are built lazily, once per configuration per test process, under the build lock of
//!   `hotmem-qemu` (builds of different configurations share one cargo output path).
//! - At most [`qemu_jobs`] QEMU processes run at once in a test process (TCG on 2 cores is fine
//!   two at a time); every run has a deadline and is SIGKILLed when it passes.
//! - Every QEMU run keeps its logs under `target/test-logs/<test binary>/<test>/`
//!   (`command.txt`, `serial.log`, `stderr.log`, `qmp.log`): [`test_log_dir`]. Failure messages
//!   name the configuration and that folder and show the last [`TAIL_LINES`] console lines.
//!
//! Environment: `HOTMEM_TEST_TIMEOUT` (seconds per QEMU run, default 120), `HOTMEM_QEMU_JOBS`
//! (parallel QEMU runs, default: available cores), `HOTMEM_QEMU` (path of the QEMU binary).

pub use hotmem_qemu;

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use hotmem_qemu::config::{BootMode, GicVersion, Granule, KernelConfig};
use hotmem_qemu::console::{Console, RunOutcome};
use hotmem_qemu::discover::{qemu_once, InstallPolicy};
use hotmem_qemu::kernel::{build_kernel_once, Kernel};
use hotmem_qemu::run::{Machine, QemuRun};

use crate::parse::kv;

/// Console lines shown in failure messages.
pub const TAIL_LINES: usize = 40;

/// The log folder of the next QEMU run of the current test:
/// `target/test-logs/<test binary>/<test>/` (the test is the libtest thread's name), emptied on
/// first use in this process; a test's second and later runs get `run-2/`, `run-3/`, ...
pub fn test_log_dir() -> std::path::PathBuf {
    static USED: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());
    let safe = |s: &str| s.replace(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c)), "_");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_else(|| "tests".into());
    let test = std::thread::current().name().unwrap_or("unnamed").to_string();
    let dir = target_dir().join("test-logs").join(safe(&binary)).join(safe(&test));
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let n = used.iter().filter(|d| **d == dir).count();
    if n == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    }
    used.push(dir.clone());
    if n == 0 {
        dir
    } else {
        dir.join(format!("run-{}", n + 1))
    }
}

/// The workspace's cargo target directory.
fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// `  logs: <dir>` for failure messages (empty without a log folder).
pub fn logs_line(r: &QemuRun) -> String {
    r.log_dir
        .as_ref()
        .map(|d| format!("\n  logs: {}", d.display()))
        .unwrap_or_default()
}

/// Per-run QEMU deadline: `HOTMEM_TEST_TIMEOUT` seconds, default 120.
pub fn run_timeout() -> Duration {
    let secs = std::env::var("HOTMEM_TEST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0);
    Duration::from_secs_f64(secs.unwrap_or(120.0))
}

/// How many QEMU processes may run at once: `HOTMEM_QEMU_JOBS`, default the available cores.
pub fn qemu_jobs() -> usize {
    std::env::var("HOTMEM_QEMU_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
}

struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

fn slots() -> &'static Slots {
    static S: OnceLock<Slots> = OnceLock::new();
    S.get_or_init(|| Slots {
        used: Mutex::new(0),
        freed: Condvar::new(),
    })
}

/// A permit to run one QEMU; released on drop.
pub struct QemuSlot(());

impl QemuSlot {
    pub fn acquire() -> QemuSlot {
        let s = slots();
        let max = qemu_jobs();
        let mut used = s.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= max {
            used = s.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        QemuSlot(())
    }
}

impl Drop for QemuSlot {
    fn drop(&mut self) {
        let s = slots();
        *s.used.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        s.freed.notify_one();
    }
}

/// The QEMU binary (installed first when missing and we are root); panics with the commands
/// to run otherwise.
pub fn qemu_path() -> std::path::PathBuf {
    match qemu_once(InstallPolicy::IfRoot) {
        Ok(q) => q.path,
        Err(e) => panic!("{e}"),
    }
}

/// The debugger (`$HOTMEM_GDB`, else `gdb-multiarch`, installed first when missing and we are
/// root with apt-get, as QEMU is); panics with the commands to run otherwise.
pub fn gdb_path() -> std::path::PathBuf {
    match hotmem_qemu::discover::gdb_once(InstallPolicy::IfRoot) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The kernel of `config`, built once per test process; panics with the build output.
pub fn kernel(config: KernelConfig) -> Kernel {
    match build_kernel_once(config) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

/// One boot: kernel configuration + boot mode + machine.
#[derive(Clone, Debug)]
pub struct BootCase {
    pub config: KernelConfig,
    pub boot: BootMode,
    pub machine: Machine,
    /// Kernel command line (`-append` or fw_cfg, per boot mode).
    pub append: Option<String>,
    /// This run's deadline, when it is a long one by design (default [`run_timeout`]).
    pub timeout: Option<Duration>,
    /// Fallback lines this test asks for (text each contains; [`unexpected_fallbacks`]).
    pub expected_fallbacks: Vec<String>,
}

/// RAM of every test boot, and the command line that holds all but 1 GiB back for the
/// in-guest hotplug tests (2 GiB held back: 16 blocks on 4K/16K, 4 on 64K).
pub const TEST_MEM: &str = "3G";
pub const TEST_APPEND: &str = "mem=1G debug_vm";
/// On every test boot's command line: the kernel checks every allocator and hotplug invariant
/// after each hotplug operation and stops (`hotmem: FATAL debug_vm: ...`) on the first broken one.
pub const DEBUG_VM: &str = "debug_vm";

impl BootCase {
    /// A boot of the `granule`/`va_bits` build (panics on an invalid pair) with default machine.
    pub fn new(granule: Granule, va_bits: u32, boot: BootMode) -> Self {
        let config = KernelConfig::new(granule, va_bits).unwrap_or_else(|e| panic!("{e}"));
        let machine = Machine {
            mem: TEST_MEM.into(),
            ..Machine::default()
        };
        BootCase {
            config,
            boot,
            machine,
            append: Some(TEST_APPEND.into()),
            timeout: None,
            expected_fallbacks: Vec::new(),
        }
    }
    /// The test asks for the fallback line containing `text` (so it does not fail the test).
    pub fn expect_fallback(mut self, text: &str) -> Self {
        self.expected_fallbacks.push(text.into());
        self
    }
    /// A longer deadline than [`run_timeout`] for a run that is long by design (a hang
    /// detector, not a time assertion): `factor` times it.
    pub fn long(mut self, factor: u32) -> Self {
        self.timeout = Some(run_timeout() * factor);
        self
    }
    /// Replace the command line (`debug_vm` stays unless `cmdline` says `debug_vm=off`).
    pub fn append(mut self, cmdline: &str) -> Self {
        self.append = Some(format!("{DEBUG_VM} {cmdline}"));
        self
    }
    /// QEMU `-m` (RAM size).
    pub fn mem(mut self, mem: &str) -> Self {
        self.machine.mem = mem.into();
        self
    }
    /// No kernel command line.
    pub fn no_append(mut self) -> Self {
        self.append = None;
        self
    }
    pub fn ktest(mut self, on: bool) -> Self {
        self.config.ktest = on;
        self
    }
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.machine.cpu = cpu.into();
        self
    }
    pub fn smp(mut self, n: u32) -> Self {
        self.machine.smp = n;
        self
    }
    pub fn gic(mut self, g: u32) -> Self {
        self.machine.gic = if g == 3 { GicVersion::V3 } else { GicVersion::V2 };
        self
    }
    pub fn el2(mut self, on: bool) -> Self {
        self.machine.el2 = on;
        self
    }

    /// The configured run (kernel built on demand).
    pub fn qemu_run(&self) -> QemuRun {
        QemuRun::new(kernel(self.config))
            .qemu(qemu_path())
            .machine(self.machine.clone())
            .boot(self.boot)
            .append(self.append.clone())
            .timeout(Some(self.timeout.unwrap_or_else(run_timeout)))
            .log_dir(Some(test_log_dir()))
    }

    /// Boots, types `commands` one per prompt, waits for exit; SIGKILL at the deadline.
    pub fn run(&self, commands: &[&str]) -> (QemuRun, RunOutcome) {
        let r = self.qemu_run();
        let _slot = QemuSlot::acquire();
        let out = r
            .run(commands)
            .unwrap_or_else(|e| panic!("[{}] cannot start QEMU: {e}", r.describe()));
        (r, out)
    }

    /// Boots with piped console for step-by-step driving. Hold the slot while it runs.
    pub fn spawn(&self) -> (QemuRun, Console, QemuSlot) {
        let r = self.qemu_run();
        let slot = QemuSlot::acquire();
        let c = r
            .spawn()
            .unwrap_or_else(|e| panic!("[{}] cannot start QEMU: {e}", r.describe()));
        (r, c, slot)
    }

    /// Boots the `ktest` build and asserts exit status 0 and `ktest: summary passed=N failed=0`
    /// with N > 0.
    pub fn expect_ktest_pass(&self) {
        let case = self.clone().ktest(true);
        let (r, out) = case.run(&[]);
        let checked = check_ktest_passed(&out)
            .and_then(|()| check_no_fallback(&out.console, &self.expected_fallbacks))
            .and_then(|()| check_cpus_online(&out.console, self.machine.smp));
        if let Err(why) = checked {
            panic!("{}", failure_report(&r, &out, &why));
        }
    }

    /// Boots the shell kernel, types `meminfo; poweroff`, and asserts exit status 0 with
    /// `meminfo: ram_bytes=<ram_bytes>` (the kernel uses all the RAM it was given).
    pub fn expect_shell_boot(&self, ram_bytes: u64) {
        let case = self.clone().ktest(false);
        let (r, out) = case.run(&["meminfo", "poweroff"]);
        let seen = out
            .console
            .lines()
            .find(|l| l.starts_with("meminfo:"))
            .and_then(|l| kv(l, "ram_bytes"))
            .and_then(|v| v.parse::<u64>().ok());
        let why = if out.timed_out {
            Some(format!("QEMU hung: {}", out.describe()))
        } else if out.exit_code() != Some(0) {
            Some(format!("expected exit status 0, got {}", out.describe()))
        } else if seen != Some(ram_bytes) {
            Some(format!("expected meminfo ram_bytes={ram_bytes}, saw {seen:?}"))
        } else {
            check_no_fallback(&out.console, &self.expected_fallbacks).err()
        };
        if let Some(why) = why {
            panic!("{}", failure_report(&r, &out, &why));
        }
    }

    /// Boots the `ktest` build and asserts that the kernel refuses to run: a non-zero exit (not a
    /// timeout) and a line starting with `hotmem: FATAL` that contains `mentions`
    /// (case-insensitive).
    pub fn expect_fatal(&self, mentions: &str) {
        let case = self.clone().ktest(true);
        let (r, out) = case.run(&[]);
        if let Err(why) = check_fatal(&out, mentions) {
            panic!("{}", failure_report(&r, &out, &why));
        }
    }
}

/// The multi-line failure message: configuration, command line, outcome, console tail.
pub fn failure_report(r: &QemuRun, out: &RunOutcome, why: &str) -> String {
    format!(
        "\n[{}] {why}\n  qemu: {}{}\n  outcome: {} after {:.1} s\n--- console tail ---\n{}\n--- end ---\n",
        r.describe(),
        r.command_line(),
        logs_line(r),
        out.describe(),
        out.elapsed.as_secs_f64(),
        out.tail(TAIL_LINES)
    )
}

/// `(passed, failed)` from the last `ktest: summary passed=N failed=M` line.
pub fn ktest_summary(console: &str) -> Option<(u32, u32)> {
    console.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("ktest: summary ")?;
        let passed = kv(rest, "passed")?.parse().ok()?;
        let failed = kv(rest, "failed")?.parse().ok()?;
        Some((passed, failed))
    })
}

/// The kernel's fallback lines in `console`: `<what>: cannot <X>; <what it does instead>`
/// (`hotplug: cannot defer the memmap ...; initialising it now`, `ged: cannot map the
/// registers; DIMM hotplug disabled`, ...), except those containing one of `expected`. A
/// fallback keeps the kernel going on a path the test did not choose, so a test that did not
/// ask for one fails. Answers to commands (`<cmd>: error: ...`), refusals (`refused: ...`) and
/// `hotmem: FATAL` lines are not fallbacks.
pub fn unexpected_fallbacks<'a>(console: &'a str, expected: &[String]) -> Vec<&'a str> {
    console
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.find("cannot ").is_some_and(|i| l[i..].contains("; "))
                && !l.contains(": error:")
                && !l.contains("refused:")
                && !l.starts_with("hotmem: FATAL")
                && !expected.iter().any(|e| l.contains(e.as_str()))
        })
        .collect()
}

/// [`unexpected_fallbacks`] as a check: `Err` names them.
pub fn check_no_fallback(console: &str, expected: &[String]) -> Result<(), String> {
    let f = unexpected_fallbacks(console, expected);
    if f.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the kernel took a fallback the test did not ask for:\n  {}",
        f.join("\n  ")
    ))
}

/// Checks the boot's `smp: online=N of M cpus` line: every one of the machine's `smp` CPUs
/// (the runner refuses more than the kernel brings up) reported in before the prompt.
pub fn check_cpus_online(console: &str, smp: u32) -> Result<(), String> {
    let want = format!("smp: online={smp} of {smp} cpus");
    match console.lines().find(|l| l.starts_with("smp: online=")) {
        Some(l) if l.trim_end() == want => Ok(()),
        Some(l) => Err(format!("expected `{want}` at boot, saw `{}`", l.trim_end())),
        None => Err(format!("no `smp: online=` line at boot (expected `{want}`)")),
    }
}

/// Checks a ktest run: exit status 0, a summary with passed > 0 and failed = 0.
pub fn check_ktest_passed(out: &RunOutcome) -> Result<(), String> {
    let failing: Vec<&str> = out.console.lines().filter(|l| l.contains("ktest: FAIL")).collect();
    if out.timed_out {
        return Err(format!("QEMU hung: {}", out.failure.as_deref().unwrap_or("timeout")));
    }
    match ktest_summary(&out.console) {
        None => return Err(format!("no `ktest: summary` line (exit: {})", out.describe())),
        Some((_, f)) if f > 0 => return Err(format!("{f} in-guest test(s) failed:\n  {}", failing.join("\n  "))),
        Some((0, _)) => return Err("the test kernel ran no cases (passed=0)".into()),
        Some(_) => {}
    }
    if out.exit_code() != Some(0) {
        return Err(format!(
            "summary says all passed but QEMU exited with {}",
            out.describe()
        ));
    }
    Ok(())
}

/// Checks a refused boot: non-zero exit without a timeout, and a `hotmem: FATAL` line that
/// mentions `what`.
pub fn check_fatal(out: &RunOutcome, what: &str) -> Result<(), String> {
    if out.timed_out {
        return Err(format!(
            "expected the kernel to refuse to boot, but QEMU hung: {}",
            out.describe()
        ));
    }
    let fatal: Vec<&str> = out
        .console
        .lines()
        .filter(|l| l.trim_start().starts_with("hotmem: FATAL"))
        .collect();
    if fatal.is_empty() {
        return Err(format!(
            "expected a `hotmem: FATAL` line mentioning {what} (exit: {})",
            out.describe()
        ));
    }
    if !fatal
        .iter()
        .any(|l| l.to_ascii_lowercase().contains(&what.to_ascii_lowercase()))
    {
        return Err(format!("the FATAL line does not mention {what}: {fatal:?}"));
    }
    match out.exit_code() {
        Some(0) => Err("the kernel printed FATAL but QEMU exited with status 0".into()),
        None => Err(format!("QEMU did not exit normally: {}", out.describe())),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-configuration QEMU suites name one test per configuration of the build matrix
    /// (mm's `config_matrix!`, through `KernelConfig::matrix`): a configuration added there
    /// fails here until every suite boots it.
    #[test]
    fn suites_cover_the_build_matrix() {
        let suites = [
            ("boot_matrix", "boot_"),
            ("shell", "shell_"),
            ("hotplug", "hotplug_cycles_"),
            ("gdb", "gdb_"),
        ];
        for (suite, prefix) in suites {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/{suite}.rs"));
            let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for c in KernelConfig::matrix() {
                let name = format!("{prefix}{}_{}", c.granule, c.va_bits);
                assert!(
                    src.contains(&format!("{name}:")) || src.contains(&format!("{name}_")),
                    "{suite}: no {name}"
                );
            }
        }
    }

    #[test]
    fn summary_parsing() {
        let c = "ktest: ok name=a us=1\nktest: FAIL name=b msg=x y\nktest: summary passed=12 failed=1\n";
        assert_eq!(ktest_summary(c), Some((12, 1)));
        assert_eq!(ktest_summary("ktest: summary passed=x failed=0"), None);
        assert_eq!(ktest_summary("nothing"), None);
    }

    fn outcome(console: &str, code: i32) -> RunOutcome {
        use std::os::unix::process::ExitStatusExt;
        RunOutcome {
            status: Some(std::process::ExitStatus::from_raw(code << 8)),
            console: console.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ktest_checks() {
        assert!(check_ktest_passed(&outcome("ktest: summary passed=3 failed=0\n", 0)).is_ok());
        let e = check_ktest_passed(&outcome(
            "ktest: FAIL name=b msg=bad\nktest: summary passed=3 failed=1\n",
            1,
        ))
        .unwrap_err();
        assert!(e.contains("ktest: FAIL name=b msg=bad"), "{e}");
        assert!(check_ktest_passed(&outcome("ktest: summary passed=0 failed=0\n", 0)).is_err());
        assert!(check_ktest_passed(&outcome("ktest: summary passed=3 failed=0\n", 1)).is_err());
        assert!(check_ktest_passed(&outcome("booting\n", 0)).is_err());
    }

    #[test]
    fn fallback_lines() {
        let console = "boot: ok\n\
            hotplug: cannot defer the memmap of pfn 0x20000+0x2000 (bad range); initialising it now\n\
            stress: error: cannot allocate; try less\n\
            dimm: slot=0 event=insert refused: cannot map; whatever ost=0x82\n\
            ged: cannot map the registers; DIMM hotplug disabled\n\
            memory: cannot free pa=0x1000 order=0: NotAllocated\n";
        assert_eq!(
            unexpected_fallbacks(console, &[]),
            [
                "hotplug: cannot defer the memmap of pfn 0x20000+0x2000 (bad range); initialising it now",
                "ged: cannot map the registers; DIMM hotplug disabled"
            ]
        );
        assert_eq!(
            unexpected_fallbacks(console, &["cannot map the registers".into()]).len(),
            1
        );
        assert!(check_no_fallback("boot: ok\n", &[]).is_ok());
        let e = check_no_fallback(console, &["hotplug: cannot defer".into()]).unwrap_err();
        assert!(e.contains("ged: cannot map") && !e.contains("defer"), "{e}");
    }

    #[test]
    fn cpus_online_checks() {
        let boot = "smp: cpu=1 mpidr=0x1 el=1 online\nsmp: online=2 of 2 cpus\n";
        assert!(check_cpus_online(boot, 2).is_ok());
        let e = check_cpus_online("smp: online=1 of 2 cpus\n", 2).unwrap_err();
        assert!(e.contains("saw `smp: online=1 of 2 cpus`"), "{e}");
        assert!(check_cpus_online(boot, 4).is_err());
        assert!(check_cpus_online("boot: ok\n", 1).is_err());
    }

    #[test]
    fn fatal_checks() {
        let msg = "hotmem: FATAL this CPU has no 16K granule (ID_AA64MMFR0_EL1.TGran16=0)\n";
        assert!(check_fatal(&outcome(msg, 4), "16K").is_ok());
        assert!(check_fatal(&outcome(msg, 0), "16K").is_err());
        assert!(check_fatal(&outcome(msg, 4), "64K").is_err());
        assert!(check_fatal(&outcome("ktest: summary passed=3 failed=0\n", 1), "16K").is_err());
    }
}

/// A table of test cases: `cases! { f => name: arg, arg, ...; ... }` makes one `#[test] fn name`
/// per row, calling `f(arg, arg, ...)`. Every suite's per-configuration table is one of these,
/// so a case is one line and `cargo test -p hotmem-tests --test SUITE NAME` runs it.
#[macro_export]
macro_rules! cases {
    ($f:path => $($name:ident: $($arg:expr),* ;)*) => {$(
        #[test]
        fn $name() {
            $f($($arg),*);
        }
    )*};
}

pub mod dimm;
pub mod docs;
pub mod fdt_edit;
pub mod gdb;
pub mod libvirt;
pub mod numa;
pub mod parse;
pub mod shell;
pub mod vmem;

/// `cargo run -- ARGS` with `--exec`, through the runner's own option parsing and `--exec`
/// driver (the acceptance commands of the README, docs/runner.md and docs/hotplug.md): the
/// outcome, and a failure report naming the command.
pub struct CliRun {
    pub what: String,
    pub script: String,
    pub out: RunOutcome,
}

impl CliRun {
    /// Runs to the end (holding a QEMU slot); panics if the arguments do not parse.
    pub fn run(args: &[&str]) -> CliRun {
        let Ok(hotmem_qemu::cli::Action::Run(o)) = hotmem_qemu::cli::parse_args(args.iter().copied()) else {
            panic!("cannot parse the command line {args:?}");
        };
        let run = o
            .qemu_run(qemu_path(), kernel(o.kernel), None)
            .echo(false)
            .timeout(Some(run_timeout()))
            .log_dir(Some(test_log_dir()));
        let what = format!("{}{}", run.describe(), logs_line(&run));
        let cmds = o.exec.clone().unwrap_or_default();
        let _slot = QemuSlot::acquire();
        let s = hotmem_qemu::session::Session::start(run).unwrap_or_else(|e| panic!("[{what}] {e}"));
        let out = s.run_script(&cmds);
        CliRun {
            what,
            script: cmds.join("; "),
            out,
        }
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "\n[{}] `--exec '{}'`: {why}\n  outcome: {}\n--- console tail ---\n{}\n--- host ---\n{}\n",
            self.what,
            self.script,
            self.out.describe(),
            self.out.tail(TAIL_LINES),
            self.out.host
        )
    }

    /// Exit status 0 and each of `lines` in the host output.
    pub fn expect_ok(&self, lines: &[&str]) {
        if !self.out.success() || self.out.host_exit_code() != 0 {
            self.fail("expected exit status 0");
        }
        for want in lines {
            if !self.out.host.contains(want) {
                self.fail(&format!("host output lacks `{want}`"));
            }
        }
    }
}
