//! Driving a guest console non-interactively: spawn a process (QEMU, or a fake guest in tests)
//! with piped stdio, collect (and optionally echo) its output as it arrives, wait for the
//! prompt before typing each command, and enforce one overall deadline after which the process
//! is killed with SIGKILL (a hung QEMU may ignore SIGTERM: docs/design.md#qemu-pitfalls).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::tail_lines;

/// The shell prompt of the kernel (no newline after it).
pub const PROMPT: &str = "hotmem> ";
/// Exit code of the host tools when the guest was killed for running out of time (as `timeout(1)`).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// How long to keep collecting output after the process exited (pipes may hold a last chunk).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Poll interval for process exit while waiting for output.
const POLL: Duration = Duration::from_millis(50);

/// Options of a console session.
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    /// Overall deadline, counted from spawn. `None`: wait for ever.
    pub timeout: Option<Duration>,
    /// Copy the process's stdout/stderr to ours as it arrives.
    pub echo: bool,
    pub prompt: String,
    /// Appended to every typed command (the kernel's shell ends a line at `\r`).
    pub line_ending: String,
    /// Keep `serial.log` (stdout) and `stderr.log` here, written as the output arrives, so a
    /// killed or hung run leaves them too.
    pub log_dir: Option<PathBuf>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            timeout: Some(Duration::from_secs(60)),
            echo: false,
            prompt: PROMPT.into(),
            line_ending: "\r".into(),
            log_dir: None,
        }
    }
}

/// Why a wait on the console did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The deadline passed while waiting for `waiting_for`; the process has been SIGKILLed.
    #[error("timed out after {:.1} s waiting for {waiting_for}; killed with SIGKILL", after.as_secs_f64())]
    Timeout { waiting_for: String, after: Duration },
    /// The process exited while waiting for `waiting_for`.
    #[error("exited ({status}) while waiting for {waiting_for}")]
    Exited { waiting_for: String, status: ExitStatus },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
}

/// What a finished (or killed) run produced.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    /// Exit status of the process (also set after a SIGKILL).
    pub status: Option<ExitStatus>,
    /// Everything the process wrote to stdout: the guest console.
    pub console: String,
    /// Everything the process wrote to stderr (QEMU's own messages).
    pub stderr: String,
    /// Why the run did not complete as asked (timeout, early exit, ...), if it did not.
    pub failure: Option<String>,
    /// The deadline passed and the process was killed with SIGKILL.
    pub timed_out: bool,
    /// Commands actually typed.
    pub commands_sent: usize,
    /// Host (`:`) commands that were skipped.
    pub skipped: Vec<String>,
    /// What host (`:`) commands printed ([`Console::note_host`]), in order.
    pub host: String,
    /// Host commands that failed (an error, or no answer from the guest in time): the run
    /// then exits non-zero even when the guest powered off cleanly.
    pub host_failed: Vec<String>,
    /// What the runner found left when the run ended: late ejects it handled, DIMMs and
    /// backends still present ([`crate::host_cmd::exit_report`]; filled in by
    /// [`crate::session::Session`]).
    pub exit_report: Vec<String>,
    pub elapsed: Duration,
}

impl RunOutcome {
    /// The process's exit code (`None` when it died from a signal or never ran).
    pub fn exit_code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Exited with status 0 and nothing went wrong on the host side.
    pub fn success(&self) -> bool {
        self.failure.is_none() && self.exit_code() == Some(0)
    }

