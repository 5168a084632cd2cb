//! Command-line options of the `hotmem` runner (`cargo run -- [OPTIONS]`).

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser};

use crate::config::{
    kernel_max_cpus, kernel_max_numnodes, mem_size_bytes, mem_with_dimm_slots, parse_mem_option, valid_pairs_text,
    BootMode, GicVersion, Granule, KernelConfig,
};
use crate::host_cmd::{parse_host_command, HostCommand};
use crate::kernel::Kernel;
use crate::numa::Numa;
use crate::run::{free_gdb_port, Machine, QemuRun, Serial, VirtioMem, DEFAULT_GDB_PORT};

/// Timeout of driven runs (`--exec`, `--ktest`) when `--timeout` is not given.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The runner's options as typed on the command line (`clap`); [`parse_args`] checks how they
/// combine and turns them into [`Options`]. Defaults live in [`Options::default`].
#[derive(Parser, Debug)]
#[command(
    name = "hotmem",
    about = "hotmem runner: builds a hotmem kernel configuration and boots it in qemu-system-aarch64 -M virt.",
    override_usage = "cargo run -- [OPTIONS]          (or: target/debug/hotmem [OPTIONS])",
    after_long_help = AFTER_HELP,
    after_help = AFTER_HELP,
    disable_help_flag = true,
    args_override_self = true
)]
struct Args {
    /// this text
    #[arg(short, long, action = ArgAction::HelpLong)]
    help: (),
    /// translation granule (default 4k)
    #[arg(long, value_name = "4k|16k|64k", help_heading = "KERNEL")]
    granule: Option<Granule>,
    /// VA size (default: the granule's); valid pairs: VALID_PAIRS;
    /// without --granule: the granule that supports N (4k first)
    #[arg(
        long = "va-bits",
        visible_alias = "va",
        value_name = "N",
        help_heading = "KERNEL",
        verbatim_doc_comment
    )]
    va_bits: Option<u32>,
    /// boot the in-guest test kernel (runs its cases, exits 0 if all pass);
    /// runs like --exec with no commands (output echoed, timeout applies);
    /// without --mem, --append and --numa: --mem 3G --append mem=1G (RAM
    /// held back for the hotplug cases, the test suite's layout)
    #[arg(long, help_heading = "KERNEL", verbatim_doc_comment)]
    ktest: bool,
    /// kernel command line, e.g. 'mem=1G' (kernel/image boot: -append, i.e.
    /// /chosen/bootargs; firmware boot: fw_cfg file opt/org.hotmem/cmdline)
    #[arg(long, value_name = "ARGS", help_heading = "KERNEL", verbatim_doc_comment)]
    append: Option<String>,
    /// firmware: -bios hotmem.bin (default; GED/DIMM hotplug exist)
    /// kernel:   -kernel hotmem.elf
    /// image:    -kernel hotmem.bin (arm64 Image, DTB in x0)
    /// pflash:   -drive if=pflash,format=raw,readonly=on,file=hotmem.pflash
    ///           (the firmware padded to 64 MiB; as firmware, libvirt's way)
    #[arg(
        long,
        value_name = "firmware|kernel|image|pflash",
        help_heading = "MACHINE",
        verbatim_doc_comment
    )]
    boot: Option<BootMode>,
    /// QEMU CPU model (default max,lpa2=off; also cortex-a76, cortex-a57)
    #[arg(long, value_name = "NAME", value_parser = parse_cpu, help_heading = "MACHINE")]
    cpu: Option<String>,
    /// number of CPUs (default 2; at most MAX_CPUS: the kernel's limit;
    /// GICv2 also allows at most 8)
    #[arg(long, value_name = "N", value_parser = parse_smp, help_heading = "MACHINE", verbatim_doc_comment)]
    smp: Option<u32>,
    /// RAM size, e.g. 1G, 512M (default 1G); slots/maxmem for DIMM
    /// hotplug. Firmware boots without slots= get
    /// SIZE,slots=8,maxmem=SIZE+32G (QEMU needs both for pc-dimm);
    /// slots= without maxmem= gets maxmem=SIZE+32G
    #[arg(long, value_name = "SIZE[,slots=N,maxmem=SIZE]", value_parser = parse_mem_option, help_heading = "MACHINE", verbatim_doc_comment)]
    mem: Option<String>,
    /// GIC version (default 2)
    #[arg(long, value_name = "2|3", help_heading = "MACHINE")]
    gic: Option<GicVersion>,
    /// a virtio-mem-pci device vmem0, vmem1, ... (repeatable) with a
    /// SIZE region (backend mem-vmemN); -m gets maxmem= room for it.
    /// Any boot mode; resize with :vmem vmemN SIZE
    #[arg(long = "virtio-mem", value_name = "SIZE[,block=SIZE,requested=SIZE,node=N]", value_parser = VirtioMem::parse, allow_hyphen_values = true, help_heading = "MACHINE", verbatim_doc_comment)]
    virtio_mem: Vec<VirtioMem>,
    /// NUMA nodes, node N the N-th item: its boot memory (0: none)
    /// and optionally its CPUs, e.g. 1G,1G,0 or 1G:cpus=0-1,1G:cpus=2+3,0.
    /// Without cpus= the CPUs go round-robin to the nodes with memory;
    /// with any, every CPU is listed once. -m becomes the total (--mem,
    /// if given, must name the same size); at most MAX_NUMNODES nodes;
    /// sizes are multiples of the granule's memory block (128M; 512M on 64k)
    #[arg(
        long,
        value_name = "SIZE[:cpus=LIST],...",
        help_heading = "MACHINE",
        verbatim_doc_comment
    )]
    numa: Option<String>,
    /// distances between --numa nodes, symmetric, 11 to 255, e.g.
    /// 0-1=20,0-2=30; QEMU needs every pair once one is given: a pair
    /// not named is 20. Without --numa-dist: 10 local, 20 remote
    #[arg(
        long = "numa-dist",
        value_name = "A-B=D,...",
        help_heading = "MACHINE",
        verbatim_doc_comment
    )]
    numa_dist: Option<String>,
    /// virtualization=on: CPUs start at EL2 (the kernel drops to EL1)
    #[arg(long, help_heading = "MACHINE")]
    el2: bool,
    /// extra QEMU argument, appended last (repeatable)
    #[arg(
        long = "qemu-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "MACHINE"
    )]
    qemu_arg: Vec<String>,
    /// drive the console: wait for the prompt `hotmem> `, type each
    /// command, then wait for QEMU to exit and exit with its status.
    /// Commands starting with `:` are host commands (below), run when
    /// their turn comes; e.g. --exec ':plug 1G; blocks; :unplug dimm0; poweroff'
    #[arg(long, value_name = "CMD; CMD; ...", help_heading = "RUNNING", verbatim_doc_comment)]
    exec: Vec<String>,
    /// kill QEMU with SIGKILL after SECS (default 60 with --exec/--ktest,
    /// none interactively or with --gdb; 0 = no limit). Exit status 124.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, allow_hyphen_values = true, help_heading = "RUNNING", verbatim_doc_comment)]
    timeout: Option<Duration>,
    /// start halted with a gdbstub on 127.0.0.1 and print the gdb-multiarch
    /// command that attaches to it (apt-get install gdb-multiarch)
    #[arg(long, help_heading = "RUNNING", verbatim_doc_comment)]
    gdb: bool,
    /// gdbstub port; implies --gdb (default 1234, or a free one if
    /// taken; 0 = any free port, printed)
    #[arg(long = "gdb-port", value_name = "N", value_parser = parse_port, help_heading = "RUNNING", verbatim_doc_comment)]
    gdb_port: Option<u16>,
    /// print the kernel build and QEMU commands, run nothing
    #[arg(long = "dry-run", help_heading = "RUNNING")]
    dry_run: bool,
}

