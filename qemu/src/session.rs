//! [`Session`]: one QEMU run with its console and its QMP socket, so that guest commands and
//! host (QMP) actions can be interleaved: the runner's `--exec` with `:` commands, and the DIMM
//! hotplug scenario tests.
//!
//! ```text
//! let mut s = Session::start(QemuRun::new(kernel).mem("1G,slots=8,maxmem=9G"))?;
//! s.boot()?;                                   // up to the first prompt
//! let p = s.plug(1 << 30, None)?;              // object-add + device_add, _OST, guest line
//! let blocks = s.guest("blocks")?;             // typed at the prompt, output up to the next
//! let u = s.unplug(&p.id)?;                    // device_del → DEVICE_DELETED / refusal
//! s.guest_exit("poweroff")?;
//! ```
//!
//! The QMP socket lives in a fresh directory under `target/qmp/` (removed when the session
//! ends); `-qmp unix:<dir>/qmp.sock,server=on,wait=off` is added to the command line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::console::{Console, ConsoleError, HostStep, RunOutcome};
use crate::host_cmd::ledger::unplugs_open;
use crate::host_cmd::{
    self, parse_host_command, After, DimmCommand, HostCommand, HostReply, HostTimeouts, Plugged, Resized, Unplugged,
    VmemCommand, VmemResult,
};
use crate::qmp::{Qmp, QmpError, DEFAULT_CONNECT_TIMEOUT};
use crate::run::QemuRun;

/// A directory holding one QMP socket; removed on drop.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
}

/// Unix socket paths are limited to 107 bytes (`sun_path`).
const MAX_SOCKET_PATH: usize = 100;

