//! The interactive runner: the guest console on this terminal, with host (`:`) commands.
//!
//! QEMU's serial (`-serial mon:stdio`) is piped through the runner instead of owning the
//! terminal, so the runner can catch lines that start with `:` and carry them out through QMP
//! ([`crate::host_cmd`]):
//!
//! - the terminal is put in raw mode (as QEMU itself would: no echo, no line buffering, no
//!   signals from Ctrl-C, output post-processing kept) and restored at the end;
//! - every key typed on a guest line is passed to QEMU at once, so the guest's own echo and
//!   line editing work as before, and Ctrl-A x / Ctrl-A c (QEMU's mux: quit / monitor) too;
//! - a `:` typed at the start of a line starts a host command: the runner echoes and edits
//!   that line itself (printable characters, Backspace; Ctrl-C or Ctrl-U cancel) and runs it on
//!   Enter; its output is printed, then an Enter is typed to the guest for a fresh prompt.
//!
//! Trade-offs: the start of a line is tracked from what was typed (Enter, Backspace), not
//! from the guest's screen, so a `:` typed after moving the cursor some other way is a host
//! command too; a host line has only Backspace as editing; guest output keeps coming while a
//! host command waits (e.g. `:plug` waiting for the guest's _OST), and keys typed meanwhile are
//! handled after it. When stdin is not a terminal, bytes are read as they come (a `\n` is sent
//! to the guest as `\r`), with the same `:` rule per line.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::host_cmd::ledger::unplugs_open;
use crate::host_cmd::{exit_report, reap_late_unplugs, run_host_line, After, HostTimeouts};
use crate::qmp::{Qmp, DEFAULT_CONNECT_TIMEOUT};
use crate::run::QemuRun;
use crate::session::SocketDir;

/// Restores the terminal settings saved by `stty -g` when dropped.
struct RawTerminal {
    saved: Option<String>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        if !io::stdin().is_terminal() {
            return RawTerminal { saved: None };
        }
        let saved = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if saved.is_some() {
            // What QEMU does for a stdio console: raw input, output processing kept.
            let _ = Command::new("stty")
                .args([
                    "-icanon", "-echo", "-echonl", "-isig", "-iexten", "-icrnl", "-inlcr", "-igncr", "-ixon",
                    "-istrip", "min", "1", "time", "0",
                ])
                .stdin(Stdio::inherit())
                .status();
        }
        RawTerminal { saved }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = Command::new("stty").arg(s).stdin(Stdio::inherit()).status();
        }
    }
}

fn out(s: &str) {
    let mut o = io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

/// Decides, byte by byte, what goes to the guest and what forms a host line.
#[derive(Default)]
struct LineState {
    /// Printable characters on the current guest line (Backspace removes one).
    guest_len: usize,
    /// The host line being typed (starts with `:`).
    host: Option<String>,
    /// The last byte passed on was `\r` (a following `\n` is dropped: one Enter).
    after_cr: bool,
}

/// What one input byte means.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Pass these bytes to the guest.
    Guest(Vec<u8>),
    /// Print this (host line editing).
    Echo(String),
    /// Run this host line.
    Run(String),
    Nothing,
}

impl LineState {
    fn byte(&mut self, b: u8) -> Action {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        if let Some(line) = &mut self.host {
            return match b {
                b'\r' | b'\n' => {
                    let l = self.host.take().unwrap_or_default();
                    self.after_cr = b == b'\r';
                    Action::Run(l)
                }
                0x7f | 0x08 => {
                    line.pop();
                    if line.is_empty() {
                        self.host = None;
                    }
                    Action::Echo("\x08 \x08".into())
                }
                0x03 | 0x15 => {
                    self.host = None;
                    Action::Echo("^C\n".into())
                }
                0x20..=0x7e => {
                    line.push(b as char);
                    Action::Echo((b as char).to_string())
                }
                _ => Action::Nothing,
            };
        }
        match b {
            b':' if self.guest_len == 0 => {
                self.host = Some(":".into());
                Action::Echo(":".into())
            }
            b'\n' if after_cr => Action::Nothing,
            b'\r' | b'\n' => {
                self.guest_len = 0;
                self.after_cr = b == b'\r';
                Action::Guest(vec![b'\r'])
            }
            0x7f | 0x08 => {
                self.guest_len = self.guest_len.saturating_sub(1);
                Action::Guest(vec![b])
            }
            0x20..=0x7e => {
                self.guest_len += 1;
                Action::Guest(vec![b])
            }
            _ => Action::Guest(vec![b]),
        }
    }
}