const AFTER_HELP: &str = "\
Without --exec/--ktest the console is on this terminal (-serial mon:stdio, relayed by the
runner): Ctrl-A x quits QEMU, Ctrl-A c switches between the console and the QEMU monitor (HMP).
A line that starts with `:` is a host command, run by the runner, not typed to the guest.

HOST COMMANDS (QMP; every run has a QMP socket in target/qmp/):
    :plug SIZE [ID] [node=N] hot-plug a pc-dimm (backend mem-<ID>; ID default dimm0, dimm1, ...;
                             on NUMA node N, default 0)
                             and wait for the guest's _OST: `plug: id=.. ost_status=.. ok|refused`
    :unplug ID               device_del; wait for DEVICE_DELETED (`unplug: id=.. deleted`) or the
                             guest's refusal (`unplug: id=.. refused ost_status=..`)
    :dimms                   QEMU's DIMMs (query-memory-devices) with their OSPM (_OST) status
    :vmem ID SIZE            set virtio-mem ID's requested-size (0: unplug all); waits for the
                             guest's `virtio-mem: ... event=done|stopped` line, prints the time
    :vmems                   QEMU's virtio-mem devices: plugged, requested, region, block size
    :qmp JSON|NAME           raw QMP command, prints the reply
    :hmp LINE                human monitor command, prints its output
    :reset, :powerdown       system_reset / system_powerdown
    (:plug, :unplug and :powerdown need --boot firmware: the ACPI GED exists only there)
    :help                    this list

ENVIRONMENT:
    HOTMEM_QEMU              QEMU binary to use instead of qemu-system-aarch64 from PATH
                             (a path; the apt source is .ci/install's HOTMEM_QEMU_APT).
                             When QEMU is missing and we run as root with apt-get, it is
                             installed (Debian bookworm: QEMU 10 from bookworm-backports).

EXAMPLES:
    cargo run
    cargo run -- --granule 16k --va 36 --boot kernel --cpu cortex-a76 --smp 4
    cargo run -- --exec 'meminfo; pt 0xffff000040000000; poweroff'
    cargo run -- --granule 64k --ktest --gic 3
";

/// The help text, with the valid granule/VA pairs and the kernel's CPU limit filled in.
pub fn help() -> String {
    Args::command()
        .render_long_help()
        .to_string()
        .replace("VALID_PAIRS", &valid_pairs_text())
        .replace("MAX_CPUS", &kernel_max_cpus().to_string())
        .replace("MAX_NUMNODES", &kernel_max_numnodes().to_string())
}

fn parse_cpu(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("needs a CPU model name".into()),
        t => Ok(t.into()),
    }
}

