//! [`QemuRun`]: one configuration of `qemu-system-aarch64 -M virt` for a built kernel, turned
//! into a command line and run (interactively, or driven through the console with a timeout).

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::config::{BootMode, GicVersion};
use crate::console::{Console, ConsoleOptions, RunOutcome, PROMPT};
use crate::discover::QEMU_BINARY;
use crate::kernel::Kernel;
use crate::numa::Numa;
use crate::util::shell_join;

/// Default CPU model: every granule, no LPA2 (whose descriptor format the kernel does not use).
pub const DEFAULT_CPU: &str = "max,lpa2=off";
pub const DEFAULT_SMP: u32 = 2;
pub const DEFAULT_MEM: &str = "1G";
/// Default port of `--gdb` (QEMU's customary one); another free port is chosen when taken.
pub const DEFAULT_GDB_PORT: u16 = 1234;

/// The `virt` machine's options (independent of the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cpu: String,
    pub smp: u32,
    /// QEMU `-m` value, e.g. `1G`.
    pub mem: String,
    pub gic: GicVersion,
    /// `virtualization=on`: the CPU starts at EL2 (the kernel drops to EL1).
    pub el2: bool,
    /// virtio-mem devices `vmem0`, `vmem1`, ... (`--virtio-mem`).
    pub virtio_mem: Vec<VirtioMem>,
    /// NUMA nodes (`--numa`, `--numa-dist`); `None`: QEMU's one implicit node. `mem` holds
    /// their total. Boxed: most machines have none.
    pub numa: Option<Box<Numa>>,
}

/// QEMU's `block-size` default on this host (the THP size) and its minimum.
pub const QEMU_DEFAULT_BLOCK: u64 = 2 << 20;
pub const QEMU_MIN_BLOCK: u64 = 1 << 20;

/// One `--virtio-mem SIZE[,block=SIZE,requested=SIZE,node=N]` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioMem {
    /// The region (the backend's size).
    pub size: u64,
    /// `block-size` (QEMU's default: the host's THP size, 2 MiB here).
    pub block: Option<u64>,
    /// `requested-size` at start.
    pub requested: Option<u64>,
    pub node: Option<u32>,
}

impl VirtioMem {
    pub fn new(size: u64) -> Self {
        VirtioMem {
            size,
            block: None,
            requested: None,
            node: None,
        }
    }