/// Copies QEMU's output to this terminal as it comes, noting when it last came (ms since
/// `started`) in `last`.
fn relay_output(mut from_qemu: ChildStdout, started: Instant, last: Arc<AtomicU64>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from_qemu.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut o = io::stdout().lock();
                    let _ = o.write_all(&buf[..n]);
                    let _ = o.flush();
                    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

/// The run's QMP connection, or `None` (said on stderr) when QEMU exited or did not answer.
fn connect_qmp(path: &Path, child: &mut Child) -> Option<Qmp> {
    let alive = || match child.try_wait() {
        Ok(Some(st)) => Err(format!("QEMU exited ({st})")),
        _ => Ok(()),
    };
    Qmp::connect(path, DEFAULT_CONNECT_TIMEOUT, alive)
        .map_err(|e| eprintln!("hotmem: {e}; host (:) commands are unavailable"))
        .ok()
}

/// Sends this terminal's input to `tx` in chunks as it comes, until it ends.
fn read_stdin(tx: mpsc::Sender<Vec<u8>>) {
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

/// Lets the guest print its lines about a host command (`dimm: ...`, which follow the _OST)
/// so they do not run into ours: at least 150 ms, then until a 100 ms pause in its output
/// (`last_output`, ms since `started`), 1 s at most.
fn wait_for_a_pause(started: Instant, last_output: &AtomicU64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        let quiet = started.elapsed().as_millis() as u64 >= last_output.load(Ordering::Relaxed) + 100;
        if quiet && t.elapsed() >= Duration::from_millis(150) {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs QEMU with its console relayed to this terminal and host commands caught; SIGKILL at
/// the run's timeout. Returns the exit status and whether the timeout killed QEMU.
///
/// The QMP socket is the run's [`QemuRun::qmp_socket`] if set (the caller owns it), else one in
/// a fresh [`SocketDir`].
pub fn run_interactive(run: &QemuRun) -> io::Result<(ExitStatus, bool)> {
    let (run, sock) = match &run.qmp_socket {
        Some(_) => (run.clone(), None),
        None => {
            let d = SocketDir::new()?;
            (run.clone().qmp_socket(Some(d.socket())), Some(d))
        }
    };
    let path = run.qmp_socket.clone().expect("set above");
    let mut child = run
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let deadline = run.timeout.map(|t| started + t);
    let mut to_qemu = child.stdin.take().expect("piped stdin");
    let from_qemu = child.stdout.take().expect("piped stdout");
    // When guest output last arrived (ms since `started`), so host output can wait for a pause.
    let last_output = Arc::new(AtomicU64::new(0));
    let copier = relay_output(from_qemu, started, last_output.clone());
    let mut qmp = connect_qmp(&path, &mut child);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let _term = RawTerminal::enter();
    read_stdin(tx);

    let mut state = LineState::default();
    let mut stdin_open = true;
    let result = loop {
        if let Some(st) = child.try_wait()? {
            break (st, false);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            break (child.wait()?, true);
        }
        // An eject the runner stopped waiting for: delete its backend as soon as it comes.
        if let Some(q) = qmp.as_mut().filter(|q| unplugs_open(q)) {
            for l in reap_late_unplugs(q) {
                out(&format!("\n{l}\n"));
            }
        }
        let chunk = if stdin_open {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    stdin_open = false;
                    continue;
                }
            }
        } else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        for b in chunk {
            match state.byte(b) {
                Action::Guest(bytes) => {
                    // QEMU gone: the loop notices the exit.
                    let _ = to_qemu.write_all(&bytes).and_then(|_| to_qemu.flush());
                }
                Action::Echo(s) => out(&s),
                Action::Nothing => {}
                Action::Run(line) => {
                    out("\n");
                    let after = match qmp.as_mut() {
                        Some(q) => {
                            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                            let reply = run_host_line(q, &line, HostTimeouts::default().capped(left));
                            wait_for_a_pause(started, &last_output);
                            out(&reply.text());
                            reply.after
                        }
                        None => {
                            out(&format!("{}: error: no QMP connection\n", line.trim()));
                            After::Prompt
                        }
                    };
                    if after == After::Prompt {
                        // A fresh prompt from the guest.
                        let _ = to_qemu.write_all(b"\r").and_then(|_| to_qemu.flush());
                    }
                }
            }
        }
    };
    if let Some(q) = qmp.as_mut() {
        for l in exit_report(q) {
            eprintln!("hotmem: {l}");
        }
    }
    drop(qmp);
    drop(sock);
    // The copier ends with QEMU's stdout; give it a moment to print the last bytes.
    let until = Instant::now() + Duration::from_millis(500);
    while !copier.is_finished() && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut LineState, input: &str) -> Vec<Action> {
        input
            .bytes()
            .map(|b| s.byte(b))
            .filter(|a| *a != Action::Nothing)
            .collect()
    }

    fn guest_bytes(actions: &[Action]) -> Vec<u8> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Guest(b) => b.clone(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn guest_keys_pass_through_and_host_lines_are_caught() {
        let mut s = LineState::default();
        let a = feed(&mut s, "meminfo\r");
        assert_eq!(guest_bytes(&a), b"meminfo\r");
        let a = feed(&mut s, ":plug 1G\r");
        assert!(guest_bytes(&a).is_empty());
        assert_eq!(a.last(), Some(&Action::Run(":plug 1G".into())));
        // A colon inside a guest line is the guest's.
        let a = feed(&mut s, "pt a:b\n");
        assert_eq!(guest_bytes(&a), b"pt a:b\r");
        // \r\n is one Enter; \n alone becomes \r.
        let a = feed(&mut s, "x\r\ny\n");
        assert_eq!(guest_bytes(&a), b"x\ry\r");
        // Backspace back to the start of a line makes `:` a host command again.
        let a = feed(&mut s, "a\x7f:dimms\r");
        assert_eq!(guest_bytes(&a), b"a\x7f");
        assert_eq!(a.last(), Some(&Action::Run(":dimms".into())));
        // Deleting the `:` leaves host mode; Ctrl-C cancels.
        let a = feed(&mut s, ":\x7fb\r");
        assert_eq!(guest_bytes(&a), b"b\r");
        let a = feed(&mut s, ":plug\x03c\r");
        assert_eq!(guest_bytes(&a), b"c\r");
        // Ctrl-A sequences go to QEMU's mux.
        let a = feed(&mut s, "\x01x");
        assert_eq!(guest_bytes(&a), b"\x01x");
    }
}
