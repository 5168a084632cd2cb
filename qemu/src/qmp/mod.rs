//! A small typed client for the QEMU Machine Protocol (QMP) over a unix socket.
//!
//! QEMU is started with `-qmp unix:<path>,server=on,wait=off` (see [`qmp_arg`]); [`Qmp::connect`]
//! retries until QEMU has created the socket, reads the greeting and negotiates capabilities.
//! Then:
//! - [`Qmp::execute`] sends one command and waits for *its* reply (matched by a per-command
//!   `id`): `{"return": ...}` becomes `Ok(value)`, `{"error": {class, desc}}` becomes
//!   [`QmpError::Command`];
//! - events that arrive meanwhile are queued, each with a sequence number ([`QmpEvent::seq`]);
//!   [`Qmp::mark`] + [`Qmp::wait_event_since`] wait for an event caused by a later command
//!   without being fooled by an older one of the same kind;
//! - typed helpers for what DIMM hotplug needs ([`Qmp::object_add_ram`],
//!   [`Qmp::device_add_dimm`], [`Qmp::device_del`], [`Qmp::object_del`],
//!   [`Qmp::query_memory_devices`], [`Qmp::query_acpi_ospm_status`], [`Qmp::system_reset`],
//!   [`Qmp::system_powerdown`]).
//!
//! What QEMU reports about memory devices and their ACPI status is in [`devices`].
//!
//! Every wait has a timeout and nothing here can block for ever: a reader thread owns the
//! receiving side, so a QEMU that stops answering (docs/design.md#qemu-pitfalls: a failing
//! `device_add` can hang QMP on 7.2) costs at most the timeout, and a QEMU that exits closes the
//! socket ([`QmpError::Closed`]). Replies to commands that timed out are discarded when they
//! arrive late (their `id` no longer matches).

use std::any::Any;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub mod devices;

pub use self::devices::{MemoryDevice, OspmStatus, Tagged, OST_SOURCE_EJECT, OST_SOURCE_INSERT};

/// Default time to wait for a command's reply.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time to wait for QEMU to create the socket and greet.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// At most this many unclaimed events are kept (oldest dropped first).
const MAX_QUEUED_EVENTS: usize = 4096;

/// The QEMU option value for a QMP server on `path`: `unix:<path>,server=on,wait=off` (commas in
/// the path doubled, QEMU's escape).
pub fn qmp_arg(path: &Path) -> String {
    format!("unix:{},server=on,wait=off", path.to_string_lossy().replace(',', ",,"))
}

/// What went wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Could not connect to the socket before the deadline (or QEMU exited first).
    #[error("cannot connect to QMP at {}: {why}", path.display())]
    Connect { path: PathBuf, why: String },
    #[error("QMP I/O error: {0}")]
    Io(#[from] io::Error),
    /// QEMU closed the connection (it exited, or was killed).
    #[error("QEMU closed the QMP connection (it exited?)")]
    Closed,
    /// No reply / event before the deadline.
    #[error("no {waiting_for} from QEMU after {:.1} s", after.as_secs_f64())]
    Timeout { waiting_for: String, after: Duration },
    /// Something that is not QMP (bad JSON, a reply without `return`/`error`, ...).
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU answered the command with `{"error": {"class": .., "desc": ..}}`.
    #[error("{desc} ({class})")]
    Command { class: String, desc: String },
}

/// One asynchronous QMP event.
#[derive(Clone, Debug)]
pub struct QmpEvent {
    /// Position in the order of arrival on this connection (0, 1, 2, ...).
    pub seq: u64,
    /// `event`, e.g. `DEVICE_DELETED`.
    pub name: String,
    /// `data` (`null` when absent).
    pub data: Value,
    /// QEMU's `timestamp` in seconds since the epoch (host clock).
    pub timestamp: f64,
    /// When this client read it.
    pub received: Instant,
}

impl QmpEvent {
    /// The `info` of an `ACPI_DEVICE_OST` event, parsed.
    pub fn ost(&self) -> Option<OspmStatus> {
        if self.name != "ACPI_DEVICE_OST" {
            return None;
        }
        OspmStatus::deserialize(self.data.get("info")?).ok()
    }