impl SocketDir {
    /// A new directory `<workspace>/target/qmp/<pid>-<n>` (or under the system temp dir when
    /// that path would be too long for a unix socket).
    pub fn new() -> io::Result<SocketDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut dir = crate::kernel::workspace_root().join("target").join("qmp").join(&name);
        if dir.join("qmp.sock").as_os_str().len() > MAX_SOCKET_PATH {
            dir = std::env::temp_dir().join(format!("hotmem-qmp-{name}"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(SocketDir { dir })
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a session step failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// QEMU did not start, or its QMP socket never answered.
    #[error("cannot start QEMU: {0}")]
    Start(String),
    #[error("console: {0}")]
    Console(#[from] ConsoleError),
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    /// A guest command's prompt did not come back within [`Session::guest_timeout`] (QEMU still
    /// runs); `tail` is the end of its output so far.
    #[error("no prompt {:.1} s after typing `{cmd}`{}", after.as_secs_f64(), lost_input_note(cmd, tail))]
    GuestTimeout { cmd: String, after: Duration, tail: String },
    /// A request the guest cannot answer now, so it was not made (the reason says why).
    #[error("{0}")]
    NotAsked(String),
}

/// The guest echoes each character it reads: an echo that stops inside the command means typed
/// bytes never reached the shell.
fn lost_input_note(cmd: &str, tail: &str) -> String {
    let line = tail.rsplit('\n').next().unwrap_or("");
    let last = line.rsplit(crate::console::PROMPT).next().unwrap_or("");
    if !last.is_empty() && cmd.starts_with(last) && last.len() < cmd.len() {
        format!(
            " (the guest echoed only {last:?} of it: the rest of the typed line never reached the \
             shell, e.g. lost UART input)"
        )
    } else {
        String::new()
    }
}

/// QEMU + its console + its QMP connection.
pub struct Session {
    /// The run as started (with the QMP socket set).
    pub run: QemuRun,
    pub console: Console,
    pub qmp: Qmp,
    /// Limits of [`Session::plug`] / [`Session::unplug`] (also capped by the run's deadline).
    pub timeouts: HostTimeouts,
    /// Limit of [`Session::guest`]: prompt back after a command (`None`: only the run's
    /// overall deadline).
    pub guest_timeout: Option<Duration>,
    /// The socket directory when the session made it (removed at the end).
    sock: Option<SocketDir>,
}

impl Session {
    /// Starts QEMU (piped console) and connects to its QMP socket: the run's
    /// [`QemuRun::qmp_socket`] if set (the caller owns it), else one in a fresh [`SocketDir`].
    pub fn start(run: QemuRun) -> Result<Session, SessionError> {
        let (run, sock) = match &run.qmp_socket {
            Some(_) => (run, None),
            None => {
                let d = SocketDir::new().map_err(|e| SessionError::Start(e.to_string()))?;
                (run.qmp_socket(Some(d.socket())), Some(d))
            }
        };
        let path = run.qmp_socket.clone().expect("set above");
        let mut console = run.spawn().map_err(|e| SessionError::Start(e.to_string()))?;
        let qmp = Qmp::connect(&path, DEFAULT_CONNECT_TIMEOUT, || match console.try_status() {
            Some(st) => Err(format!(
                "QEMU exited ({st}) before its QMP socket answered: {}",
                console.stderr_output().trim()
            )),
            None => Ok(()),
        });
        let mut qmp = match qmp {
            Ok(q) => q,
            Err(e) => {
                // QEMU may have made the socket and then refused its command line: its own
                // message says why.
                let t = std::time::Instant::now();
                while console.try_status().is_none() && t.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let why = match console.try_status() {
                    Some(st) => format!("QEMU exited ({st}): {}", console.stderr_output().trim()),
                    None => e.to_string(),
                };
                console.kill("QMP connection failed");
                return Err(SessionError::Start(why));
            }
        };
        if let Some(d) = &run.log_dir {
            let _ = qmp.log_to(&d.join("qmp.log"));
        }
        Ok(Session {
            run,
            console,
            qmp,
            timeouts: HostTimeouts::default(),
            guest_timeout: None,
            sock,
        })
    }

    /// The QMP socket.
    pub fn socket(&self) -> &Path {
        self.run.qmp_socket.as_deref().expect("a session always has one")
    }

    fn limits(&self) -> HostTimeouts {
        self.timeouts.capped(self.console.remaining())
    }

    /// Waits for the first prompt; returns the boot log.
    pub fn boot(&mut self) -> Result<String, SessionError> {
        Ok(self.console.wait_for_prompt()?)
    }

    /// Types `cmd` at the prompt and returns its output up to the next prompt (the guest's
    /// echo of the command included). Output that arrived before (asynchronous log lines, a
    /// stale prompt) is skipped first.
    pub fn guest(&mut self, cmd: &str) -> Result<String, SessionError> {
        self.console.skip_to_end();
        self.console.send_line(cmd)?;
        let p = crate::console::PROMPT;
        match self.console.wait_for_within(p, self.guest_timeout)? {
            Some(t) => Ok(t),
            None => {
                let out = self.console.output();
                let tail = out[out.len().saturating_sub(400)..].to_string();
                Err(SessionError::GuestTimeout {
                    cmd: cmd.into(),
                    after: self.guest_timeout.unwrap_or_default(),
                    tail,
                })
            }
        }
    }

    /// Types `cmd` (e.g. `poweroff`) and waits for QEMU to exit.
    pub fn guest_exit(&mut self, cmd: &str) -> Result<ExitStatus, SessionError> {
        self.console.skip_to_end();
        self.console.send_line(cmd)?;
        Ok(self.console.wait_exit()?)
    }

    /// Waits up to `timeout` for a console line, in the output from byte offset `from` on,
    /// that `pred` accepts; returns it (from the first non-prompt character), or `None`.
    pub fn wait_line(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, SessionError> {
        Ok(wait_line(&mut self.console, from, timeout, what, pred)?)
    }

    /// `:plug`: hot-plugs a pc-dimm of `size` bytes (backend `mem-<id>`), waits for the
    /// guest's _OST and then for its `dimm: slot=N ... event=...` console line.
    pub fn plug(&mut self, size: u64, id: Option<&str>) -> Result<Plugged, SessionError> {
        let t = self.limits();
        plug_on(&mut self.console, &mut self.qmp, t, size, id, None)
    }

    /// `:unplug`: `device_del`, then `DEVICE_DELETED` or the guest's refusal, then the guest's
    /// `dimm: slot=N event=remove ...` line.
    pub fn unplug(&mut self, id: &str) -> Result<Unplugged, SessionError> {
        let t = self.limits();
        unplug_on(&mut self.console, &mut self.qmp, t, id)
    }

    /// `:vmem`: sets the virtio-mem device's `requested-size` and waits for the guest's
    /// `virtio-mem: ... event=done|stopped` line.
    pub fn vmem(&mut self, id: &str, size: u64) -> Result<Resized, SessionError> {
        let t = self.limits();
        vmem_on(&mut self.console, &mut self.qmp, t, id, size)
    }

    /// Runs a host (`:`) line as `--exec` would (output recorded in [`RunOutcome::host`]).
    pub fn host(&mut self, line: &str) -> HostReply {
        let t = self.limits();
        let r = host_line(&mut self.console, &mut self.qmp, t, line);
        self.console.note_host(&r.text());
        r
    }

    /// `system_reset`, then waits for the new boot's prompt; returns the new boot log.
    pub fn reset(&mut self) -> Result<String, SessionError> {
        self.console.skip_to_end();
        host_cmd::dimm::system_reset(&mut self.qmp)?;
        Ok(self.console.wait_for_prompt()?)
    }

    /// `system_powerdown`, then waits for QEMU to exit.
    pub fn powerdown(&mut self) -> Result<ExitStatus, SessionError> {
        self.qmp.system_powerdown()?;
        Ok(self.console.wait_exit()?)
    }

    /// Ends the session (QEMU SIGKILLed if still running) and returns what it printed.
    pub fn finish(self) -> RunOutcome {
        let Session {
            console, mut qmp, sock, ..
        } = self;
        // Asked while QEMU still runs (it is killed next).
        let report = host_cmd::exit_report(&mut qmp);
        let mut out = console.finish();
        out.exit_report = report;
        drop(qmp);
        drop(sock);
        out
    }

    /// The `--exec` driver: like [`Console::run_script`], with host commands carried out
    /// through QMP when their turn comes (the guest idle at its prompt). After one that leaves
    /// the guest running, an empty line is typed so the next command waits for a fresh
    /// prompt; after `:reset` the next command waits for the new boot's prompt. Host output
    /// goes to [`RunOutcome::host`] (and to stdout between the console output when echoing).
    /// A failing host command prints its error and the script goes on.
    pub fn run_script<S: AsRef<str>>(self, commands: &[S]) -> RunOutcome {
        let Session {
            console,
            qmp,
            timeouts,
            sock,
            ..
        } = self;
        let qmp = std::cell::RefCell::new(qmp);
        let failed = std::cell::RefCell::new(Vec::new());
        let host = |con: &mut Console, cmd: &str| {
            let mut qmp = qmp.borrow_mut();
            con.note_host(cmd.trim());
            let t = timeouts.capped(con.remaining());
            let reply = host_line(con, &mut qmp, t, cmd);
            con.note_host(&reply.text());
            if reply.error {
                failed.borrow_mut().push(cmd.trim().to_string());
            }
            match reply.after {
                // A paused VM (`:qmp stop`, or held in gdb) prints no prompt: do not wait for
                // one, say why the next guest command would wait.
                After::Prompt if host_cmd::vm_running(&mut qmp) == Some(false) => {
                    con.note_host("hotmem: the VM is paused: guest commands wait until it runs again (`:qmp cont`)");
                    HostStep::AtPrompt
                }
                After::Prompt => {
                    con.skip_to_end();
                    match con.send_bytes(b"\r") {
                        Ok(()) => HostStep::WaitPrompt,
                        Err(e) => HostStep::Stop(format!("cannot type to the guest: {e}")),
                    }
                }
                After::Reboot | After::Exit => HostStep::WaitPrompt,
            }
        };
        // At every prompt: an eject the runner stopped waiting for gets its backend deleted
        // as soon as it is seen, not only at the next host command.
        let idle = |con: &mut Console| {
            let mut qmp = qmp.borrow_mut();
            if unplugs_open(&qmp) {
                for l in host_cmd::reap_late_unplugs(&mut qmp) {
                    con.note_host(&l);
                }
            }
        };
        let out = console.run_script_hooked(commands, host, idle);
        let mut qmp = qmp.into_inner();
        let mut out = out;
        out.host_failed = failed.into_inner();
        out.exit_report = host_cmd::exit_report(&mut qmp);
        for l in &out.exit_report {
            eprintln!("hotmem: {l}");
        }
        drop(qmp);
        drop(sock);
        out
    }
}

/// See [`Session::wait_line`].
pub fn wait_line(
    con: &mut Console,
    from: usize,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Result<Option<String>, ConsoleError> {
    con.wait_until_within(what, Some(timeout), |out| {
        let text = String::from_utf8_lossy(&out[from.min(out.len())..]);
        // Only complete lines: a line still being printed may not match yet.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..i],
            None => "",
        };
        complete
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .map(|l| l.strip_prefix(crate::console::PROMPT).unwrap_or(l))
            .find(|l| pred(l))
            .map(String::from)
    })
}

/// The guest's `dimm: slot=<slot> ...` line for an insert or coldplug (`remove: false`) or a
/// remove (`remove: true`), with the `dimm:` prefix anywhere in the line (it may follow a
/// prompt).
pub fn is_dimm_event_line(line: &str, slot: u64, remove: bool) -> bool {
    let Some(i) = line.find("dimm: slot=") else {
        return false;
    };
    let l = &line[i..];
    let slot_ok = l
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.strip_prefix("slot="))
        .and_then(|v| v.parse::<u64>().ok())
        == Some(slot);
    slot_ok && l.contains("event=") && (l.contains("event=remove") == remove)
}

fn dimm_line(line: String) -> String {
    match line.find("dimm: slot=") {
        Some(i) => line[i..].to_string(),
        None => line,
    }
}

/// [`Session::plug`] on a console and a QMP connection.
pub fn plug_on(
    con: &mut Console,
    qmp: &mut Qmp,
    t: HostTimeouts,
    size: u64,
    id: Option<&str>,
    node: Option<u32>,
) -> Result<Plugged, SessionError> {
    con.pump();
    let from = con.output_len();
    let mut p = host_cmd::plug_on_node(qmp, size, id, node, t.plug)?;
    if let (Some(slot), false) = (p.slot, matches!(p.result, host_cmd::PlugResult::NoAnswer { .. })) {
        p.guest_line = wait_line(
            con,
            from,
            t.guest_line,
            &format!("the guest's dimm line for slot {slot}"),
            |l| is_dimm_event_line(l, slot, false),
        )?
        .map(dimm_line);
    }
    Ok(p)
}

/// [`Session::unplug`] on a console and a QMP connection.
pub fn unplug_on(con: &mut Console, qmp: &mut Qmp, t: HostTimeouts, id: &str) -> Result<Unplugged, SessionError> {
    con.pump();
    let from = con.output_len();
    let mut u = host_cmd::unplug(qmp, id, t.unplug)?;
    if let (Some(slot), true) = (
        u.slot(),
        matches!(
            u.result,
            host_cmd::UnplugResult::Deleted | host_cmd::UnplugResult::Refused { .. }
        ),
    ) {
        u.guest_line = wait_line(
            con,
            from,
            t.guest_line,
            &format!("the guest's dimm remove line for slot {slot}"),
            |l| is_dimm_event_line(l, slot, true),
        )?
        .map(dimm_line);
    }
    Ok(u)
}

/// `:vmem ID SIZE` on a console and a QMP connection: `qom-set requested-size`, then wait for
/// the guest's `virtio-mem: ... event=done|stopped` line for this device and size.
pub fn vmem_on(
    con: &mut Console,
    qmp: &mut Qmp,
    t: HostTimeouts,
    id: &str,
    size: u64,
) -> Result<Resized, SessionError> {
    let before = host_cmd::find_vmem(qmp, id)?;
    let mut r = Resized::unchanged(id, size, before.size);
    if before.size == size && before.requested == size {
        return Ok(r);
    }
    // Answer at once what would otherwise be a wait for a line that cannot come.
    if host_cmd::vm_running(qmp) == Some(false) {
        return Err(SessionError::NotAsked(format!(
            "{id}: the VM is paused (`:qmp cont` resumes it); requested-size not changed"
        )));
    }
    con.pump();
    let log = con.output();
    if !log
        .lines()
        .any(|l| l.contains("virtio-mem: dev=") && l.contains(&format!(" addr={:#x} ", before.memaddr)))
    {
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("virtio-mem: pci=") && l.contains(" refused: "))
            .collect();
        return Err(SessionError::NotAsked(format!(
            "{id}: the guest does not drive this device (at {:#x}){}; requested-size not changed",
            before.memaddr,
            match refused.last() {
                Some(l) => format!(": it said `{}`", l.trim()),
                None => " (no virtio-mem driver line in the boot log)".into(),
            }
        )));
    }
    con.pump();
    let from = con.output_len();
    let t0 = Instant::now();
    host_cmd::vmem_set_requested(qmp, id, size)?;
    let line = wait_line(
        con,
        from,
        t.plug,
        &format!("the guest's virtio-mem line for {id}"),
        |l| host_cmd::is_vmem_event_line(l, before.memaddr, size),
    )?;
    r.elapsed = t0.elapsed();
    r.result = match &line {
        Some(l) => host_cmd::vmem_result_of(l),
        None => VmemResult::NoAnswer { after: r.elapsed },
    };
    r.guest_line = line.map(|l| match l.find("virtio-mem: ") {
        Some(i) => l[i..].to_string(),
        None => l,
    });
    r.plugged_after = host_cmd::find_vmem(qmp, id)?.size;
    Ok(r)
}

/// Runs one `:` line against the console and QMP: `:plug`/`:unplug` also wait for the guest's
/// console line; `:reset` skips stale console output first. Never fails: errors become
/// `<cmd>: error: ...` lines.
pub fn host_line(con: &mut Console, qmp: &mut Qmp, t: HostTimeouts, line: &str) -> HostReply {
    let err = |name: &str, e: &dyn fmt::Display| HostReply::error(format!("{name}: error: {e}"));
    let cmd = match parse_host_command(line) {
        // `run_host_line` words the parse error.
        Err(_) => return host_cmd::run_host_line(qmp, line, t),
        Ok(c) => c,
    };
    let (late, refusal) = host_cmd::preflight(qmp, &cmd);
    let mut reply = match (refusal, cmd) {
        (Some(r), _) => r,
        (None, HostCommand::Dimm(DimmCommand::Plug { size, id, node })) => {
            match plug_on(con, qmp, t, size, id.as_deref(), node) {
                Ok(p) => HostReply::outcome(vec![p.line()], !p.ok()),
                Err(e) => err("plug", &e),
            }
        }
        (None, HostCommand::Dimm(DimmCommand::Unplug { id })) => match unplug_on(con, qmp, t, &id) {
            Ok(u) => HostReply::outcome(u.lines(), !u.deleted()),
            Err(e) => err("unplug", &e),
        },
        (None, HostCommand::Vmem(VmemCommand::Resize { id, size })) => match vmem_on(con, qmp, t, &id, size) {
            // A stop is the guest's answer (it says why); no answer is a failure.
            Ok(v) => HostReply::outcome(vec![v.line()], matches!(v.result, VmemResult::NoAnswer { .. })),
            Err(e) => err("vmem", &e),
        },
        (None, HostCommand::Reset) => {
            con.skip_to_end();
            host_cmd::run_host_line(qmp, line, t)
        }
        (None, _) => host_cmd::run_host_line(qmp, line, t),
    };
    reply.lines.splice(0..0, late);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimm_event_lines() {
        let ins = "dimm: slot=1 base=0xc0000000 size=0x40000000 event=insert blocks=[8,9] zones=[Movable] ost=0x0";
        assert!(is_dimm_event_line(ins, 1, false));
        assert!(!is_dimm_event_line(ins, 11, false));
        assert!(!is_dimm_event_line(ins, 1, true));
        assert!(is_dimm_event_line(&format!("hotmem> {ins}"), 1, false));
        assert!(is_dimm_event_line("dimm: slot=0 event=remove ejected", 0, true));
        assert!(is_dimm_event_line(
            "dimm: slot=0 event=remove refused: busy ost=0x82",
            0,
            true
        ));
        // The `dimms` command's listing has no event.
        assert!(!is_dimm_event_line(
            "dimm: slot=0 base=0x80000000 size=0x8000000 blocks=[16] group=1",
            0,
            false
        ));
        assert_eq!(dimm_line(format!("hotmem> {ins}")), ins);
    }

    #[test]
    fn guest_timeout_names_a_lost_line() {
        let e = SessionError::GuestTimeout {
            cmd: "pt 0xffff800002200000".into(),
            after: Duration::from_secs(30),
            tail: "not mapped\nhotmem> pt 0xffff8000022".into(),
        };
        let m = e.to_string();
        assert!(m.contains("echoed only \"pt 0xffff8000022\""), "{m}");
        let e = SessionError::GuestTimeout {
            cmd: "pt 0xffff000080000000".into(),
            after: Duration::from_secs(30),
            tail: "hotmem> dimm: slot=0 event=remove ejected\npt 0xffff0000800000".into(),
        };
        assert!(e.to_string().contains("echoed only \"pt 0xffff0000800000\""));
        let e = SessionError::GuestTimeout {
            cmd: "stress 1G".into(),
            after: Duration::from_secs(30),
            tail: "hotmem> stress 1G\n".into(),
        };
        assert!(!e.to_string().contains("echoed only"));
    }

    #[test]
    fn socket_dirs_are_short_and_removed() {
        let d = SocketDir::new().unwrap();
        let p = d.path().to_path_buf();
        assert!(p.is_dir());
        assert!(d.socket().as_os_str().len() <= MAX_SOCKET_PATH);
        drop(d);
        assert!(!p.exists());
    }

    /// A fake guest with a fake QMP server is more machinery than it is worth: the session is
    /// exercised against real QEMU by `tests/tests/dimm.rs`. Here: QEMU that cannot start is
    /// reported without hanging.
    #[test]
    fn qemu_that_exits_at_once_is_reported() {
        use crate::config::{Granule, KernelConfig};
        use crate::kernel::Kernel;
        let dir = std::env::temp_dir().join(format!("hotmem-session-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = Kernel {
            config: KernelConfig::default_for(Granule::K4),
            elf: dir.join("none.elf"),
            bin: dir.join("x.bin"),
        };
        std::fs::write(&k.bin, [0u8; 16]).unwrap();
        // `false` stands in for a QEMU that exits immediately.
        let run = QemuRun::new(k).qemu("false").timeout(Some(Duration::from_secs(10)));
        let t = std::time::Instant::now();
        let e = Session::start(run).err().expect("must fail");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.to_string().contains("QEMU exited"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
