//! GDB sessions against a QEMU started with `--gdb`: the `gdb-multiarch` command line that
//! loads the project's gdbinit (`qemu/gdb/gdbinit`: architecture, python extension with the
//! `hm-*` commands), and a batch runner for tests ([`GdbBatch`]: `gdb-multiarch -batch` with a
//! deadline, SIGKILL when it passes, output of every step captured in order).
//!
//! The gdbstub is always on `127.0.0.1` (see [`crate::run::QemuRun::qemu_args`]).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::run::{free_gdb_port, QemuRun};
use crate::util::shell_join;

pub use crate::discover::{find_gdb, GDB_BINARY, GDB_ENV};

/// `<workspace>/qemu/gdb`: the gdbinit and the `hotmem_gdb` python package.
pub fn gdb_dir(workspace: &Path) -> PathBuf {
    workspace.join("qemu").join("gdb")
}

/// `<workspace>/qemu/gdb/gdbinit`.
pub fn gdbinit(workspace: &Path) -> PathBuf {
    gdb_dir(workspace).join("gdbinit")
}

/// Arguments of an interactive session: `-q -x <gdbinit> -ex 'hm-connect <port>' <elf>`.
pub fn session_args(workspace: &Path, elf: &Path, port: u16) -> Vec<String> {
    vec![
        "-q".into(),
        "-x".into(),
        gdbinit(workspace).to_string_lossy().into_owned(),
        "-ex".into(),
        format!("hm-connect {port}"),
        elf.to_string_lossy().into_owned(),
    ]
}

/// The command line `cargo run -- --gdb` prints.
pub fn session_command(workspace: &Path, elf: &Path, port: u16) -> String {
    let mut w = vec![GDB_BINARY.to_string()];
    w.extend(session_args(workspace, elf, port));
    shell_join(&w)
}

/// The gdb command that attaches to a `--gdb` run, with the project's gdbinit (python `hm-*`
/// commands) and the kernel's symbols: see [`session_command`].
pub fn gdb_command(elf: &Path, port: u16) -> String {
    session_command(&crate::kernel::workspace_root(), elf, port)
}

/// Marker echoed before each [`GdbBatch::step`] so the output can be split per step.
pub const STEP_MARKER: &str = "@@hm-step ";

/// `gdb-multiarch -nx -batch -x <gdbinit> -ex 'hm-connect <port>' -ex ... <elf>`.
#[derive(Clone, Debug)]
pub struct GdbBatch {
    pub gdb: PathBuf,
    pub workspace: PathBuf,
    pub elf: PathBuf,
    pub port: u16,
    /// Start with `hm-connect <port>` (default); off for sessions on the ELF alone.
    pub connect: bool,
    /// `-ex` commands after `hm-connect`, in order.
    pub commands: Vec<String>,
    /// The process is SIGKILLed when this passes (counted from spawn).
    pub timeout: Duration,
}

impl GdbBatch {
    pub fn new(gdb: impl Into<PathBuf>, elf: impl Into<PathBuf>, port: u16) -> Self {
        GdbBatch {
            gdb: gdb.into(),
            workspace: crate::kernel::workspace_root(),
            elf: elf.into(),
            port,
            connect: true,
            commands: Vec::new(),
            timeout: Duration::from_secs(120),
        }
    }

    /// No `hm-connect`: gdb on the ELF alone (configuration, decoding, self-test).
    pub fn no_connect(mut self) -> Self {
        self.connect = false;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// One gdb command.
    pub fn command(mut self, c: impl Into<String>) -> Self {
        self.commands.push(c.into());
        self
    }

    /// A named step: its output is [`GdbOutcome::step`]`(name)`.
    pub fn step(mut self, name: &str, c: impl Into<String>) -> Self {
        self.commands.push(format!("echo \\n{STEP_MARKER}{name}\\n"));
        self.commands.push(c.into());
        self
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-nx".into(),
            "-batch".into(),
            "-x".into(),
            gdbinit(&self.workspace).to_string_lossy().into_owned(),
        ];
        if self.connect {
            a.push("-ex".into());
            a.push(format!("hm-connect {}", self.port));
        }
        for c in &self.commands {
            a.push("-ex".into());
            a.push(c.clone());
        }
        a.push(self.elf.to_string_lossy().into_owned());
        a
    }

    pub fn command_line(&self) -> String {
        let mut w = vec![self.gdb.to_string_lossy().into_owned()];
        w.extend(self.args());
        shell_join(&w)
    }

    /// Starts gdb; stdout and stderr go, interleaved as written, to one log file.
    pub fn spawn(&self) -> io::Result<GdbRun> {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "hotmem-gdb-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(&self.gdb)
            .args(self.args())
            .env("HOTMEM_GDB_DIR", gdb_dir(&self.workspace))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                let _ = fs::remove_file(&log);
                io::Error::new(e.kind(), format!("cannot run {}: {e}", self.gdb.display()))
            })?;
        let started = Instant::now();
        Ok(GdbRun {
            child,
            log,
            started,
            deadline: started + self.timeout,
            status: None,
        })
    }
}

/// A running batch gdb. Dropping it SIGKILLs gdb if it still runs and removes its log.
pub struct GdbRun {
    child: Child,
    log: PathBuf,
    started: Instant,
    deadline: Instant,
    status: Option<ExitStatus>,
}