    /// `data.device` (DEVICE_DELETED and others).
    pub fn device(&self) -> Option<&str> {
        self.data.get("device").and_then(Value::as_str)
    }
}

/// An event as QEMU sends it.
#[derive(Deserialize)]
struct EventMessage {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    timestamp: Timestamp,
}

#[derive(Default, Deserialize)]
struct Timestamp {
    seconds: f64,
    microseconds: f64,
}

/// Bookkeeping that must see every event as it arrives, before a wait claims it (what the DIMM
/// host commands made and saw go away, the DIMM protocol record). A connection keeps one of
/// each type: [`Qmp::observer`].
pub trait EventObserver: Any + Send {
    fn observe(&mut self, e: &QmpEvent);
}

enum Incoming {
    Msg(Value, Instant),
    Bad(String),
    Closed,
}

/// A connected, capability-negotiated QMP session.
pub struct Qmp {
    stream: UnixStream,
    rx: Receiver<Incoming>,
    events: VecDeque<QmpEvent>,
    next_seq: u64,
    next_id: u64,
    closed: bool,
    /// QEMU's greeting (`{"QMP": {"version": ..., "capabilities": [...]}}`).
    pub greeting: Value,
    /// Time limit of [`Qmp::execute`].
    pub command_timeout: Duration,
    /// Last commands/replies/events, for failure reports (bounded).
    transcript: VecDeque<String>,
    log: Option<std::fs::File>,
    /// Bookkeeping shown every event on arrival.
    observers: Vec<Box<dyn EventObserver>>,
}

const TRANSCRIPT_LINES: usize = 200;