    /// Parses `SIZE[,block=SIZE,requested=SIZE,node=N]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let size = crate::config::parse_nonzero_size(parts.next().unwrap_or(""))
            .map_err(|e| format!("--virtio-mem {s}: {e}"))?;
        let mut v = VirtioMem::new(size);
        for p in parts {
            let bad = |e: String| format!("--virtio-mem {s}: {e}");
            match p.split_once('=') {
                Some(("block", b)) => v.block = Some(crate::config::parse_nonzero_size(b).map_err(bad)?),
                Some(("requested", r)) => {
                    v.requested = Some(
                        mm::size::parse_size(r.trim())
                            .map_err(|_| bad(format!("`{r}` is not a size (examples: 0, 512M, 2G)")))?,
                    )
                }
                Some(("node", n)) => {
                    v.node = Some(
                        n.trim()
                            .parse()
                            .map_err(|_| bad(format!("`{n}` is not a node number")))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option `{p}` (expected block=SIZE, requested=SIZE or node=N)"
                    )))
                }
            }
        }
        Ok(v)
    }

    /// Checks the device against what QEMU and the guest accept, before anything is built:
    /// `granule`'s memory block, and `nodes` NUMA nodes. One line naming the value and what
    /// would be accepted.
    pub fn check(&self, granule: crate::config::Granule, nodes: u32) -> Result<(), String> {
        use mm::size::Size;
        let mb = granule.memory_block_size();
        let block = self.block.unwrap_or(QEMU_DEFAULT_BLOCK);
        let this = self.spec();
        if let Some(b) = self.block {
            if !b.is_power_of_two() || b < QEMU_MIN_BLOCK {
                return Err(format!(
                    "--virtio-mem {this}: block={} must be a power of two of at least {} (QEMU's minimum), e.g. block=2M",
                    Size(b),
                    Size(QEMU_MIN_BLOCK)
                ));
            }
            if b > self.size {
                return Err(format!(
                    "--virtio-mem {this}: block={} is larger than the {} region",
                    Size(b),
                    Size(self.size)
                ));
            }
        }
        let unit = mb.max(block);
        if !self.size.is_multiple_of(unit) {
            return Err(format!(
                "--virtio-mem {this}: the region must be a multiple of {} (the {} granule's memory block{}), e.g. {}",
                Size(unit),
                granule.name(),
                if block > mb { " and the device block" } else { "" },
                Size(self.size.next_multiple_of(unit))
            ));
        }
        if let Some(r) = self.requested {
            if r > self.size || !r.is_multiple_of(block) {
                return Err(format!(
                    "--virtio-mem {this}: requested={} must be at most the {} region and a multiple of the {} device block",
                    Size(r),
                    Size(self.size),
                    Size(block)
                ));
            }
        }
        if let Some(n) = self.node {
            if n >= nodes {
                return Err(format!(
                    "--virtio-mem {this}: node={n} does not exist: the machine has {nodes} NUMA node{} (0{}; add nodes with --numa, e.g. --numa 1G,0)",
                    if nodes == 1 { "" } else { "s" },
                    if nodes > 1 { format!("..{}", nodes - 1) } else { String::new() }
                ));
            }
        }
        Ok(())
    }

    /// The option's value as given back: `SIZE[,block=..][,requested=..][,node=..]`.
    fn spec(&self) -> String {
        use mm::size::Size;
        let mut s = format!("{}", Size(self.size));
        if let Some(b) = self.block {
            s.push_str(&format!(",block={}", Size(b)));
        }
        if let Some(r) = self.requested {
            s.push_str(&format!(",requested={}", Size(r)));
        }
        if let Some(n) = self.node {
            s.push_str(&format!(",node={n}"));
        }
        s
    }

    /// Guest-physical room the device needs in QEMU's device-memory region: its size rounded
    /// up to 1 GiB, plus 1 GiB for aligning it (QEMU aligns each region to its block size).
    pub fn room(&self) -> u64 {
        const GIB: u64 = 1 << 30;
        self.size.div_ceil(GIB) * GIB + GIB.max(self.block.unwrap_or(0))
    }

    /// `-object ... -device ...` for device `vmem<n>`.
    pub fn qemu_args(&self, n: usize) -> Vec<String> {
        let mut dev = format!("virtio-mem-pci,id=vmem{n},memdev=mem-vmem{n}");
        if let Some(b) = self.block {
            dev.push_str(&format!(",block-size={b}"));
        }
        if let Some(r) = self.requested {
            dev.push_str(&format!(",requested-size={r}"));
        }
        if let Some(node) = self.node {
            dev.push_str(&format!(",node={node}"));
        }
        vec![
            "-object".into(),
            format!("memory-backend-ram,id=mem-vmem{n},size={}", self.size),
            "-device".into(),
            dev,
        ]
    }
}

/// The `-m` value with room for `extra` bytes of device memory: a value without `maxmem=` gets
/// `maxmem=<RAM + extra>`; one that names it is the user's choice.
pub fn mem_with_device_room(mem: &str, extra: u64) -> String {
    if extra == 0 || mem.contains("maxmem=") {
        return mem.to_string();
    }
    let ram = mem.split(',').next().unwrap_or("");
    let Some(bytes) = crate::config::mem_size_bytes(ram) else {
        return mem.to_string();
    };
    format!("{mem},maxmem={}", mm::size::Size(bytes + extra))
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            cpu: DEFAULT_CPU.into(),
            smp: DEFAULT_SMP,
            mem: DEFAULT_MEM.into(),
            gic: GicVersion::V2,
            el2: false,
            virtio_mem: Vec::new(),
            numa: None,
        }
    }
}