fn parse_smp(s: &str) -> Result<u32, String> {
    let n: u32 = s.trim().parse().map_err(|e| format!("{e}"))?;
    let max = kernel_max_cpus();
    match n {
        0 => Err(format!("expected 1 to {max} CPUs")),
        n if n > max => Err(format!(
            "the kernel runs at most {max} CPUs (MAX_CPUS in platform/src/kernel/smp.rs); give --smp 1 to {max}"
        )),
        n => Ok(n),
    }
}

/// Seconds, `0` for no limit ([`Duration::ZERO`]).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs >= 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err("expected seconds >= 0".into()),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected a TCP port, 1 to 65535 (or 0: any free port)".into())
}

/// Parsed options.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub kernel: KernelConfig,
    pub boot: BootMode,
    pub machine: Machine,
    /// `--timeout` as given (`Some(None)` for `--timeout 0`).
    pub timeout: Option<Option<Duration>>,
    /// `--exec` commands, split on `;`.
    pub exec: Option<Vec<String>>,
    pub gdb: bool,
    /// `--gdb-port`; `None`: 1234, or a free port when that is taken.
    pub gdb_port: Option<u16>,
    pub append: Option<String>,
    pub qemu_args: Vec<String>,
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kernel: KernelConfig::default_for(Granule::K4),
            boot: BootMode::Firmware,
            machine: Machine::default(),
            timeout: None,
            exec: None,
            gdb: false,
            gdb_port: None,
            append: None,
            qemu_args: Vec::new(),
            dry_run: false,
        }
    }
}

impl Options {
    /// Driven through the console (piped) rather than on the terminal.
    pub fn batch(&self) -> bool {
        self.exec.is_some() || self.kernel.ktest
    }

    /// The timeout that applies: `--timeout`, else 60 s for driven runs, none interactively
    /// or with `--gdb` (a person at the debugger must not have QEMU killed under them).
    pub fn effective_timeout(&self) -> Option<Duration> {
        match self.timeout {
            Some(t) => t,
            None if self.batch() && !self.gdb => Some(DEFAULT_BATCH_TIMEOUT),
            None => None,
        }
    }

    /// The gdbstub port of this run: `None` without `--gdb`; `--gdb-port N`; a free port for
    /// `--gdb-port 0`; else 1234, or a free port when 1234 is taken.
    pub fn resolve_gdb_port(&self) -> std::io::Result<Option<u16>> {
        if !self.gdb {
            return Ok(None);
        }
        match self.gdb_port {
            Some(0) => free_gdb_port(0).map(Some),
            Some(p) => Ok(Some(p)),
            None => free_gdb_port(DEFAULT_GDB_PORT).map(Some),
        }
    }
}