impl Qmp {
    /// Connects to `path`, retrying until `timeout` while `alive()` is true (pass a check of the
    /// QEMU process, so a QEMU that died is reported at once), then reads the greeting and sends
    /// `qmp_capabilities`.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> Result<Qmp, QmpError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if let Err(why) = alive() {
                        return Err(QmpError::Connect { path: path.into(), why });
                    }
                    if start.elapsed() >= timeout {
                        return Err(QmpError::Connect {
                            path: path.into(),
                            why: format!("{e} (gave up after {:.1} s)", start.elapsed().as_secs_f64()),
                        });
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let mut q = Qmp::from_stream(stream)?;
        let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_secs(2));
        let greeting = q.recv_until(left, "QMP greeting", |m| m.get("QMP").is_some())?;
        q.greeting = greeting;
        q.execute_with_timeout("qmp_capabilities", None, left)?;
        Ok(q)
    }

    /// Wraps a connected stream (no greeting read yet); used by [`Qmp::connect`] and tests.
    fn from_stream(stream: UnixStream) -> Result<Qmp, QmpError> {
        let read_half = stream.try_clone()?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(read_half);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Incoming::Closed);
                        break;
                    }
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim();
                        if text.is_empty() {
                            continue;
                        }
                        let m = match serde_json::from_str::<Value>(text) {
                            Ok(v) => Incoming::Msg(v, Instant::now()),
                            Err(e) => Incoming::Bad(format!("{e}: {text}")),
                        };
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Qmp {
            stream,
            rx,
            events: VecDeque::new(),
            next_seq: 0,
            next_id: 0,
            closed: false,
            greeting: Value::Null,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            transcript: VecDeque::new(),
            log: None,
            observers: Vec::new(),
        })
    }

    /// QEMU's version from the greeting, e.g. `(10, 0, 2)`.
    pub fn qemu_version(&self) -> Option<(u64, u64, u64)> {
        #[derive(Deserialize)]
        struct Version {
            major: u64,
            minor: u64,
            micro: u64,
        }
        let v = Version::deserialize(self.greeting.pointer("/QMP/version/qemu")?).ok()?;
        Some((v.major, v.minor, v.micro))
    }

    /// Also append every transcript line to `path` from now on.
    pub fn log_to(&mut self, path: &Path) -> io::Result<()> {
        self.log = Some(std::fs::File::create(path)?);
        Ok(())
    }

    fn note(&mut self, s: String) {
        if let Some(f) = &mut self.log {
            let _ = writeln!(f, "{s}");
        }
        if self.transcript.len() >= TRANSCRIPT_LINES {
            self.transcript.pop_front();
        }
        self.transcript.push_back(s);
    }

    /// The last commands, replies and events (`->`, `<-`, `EV`), for failure reports.
    pub fn transcript(&self) -> String {
        self.transcript.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn push_event(&mut self, v: Value, received: Instant) {
        let m = EventMessage::deserialize(v).unwrap_or_else(|e| EventMessage {
            event: format!("(unreadable event: {e})"),
            data: Value::Null,
            timestamp: Timestamp::default(),
        });
        let e = QmpEvent {
            seq: self.next_seq,
            name: m.event,
            data: m.data,
            timestamp: m.timestamp.seconds + m.timestamp.microseconds / 1e6,
            received,
        };
        self.next_seq += 1;
        self.note(format!("EV {} {}", e.name, e.data));
        for o in &mut self.observers {
            o.observe(&e);
        }
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Receives one message within `timeout`: an event is queued (`Ok(None)`), anything else
    /// is returned.
    fn recv_one(&mut self, timeout: Duration, waiting_for: &str) -> Result<Option<Value>, QmpError> {
        if self.closed {
            return Err(QmpError::Closed);
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Incoming::Msg(v, at)) => {
                if v.get("event").is_some() {
                    self.push_event(v, at);
                    Ok(None)
                } else {
                    Ok(Some(v))
                }
            }
            Ok(Incoming::Bad(why)) => {
                self.note(format!("<- (bad) {why}"));
                Err(QmpError::Protocol(why))
            }
            Ok(Incoming::Closed) | Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Err(QmpError::Closed)
            }
            Err(RecvTimeoutError::Timeout) => Err(QmpError::Timeout {
                waiting_for: waiting_for.into(),
                after: timeout,
            }),
        }
    }

    /// Receives messages until `want` accepts one (returned) or `timeout` passes; events seen
    /// on the way are queued.
    fn recv_until(
        &mut self,
        timeout: Duration,
        waiting_for: &str,
        mut want: impl FnMut(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.recv_one(left, waiting_for) {
                Ok(None) => {}
                Ok(Some(v)) if want(&v) => return Ok(v),
                Ok(Some(v)) => self.note(format!("<- (ignored) {v}")),
                Err(QmpError::Timeout { .. }) => {
                    return Err(QmpError::Timeout {
                        waiting_for: waiting_for.into(),
                        after: start.elapsed(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection's observer of type `T`, made empty on first use: it sees every event
    /// that arrives from then on, so make it before sending the command whose events it needs.
    pub fn observer<T: EventObserver + Default>(&mut self) -> &mut T {
        if self.observer_if::<T>().is_none() {
            self.observers.push(Box::new(T::default()));
        }
        self.observers
            .iter_mut()
            .find_map(|o| (&mut **o as &mut dyn Any).downcast_mut::<T>())
            .expect("made above")
    }

    /// The connection's observer of type `T`, if one was made.
    pub fn observer_if<T: EventObserver>(&self) -> Option<&T> {
        self.observers
            .iter()
            .find_map(|o| (&**o as &dyn Any).downcast_ref::<T>())
    }

    /// QEMU closed the connection (it exited).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Moves whatever has arrived into the event queue, without waiting.
    pub fn poll(&mut self) -> Result<(), QmpError> {
        loop {
            match self.rx.try_recv() {
                Ok(Incoming::Msg(v, at)) => {
                    if v.get("event").is_some() {
                        self.push_event(v, at);
                    } else {
                        self.note(format!("<- (ignored) {v}"));
                    }
                }
                Ok(Incoming::Bad(why)) => self.note(format!("<- (bad) {why}")),
                Ok(Incoming::Closed) | Err(mpsc::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return Err(QmpError::Closed);
                }
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
            }
        }
    }

    /// Sends a whole command object (an `id` is added, replacing any) and waits for its reply
    /// object (`{"return": ..}` or `{"error": ..}`, returned as is, without the `id`).
    pub fn execute_raw(&mut self, mut cmd: Value, timeout: Duration) -> Result<Value, QmpError> {
        let Some(obj) = cmd.as_object_mut() else {
            return Err(QmpError::Protocol(format!("a QMP command is a JSON object, not {cmd}")));
        };
        if !obj.contains_key("execute") {
            return Err(QmpError::Protocol(format!("a QMP command needs \"execute\": {cmd}")));
        }
        let id = format!("hotmem-{}", self.next_id);
        self.next_id += 1;
        obj.insert("id".into(), Value::String(id.clone()));
        let mut text = cmd.to_string();
        self.note(format!("-> {text}"));
        text.push('\n');
        if self.closed {
            return Err(QmpError::Closed);
        }
        if let Err(e) = (&self.stream).write_all(text.as_bytes()) {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    self.closed = true;
                    QmpError::Closed
                }
                _ => QmpError::Io(e),
            });
        }
        let what = format!(
            "reply to `{}`",
            cmd.get("execute").and_then(Value::as_str).unwrap_or("?")
        );
        let mut reply = self.recv_until(timeout, &what, |v| {
            v.get("id").and_then(Value::as_str) == Some(id.as_str())
        })?;
        if let Some(o) = reply.as_object_mut() {
            o.remove("id");
        }
        self.note(format!("<- {reply}"));
        Ok(reply)
    }

    /// Runs `command` with `arguments` (an object, or `None`) and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let t = self.command_timeout;
        self.execute_with_timeout(command, arguments, t)
    }

    /// [`Qmp::execute`] with an explicit reply timeout.
    pub fn execute_with_timeout(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let cmd = match arguments {
            Some(a) => json!({ "execute": command, "arguments": a }),
            None => json!({ "execute": command }),
        };
        let reply = self.execute_raw(cmd, timeout)?;
        reply_value(reply)
    }

    /// The sequence number the next event will get: pass it to [`Qmp::wait_event_since`] to
    /// wait only for events that arrive after this point.
    pub fn mark(&mut self) -> u64 {
        let _ = self.poll();
        self.next_seq
    }

    /// Queued events not yet claimed by a wait.
    pub fn events(&self) -> impl Iterator<Item = &QmpEvent> {
        self.events.iter()
    }

    /// Takes every queued event out of the queue.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        let _ = self.poll();
        self.events.drain(..).collect()
    }

    /// Waits for the first event with `seq >= since` that `pred` accepts (already queued, or
    /// arriving within `timeout`); it is removed from the queue and returned. Other events stay
    /// queued.
    pub fn wait_event_since(
        &mut self,
        since: u64,
        timeout: Duration,
        waiting_for: &str,
        mut pred: impl FnMut(&QmpEvent) -> bool,
    ) -> Result<QmpEvent, QmpError> {
        let start = Instant::now();
        loop {
            if let Some(i) = self.events.iter().position(|e| e.seq >= since && pred(e)) {
                return Ok(self.events.remove(i).expect("index in range"));
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(QmpError::Timeout {
                    waiting_for: waiting_for.into(),
                    after: start.elapsed(),
                });
            }
            match self.recv_one(left, waiting_for) {
                Ok(None) | Err(QmpError::Timeout { .. }) => {}
                Ok(Some(v)) => self.note(format!("<- (ignored) {v}")),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for any event named `name` whose `data` satisfies `pred` (queued or arriving
    /// within `timeout`).
    pub fn wait_event(
        &mut self,
        name: &str,
        mut pred: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<QmpEvent, QmpError> {
        self.wait_event_since(0, timeout, &format!("{name} event"), |e| {
            e.name == name && pred(&e.data)
        })
    }

    // ---- typed helpers --------------------------------------------------------------------

    /// `object-add` of a `memory-backend-ram` of `size` bytes.
    pub fn object_add_ram(&mut self, id: &str, size: u64) -> Result<(), QmpError> {
        self.execute(
            "object-add",
            Some(json!({"qom-type": "memory-backend-ram", "id": id, "size": size})),
        )
        .map(drop)
    }

    /// `device_add` of a `pc-dimm` backed by the object `memdev`, on NUMA node `node`
    /// (`None`: QEMU's default, node 0).
    pub fn device_add_dimm(&mut self, id: &str, memdev: &str, node: Option<u32>) -> Result<(), QmpError> {
        let mut args = json!({"driver": "pc-dimm", "id": id, "memdev": memdev});
        if let Some(n) = node {
            args["node"] = json!(n);
        }
        self.execute("device_add", Some(args)).map(drop)
    }

    /// `device_del`: only a *request* for DIMMs; completion is the `DEVICE_DELETED` event.
    pub fn device_del(&mut self, id: &str) -> Result<(), QmpError> {
        self.execute("device_del", Some(json!({ "id": id }))).map(drop)
    }

    /// `object-del` (fails with "is in use" while a DIMM still uses the backend).
    pub fn object_del(&mut self, id: &str) -> Result<(), QmpError> {
        self.execute("object-del", Some(json!({ "id": id }))).map(drop)
    }

    /// Ids of the objects under `/objects` (backends and others).
    pub fn objects(&mut self) -> Result<Vec<String>, QmpError> {
        #[derive(Deserialize)]
        struct Property {
            name: String,
            #[serde(rename = "type")]
            kind: String,
        }
        let list: Vec<Property> = parse("qom-list", self.execute("qom-list", Some(json!({"path": "/objects"})))?)?;
        Ok(list
            .into_iter()
            .filter(|p| p.kind.starts_with("child<"))
            .map(|p| p.name)
            .collect())
    }

    /// `query-memory-devices`: every memory device, with its kind.
    pub fn query_memory_devices(&mut self) -> Result<Vec<MemoryDevice>, QmpError> {
        Ok(self
            .memory_devices::<MemoryDevice>()?
            .into_iter()
            .map(|t| MemoryDevice { kind: t.kind, ..t.data })
            .collect())
    }

    /// `query-memory-devices` with each entry's `data` read as `T`.
    pub fn memory_devices<T: DeserializeOwned>(&mut self) -> Result<Vec<Tagged<T>>, QmpError> {
        let v = self.execute("query-memory-devices", None)?;
        parse("query-memory-devices", v)
    }

    pub fn query_acpi_ospm_status(&mut self) -> Result<Vec<OspmStatus>, QmpError> {
        let v = self.execute("query-acpi-ospm-status", None)?;
        parse("query-acpi-ospm-status", v)
    }

    pub fn system_reset(&mut self) -> Result<(), QmpError> {
        self.execute("system_reset", None).map(drop)
    }

    /// Asks the guest to power down (the GED's power-button event); QEMU exits when it does.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).map(drop)
    }

    /// Makes QEMU exit at once.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.execute("quit", None).map(drop)
    }

    /// A human monitor (HMP) command through QMP; returns its text output.
    pub fn human_monitor_command(&mut self, line: &str) -> Result<String, QmpError> {
        let v = self.execute("human-monitor-command", Some(json!({ "command-line": line })))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// How many NUMA nodes the machine has (HMP `info numa`, whose first line is `N nodes`;
    /// QMP has no query for it): what `device_add ...,node=N` accepts is `N` below this.
    pub fn numa_nodes(&mut self) -> Result<u32, QmpError> {
        let out = self.human_monitor_command("info numa")?;
        devices::info_numa_nodes(&out)
            .ok_or_else(|| QmpError::Protocol(format!("`info numa` without a node count: {out:?}")))
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Unblocks the reader thread.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// `{"return": v}` → `Ok(v)`; `{"error": {class, desc}}` → [`QmpError::Command`].
pub fn reply_value(reply: Value) -> Result<Value, QmpError> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(rename = "return")]
        ret: Option<Value>,
        error: Option<ErrorReply>,
    }
    #[derive(Deserialize)]
    struct ErrorReply {
        #[serde(default)]
        class: String,
        #[serde(default)]
        desc: String,
    }
    match Reply::deserialize(&reply) {
        Ok(Reply {
            error: Some(ErrorReply { class, desc }),
            ..
        }) => Err(QmpError::Command { class, desc }),
        Ok(Reply { ret: Some(v), .. }) => Ok(v),
        _ => Err(QmpError::Protocol(format!(
            "reply without `return` or `error`: {reply}"
        ))),
    }
}

/// A reply's `return` value read as `T` (a typed QMP answer).
fn parse<T: DeserializeOwned>(what: &str, v: Value) -> Result<T, QmpError> {
    T::deserialize(&v).map_err(|e| QmpError::Protocol(format!("{what}: {e} in {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    fn sock_path(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hotmem-qmp-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("qmp.sock")
    }

    /// A fake QEMU: greets, then answers with `script(command, id) -> lines to send`.
    fn fake_qemu(
        path: &Path,
        mut script: impl FnMut(&Value, &Value) -> Vec<String> + Send + 'static,
    ) -> thread::JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            writeln!(
                w,
                r#"{{"QMP": {{"version": {{"qemu": {{"micro": 2, "minor": 0, "major": 10}}, "package": ""}}, "capabilities": ["oob"]}}}}"#
            )
            .unwrap();
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap();
                let id = v.get("id").cloned().unwrap_or(Value::Null);
                for out in script(&v, &id) {
                    if out == "CLOSE" || writeln!(w, "{out}").is_err() {
                        return;
                    }
                }
            }
        })
    }

    /// Names of the events an observer saw.
    #[derive(Default)]
    struct Seen(Vec<String>);

    impl EventObserver for Seen {
        fn observe(&mut self, e: &QmpEvent) {
            self.0.push(e.name.clone());
        }
    }

    fn ok(id: &Value, ret: &str) -> String {
        format!(r#"{{"return": {ret}, "id": {id}}}"#)
    }

    #[test]
    fn connect_retries_until_the_socket_exists_and_negotiates() {
        let p = sock_path("connect");
        let p2 = p.clone();
        let server = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            fake_qemu(&p2, |c, id| {
                assert!(c["execute"] == "qmp_capabilities" || c["execute"] == "query-status");
                vec![ok(id, "{}")]
            })
        });
        let mut q = Qmp::connect(&p, Duration::from_secs(5), || Ok(())).unwrap();
        assert_eq!(q.qemu_version(), Some((10, 0, 2)));
        assert_eq!(q.execute("query-status", None).unwrap(), json!({}));
        drop(q);
        server.join().unwrap().join().unwrap();
    }

    #[test]
    fn connect_gives_up() {
        let p = sock_path("never");
        let t = Instant::now();
        let e = Qmp::connect(&p, Duration::from_millis(300), || Ok(())).err().unwrap();
        assert!(matches!(e, QmpError::Connect { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        let e = Qmp::connect(&p, Duration::from_secs(30), || Err("QEMU exited (status 1)".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("QEMU exited"), "{e}");
    }

    #[test]
    fn errors_events_and_stale_replies() {
        let p = sock_path("events");
        let _server = fake_qemu(&p, |c, id| {
            match c["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(id, "{}")],
            // An event before the reply, a stale reply for another id, then the reply.
            "device_add" => vec![
                r#"{"event": "ACPI_DEVICE_OST", "data": {"info": {"device": "dimm0", "source": 1, "status": 0, "slot": "0", "slot-type": "DIMM"}}, "timestamp": {"seconds": 1, "microseconds": 500000}}"#.into(),
                ok(&json!("other"), "{}"),
                ok(id, "{}"),
            ],
            "object-del" => vec![format!(
                r#"{{"error": {{"class": "GenericError", "desc": "object 'mem-dimm0' is in use, can not be deleted"}}, "id": {id}}}"#
            )],
            "query-memory-devices" => vec![ok(id, r#"[{"type": "dimm", "data": {"id": "dimm0", "slot": 0, "addr": 2147483648, "size": 1073741824, "memdev": "/objects/mem-dimm0", "hotplugged": true, "hotpluggable": true, "node": 0}}]"#)],
            "query-acpi-ospm-status" => vec![ok(id, r#"[{"device": "dimm0", "source": 1, "status": 0, "slot": "0", "slot-type": "DIMM"}, {"source": 0, "status": 0, "slot": "1", "slot-type": "DIMM"}]"#)],
            "device_del" => vec![ok(id, "{}"), r#"{"event": "DEVICE_DELETED", "data": {"device": "dimm0", "path": "/machine/peripheral/dimm0"}, "timestamp": {"seconds": 2, "microseconds": 0}}"#.into()],
            "human-monitor-command" => vec![ok(id, r#""2 nodes\r\nnode 0 cpus: 0\r\nnode 1 cpus: 1\r\n""#)],
            "hang" => vec![],
            other => panic!("unexpected {other}"),
        }
        });
        let mut q = Qmp::connect(&p, Duration::from_secs(5), || Ok(())).unwrap();
        q.observer::<Seen>();
        let m = q.mark();
        q.device_add_dimm("dimm0", "mem-dimm0", None).unwrap();
        // The event that came before the reply is not lost.
        let e = q
            .wait_event_since(m, Duration::from_secs(1), "OST", |e| e.name == "ACPI_DEVICE_OST")
            .unwrap();
        assert_eq!(e.timestamp, 1.5);
        let ost = e.ost().unwrap();
        assert_eq!(
            (ost.device.as_deref(), ost.source, ost.status, ost.slot_number()),
            (Some("dimm0"), 1, 0, Some(0))
        );
        // A claimed event is gone; events before a mark do not count.
        let m2 = q.mark();
        assert!(q
            .wait_event_since(m2, Duration::from_millis(100), "OST", |e| e.name == "ACPI_DEVICE_OST")
            .is_err());
        match q.object_del("mem-dimm0") {
            Err(QmpError::Command { class, desc }) => {
                assert_eq!(class, "GenericError");
                assert!(desc.contains("in use"));
            }
            other => panic!("{other:?}"),
        }
        let d = q.query_memory_devices().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].id.as_deref(), d[0].slot, d[0].addr, d[0].size),
            (Some("dimm0"), Some(0), 0x8000_0000, 1 << 30)
        );
        assert_eq!(d[0].memdev_id(), Some("mem-dimm0"));
        assert!(d[0].hotplugged);
        assert_eq!(q.numa_nodes().unwrap(), 2);
        let o = q.query_acpi_ospm_status().unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].device, None);
        let m3 = q.mark();
        q.device_del("dimm0").unwrap();
        let e = q
            .wait_event("DEVICE_DELETED", |d| d["device"] == "dimm0", Duration::from_secs(2))
            .unwrap();
        assert!(e.seq >= m3);
        assert_eq!(e.device(), Some("dimm0"));
        // The observer saw both events, though the waits claimed them.
        assert_eq!(q.observer::<Seen>().0, ["ACPI_DEVICE_OST", "DEVICE_DELETED"]);
        let t = Instant::now();
        let e = q
            .execute_with_timeout("hang", None, Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(q.transcript().contains("-> {\"execute\":\"hang\""));
    }

    #[test]
    fn closed_connection_is_reported() {
        let p = sock_path("closed");
        let _server = fake_qemu(&p, |c, id| match c["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(id, "{}")],
            _ => vec!["CLOSE".into()], // the thread ends, the socket closes
        });
        let mut q = Qmp::connect(&p, Duration::from_secs(5), || Ok(())).unwrap();
        let e = q.execute("quit", None).unwrap_err();
        assert!(matches!(e, QmpError::Closed), "{e}");
        assert!(matches!(q.execute("quit", None).unwrap_err(), QmpError::Closed));
    }

    #[test]
    fn replies() {
        assert_eq!(reply_value(json!({"return": 5})).unwrap(), json!(5));
        assert!(matches!(
            reply_value(json!({"error": {"class": "C", "desc": "d"}})),
            Err(QmpError::Command { .. })
        ));
        assert!(matches!(reply_value(json!({"x": 1})), Err(QmpError::Protocol(_))));
        assert_eq!(
            qmp_arg(Path::new("/t/a,b/q.sock")),
            "unix:/t/a,,b/q.sock,server=on,wait=off"
        );
    }
}