impl Machine {
    /// Device-memory room the virtio-mem devices need ([`VirtioMem::room`]).
    pub fn virtio_mem_room(&self) -> u64 {
        self.virtio_mem.iter().map(VirtioMem::room).sum()
    }

    /// The `-smp` value: with NUMA nodes each CPU is its own socket, so that no cluster spans
    /// two nodes (QEMU warns about that: "It can cause OSes like Linux to misbehave").
    pub fn smp_arg(&self) -> String {
        match self.numa {
            Some(_) => format!("{0},sockets={0}", self.smp),
            None => self.smp.to_string(),
        }
    }

    /// NUMA nodes of the machine: `--numa`'s, else 1 (QEMU's implicit node).
    pub fn numa_nodes(&self) -> u32 {
        self.numa.as_ref().map_or(1, |n| n.node_count())
    }

    /// The `-M` value, e.g. `virt,gic-version=3,virtualization=on`.
    pub fn machine_arg(&self) -> String {
        let mut m = format!("virt,gic-version={}", self.gic.number());
        if self.el2 {
            m.push_str(",virtualization=on");
        }
        m
    }
}

/// Where the guest's serial console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// `-serial stdio`: for piped, driven runs.
    Stdio,
    /// `-serial mon:stdio`: interactive; Ctrl-A x quits, Ctrl-A c toggles the QEMU monitor.
    MonStdio,
}