impl Options {
    /// The QEMU run these options describe, for `kernel` and the QEMU binary `qemu` (what
    /// `cargo run` boots): interactive runs use `-serial mon:stdio`, driven ones `-serial stdio`;
    /// firmware boots get DIMM slots by default ([`crate::config::mem_with_dimm_slots`]).
    pub fn qemu_run(&self, qemu: PathBuf, kernel: Kernel, gdb_port: Option<u16>) -> QemuRun {
        let serial = if self.batch() { Serial::Stdio } else { Serial::MonStdio };
        let mut machine = self.machine.clone();
        if self.boot.is_firmware() {
            // Room for DIMMs and for the virtio-mem devices.
            let room = crate::config::DEFAULT_DIMM_ROOM + machine.virtio_mem_room();
            if machine.virtio_mem.is_empty() {
                machine.mem = mem_with_dimm_slots(&machine.mem);
            } else if !machine.mem.contains("slots=") {
                machine.mem = mem_with_dimm_slots(&crate::run::mem_with_device_room(&machine.mem, room));
            }
        }
        QemuRun::new(kernel)
            .qemu(qemu)
            .machine(machine)
            .boot(self.boot)
            .serial(serial)
            .gdb(gdb_port)
            .append(self.append.clone())
            .args(self.qemu_args.iter().cloned())
            .timeout(self.effective_timeout())
            .echo(true)
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Help,
    Run(Options),
}

/// `--ktest` without `--mem`/`--append`: RAM and command line that hold 2 GiB back for the
/// in-guest hotplug cases (what `cargo test` boots them with).
pub const KTEST_DEFAULT_MEM: &str = "3G";
pub const KTEST_DEFAULT_APPEND: &str = "mem=1G";

/// Parses the arguments after the program name; errors are one line (`clap`'s for unknown or
/// malformed options, exit status 2 in the runner).
pub fn parse_args<I, S>(args: I) -> Result<Action, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args = std::iter::once("hotmem".to_string()).chain(args.into_iter().map(Into::into));
    let a = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => return Ok(Action::Help),
        Err(e) => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or_default();
            return Err(line.strip_prefix("error: ").unwrap_or(line).to_string());
        }
    };
    let mut o = Options::default();
    let (granule, va, ktest) = (a.granule, a.va_bits, a.ktest);
    o.boot = a.boot.unwrap_or(o.boot);
    o.machine.cpu = a.cpu.unwrap_or(o.machine.cpu);
    o.machine.smp = a.smp.unwrap_or(o.machine.smp);
    o.machine.gic = a.gic.unwrap_or(o.machine.gic);
    o.machine.el2 = a.el2;
    o.machine.virtio_mem = a.virtio_mem;
    let mem_given = a.mem.is_some();
    o.machine.mem = a.mem.unwrap_or(o.machine.mem);
    o.timeout = a.timeout.map(|t| (!t.is_zero()).then_some(t));
    for value in &a.exec {
        let cmds = crate::console::split_commands(value);
        if cmds.is_empty() {
            return Err(format!(
                "--exec `{value}` has no commands (e.g. --exec 'meminfo; poweroff')"
            ));
        }
        o.exec.get_or_insert_with(Vec::new).extend(cmds);
    }
    o.gdb = a.gdb || a.gdb_port.is_some();
    o.gdb_port = a.gdb_port;
    o.append = a.append;
    o.qemu_args = a.qemu_arg;
    o.dry_run = a.dry_run;
    let granule = match (granule, va) {
        (Some(g), _) => g,
        (None, Some(v)) => Granule::ALL
            .into_iter()
            .find(|g| g.valid_va_bits().contains(&v))
            .ok_or_else(|| {
                format!(
                    "invalid configuration: no granule supports {v}-bit VA; valid pairs are {}",
                    valid_pairs_text()
                )
            })?,
        (None, None) => Granule::K4,
    };
    o.kernel = KernelConfig::new(granule, va.unwrap_or(granule.default_va_bits()))?.with_ktest(ktest);
    if ktest && !mem_given && o.append.is_none() && a.numa.is_none() {
        // The in-guest hotplug cases need RAM held back by mem= (the test suite's layout).
        o.machine.mem = KTEST_DEFAULT_MEM.into();
        o.append = Some(KTEST_DEFAULT_APPEND.into());
    }
    o.machine.numa = numa_machine(&o, a.numa.as_deref(), a.numa_dist.as_deref(), mem_given)?;
    if let Some(n) = &o.machine.numa {
        if !mem_given {
            o.machine.mem = mm::size::Size(n.total_mem()).to_string();
        }
    }
    let nodes = match o.machine.numa {
        Some(_) => o.machine.numa_nodes(),
        None => numa_nodes(&o.qemu_args),
    };
    for v in &o.machine.virtio_mem {
        v.check(granule, nodes)?;
    }
    if o.machine.gic.number() == 2 && o.machine.smp > 8 {
        return Err(format!(
            "--smp {}: GICv2 supports at most 8 CPUs (add --gic 3)",
            o.machine.smp
        ));
    }
    if let Some(w) = o
        .append
        .iter()
        .flat_map(|a| a.split_whitespace())
        .find(|w| w.starts_with("memmap_poison="))
    {
        if !ktest {
            return Err(format!(
                "--append '{w}': only the test kernel poisons deferred memmap; add --ktest, or drop the option"
            ));
        }
    }
    for cmd in o.exec.iter().flatten() {
        if cmd.starts_with(':') {
            check_exec_host_command(cmd, o.boot, nodes)?;
        } else {
            check_exec_guest_command(cmd)?;
        }
    }
    Ok(Action::Run(o))
}

/// `--numa` and `--numa-dist` checked against each other, `--smp`, the granule, `--mem` and
/// `--qemu-arg`, before anything is built: one line naming the value and what would be accepted.
fn numa_machine(
    o: &Options,
    numa: Option<&str>,
    dist: Option<&str>,
    mem_given: bool,
) -> Result<Option<Box<Numa>>, String> {
    let Some(spec) = numa else {
        return match dist {
            Some(d) => Err(format!(
                "--numa-dist {d} needs --numa (the nodes it is about), e.g. --numa 1G,1G --numa-dist 0-1=30"
            )),
            None => Ok(None),
        };
    };
    let mut n = Numa::parse(spec)?;
    if let Some(d) = dist {
        n.set_distances(d)?;
    }
    n.check(o.kernel.granule, o.machine.smp)?;
    if o.qemu_args.iter().any(|a| a == "-numa" || a.starts_with("-numa")) {
        return Err(format!(
            "--numa {spec}: the machine's nodes come from --numa or from --qemu-arg=-numa, not both"
        ));
    }
    let total = n.total_mem();
    let ram = o.machine.mem.split(',').next().unwrap_or_default();
    if mem_given && mem_size_bytes(ram) != Some(total) {
        return Err(format!(
            "--mem {}: --numa {spec} gives the machine {} of RAM; give --mem {}[,slots=N,maxmem=SIZE], or leave --mem out",
            o.machine.mem,
            mm::size::Size(total),
            mm::size::Size(total)
        ));
    }
    Ok(Some(Box::new(n)))
}