    /// The exit code a host tool should end with: the guest's status; 124 after a timeout;
    /// 128+signal for a signal; 1 when the guest exited 0 but the run failed otherwise.
    pub fn host_exit_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        if self.timed_out {
            return TIMEOUT_EXIT_CODE;
        }
        match (self.exit_code(), self.status.and_then(|s| s.signal())) {
            (Some(0), _) if self.failure.is_some() || !self.host_failed.is_empty() => 1,
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 1,
        }
    }

    /// Last `n` lines of the console plus QEMU's stderr (for failure messages).
    pub fn tail(&self, n: usize) -> String {
        let mut t = tail_lines(&self.console, n);
        if !self.stderr.trim().is_empty() {
            t.push_str("\n--- stderr ---\n");
            t.push_str(&tail_lines(&self.stderr, n));
        }
        t
    }

    /// One line: how it ended.
    pub fn describe(&self) -> String {
        let st = match self.status {
            Some(s) => s.to_string(),
            None => "no exit status".into(),
        };
        match &self.failure {
            Some(f) => format!("{f} ({st})"),
            None => st,
        }
    }
}

/// A running console session.
pub struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Chunk>,
    out: Vec<u8>,
    err: Vec<u8>,
    scan_from: usize,
    opts: ConsoleOptions,
    started: Instant,
    deadline: Option<Instant>,
    status: Option<ExitStatus>,
    failure: Option<String>,
    timed_out: bool,
    commands_sent: usize,
    skipped: Vec<String>,
    host: String,
}