/// Picks a free loopback TCP port for the gdbstub: `preferred` when it is free, else any.
pub fn free_gdb_port(preferred: u16) -> io::Result<u16> {
    if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)) {
        return Ok(l.local_addr()?.port());
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// fw_cfg file carrying the kernel command line in firmware mode (read by the kernel's fw_cfg
/// driver, `platform/src/drivers/fw_cfg.rs`).
pub const FW_CFG_CMDLINE: &str = "opt/org.hotmem/cmdline";

/// One QEMU run of one kernel: configuration → command line → process.
#[derive(Clone, Debug)]
pub struct QemuRun {
    pub qemu: PathBuf,
    pub kernel: Kernel,
    pub machine: Machine,
    pub boot: BootMode,
    pub serial: Serial,
    /// `-gdb tcp:127.0.0.1:<port> -S` (loopback only, CPU halted until gdb continues).
    pub gdb_port: Option<u16>,
    /// Kernel command line. `-kernel` boots get `-append` (QEMU puts it in the DTB's
    /// `/chosen/bootargs`); firmware boots cannot use `-append` (QEMU accepts it only with
    /// `-kernel`), so they get the fw_cfg file [`FW_CFG_CMDLINE`], which the kernel reads.
    pub append: Option<String>,
    /// `-qmp unix:<path>,server=on,wait=off`: the QMP socket ([`crate::qmp`]).
    pub qmp_socket: Option<PathBuf>,
    /// Extra QEMU arguments, appended last.
    pub extra: Vec<String>,
    /// Overall deadline; the process is SIGKILLed when it passes. `None`: no limit.
    pub timeout: Option<Duration>,
    /// Echo console output to our stdout/stderr as it arrives.
    pub echo: bool,
    pub prompt: String,
    /// Keep the run's logs here: `command.txt` (the QEMU command line), `serial.log`,
    /// `stderr.log` and, for QMP sessions, `qmp.log`.
    pub log_dir: Option<PathBuf>,
}

impl QemuRun {
    /// A run of `kernel` with the defaults: firmware boot, `max,lpa2=off`, GICv2, 2 CPUs, 1G,
    /// `-serial stdio`, 60 s timeout, no echo, `qemu-system-aarch64` from `PATH`.
    pub fn new(kernel: Kernel) -> Self {
        QemuRun {
            qemu: PathBuf::from(QEMU_BINARY),
            kernel,
            machine: Machine::default(),
            boot: BootMode::Firmware,
            serial: Serial::Stdio,
            gdb_port: None,
            append: None,
            qmp_socket: None,
            extra: Vec::new(),
            timeout: Some(Duration::from_secs(60)),
            echo: false,
            prompt: PROMPT.into(),
            log_dir: None,
        }
    }

    pub fn log_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.log_dir = dir;
        self
    }

    pub fn qemu(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu = path.into();
        self
    }
    pub fn machine(mut self, m: Machine) -> Self {
        self.machine = m;
        self
    }
    pub fn boot(mut self, b: BootMode) -> Self {
        self.boot = b;
        self
    }
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.machine.cpu = cpu.into();
        self
    }
    pub fn smp(mut self, n: u32) -> Self {
        self.machine.smp = n;
        self
    }
    pub fn mem(mut self, m: impl Into<String>) -> Self {
        self.machine.mem = m.into();
        self
    }
    pub fn gic(mut self, g: GicVersion) -> Self {
        self.machine.gic = g;
        self
    }
    pub fn el2(mut self, on: bool) -> Self {
        self.machine.el2 = on;
        self
    }
    pub fn serial(mut self, s: Serial) -> Self {
        self.serial = s;
        self
    }
    pub fn gdb(mut self, port: Option<u16>) -> Self {
        self.gdb_port = port;
        self
    }
    pub fn append(mut self, cmdline: Option<String>) -> Self {
        self.append = cmdline.filter(|c| !c.is_empty());
        self
    }
    /// Serve QMP on the unix socket `path` (`None`: no QMP).
    pub fn qmp_socket(mut self, path: Option<PathBuf>) -> Self {
        self.qmp_socket = path;
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, it: I) -> Self {
        self.extra.extend(it.into_iter().map(Into::into));
        self
    }
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.timeout = t;
        self
    }
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }

    /// Short description for messages: `16k-47-ktest firmware cpu=max,lpa2=off smp=2 gic=2`.
    pub fn describe(&self) -> String {
        let m = &self.machine;
        format!(
            "{} {} cpu={} smp={} mem={} gic={}{}",
            self.kernel.config,
            self.boot,
            m.cpu,
            m.smp,
            m.mem,
            m.gic,
            if m.el2 { " el2" } else { "" }
        )
    }

    /// QEMU's arguments (without the program).
    pub fn qemu_args(&self) -> Vec<String> {
        let m = &self.machine;
        let mut a: Vec<String> = vec![
            "-M".into(),
            m.machine_arg(),
            "-cpu".into(),
            m.cpu.clone(),
            "-smp".into(),
            m.smp_arg(),
            "-m".into(),
            mem_with_device_room(&m.mem, m.virtio_mem_room()),
            "-semihosting".into(),
            // No default NIC: the kernel has no network driver, and QEMU would need its
            // option ROM (efi-virtio.rom) for nothing.
            "-nic".into(),
            "none".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            match self.serial {
                Serial::Stdio => "stdio".into(),
                Serial::MonStdio => "mon:stdio".into(),
            },
        ];
        if let Some(numa) = &m.numa {
            a.extend(numa.qemu_args(m.smp));
        }
        for (n, v) in m.virtio_mem.iter().enumerate() {
            a.extend(v.qemu_args(n));
        }
        let path = |p: &Path| p.to_string_lossy().into_owned();
        match self.boot {
            BootMode::Firmware => a.extend(["-bios".into(), path(&self.kernel.bin)]),
            BootMode::Kernel => a.extend(["-kernel".into(), path(&self.kernel.elf)]),
            BootMode::Image => a.extend(["-kernel".into(), path(&self.kernel.bin)]),
            BootMode::Pflash => a.extend([
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,readonly=on,file={}",
                    path(&self.kernel.pflash()).replace(',', ",,")
                ),
            ]),
        }
        if let Some(cmdline) = &self.append {
            match self.boot {
                BootMode::Firmware | BootMode::Pflash => {
                    // fw_cfg option strings cannot contain a comma unescaped: QEMU's ",," escape.
                    a.extend([
                        "-fw_cfg".into(),
                        format!("name={FW_CFG_CMDLINE},string={}", cmdline.replace(',', ",,")),
                    ])
                }
                BootMode::Kernel | BootMode::Image => a.extend(["-append".into(), cmdline.clone()]),
            }
        }
        if let Some(port) = self.gdb_port {
            a.extend(["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()]);
        }
        if let Some(p) = &self.qmp_socket {
            a.extend(["-qmp".into(), crate::qmp::qmp_arg(p)]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The whole command line, shell-quoted (what `--dry-run` prints).
    pub fn command_line(&self) -> String {
        let mut w = vec![self.qemu.to_string_lossy().into_owned()];
        w.extend(self.qemu_args());
        shell_join(&w)
    }

    /// The process, stdio not yet set.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        c.args(self.qemu_args());
        c
    }

    /// The kernel files this run needs, checked to exist.
    fn check_files(&self) -> io::Result<()> {
        let f = match self.boot {
            BootMode::Kernel => self.kernel.elf.clone(),
            BootMode::Firmware | BootMode::Image => self.kernel.bin.clone(),
            BootMode::Pflash => self.kernel.pflash(),
        };
        if f.is_file() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("kernel file {} does not exist (build it first)", f.display()),
            ))
        }
    }

    fn console_options(&self) -> ConsoleOptions {
        ConsoleOptions {
            timeout: self.timeout,
            echo: self.echo,
            prompt: self.prompt.clone(),
            log_dir: self.log_dir.clone(),
            ..ConsoleOptions::default()
        }
    }

    /// Starts QEMU with piped stdio for driving through the console.
    pub fn spawn(&self) -> io::Result<Console> {
        self.check_files()?;
        if let Some(d) = &self.log_dir {
            std::fs::create_dir_all(d)?;
            std::fs::write(
                d.join("command.txt"),
                format!("# {}\n{}\n", self.describe(), self.command_line()),
            )?;
        }
        Console::spawn(self.command(), self.console_options())
    }

    /// Boots, types `commands` one per prompt, waits for QEMU to exit (SIGKILL at the
    /// deadline), and returns the exit status and everything printed.
    pub fn run<S: AsRef<str>>(&self, commands: &[S]) -> io::Result<RunOutcome> {
        Ok(self.spawn()?.run_script(commands))
    }

    /// Runs QEMU on our terminal (stdio inherited); SIGKILL when the timeout passes.
    /// Returns the exit status and whether the timeout killed it.
    pub fn run_interactive(&self) -> io::Result<(ExitStatus, bool)> {
        self.check_files()?;
        let mut child = self
            .command()
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?;
        let Some(t) = self.timeout else {
            return Ok((child.wait()?, false));
        };
        let deadline = Instant::now() + t;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok((st, false));
            }
            if Instant::now() >= deadline {
                child.kill()?;
                return Ok((child.wait()?, true));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Granule, KernelConfig};

    fn kernel() -> Kernel {
        Kernel::paths(Path::new("/ws"), KernelConfig::new(Granule::K16, 47).unwrap())
    }

    #[test]
    fn default_command_line() {
        let r = QemuRun::new(kernel());
        assert_eq!(
            r.command_line(),
            "qemu-system-aarch64 -M virt,gic-version=2 -cpu max,lpa2=off -smp 2 -m 1G -semihosting -nic none -display none \
             -monitor none -serial stdio -bios /ws/target/kernel/out/hotmem-16k-47.bin"
        );
    }

    #[test]
    fn virtio_mem_devices() {
        let mut r = QemuRun::new(kernel()).boot(BootMode::Kernel);
        r.machine.virtio_mem = vec![
            VirtioMem::new(4 << 30),
            VirtioMem::parse("512M,block=128M,requested=256M").unwrap(),
        ];
        let l = r.command_line();
        assert!(l.contains(" -m 1G,maxmem=8G "), "{l}");
        assert!(
            l.contains(
                " -object memory-backend-ram,id=mem-vmem0,size=4294967296 -device virtio-mem-pci,id=vmem0,memdev=mem-vmem0 "
            ),
            "{l}"
        );
        assert!(
            l.contains(
                "-device virtio-mem-pci,id=vmem1,memdev=mem-vmem1,block-size=134217728,requested-size=268435456 "
            ),
            "{l}"
        );
        assert_eq!(mem_with_device_room("1G,maxmem=3G", 5 << 30), "1G,maxmem=3G");
        assert_eq!(mem_with_device_room("1536M", 2 << 30), "1536M,maxmem=3584M");
    }

    #[test]
    fn boot_modes_and_options() {
        let r = QemuRun::new(kernel())
            .boot(BootMode::Kernel)
            .gic(GicVersion::V3)
            .el2(true)
            .cpu("cortex-a76")
            .smp(4)
            .mem("2G")
            .serial(Serial::MonStdio)
            .gdb(Some(4321))
            .args(["-d", "int"]);
        assert_eq!(
            r.qemu_args().join(" "),
            "-M virt,gic-version=3,virtualization=on -cpu cortex-a76 -smp 4 -m 2G -semihosting -nic none -display none \
             -monitor none -serial mon:stdio -kernel /ws/target/kernel/out/hotmem-16k-47.elf \
             -gdb tcp:127.0.0.1:4321 -S -d int"
        );
        let img = QemuRun::new(kernel()).boot(BootMode::Image).qemu_args();
        assert_eq!(
            img[img.len() - 2..],
            ["-kernel", "/ws/target/kernel/out/hotmem-16k-47.bin"]
        );
        let flash = QemuRun::new(kernel())
            .boot(BootMode::Pflash)
            .append(Some("mem=1G".into()))
            .qemu_args();
        assert_eq!(
            flash[flash.len() - 4..],
            [
                "-drive",
                "if=pflash,format=raw,readonly=on,file=/ws/target/kernel/out/hotmem-16k-47.pflash",
                "-fw_cfg",
                "name=opt/org.hotmem/cmdline,string=mem=1G"
            ]
        );
        assert_eq!(r.describe(), "16k-47 kernel cpu=cortex-a76 smp=4 mem=2G gic=3 el2");
    }

    #[test]
    fn gdb_port() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        let p = free_gdb_port(taken).unwrap();
        assert_ne!(p, taken);
    }

    /// Real QEMU, no kernel: zeroed flash faults for ever and never prompts, so the run must be
    /// SIGKILLed at the deadline. Skipped when QEMU is not installed.
    #[test]
    fn silent_guest_in_real_qemu_is_killed() {
        let Ok(Some(qemu)) = crate::discover::find_qemu() else {
            eprintln!("qemu-system-aarch64 not found; skipped");
            return;
        };
        let dir = std::env::temp_dir().join(format!("hotmem-run-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = Kernel {
            config: KernelConfig::default_for(Granule::K4),
            elf: dir.join("none.elf"),
            bin: dir.join("zero.bin"),
        };
        std::fs::write(&k.bin, [0u8; 4096]).unwrap();
        let t = Instant::now();
        let out = QemuRun::new(k)
            .qemu(qemu)
            .smp(1)
            .mem("128M")
            .timeout(Some(Duration::from_secs(3)))
            .run(&["meminfo"])
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.timed_out, "{}", out.describe());
        assert!(t.elapsed() < Duration::from_secs(20));
        assert_eq!(out.host_exit_code(), crate::console::TIMEOUT_EXIT_CODE);
        assert!(out.failure.unwrap().contains("before typing `meminfo`"));
    }

    #[test]
    fn missing_kernel_file_is_reported() {
        let e = QemuRun::new(kernel()).run(&["x"]).unwrap_err();
        assert!(e.to_string().contains("hotmem-16k-47.bin"), "{e}");
    }
}