/// NUMA nodes the extra QEMU arguments define (`-numa node,...`); 1 without any (QEMU's
/// single implicit node).
fn numa_nodes(qemu_args: &[String]) -> u32 {
    let n = qemu_args
        .windows(2)
        .filter(|w| w[0] == "-numa" && (w[1] == "node" || w[1].starts_with("node,")))
        .count() as u32;
    n.max(1)
}

/// A note for an `--exec` script that does not end the guest (`poweroff` or `:powerdown`):
/// the run then lasts until its timeout, or for ever without one.
pub fn script_end_note(o: &Options) -> Option<String> {
    let last = o.exec.as_ref()?.last()?.trim();
    if last == "poweroff" || last == ":powerdown" {
        return None;
    }
    let until = match o.effective_timeout() {
        Some(t) => format!("its timeout ({} s, --timeout)", t.as_secs_f64()),
        None => "you quit it (no timeout)".to_string(),
    };
    Some(format!(
        "note: the script ends with `{last}`, not `poweroff`: QEMU keeps running until {until}"
    ))
}

/// Why a host command cannot work in `boot` mode: DIMMs and the power button are the ACPI
/// GED's, which QEMU's `virt` creates only for firmware (`-bios`) boots.
pub fn host_command_needs_firmware(cmd: &HostCommand, boot: BootMode) -> Option<String> {
    let what = cmd.needs_ged()?;
    (!boot.is_firmware()).then(|| {
        format!(
            ":{what} needs --boot firmware: QEMU gives the machine its ACPI GED (DIMM hotplug, \
             power button) only when the kernel is loaded with -bios, not with --boot {boot}"
        )
    })
}

/// Host commands the interactive banner suggests: ones that `boot` accepts (DIMMs need the
/// GED of a firmware boot, [`host_command_needs_firmware`]).
pub fn host_command_examples(boot: BootMode) -> &'static str {
    if boot.is_firmware() {
        "`:plug 1G`, `:unplug dimm0`, `:dimms`"
    } else {
        "`:dimms`, `:qmp query-status`, `:reset` (no `:plug`/`:unplug`: DIMMs need --boot firmware)"
    }
}

/// An `--exec` guest command must fit the shell's line (the shell refuses a longer one whole).
fn check_exec_guest_command(cmd: &str) -> Result<(), String> {
    let max = crate::config::kernel_line_max();
    if cmd.len() > max {
        let start: String = cmd.chars().take(24).collect();
        return Err(format!(
            "--exec `{start}...`: {} bytes, but a guest shell line holds at most {max} \
             (LINE_MAX in platform/src/shell/line.rs)",
            cmd.len()
        ));
    }
    Ok(())
}