/// What the host-command handler of [`Console::run_script_with`] did with a `:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostStep {
    /// Not carried out (recorded in [`RunOutcome::skipped`]); the guest is still at its prompt.
    Skipped,
    /// Done; the guest is still at the prompt that was consumed before the command.
    AtPrompt,
    /// Done; the next command waits for a new prompt (after a reboot, or after the handler typed
    /// an empty line to get a fresh one).
    WaitPrompt,
    /// Stop the script: the run failed for this reason.
    Stop(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reader<R: Read + Send + 'static>(
    mut r: R,
    tx: mpsc::Sender<Chunk>,
    wrap: fn(Vec<u8>) -> Chunk,
    mut log: Option<File>,
) {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(f) = &mut log {
                        // A log that cannot be written is not a reason to stop the run.
                        let _ = f.write_all(&buf[..n]);
                    }
                    if tx.send(wrap(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

impl Console {
    /// Spawns `cmd` with stdin, stdout and stderr piped.
    pub fn spawn(mut cmd: Command, opts: ConsoleOptions) -> io::Result<Console> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        let log = |name: &str| opts.log_dir.as_ref().and_then(|d| File::create(d.join(name)).ok());
        reader(
            child.stdout.take().expect("piped stdout"),
            tx.clone(),
            Chunk::Out,
            log("serial.log"),
        );
        reader(
            child.stderr.take().expect("piped stderr"),
            tx,
            Chunk::Err,
            log("stderr.log"),
        );
        let stdin = child.stdin.take();
        Ok(Console {
            child,
            stdin,
            rx,
            out: Vec::new(),
            err: Vec::new(),
            scan_from: 0,
            deadline: opts.timeout.map(|t| started + t),
            opts,
            started,
            status: None,
            failure: None,
            timed_out: false,
            commands_sent: 0,
            skipped: Vec::new(),
            host: String::new(),
        })
    }

    /// The process id of the spawned program (QEMU, for a run's console).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Console (stdout) text so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Stderr text so far.
    pub fn stderr_output(&self) -> String {
        String::from_utf8_lossy(&self.err).into_owned()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Exit status once the process has ended.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Collects output that has arrived (without waiting) and notices an exit.
    pub fn pump(&mut self) {
        while let Ok(c) = self.rx.try_recv() {
            self.take(c);
        }
        let _ = self.reap();
    }

    /// [`Console::pump`], then the exit status if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.pump();
        self.status
    }

    /// Bytes of console output so far (an offset for [`Console::output_since`]).
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Console output from byte offset `from` on.
    pub fn output_since(&self, from: usize) -> String {
        String::from_utf8_lossy(&self.out[from.min(self.out.len())..]).into_owned()
    }

    /// Forgets unconsumed output: the next [`Console::wait_for`] only sees what comes after
    /// what has arrived so far (e.g. a stale prompt).
    pub fn skip_to_end(&mut self) {
        self.pump();
        self.scan_from = self.out.len();
    }

    /// Time left before the overall deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Records (and echoes, when echoing) text printed by a host command: it goes to
    /// [`RunOutcome::host`], and to our stdout between the console output.
    pub fn note_host(&mut self, text: &str) {
        let mut t = text.to_string();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        if self.opts.echo {
            let mut o = io::stdout().lock();
            let _ = o.write_all(t.as_bytes());
            let _ = o.flush();
        }
        self.host.push_str(&t);
    }

    /// Text printed by host commands so far.
    pub fn host_output(&self) -> &str {
        &self.host
    }

    fn take(&mut self, c: Chunk) {
        match c {
            Chunk::Out(b) => {
                if self.opts.echo {
                    let mut o = io::stdout().lock();
                    let _ = o.write_all(&b);
                    let _ = o.flush();
                }
                self.out.extend_from_slice(&b);
            }
            Chunk::Err(b) => {
                if self.opts.echo {
                    let _ = io::stderr().write_all(&b);
                }
                self.err.extend_from_slice(&b);
            }
        }
    }

    /// Collects whatever output is still in flight after the process exited.
    fn drain(&mut self) {
        let until = Instant::now() + DRAIN_GRACE;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            match self.rx.recv_timeout(until - now) {
                Ok(c) => self.take(c),
                Err(_) => break,
            }
        }
    }

    fn reap(&mut self) -> io::Result<()> {
        if self.status.is_none() {
            if let Some(st) = self.child.try_wait()? {
                self.drain();
                self.status = Some(st);
            }
        }
        Ok(())
    }

    /// Kills the process with SIGKILL (if it still runs), reaps it and records `reason`.
    pub fn kill(&mut self, reason: impl Into<String>) {
        if self.status.is_none() {
            let _ = self.child.kill(); // SIGKILL on Unix
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
            self.drain();
        }
        if self.failure.is_none() {
            self.failure = Some(reason.into());
        }
    }

    /// Waits until `pred` finds what it wants in the console output, the process exits, or the
    /// deadline passes (then the process is SIGKILLed).
    pub fn wait_until<T>(
        &mut self,
        waiting_for: &str,
        pred: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, ConsoleError> {
        self.wait_until_within(waiting_for, None, pred)
            .map(|v| v.expect("no local time limit"))
    }

    /// [`Console::wait_until`] that also gives up, without killing anything, after `limit`:
    /// then `Ok(None)`. The overall deadline still applies (SIGKILL, `Err(Timeout)`).
    pub fn wait_until_within<T>(
        &mut self,
        waiting_for: &str,
        limit: Option<Duration>,
        mut pred: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, ConsoleError> {
        let give_up = limit.map(|l| Instant::now() + l);
        loop {
            if let Some(v) = pred(&self.out) {
                return Ok(Some(v));
            }
            if let Some(status) = self.status {
                return Err(ConsoleError::Exited {
                    waiting_for: waiting_for.into(),
                    status,
                });
            }
            let now = Instant::now();
            if give_up.is_some_and(|g| now >= g) {
                return Ok(None);
            }
            let wait = match self.deadline {
                Some(d) if now >= d => {
                    let after = self.started.elapsed();
                    let e = ConsoleError::Timeout {
                        waiting_for: waiting_for.into(),
                        after,
                    };
                    self.timed_out = true;
                    self.kill(e.to_string());
                    return Err(e);
                }
                Some(d) => (d - now).min(POLL),
                None => POLL,
            };
            let wait = give_up.map_or(wait, |g| wait.min(g - now));
            match self.rx.recv_timeout(wait) {
                Ok(c) => self.take(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(wait.min(Duration::from_millis(20))),
            }
            self.reap()?;
        }
    }

    /// Waits for `needle` in output not yet consumed; returns the text before it and consumes
    /// through its end.
    pub fn wait_for(&mut self, needle: &str) -> Result<String, ConsoleError> {
        self.wait_for_within(needle, None)
            .map(|t| t.expect("no local time limit"))
    }

    /// [`Console::wait_for`] that gives up after `limit` without killing anything (`Ok(None)`,
    /// nothing consumed).
    pub fn wait_for_within(&mut self, needle: &str, limit: Option<Duration>) -> Result<Option<String>, ConsoleError> {
        let from = self.scan_from;
        let n = needle.as_bytes().to_vec();
        let what = format!("`{}`", needle.escape_debug());
        let found = self.wait_until_within(&what, limit, |out| find(&out[from..], &n).map(|i| from + i))?;
        Ok(found.map(|at| {
            let text = String::from_utf8_lossy(&self.out[from..at]).into_owned();
            self.scan_from = at + n.len();
            text
        }))
    }

    /// Waits for the next prompt; returns the output since the previous one.
    pub fn wait_for_prompt(&mut self) -> Result<String, ConsoleError> {
        let p = self.opts.prompt.clone();
        self.wait_for(&p)
    }

    /// Types `line` followed by the line ending.
    pub fn send_line(&mut self, line: &str) -> Result<(), ConsoleError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(self.opts.line_ending.as_bytes())?;
        stdin.flush()?;
        self.commands_sent += 1;
        Ok(())
    }

    /// Types `cmd` (a prompt must have been consumed already) and returns its output: the text
    /// up to the next prompt, including the guest's echo of the command.
    pub fn command(&mut self, cmd: &str) -> Result<String, ConsoleError> {
        self.send_line(cmd)?;
        self.wait_for_prompt()
    }

    /// Writes raw bytes to the process (not counted as a command).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit (SIGKILL at the deadline).
    pub fn wait_exit(&mut self) -> Result<ExitStatus, ConsoleError> {
        match self.wait_until("the guest to exit", |_| None::<()>) {
            Err(ConsoleError::Exited { status, .. }) => Ok(status),
            Err(e) => Err(e),
            Ok(()) => unreachable!(),
        }
    }

    /// Records a skipped host command.
    pub fn note_skipped(&mut self, cmd: &str) {
        self.skipped.push(cmd.to_string());
    }

    /// Records why the run failed (the first reason wins).
    pub fn set_failure(&mut self, reason: impl Into<String>) {
        if self.failure.is_none() {
            self.failure = Some(reason.into());
        }
    }

    /// Ends the session: a process still running is SIGKILLed.
    pub fn finish(mut self) -> RunOutcome {
        if self.status.is_none() {
            let _ = self.reap();
        }
        if self.status.is_none() {
            self.kill("stopped by the host while still running; killed with SIGKILL");
        }
        RunOutcome {
            status: self.status,
            console: self.output(),
            stderr: self.stderr_output(),
            failure: self.failure.take(),
            timed_out: self.timed_out,
            commands_sent: self.commands_sent,
            skipped: std::mem::take(&mut self.skipped),
            host: std::mem::take(&mut self.host),
            host_failed: Vec::new(),
            exit_report: Vec::new(),
            elapsed: self.started.elapsed(),
        }
    }

    /// Runs a script: for each command wait for the prompt, then type it; then wait for the
    /// guest to exit. Commands starting with `:` are host commands, which need QMP (see
    /// [`crate::session::Session::run_script`]): here they are reported and skipped.
    pub fn run_script<S: AsRef<str>>(self, commands: &[S]) -> RunOutcome {
        self.run_script_with(commands, |_, cmd| {
            eprintln!("hotmem: host command `{cmd}` needs QMP (hotmem_qemu::session::Session); skipped");
            HostStep::Skipped
        })
    }

    /// [`Console::run_script`] with a handler for host (`:`) commands. A host command runs
    /// when its turn comes: after the prompt that follows the previous guest command (the
    /// prompt is consumed first, so the guest is idle at its prompt); the handler says whether
    /// the guest is still at that prompt or the next command must wait for a new one.
    pub fn run_script_with<S: AsRef<str>>(
        self,
        commands: &[S],
        host: impl FnMut(&mut Console, &str) -> HostStep,
    ) -> RunOutcome {
        self.run_script_hooked(commands, host, |_| {})
    }

    /// [`Console::run_script_with`], calling `at_prompt` each time the guest is at its prompt
    /// before the next command (e.g. to handle what arrived on another channel meanwhile).
    pub fn run_script_hooked<S: AsRef<str>>(
        mut self,
        commands: &[S],
        mut host: impl FnMut(&mut Console, &str) -> HostStep,
        mut idle: impl FnMut(&mut Console),
    ) -> RunOutcome {
        let mut at_prompt = false;
        for cmd in commands {
            let cmd = cmd.as_ref();
            let r = if at_prompt {
                Ok(String::new())
            } else {
                self.wait_for_prompt()
            };
            if r.is_ok() {
                idle(&mut self);
            }
            let r = r.and_then(|_| {
                if cmd.trim_start().starts_with(':') {
                    return Ok(());
                }
                self.send_line(cmd)
            });
            match r {
                Ok(()) => {}
                Err(ConsoleError::Timeout { after, .. }) => {
                    self.failure = Some(format!(
                        "timed out after {:.1} s waiting for the prompt before typing `{cmd}`; killed with SIGKILL",
                        after.as_secs_f64()
                    ));
                    return self.finish();
                }
                Err(ConsoleError::Exited { status, .. }) => {
                    self.set_failure(format!("the guest exited ({status}) before `{cmd}` was typed"));
                    return self.finish();
                }
                Err(ConsoleError::Io(e)) => {
                    self.set_failure(format!("cannot type `{cmd}`: {e}"));
                    return self.finish();
                }
            }
            if !cmd.trim_start().starts_with(':') {
                at_prompt = false;
                continue;
            }
            match host(&mut self, cmd) {
                HostStep::Skipped => {
                    self.note_skipped(cmd);
                    at_prompt = true;
                }
                HostStep::AtPrompt => at_prompt = true,
                HostStep::WaitPrompt => at_prompt = false,
                HostStep::Stop(reason) => {
                    self.set_failure(reason);
                    return self.finish();
                }
            }
        }
        match self.wait_exit() {
            Ok(_) => {}
            Err(ConsoleError::Timeout { after, .. }) => {
                self.failure = Some(format!(
                    "timed out after {:.1} s waiting for the guest to exit; killed with SIGKILL",
                    after.as_secs_f64()
                ));
            }
            Err(e) => self.set_failure(e.to_string()),
        }
        self.finish()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Splits an `--exec` string on `;` into trimmed, non-empty commands.
pub fn split_commands(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake guest in bash: a banner, then a prompt loop reading `\r`-terminated lines.
    const FAKE_GUEST: &str = r#"
printf 'boot: fake time_to_prompt_us=1\n'
while true; do
  printf 'hotmem> '
  IFS= read -r -d $'\r' line || exit 7
  printf '%s\n' "$line"
  case "$line" in
    poweroff) printf 'bye\n'; exit 0 ;;
    fail) printf 'failing\n' >&2; exit 3 ;;
    hang) exec sleep 30 ;;
    meminfo) printf 'meminfo: total=1024\n' ;;
    *) printf 'unknown command: %s\nusage: help\n' "$line" ;;
  esac
done
"#;

    fn guest(script: &str, timeout_ms: u64) -> Console {
        let mut c = Command::new("bash");
        c.arg("-c").arg(script);
        let opts = ConsoleOptions {
            timeout: Some(Duration::from_millis(timeout_ms)),
            ..Default::default()
        };
        Console::spawn(c, opts).expect("spawn bash")
    }

    #[test]
    fn script_runs_to_poweroff() {
        let out = guest(FAKE_GUEST, 10_000).run_script(&split_commands(" meminfo ;; bogus;poweroff "));
        assert!(out.success(), "{}\n{}", out.describe(), out.tail(20));
        assert_eq!(out.commands_sent, 3);
        assert!(out.console.contains("meminfo: total=1024"));
        assert!(out.console.contains("unknown command: bogus"));
        assert!(out.console.ends_with("bye\n"), "{:?}", out.console);
        assert_eq!(out.host_exit_code(), 0);
    }

    #[test]
    fn exit_status_is_the_guests() {
        let out = guest(FAKE_GUEST, 10_000).run_script(&["fail"]);
        assert_eq!(out.exit_code(), Some(3));
        assert_eq!(out.host_exit_code(), 3);
        assert!(out.failure.is_none());
        assert!(out.stderr.contains("failing"));
    }

    #[test]
    fn interactive_commands_return_their_output() {
        let mut c = guest(FAKE_GUEST, 10_000);
        let banner = c.wait_for_prompt().unwrap();
        assert!(banner.contains("time_to_prompt_us=1"));
        let r = c.command("meminfo").unwrap();
        assert_eq!(r, "meminfo\nmeminfo: total=1024\n");
        let r = c.command("x y").unwrap();
        assert!(r.contains("usage: help"));
        c.send_line("poweroff").unwrap();
        assert!(c.wait_exit().unwrap().success());
        assert!(c.finish().success());
    }

    #[test]
    fn hang_after_command_is_killed_at_the_deadline() {
        let t = Instant::now();
        let out = guest(FAKE_GUEST, 1_500).run_script(&["hang", "meminfo"]);
        assert!(out.timed_out);
        assert!(t.elapsed() < Duration::from_secs(10));
        let f = out.failure.clone().unwrap();
        assert!(
            f.contains("waiting for the prompt before typing `meminfo`") && f.contains("SIGKILL"),
            "{f}"
        );
        assert_eq!(out.host_exit_code(), TIMEOUT_EXIT_CODE);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.and_then(|s| s.signal()), Some(9));
    }

    #[test]
    fn guest_that_never_exits_is_killed() {
        // Prompts for ever, never powers off.
        let out = guest(
            "while true; do printf 'hotmem> '; IFS= read -r -d $'\\r' l || exec sleep 30; done",
            1_000,
        )
        .run_script(&["help"]);
        assert!(out.timed_out);
        assert_eq!(out.commands_sent, 1);
        assert!(out.failure.unwrap().contains("waiting for the guest to exit"));
    }

    #[test]
    fn exit_before_prompt_is_reported() {
        let out = guest(
            "printf 'hotmem: FATAL 16K granule not supported by this CPU\\n'; exit 1",
            10_000,
        )
        .run_script(&["meminfo"]);
        assert_eq!(out.exit_code(), Some(1));
        assert_eq!(out.commands_sent, 0);
        assert!(out.failure.unwrap().contains("before `meminfo` was typed"));
        assert!(out.console.contains("hotmem: FATAL"));
        // Exit status 0 but commands left untyped is still a failure for the host.
        let out = guest("exit 0", 10_000).run_script(&["meminfo"]);
        assert_eq!(out.host_exit_code(), 1);
    }

    #[test]
    fn host_commands_are_skipped() {
        let out = guest(FAKE_GUEST, 10_000).run_script(&[":device_add pc-dimm", "poweroff"]);
        assert!(out.success(), "{}", out.describe());
        assert_eq!(out.skipped, [":device_add pc-dimm"]);
        assert_eq!(out.commands_sent, 1);
    }

    #[test]
    fn output_arriving_in_pieces_still_matches_the_prompt() {
        let mut c = guest(
            "printf 'hot'; sleep 0.2; printf 'mem'; sleep 0.2; printf '> '; sleep 0.2; printf x; exit 0",
            10_000,
        );
        assert_eq!(c.wait_for_prompt().unwrap(), "");
        assert!(c.wait_exit().unwrap().success());
        assert_eq!(c.output(), "hotmem> x");
    }

    #[test]
    fn split() {
        assert_eq!(split_commands("a; b c ;;  ;d"), ["a", "b c", "d"]);
        assert!(split_commands("  ").is_empty());
    }
}