impl GdbRun {
    /// Everything gdb printed so far.
    pub fn output(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether gdb has exited (reaps it).
    pub fn exited(&mut self) -> bool {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status.is_some()
    }

    /// Exit status once gdb has exited (see [`GdbRun::exited`]).
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Waits for gdb to exit; SIGKILL at the deadline.
    pub fn wait(mut self) -> GdbOutcome {
        let mut timed_out = false;
        while !self.exited() {
            if Instant::now() >= self.deadline {
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        GdbOutcome {
            status: self.status,
            output: self.output(),
            timed_out,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for GdbRun {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// What a batch gdb did.
#[derive(Clone, Debug, Default)]
pub struct GdbOutcome {
    pub status: Option<ExitStatus>,
    /// stdout and stderr, interleaved.
    pub output: String,
    /// The deadline passed and gdb was SIGKILLed.
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl GdbOutcome {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// Output of the named [`GdbBatch::step`], up to the next step (None if it never ran).
    pub fn step(&self, name: &str) -> Option<&str> {
        let marker = format!("{STEP_MARKER}{name}\n");
        let start = self.output.find(&marker)? + marker.len();
        let rest = &self.output[start..];
        let end = rest.find(&format!("\n{STEP_MARKER}")).unwrap_or(rest.len());
        Some(&rest[..end])
    }

    /// Lines showing a python failure of the extension (what the tests forbid).
    pub fn python_errors(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.contains("Python Exception") || l.contains("Error occurred in Python"))
            .collect()
    }
}

/// QEMU halted at reset with its gdbstub on a free loopback port, driven through its console,
/// plus a batch gdb attached to it. Both are killed when dropped.
pub struct GdbSession {
    pub port: u16,
    pub qemu: Console,
    pub gdb: GdbRun,
}

/// What `hm-connect` prints once `target remote` succeeded.
pub const CONNECTED_LINE: &str = "hotmem: kernel ";

/// How long [`start_session`] waits for gdb to attach.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(40);

/// Starts `run` paused (`-gdb tcp:127.0.0.1:<port> -S`, port picked here), then `batch` with
/// that port, and waits until gdb has attached (gdb retries the connection while QEMU starts:
/// gdbinit sets `tcp auto-retry`). The free port is only probed, so another process can take
/// it first: then both are killed and it is tried again with another port (3 attempts).
pub fn start_session(run: QemuRun, batch: GdbBatch) -> io::Result<GdbSession> {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_gdb_port(0)?;
        let qemu = run.clone().gdb(Some(port)).spawn()?;
        let mut gdb = GdbBatch {
            port,
            connect: true,
            ..batch.clone()
        }
        .spawn()?;
        let until = Instant::now() + ATTACH_TIMEOUT;
        loop {
            let out = gdb.output();
            if out.contains(CONNECTED_LINE) {
                return Ok(GdbSession { port, qemu, gdb });
            }
            if gdb.exited() || Instant::now() >= until {
                last = format!(
                    "gdb did not attach to QEMU on 127.0.0.1:{port}:\n{}",
                    crate::util::tail_lines(&out, 20)
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(gdb);
        drop(qemu);
    }
    Err(io::Error::new(io::ErrorKind::ConnectionRefused, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let ws = Path::new("/ws");
        assert_eq!(
            session_command(ws, Path::new("/ws/k.elf"), 1234),
            "gdb-multiarch -q -x /ws/qemu/gdb/gdbinit -ex 'hm-connect 1234' /ws/k.elf"
        );
        let b = GdbBatch {
            workspace: ws.into(),
            ..GdbBatch::new("gdb-multiarch", "/ws/k.elf", 4321)
        }
        .step("walk", "hm-walk 0x1")
        .command("detach");
        assert_eq!(
            b.command_line(),
            "gdb-multiarch -nx -batch -x /ws/qemu/gdb/gdbinit -ex 'hm-connect 4321' \
             -ex 'echo \\n@@hm-step walk\\n' -ex 'hm-walk 0x1' -ex detach /ws/k.elf"
        );
    }

    #[test]
    fn attach_command() {
        let cmd = gdb_command(Path::new("/ws/k.elf"), 1234);
        assert!(cmd.starts_with("gdb-multiarch -q -x "), "{cmd}");
        assert!(
            cmd.ends_with("/qemu/gdb/gdbinit -ex 'hm-connect 1234' /ws/k.elf"),
            "{cmd}"
        );
    }

    #[test]
    fn steps_and_python_errors() {
        let o = GdbOutcome {
            output: "x\n@@hm-step a\nA1\nA2\n\n@@hm-step b\nPython Exception <class 'E'>: e\n\
                     Error occurred in Python: e\n"
                .into(),
            ..Default::default()
        };
        assert_eq!(o.step("a"), Some("A1\nA2\n"));
        assert!(o.step("b").unwrap().starts_with("Python Exception"));
        assert_eq!(o.step("c"), None);
        assert_eq!(o.python_errors().len(), 2);
    }

    /// A gdb that does not finish is SIGKILLed at its deadline. Skipped without gdb.
    #[test]
    fn hung_gdb_is_killed() {
        let Ok(Some(gdb)) = find_gdb() else {
            eprintln!("{GDB_BINARY} not found; skipped");
            return;
        };
        let t = Instant::now();
        let out = GdbBatch::new(gdb, "/nonexistent.elf", 0)
            .no_connect()
            .timeout(Duration::from_millis(1500))
            .step("sleep", "python import time; time.sleep(30)")
            .spawn()
            .unwrap()
            .wait();
        assert!(out.timed_out && !out.success(), "{out:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn gdbinit_and_package_exist() {
        let ws = crate::kernel::workspace_root();
        assert!(gdbinit(&ws).is_file());
        assert!(gdb_dir(&ws).join("hotmem_gdb").join("__init__.py").is_file());
    }
}