/// An `--exec` host command is checked before anything is built or booted (on a machine of
/// `nodes` NUMA nodes).
fn check_exec_host_command(cmd: &str, boot: BootMode, nodes: u32) -> Result<(), String> {
    let c = parse_host_command(cmd).map_err(|e| format!("--exec `{cmd}`: {e}"))?;
    if let HostCommand::Dimm(d) = &c {
        if let Some(why) = d.node().and_then(|n| crate::host_cmd::node_refusal(n, nodes)) {
            return Err(format!("--exec `{cmd}`: {why}"));
        }
    }
    if let HostCommand::Qmp(text) = &c {
        crate::host_cmd::raw_qmp_command(text).map_err(|e| format!("--exec `{cmd}`: {e}"))?;
    }
    match host_command_needs_firmware(&c, boot) {
        Some(why) => Err(format!("--exec `{cmd}`: {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse_args(args.iter().copied()) {
            Ok(Action::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        parse_args(args.iter().copied()).unwrap_err()
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!(o.kernel.name(), "4k-48");
        assert_eq!(o.boot, BootMode::Firmware);
        assert_eq!(o.machine, Machine::default());
        assert_eq!(o.machine.cpu, "max,lpa2=off");
        assert_eq!(o.machine.smp, 2);
        assert!(!o.batch());
        assert_eq!(o.effective_timeout(), None);
        assert_eq!(parse_args(["--help"]).unwrap(), Action::Help);
        assert_eq!(parse_args(["--granule", "64k", "-h"]).unwrap(), Action::Help);
    }

    #[test]
    fn granule_and_va() {
        assert_eq!(run(&["--granule", "16k"]).kernel.name(), "16k-47");
        assert_eq!(run(&["--granule=64k", "--va-bits=42"]).kernel.name(), "64k-42");
        assert_eq!(run(&["--va", "36"]).kernel.name(), "16k-36");
        assert_eq!(run(&["--va", "48"]).kernel.name(), "4k-48");
        assert_eq!(run(&["--va", "42", "--ktest"]).kernel.name(), "64k-42-ktest");
        let e = err(&["--granule", "64k", "--va-bits", "47"]);
        assert!(
            e.contains("64k with 47-bit") && e.contains("16k: 36, 47, 48 (default 47)"),
            "{e}"
        );
        assert!(err(&["--va", "40"]).contains("valid pairs are 4k: 39, 48"));
        assert!(err(&["--granule", "8k"]).contains("unknown granule"));
        assert!(err(&["--va", "x"]).starts_with("invalid value 'x' for '--va-bits <N>'"));
    }

    #[test]
    fn machine_options() {
        let o = run(&[
            "--boot",
            "image",
            "--cpu",
            "cortex-a57",
            "--smp",
            "4",
            "--mem",
            "2g",
            "--gic",
            "3",
            "--el2",
        ]);
        assert_eq!(o.boot, BootMode::Image);
        assert_eq!(
            o.machine,
            Machine {
                cpu: "cortex-a57".into(),
                smp: 4,
                mem: "2G".into(),
                gic: GicVersion::V3,
                el2: true,
                virtio_mem: vec![],
                numa: None,
            }
        );
        assert!(err(&["--smp", "0"]).contains("1 to 8"));
        let v = run(&["--virtio-mem", "4G", "--virtio-mem=1G,block=1G,requested=0,node=0"]);
        assert_eq!(v.machine.virtio_mem.len(), 2);
        assert_eq!(v.machine.virtio_mem[1].block, Some(1 << 30));
        assert_eq!(v.machine.virtio_mem[1].requested, Some(0));
        assert!(err(&["--virtio-mem", "4G,blok=2M"]).contains("unknown option `blok=2M`"));
        assert!(err(&["--virtio-mem", "lots"]).contains("not a size"));
        assert!(err(&["--boot", "uefi"]).contains("unknown boot mode"));
        assert!(err(&["--mem", "huge"]).contains("invalid memory size"));
        assert!(err(&["--cpu"]).starts_with("a value is required for '--cpu <NAME>'"));
    }

    #[test]
    fn running_options() {
        let o = run(&[
            "--exec",
            "meminfo; pt 0x1 ;",
            "--exec=poweroff",
            "--qemu-arg",
            "-d",
            "--qemu-arg=int",
        ]);
        assert_eq!(o.exec.as_deref().unwrap(), ["meminfo", "pt 0x1", "poweroff"]);
        assert_eq!(o.qemu_args, ["-d", "int"]);
        assert!(o.batch());
        assert_eq!(o.effective_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(
            run(&["--exec", "x", "--timeout", "2.5"]).effective_timeout(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(run(&["--ktest", "--timeout", "0"]).effective_timeout(), None);
        assert_eq!(
            run(&["--timeout", "5"]).effective_timeout(),
            Some(Duration::from_secs(5))
        );
        assert!(err(&["--timeout", "-1"]).contains("seconds"));
        let o = run(&["--gdb"]);
        assert_eq!((o.gdb, o.gdb_port), (true, None));
        let o = run(&["--gdb-port", "5555"]);
        assert_eq!((o.gdb, o.gdb_port), (true, Some(5555)));
        assert_eq!(run(&["--append", "mem=512M"]).append.as_deref(), Some("mem=512M"));
        // A repeated option: the last one counts (repeatable ones add up).
        assert_eq!(run(&["--granule", "4k", "--granule=64k"]).kernel.name(), "64k-48");
        assert!(run(&["--dry-run"]).dry_run);
        assert!(err(&["--bogus"]).starts_with("unexpected argument '--bogus'"));
        assert!(err(&["stray"]).starts_with("unexpected argument 'stray'"));
        assert!(err(&["--el2=yes"]).starts_with("unexpected value 'yes' for '--el2'"));
    }

    #[test]
    fn ktest_holds_back_ram_by_default() {
        let o = run(&["--ktest"]);
        assert_eq!((o.machine.mem.as_str(), o.append.as_deref()), ("3G", Some("mem=1G")));
        let o = run(&["--ktest", "--mem", "2G"]);
        assert_eq!((o.machine.mem.as_str(), o.append.as_deref()), ("2G", None));
        let o = run(&["--ktest", "--append", "mem=512M"]);
        assert_eq!((o.machine.mem.as_str(), o.append.as_deref()), ("1G", Some("mem=512M")));
        let o = run(&["--ktest", "--numa", "1G,1G"]);
        assert_eq!(
            (o.machine.mem.as_str(), o.append.as_deref()),
            ("2G", None),
            "the nodes set the RAM"
        );
        assert_eq!(run(&["--exec", "poweroff"]).append, None);
    }

    #[test]
    fn runs_get_dimm_slots_in_firmware_mode() {
        let k = |o: &Options| Kernel::paths(std::path::Path::new("/ws"), o.kernel);
        let o = run(&["--exec", "poweroff"]);
        let r = o.qemu_run("qemu".into(), k(&o), None);
        assert_eq!(r.machine.mem, "1G,slots=8,maxmem=33G");
        assert_eq!(r.serial, Serial::Stdio);
        let o = run(&["--mem", "2G,slots=2,maxmem=4G"]);
        let r = o.qemu_run("qemu".into(), k(&o), None);
        assert_eq!(r.machine.mem, "2G,slots=2,maxmem=4G");
        assert_eq!(r.serial, Serial::MonStdio);
        assert_eq!(r.timeout, None);
        let o = run(&["--boot", "kernel"]);
        assert_eq!(o.qemu_run("qemu".into(), k(&o), None).machine.mem, "1G");
    }

    #[test]
    fn help_documents_every_option() {
        let h = help();
        for opt in [
            "--granule",
            "--va-bits",
            "alias: --va",
            "--boot",
            "--cpu",
            "--smp",
            "--mem",
            "--gic",
            "--el2",
            "--ktest",
            "--timeout",
            "--exec",
            "--gdb",
            "--gdb-port",
            "--append",
            "--qemu-arg",
            "--dry-run",
            "--help",
            "Ctrl-A x",
            "HOTMEM_QEMU",
            ":plug SIZE [ID] [node=N]",
            "--numa",
            "--numa-dist",
            "a pair\n          not named is 20",
            ":unplug ID",
            ":dimms",
            ":qmp",
            ":reset",
            ":powerdown",
        ] {
            assert!(h.contains(opt), "help lacks {opt}");
        }
        assert!(h.contains("4k: 39, 48 (default 48)"));
    }

    /// Every `--virtio-mem` value QEMU or the guest would refuse is refused here, before a
    /// kernel is built, with the value and what would be accepted.
    #[test]
    fn virtio_mem_values_are_checked_before_anything_runs() {
        let cases = [
            (vec!["--virtio-mem", "100M"], "the region must be a multiple of 128M"),
            (vec!["--granule", "64k", "--virtio-mem", "1G,block=1G"], ""),
            (vec!["--granule", "64k", "--virtio-mem", "768M"], "multiple of 512M"),
            (
                vec!["--virtio-mem", "4G,requested=5G"],
                "requested=5G must be at most the 4G region",
            ),
            (
                vec!["--virtio-mem", "4G,requested=3M"],
                "a multiple of the 2M device block",
            ),
            (vec!["--virtio-mem", "4G,block=3M"], "block=3M must be a power of two"),
            (vec!["--virtio-mem", "4G,block=1K"], "of at least 1M"),
            (vec!["--virtio-mem", "4G,block=8G"], "is larger than the 4G region"),
            (
                vec!["--virtio-mem", "4G,node=3"],
                "node=3 does not exist: the machine has 1 NUMA node",
            ),
            (vec!["--virtio-mem", "-1G"], "`-1G` is not a size"),
            (vec!["--virtio-mem", "4G,requested=0x"], "`0x` is not a size"),
            (
                vec![
                    "--virtio-mem",
                    "4G,node=1",
                    "--qemu-arg=-numa",
                    "--qemu-arg=node,nodeid=0",
                    "--qemu-arg=-numa",
                    "--qemu-arg=node,nodeid=1",
                ],
                "",
            ),
        ];
        for (args, want) in cases {
            match parse_args(args.clone()) {
                Ok(_) if want.is_empty() => {}
                Err(e) if !want.is_empty() && e.contains(want) && !e.contains('\n') => {}
                r => panic!("{args:?}: expected {want:?}, got {r:?}"),
            }
        }
    }

    /// `--numa` in every boot mode: the nodes, `-m` as their total (with the DIMM room of
    /// firmware boots), one socket per CPU, distances; and the node counts `:plug` and
    /// `--virtio-mem` are checked against.
    #[test]
    fn numa_nodes_reach_the_command_line_in_every_boot_mode() {
        let k = |o: &Options| Kernel::paths(std::path::Path::new("/ws"), o.kernel);
        for boot in BootMode::ALL {
            let o = run(&[
                "--numa",
                "1G,1G,0",
                "--numa-dist",
                "0-2=30",
                "--smp",
                "4",
                "--boot",
                boot.name(),
                "--exec",
                ":dimms; poweroff",
            ]);
            assert_eq!(o.machine.mem, "2G");
            let l = o.qemu_run("qemu".into(), k(&o), None).command_line();
            let mem = if boot.is_firmware() {
                " -m 2G,slots=8,maxmem=34G "
            } else {
                " -m 2G "
            };
            for want in [
                " -smp 4,sockets=4 ",
                mem,
                " -object memory-backend-ram,id=node0,size=1073741824 -object memory-backend-ram,id=node1,size=1073741824 ",
                " -numa node,nodeid=0,cpus=0,cpus=2,memdev=node0 -numa node,nodeid=1,cpus=1,cpus=3,memdev=node1 -numa node,nodeid=2 ",
                " -numa dist,src=0,dst=1,val=20 -numa dist,src=0,dst=2,val=30 -numa dist,src=1,dst=2,val=20 ",
            ] {
                assert!(l.contains(want), "{boot}: {want:?} not in {l}");
            }
        }
        let o = run(&[
            "--numa",
            "1G,1G",
            "--mem",
            "2G,slots=2,maxmem=4G",
            "--virtio-mem",
            "1G,node=1",
        ]);
        assert_eq!(o.machine.mem, "2G,slots=2,maxmem=4G");
        let l = o.qemu_run("qemu".into(), k(&o), None).command_line();
        assert!(
            l.contains("-device virtio-mem-pci,id=vmem0,memdev=mem-vmem0,node=1"),
            "{l}"
        );
        run(&["--numa", "1G,0,0", "--exec", ":plug 1G node=2; poweroff"]);
        let plain = run(&[]).qemu_run("qemu".into(), k(&run(&[])), None).command_line();
        assert!(plain.contains(" -smp 2 -m ") && !plain.contains("-numa"), "{plain}");
    }

    /// Every `--numa`, `--numa-dist` and node value QEMU or the kernel would refuse is refused
    /// here, before a kernel is built, with the value and what would be accepted.
    #[test]
    fn numa_values_are_checked_before_anything_runs() {
        let cases: [(&[&str], &str); 14] = [
            (
                &["--numa", "1G,1G,1G,1G,1G,1G,1G,1G,1G", "--smp", "1"],
                "9 nodes, but the kernel supports at most 8",
            ),
            (&["--numa", "1G:cpus=0,1G:cpus=0-1"], "cpu 0 is in node 0 and in node 1"),
            (
                &["--numa", "1G:cpus=0-2"],
                "cpu 2 of node 0 does not exist: --smp 2 gives cpus 0-1",
            ),
            (&["--numa", "0,0"], "no node has memory"),
            (&["--numa", "1G,100M"], "node 1's 100M is not a multiple of 128M"),
            (
                &["--granule", "64k", "--numa", "1G,128M"],
                "node 1's 128M is not a multiple of 512M",
            ),
            (
                &["--numa", "1G,1G", "--numa-dist", "0-1=9"],
                "`0-1=9`: distances between different nodes are 11 to 255",
            ),
            (
                &["--numa", "1G,1G", "--numa-dist", "1-1=20"],
                "a node's distance to itself is 10",
            ),
            (&["--numa-dist", "0-1=20"], "--numa-dist 0-1=20 needs --numa"),
            (
                &["--numa", "1G,1G", "--mem", "1G"],
                "--mem 1G: --numa 1G,1G gives the machine 2G of RAM; give --mem 2G",
            ),
            (
                &["--numa", "1G", "--qemu-arg=-numa", "--qemu-arg=node,nodeid=0"],
                "from --numa or from --qemu-arg=-numa, not both",
            ),
            (
                &["--numa", "1G,1G", "--virtio-mem", "1G,node=2"],
                "node=2 does not exist: the machine has 2 NUMA nodes",
            ),
            (
                &["--exec", ":plug 1G node=1; poweroff"],
                "`:plug 1G node=1`: node=1 does not exist: the machine has 1 NUMA node (0;",
            ),
            (
                &["--numa", "1G,0", "--exec", ":plug 1G node=2"],
                "node=2 does not exist: the machine has 2 NUMA nodes (0-1;",
            ),
        ];
        for (args, want) in cases {
            match parse_args(args.iter().copied()) {
                Err(e) if e.contains(want) && !e.contains('\n') => {}
                r => panic!("{args:?}: expected {want:?}, got {r:?}"),
            }
        }
    }

    /// Every example the banner gives is a host command this boot mode accepts.
    #[test]
    fn banner_examples_are_accepted_by_the_boot_mode() {
        for boot in [BootMode::Firmware, BootMode::Kernel, BootMode::Image] {
            let text = host_command_examples(boot);
            let examples: Vec<&str> = text
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|e| e.starts_with(':') && e.contains(' ') || *e == ":dimms" || *e == ":reset")
                .collect();
            assert!(!examples.is_empty(), "{text}");
            for e in examples {
                let c = parse_host_command(e).unwrap_or_else(|err| panic!("{boot}: `{e}`: {err}"));
                assert_eq!(
                    host_command_needs_firmware(&c, boot),
                    None,
                    "{boot}: banner suggests `{e}`"
                );
            }
        }
    }

    #[test]
    fn exec_command_longer_than_a_shell_line_is_refused() {
        let max = crate::config::kernel_line_max();
        assert_eq!(max, 256);
        let fits = format!("page{}0x40000", " ".repeat(max - 11));
        assert_eq!(fits.len(), max);
        run(&["--exec", &format!("{fits}; cpus; poweroff")]);
        let long = format!("page{}0x40000", " ".repeat(248));
        let e = err(&["--exec", &format!("{long}; cpus; poweroff")]);
        assert!(e.contains("259 bytes, but a guest shell line holds at most 256"), "{e}");
        // Host commands are not typed to the guest.
        run(&[
            "--exec",
            &format!(":qmp {{\"execute\":\"query-status\"{}}}; poweroff", " ".repeat(300)),
        ]);
    }
}
