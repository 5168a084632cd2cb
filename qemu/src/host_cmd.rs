//! Host commands of the runner: lines starting with `:` typed at the console prompt or given in
//! `--exec`, carried out on the host through QMP ([`crate::qmp`]).
//!
//! | command | what it does |
//! |---|---|
//! | `:plug SIZE [ID]` | `object-add memory-backend-ram mem-<ID>` + `device_add pc-dimm <ID>`, then wait for the guest's `ACPI_DEVICE_OST` (source 1) for it |
//! | `:unplug ID` | `device_del`, then wait for `DEVICE_DELETED` (then `object-del` the backend) or the guest's refusal (`ACPI_DEVICE_OST` source 3, status ≠ 0) |
//! | `:dimms` | `query-memory-devices` + `query-acpi-ospm-status`, one line per DIMM |
//! | `:vmem ID SIZE` | `qom-set` of the virtio-mem device's `requested-size`, then wait for the guest's `virtio-mem: ... event=done\|stopped` line |
//! | `:vmems` | every virtio-mem device: `size` (plugged), `requested-size`, region, block size |
//! | `:qmp <json>` | a raw QMP command (`{"execute": ...}` or just a command name); prints the reply |
//! | `:hmp <line>` | a human monitor command (`info mtree`, ...) through QMP; prints its output |
//! | `:reset` / `:powerdown` | `system_reset` / `system_powerdown` |
//! | `:help` | this list |
//!
//! Sizes are bytes, decimal or `0x` hex, with optional `_` and K/M/G/T suffixes (as in the
//! guest shell). IDs default to the lowest free `dimm<N>`.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

pub use mm::size::Size;

use crate::dimm_protocol::Request;
use crate::qmp::{MemoryDevice, OspmStatus, PendingUnplug, Qmp, QmpError, QmpEvent};

/// `ACPI_DEVICE_OST` source of an insert (ACPI "device check" / hot-add).
pub const OST_SOURCE_INSERT: u64 = 1;
/// `ACPI_DEVICE_OST` source of an eject request.
pub const OST_SOURCE_EJECT: u64 = 3;

/// Help text of the host commands (the runner prints it for `:help`).
pub const HOST_HELP: &str = "\
host commands (a line starting with `:`; carried out by the runner through QMP):
  :plug SIZE [ID]   hot-plug a pc-dimm of SIZE (e.g. 1G, 128M) with backend mem-<ID>; ID
                    defaults to the lowest free dimm<N>; waits for the guest's _OST
  :unplug ID        device_del; waits for DEVICE_DELETED (then deletes the backend) or the
                    guest's refusal (_OST eject failure)
  :dimms            QEMU's DIMMs (query-memory-devices) with their OSPM status
  :vmem ID SIZE     set a virtio-mem device's requested-size (0 to unplug all); waits for
                    the guest to report it done (or why it stopped) and prints the time
  :vmems            QEMU's virtio-mem devices: plugged size, requested size, region, block
  :qmp JSON|NAME    raw QMP command, e.g. :qmp {\"execute\":\"query-status\"} or :qmp query-status
  :hmp LINE         human monitor command, e.g. :hmp info memory-devices
  :reset            system_reset (DIMMs stay plugged)
  :powerdown        system_powerdown (the guest powers off)
  :help             this text
";

/// One parsed host command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCommand {
    Plug {
        size: u64,
        id: Option<String>,
    },
    Unplug {
        id: String,
    },
    Dimms,
    /// `:vmem ID SIZE`: a virtio-mem device's new `requested-size` (0 allowed).
    Vmem {
        id: String,
        size: u64,
    },
    Vmems,
    /// Raw QMP: the JSON text (or a bare command name).
    Qmp(String),
    Hmp(String),
    Reset,
    Powerdown,
    Help,
}

/// Is `line` a host command (first non-blank character `:`)?
pub fn is_host_command(line: &str) -> bool {
    line.trim_start().starts_with(':')
}

/// Parses a non-zero size with [`mm::size::parse_size`]: decimal or `0x` hex bytes, optional
/// `_` separators and K/M/G/T suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match mm::size::parse_size(s.trim()) {
        Ok(0) => Err(format!("size `{s}` must be larger than zero")),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("`{s}` is not a size (examples: 1G, 512M, 0x8000000)")),
    }
}

fn valid_id(id: &str) -> bool {
    // QEMU ids: a letter, then letters, digits, '-', '.', '_'.
    let mut c = id.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic()) && c.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// Parses a `:` line.
pub fn parse_host_command(line: &str) -> Result<HostCommand, String> {
    let line = line.trim();
    let body = line
        .strip_prefix(':')
        .ok_or_else(|| format!("`{line}` is not a host command (they start with `:`)"))?
        .trim_start();
    let (name, rest) = match body.split_once(char::is_whitespace) {
        Some((n, r)) => (n, r.trim()),
        None => (body, ""),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let usage = |u: &str| Err(format!("usage: {u}"));
    match name {
        "plug" => match words.as_slice() {
            [size] | [size, _] => {
                let size = parse_size(size)?;
                let id = words.get(1).map(|s| s.to_string());
                if let Some(id) = &id {
                    if !valid_id(id) {
                        return Err(format!(
                            "`{id}` is not a valid QEMU id (a letter, then letters, digits, `-`, `.`, `_`)"
                        ));
                    }
                }
                Ok(HostCommand::Plug { size, id })
            }
            _ => usage(":plug SIZE [ID]"),
        },
        "unplug" => match words.as_slice() {
            [id] => Ok(HostCommand::Unplug { id: id.to_string() }),
            _ => usage(":unplug ID"),
        },
        "dimms" if words.is_empty() => Ok(HostCommand::Dimms),
        "dimms" => usage(":dimms"),
        "vmem" => match words.as_slice() {
            [id, size] => {
                // 0 is a size here (unplug everything), but only when written as one.
                let size = mm::size::parse_size(size)
                    .map_err(|_| format!("`{size}` is not a size (examples: 0, 512M, 2G, 0x8000000)"))?;
                Ok(HostCommand::Vmem { id: id.to_string(), size })
            }
            _ => usage(":vmem ID SIZE"),
        },
        "vmems" if words.is_empty() => Ok(HostCommand::Vmems),
        "vmems" => usage(":vmems"),
        "qmp" if !rest.is_empty() => Ok(HostCommand::Qmp(rest.to_string())),
        "qmp" => usage(":qmp JSON|COMMAND"),
        "hmp" if !rest.is_empty() => Ok(HostCommand::Hmp(rest.to_string())),
        "hmp" => usage(":hmp LINE"),
        "reset" if words.is_empty() => Ok(HostCommand::Reset),
        "powerdown" if words.is_empty() => Ok(HostCommand::Powerdown),
        "reset" | "powerdown" => usage(&format!(":{name}")),
        "help" | "?" => Ok(HostCommand::Help),
        "" => Err("empty host command (`:help` lists them)".into()),
        other => Err(format!(
            "unknown host command `:{other}` (`:help` lists them: :plug, :unplug, :dimms, :vmem, :vmems, :qmp, :hmp, :reset, :powerdown)"
        )),
    }
}

/// How long host commands wait for the guest.
#[derive(Clone, Copy, Debug)]
pub struct HostTimeouts {
    /// `device_add` → the guest's insert _OST.
    pub plug: Duration,
    /// `device_del` → `DEVICE_DELETED` or the guest's refusal.
    pub unplug: Duration,
    /// The guest's `dimm:` console line after the QMP side finished.
    pub guest_line: Duration,
}

impl Default for HostTimeouts {
    fn default() -> Self {
        HostTimeouts {
            plug: Duration::from_secs(60),
            unplug: Duration::from_secs(60),
            guest_line: Duration::from_secs(10),
        }
    }
}

impl HostTimeouts {
    /// Every timeout capped at `limit` (the time left of the whole run).
    pub fn capped(self, limit: Option<Duration>) -> Self {
        let Some(l) = limit else { return self };
        HostTimeouts {
            plug: self.plug.min(l),
            unplug: self.unplug.min(l),
            guest_line: self.guest_line.min(l),
        }
    }
}

/// The guest's answer to a hot-plug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlugResult {
    /// _OST source 1, status 0.
    Ok,
    /// _OST source 1 with a failure status: the guest does not use the DIMM (QEMU keeps it
    /// plugged).
    Refused { status: u64 },
    /// No _OST within the timeout (no GED driver? still onlining?).
    NoAnswer { after: Duration },
}

/// A DIMM plugged by [`plug`].
#[derive(Clone, Debug)]
pub struct Plugged {
    pub id: String,
    /// Backend object id (`mem-<id>`).
    pub memdev: String,
    pub size: u64,
    /// From `query-memory-devices` after the plug.
    pub slot: Option<u64>,
    pub addr: Option<u64>,
    pub result: PlugResult,
    /// The `ACPI_DEVICE_OST` info, when it came.
    pub ost: Option<OspmStatus>,
    /// Host wall time from sending `device_add` to receiving the _OST event.
    pub elapsed: Duration,
    /// The guest's `dimm: slot=...` console line (filled in by [`crate::session::Session`]).
    pub guest_line: Option<String>,
    /// Why a refusal may not be this DIMM's fault: refused DIMMs still plugged below it.
    pub refused_before: Vec<String>,
}

impl Plugged {
    pub fn ok(&self) -> bool {
        self.result == PlugResult::Ok
    }

    /// `plug: id=dimm0 ost_status=0x0 ok slot=0 addr=0x80000000 size=1G time_ms=85`
    pub fn line(&self) -> String {
        let mut l = match &self.result {
            PlugResult::Ok => format!("plug: id={} ost_status=0x0 ok", self.id),
            PlugResult::Refused { status } => {
                format!("plug: id={} ost_status={status:#x} refused", self.id)
            }
            PlugResult::NoAnswer { after } => format!(
                "plug: id={} timeout: no _OST from the guest after {:.1} s (QEMU keeps the DIMM plugged)",
                self.id,
                after.as_secs_f64()
            ),
        };
        if let Some(s) = self.slot {
            l.push_str(&format!(" slot={s}"));
        }
        if let Some(a) = self.addr {
            l.push_str(&format!(" addr={a:#x}"));
        }
        l.push_str(&format!(" size={}", Size(self.size)));
        if !matches!(self.result, PlugResult::NoAnswer { .. }) {
            l.push_str(&format!(" time_ms={}", self.elapsed.as_millis()));
        }
        if let (PlugResult::Refused { .. }, [first, ..]) = (&self.result, self.refused_before.as_slice()) {
            l.push_str(&format!(
                " (the refused DIMM {} is still plugged below it and QEMU placed this one after it: \
                 `:unplug {first}` first)",
                self.refused_before.join(", ")
            ));
        }
        l
    }
}

/// The outcome of an unplug request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnplugResult {
    /// `DEVICE_DELETED`: the guest ejected it.
    Deleted,
    /// The guest answered the eject request with _OST source 3 and a failure status.
    Refused { status: u64 },
    /// QEMU reported `MEM_UNPLUG_ERROR` / `DEVICE_UNPLUG_GUEST_ERROR`.
    Failed { message: String },
    /// Neither within the timeout.
    NoAnswer { after: Duration },
}

/// What [`unplug`] saw.
#[derive(Clone, Debug)]
pub struct Unplugged {
    pub id: String,
    /// The DIMM as QEMU listed it before `device_del`.
    pub device: Option<MemoryDevice>,
    pub result: UnplugResult,
    /// Host wall time from sending `device_del` to the deciding event.
    pub elapsed: Duration,
    /// `object-del` of the backend after `DEVICE_DELETED` (`None`: not attempted).
    pub object_del: Option<Result<(), String>>,
    /// The guest's `dimm: slot=... event=remove ...` line (filled in by the session).
    pub guest_line: Option<String>,
}

impl Unplugged {
    pub fn deleted(&self) -> bool {
        self.result == UnplugResult::Deleted
    }

    pub fn slot(&self) -> Option<u64> {
        self.device.as_ref().and_then(|d| d.slot)
    }

    /// `unplug: id=dimm0 deleted time_ms=12` / `unplug: id=dimm0 refused ost_status=0x82` / ...
    pub fn lines(&self) -> Vec<String> {
        let id = &self.id;
        let ms = self.elapsed.as_millis();
        let mut v = vec![match &self.result {
            UnplugResult::Deleted => format!("unplug: id={id} deleted time_ms={ms}"),
            UnplugResult::Refused { status } => {
                format!("unplug: id={id} refused ost_status={status:#x} time_ms={ms}")
            }
            UnplugResult::Failed { message } => format!("unplug: id={id} failed: {message}"),
            UnplugResult::NoAnswer { after } => format!(
                "unplug: id={id} timeout: no DEVICE_DELETED and no refusal after {:.1} s \
                 (the DIMM is still plugged; if the guest ejects it later the runner deletes \
                 its backend then; `:unplug {id}` again retries)",
                after.as_secs_f64()
            ),
        }];
        if let Some(Err(e)) = &self.object_del {
            let memdev = self.device.as_ref().and_then(|d| d.memdev_id()).unwrap_or("?");
            v.push(format!("unplug: id={id} warning: object-del {memdev}: {e}"));
        }
        v
    }
}

/// The lowest `dimm<N>` that is neither a memory device nor (as `mem-dimm<N>`) an object.
pub fn next_dimm_id(qmp: &mut Qmp) -> Result<String, QmpError> {
    let devices = qmp.query_memory_devices()?;
    let objects = qmp.objects()?;
    let taken = |id: &str| {
        devices.iter().any(|d| d.id.as_deref() == Some(id)) || objects.iter().any(|o| *o == format!("mem-{id}"))
    };
    Ok((0..)
        .map(|n| format!("dimm{n}"))
        .find(|id| !taken(id))
        .expect("some id is free"))
}

fn is_ost(e: &QmpEvent, id: &str, source: u64) -> Option<OspmStatus> {
    let o = e.ost()?;
    (o.device.as_deref() == Some(id) && o.source == source).then_some(o)
}

/// `:plug`: backend + `pc-dimm`, then waits up to `timeout` for the guest's insert _OST.
/// QMP errors (bad size, no free slot, no GED in `-kernel` boots, ...) are returned as `Err`,
/// after deleting the backend that was created for the DIMM.
pub fn plug(qmp: &mut Qmp, size: u64, id: Option<&str>, timeout: Duration) -> Result<Plugged, QmpError> {
    let id = match id {
        Some(i) => i.to_string(),
        None => next_dimm_id(qmp)?,
    };
    let memdev = format!("mem-{id}");
    qmp.object_add_ram(&memdev, size)?;
    let mark = qmp.mark();
    let t0 = Instant::now();
    if let Err(e) = qmp.device_add_dimm(&id, &memdev) {
        let _ = qmp.object_del(&memdev);
        return Err(e);
    }
    qmp.protocol.record(Request::Plug {
        id: id.clone(),
        at: mark,
    });
    let (result, ost, elapsed) = match qmp.wait_event_since(mark, timeout, &format!("_OST for {id}"), |e| {
        is_ost(e, &id, OST_SOURCE_INSERT).is_some()
    }) {
        Ok(e) => {
            let o = e.ost().expect("an OST event");
            let r = if o.status == 0 {
                PlugResult::Ok
            } else {
                PlugResult::Refused { status: o.status }
            };
            (r, Some(o), e.received.saturating_duration_since(t0))
        }
        Err(QmpError::Timeout { after, .. }) => (PlugResult::NoAnswer { after }, None, t0.elapsed()),
        Err(e) => return Err(e),
    };
    let devices = qmp.query_memory_devices()?;
    let dev = devices.iter().find(|d| d.id.as_deref() == Some(id.as_str())).cloned();
    let mut refused_before = Vec::new();
    if let (PlugResult::Refused { .. }, Some(d)) = (&result, &dev) {
        let ospm = qmp.query_acpi_ospm_status().unwrap_or_default();
        for other in devices.iter().filter(|o| o.kind == "dimm" && o.addr < d.addr) {
            let refused = ospm.iter().any(|s| {
                other.slot.is_some() && s.slot_number() == other.slot && s.source == OST_SOURCE_INSERT && s.status != 0
            });
            if let (true, Some(oid)) = (refused, &other.id) {
                refused_before.push(oid.clone());
            }
        }
    }
    Ok(Plugged {
        refused_before,
        slot: dev.as_ref().and_then(|d| d.slot),
        addr: dev.as_ref().map(|d| d.addr),
        id,
        memdev,
        size,
        result,
        ost,
        elapsed,
        guest_line: None,
    })
}

/// `:unplug`: `device_del`, then waits up to `timeout` for `DEVICE_DELETED`, the guest's eject
/// refusal, or QEMU's unplug error; after `DEVICE_DELETED` the backend is deleted.
pub fn unplug(qmp: &mut Qmp, id: &str, timeout: Duration) -> Result<Unplugged, QmpError> {
    // This wait takes over an earlier unplug of the same id that got no answer.
    qmp.ledger.pending_unplugs.remove(id);
    let device = qmp
        .query_memory_devices()?
        .into_iter()
        .find(|d| d.id.as_deref() == Some(id));
    let mark = qmp.mark();
    let t0 = Instant::now();
    qmp.device_del(id)?;
    if device.as_ref().is_some_and(|d| d.kind == "dimm") {
        qmp.protocol.record(Request::Unplug {
            id: id.to_string(),
            slot: device.as_ref().and_then(|d| d.slot),
            at: mark,
        });
    }
    let ev = qmp.wait_event_since(
        mark,
        timeout,
        &format!("DEVICE_DELETED or a refusal for {id}"),
        |e| match e.name.as_str() {
            "DEVICE_DELETED" => e.device() == Some(id),
            "ACPI_DEVICE_OST" => is_ost(e, id, OST_SOURCE_EJECT).is_some_and(|o| o.status != 0),
            "MEM_UNPLUG_ERROR" | "DEVICE_UNPLUG_GUEST_ERROR" => {
                e.device() == Some(id)
                    || e.data.get("path").and_then(Value::as_str) == Some(&format!("/machine/peripheral/{id}"))
            }
            _ => false,
        },
    );
    let (result, elapsed) = match ev {
        Ok(e) => {
            let r = match e.name.as_str() {
                "DEVICE_DELETED" => UnplugResult::Deleted,
                "ACPI_DEVICE_OST" => UnplugResult::Refused {
                    status: e.ost().map_or(0, |o| o.status),
                },
                _ => UnplugResult::Failed {
                    message: format!("{} {}", e.name, e.data),
                },
            };
            (r, e.received.saturating_duration_since(t0))
        }
        Err(QmpError::Timeout { after, .. }) => {
            // The guest may still eject it (e.g. it was paused, or held in gdb): its
            // DEVICE_DELETED is noticed whenever it comes ([`reap_late_unplugs`]).
            qmp.ledger.pending_unplugs.insert(
                id.to_string(),
                PendingUnplug {
                    memdev: device.as_ref().and_then(|d| d.memdev_id()).map(String::from),
                    sent: t0,
                },
            );
            (UnplugResult::NoAnswer { after }, t0.elapsed())
        }
        Err(e) => return Err(e),
    };
    let object_del = match (&result, device.as_ref().and_then(|d| d.memdev_id())) {
        (UnplugResult::Deleted, Some(m)) => Some(qmp.object_del(m).map_err(|e| e.to_string())),
        _ => None,
    };
    Ok(Unplugged {
        id: id.to_string(),
        device,
        result,
        elapsed,
        object_del,
        guest_line: None,
    })
}

/// Handles the `DEVICE_DELETED` events of unplugs whose wait had ended ([`unplug`] gave
/// `NoAnswer`): deletes each one's backend and returns a line for each. Called before every
/// host command, while the interactive console idles, and at exit ([`exit_report`]).
pub fn reap_late_unplugs(qmp: &mut Qmp) -> Vec<String> {
    let _ = qmp.poll();
    let late = std::mem::take(&mut qmp.ledger.late_deletes);
    late.into_iter()
        .map(|l| {
            let head = format!(
                "unplug: id={} deleted late: the guest ejected it {:.1} s after device_del, after the runner stopped waiting",
                l.id,
                l.after.as_secs_f64()
            );
            match l.memdev {
                None => head,
                Some(m) if qmp.is_closed() => {
                    // Reported here, not again as a backend left over.
                    qmp.ledger.backends.remove(&m);
                    format!("{head}; QEMU has exited (backend {m} went with it)")
                }
                Some(m) => match qmp.object_del(&m) {
                    Ok(()) => format!("{head}; backend {m} deleted"),
                    Err(e) => format!("{head}; warning: object-del {m}: {e}"),
                },
            }
        })
        .collect()
}

/// What the runner reports when the run ends: late ejects handled now ([`reap_late_unplugs`]),
/// then every DIMM or backend still present — asked of QEMU when it still runs, else from what
/// this connection made and saw go away ([`crate::qmp::Ledger`]). Empty when nothing is left.
pub fn exit_report(qmp: &mut Qmp) -> Vec<String> {
    let mut lines = reap_late_unplugs(qmp);
    let live = if qmp.is_closed() {
        None
    } else {
        qmp.query_memory_devices().and_then(|d| Ok((d, qmp.objects()?))).ok()
    };
    let (devices, backends): (Vec<(String, String)>, Vec<String>) = match live {
        Some((devs, objs)) => {
            let devices: Vec<(String, String)> = devs
                .iter()
                .filter(|d| d.kind == "dimm")
                .map(|d| {
                    (
                        d.id.clone().unwrap_or_else(|| "-".into()),
                        d.memdev_id().unwrap_or("-").to_string(),
                    )
                })
                .collect();
            let used: Vec<&str> = devices.iter().map(|(_, m)| m.as_str()).collect();
            let backends = objs
                .into_iter()
                .filter(|o| qmp.ledger.backends.contains(o) && !used.contains(&o.as_str()))
                .collect();
            (devices, backends)
        }
        None => {
            let l = &qmp.ledger;
            let devices: Vec<(String, String)> = l.devices.iter().map(|(i, m)| (i.clone(), m.clone())).collect();
            let backends = l
                .backends
                .iter()
                .filter(|b| !l.devices.values().any(|m| m == *b))
                .cloned()
                .collect();
            (devices, backends)
        }
    };
    let when = if qmp.is_closed() { "when QEMU exited" } else { "at exit" };
    for (id, memdev) in devices {
        let pending = if qmp.ledger.pending_unplugs.contains_key(&id) {
            " (its unplug got no answer)"
        } else {
            ""
        };
        lines.push(format!(
            "exit: DIMM {id} (backend {memdev}) was still plugged {when}{pending}"
        ));
    }
    for b in backends {
        lines.push(format!(
            "exit: backend {b} was still present {when}, with no DIMM using it"
        ));
    }
    lines
}

/// Whether the VM runs (`query-status`); `None` when QEMU does not answer.
pub fn vm_running(qmp: &mut Qmp) -> Option<bool> {
    qmp.execute("query-status", None).ok()?.get("running")?.as_bool()
}

/// Does the machine have an ACPI device (on `virt`: the GED, made only for firmware boots)?
/// `query-acpi-ospm-status` fails with "missing ACPI device" without one.
pub fn has_acpi_ged(qmp: &mut Qmp) -> Result<bool, QmpError> {
    match qmp.query_acpi_ospm_status() {
        Ok(_) => Ok(true),
        Err(QmpError::Command { desc, .. }) if desc.contains("ACPI device") => Ok(false),
        Err(e) => Err(e),
    }
}

/// The refusal of a command that needs the GED on a machine without one.
pub fn needs_ged(cmd: &HostCommand) -> Option<&'static str> {
    match cmd {
        HostCommand::Plug { .. } => Some("plug"),
        HostCommand::Unplug { .. } => Some("unplug"),
        HostCommand::Powerdown => Some("powerdown"),
        _ => None,
    }
}

/// What every host command does first: handle late ejects (their lines come first), and
/// refuse, before doing anything, a command this machine cannot carry out (`:plug`,
/// `:unplug`, `:powerdown` without the GED of a firmware boot).
pub fn preflight(qmp: &mut Qmp, cmd: &HostCommand) -> (Vec<String>, Option<HostReply>) {
    let late = reap_late_unplugs(qmp);
    let mut refusal = needs_ged(cmd).and_then(|name| match has_acpi_ged(qmp) {
        Ok(true) => None,
        Ok(false) => Some(HostReply::error(format!(
            "{name}: error: needs --boot firmware: this machine has no ACPI GED (QEMU gives `virt` one, \
             with DIMM hotplug and the power button, only when the kernel is loaded with -bios)"
        ))),
        Err(e) => Some(HostReply::error(format!("{name}: error: {e}"))),
    });
    if let (None, HostCommand::Plug { id: Some(id), .. }) = (&refusal, cmd) {
        refusal = match id_in_use(qmp, id) {
            Ok(None) => None,
            Ok(Some(what)) => Some(HostReply::error(format!(
                "plug: error: id `{id}` is in use ({what}): `:unplug {id}` first, or choose another ID"
            ))),
            Err(e) => Some(HostReply::error(format!("plug: error: {e}"))),
        };
    }
    (late, refusal)
}

/// What already uses a DIMM id: the device, or its backend `mem-<id>`.
fn id_in_use(qmp: &mut Qmp, id: &str) -> Result<Option<String>, QmpError> {
    let memdev = format!("mem-{id}");
    if qmp.query_memory_devices()?.iter().any(|d| d.id.as_deref() == Some(id)) {
        return Ok(Some(format!("DIMM {id} is plugged")));
    }
    if qmp.objects()?.contains(&memdev) {
        return Ok(Some(format!("backend {memdev} exists")));
    }
    Ok(None)
}

/// One DIMM as QEMU sees it: the device and its slot's OSPM status.
#[derive(Clone, Debug)]
pub struct DimmRow {
    pub device: MemoryDevice,
    pub ospm: Option<OspmStatus>,
}

impl fmt::Display for DimmRow {
    /// `dimms: id=dimm0 slot=0 addr=0x80000000 size=1G hotplugged=true memdev=mem-dimm0 ospm_source=1 ospm_status=0x0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.device;
        write!(
            f,
            "dimms: id={} slot={} addr={:#x} size={} hotplugged={} memdev={}",
            d.id.as_deref().unwrap_or("-"),
            d.slot.map_or("-".into(), |s| s.to_string()),
            d.addr,
            Size(d.size),
            d.hotplugged,
            d.memdev_id().unwrap_or("-"),
        )?;
        match &self.ospm {
            Some(o) => write!(f, " ospm_source={} ospm_status={:#x}", o.source, o.status),
            None => write!(f, " ospm=none"),
        }
    }
}

/// `:dimms`: every pc-dimm with the OSPM status of its slot.
pub fn dimm_rows(qmp: &mut Qmp) -> Result<Vec<DimmRow>, QmpError> {
    let devices = qmp.query_memory_devices()?;
    // No ACPI device (a kernel/image boot): no OSPM status to show.
    let ospm = match qmp.query_acpi_ospm_status() {
        Err(QmpError::Command { desc, .. }) if desc.contains("ACPI device") => Vec::new(),
        other => other?,
    };
    Ok(devices
        .into_iter()
        .filter(|d| d.kind == "dimm")
        .map(|d| {
            let o = ospm
                .iter()
                .find(|o| d.slot.is_some() && o.slot_number() == d.slot)
                .cloned();
            DimmRow { device: d, ospm: o }
        })
        .collect())
}

/// One virtio-mem device as QEMU sees it (`query-memory-devices`, type `virtio-mem`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VmemDevice {
    pub id: String,
    /// Start of the device's region in guest physical memory.
    pub memaddr: u64,
    /// Plugged bytes (QEMU's `size`).
    #[serde(default)]
    pub size: u64,
    #[serde(default, rename = "requested-size")]
    pub requested: u64,
    /// The region (`max-size`).
    #[serde(default)]
    pub max_size: u64,
    #[serde(default)]
    pub block_size: u64,
    #[serde(default)]
    pub node: u64,
    #[serde(default)]
    pub memdev: Option<String>,
}

impl fmt::Display for VmemDevice {
    /// `vmems: id=vmem0 addr=0x80000000 region=4G block=2M plugged=2G requested=2G node=0 memdev=mem-vmem0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vmems: id={} addr={:#x} region={} block={} plugged={} requested={} node={} memdev={}",
            self.id,
            self.memaddr,
            Size(self.max_size),
            Size(self.block_size),
            Size(self.size),
            Size(self.requested),
            self.node,
            self.memdev
                .as_deref()
                .map_or("-", |m| m.rsplit('/').next().unwrap_or(m)),
        )
    }
}

/// Every virtio-mem device, in QEMU's order.
pub fn vmem_devices(qmp: &mut Qmp) -> Result<Vec<VmemDevice>, QmpError> {
    let devices = qmp.memory_devices::<Value>()?.into_iter();
    Ok(devices
        .filter(|d| d.kind == "virtio-mem")
        .filter_map(|d| VmemDevice::deserialize(d.data).ok())
        .collect())
}

/// How a `:vmem` resize ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmemResult {
    /// The guest reported `event=done`: plugged size = requested size.
    Done,
    /// The guest stopped short and said why (`event=stopped reason=...`).
    Stopped { reason: String },
    /// The device already had that plugged size: nothing to wait for.
    Already,
    /// No guest line within the timeout (no driver? still working?).
    NoAnswer { after: Duration },
}

/// What [`Session::vmem`](crate::session::Session::vmem) saw.
#[derive(Clone, Debug)]
pub struct Resized {
    pub id: String,
    pub requested: u64,
    /// Plugged size before and after (QEMU's `size`).
    pub plugged_before: u64,
    pub plugged_after: u64,
    pub result: VmemResult,
    /// Host wall time from `qom-set` to the guest's line.
    pub elapsed: Duration,
    /// The guest's `virtio-mem: ... event=...` line.
    pub guest_line: Option<String>,
}

impl Resized {
    /// A resize of `id` to `requested` that has not started: `plugged` before and after.
    pub fn unchanged(id: &str, requested: u64, plugged: u64) -> Resized {
        Resized {
            id: id.to_string(),
            requested,
            plugged_before: plugged,
            plugged_after: plugged,
            result: VmemResult::Already,
            elapsed: Duration::ZERO,
            guest_line: None,
        }
    }

    pub fn done(&self) -> bool {
        matches!(self.result, VmemResult::Done | VmemResult::Already)
    }

    /// `vmem: id=vmem0 requested=2G plugged=2G done time_ms=85`
    pub fn line(&self) -> String {
        let head = format!(
            "vmem: id={} requested={} plugged={}",
            self.id,
            Size(self.requested),
            Size(self.plugged_after)
        );
        let ms = self.elapsed.as_millis();
        match &self.result {
            VmemResult::Done => format!("{head} done time_ms={ms}"),
            VmemResult::Already => format!("{head} done (already at that size) time_ms=0"),
            VmemResult::Stopped { reason } => format!("{head} stopped: {reason} time_ms={ms}"),
            VmemResult::NoAnswer { after } => format!(
                "{head} timeout: no virtio-mem line from the guest after {:.1} s",
                after.as_secs_f64()
            ),
        }
    }
}

/// The guest's `virtio-mem: ... addr=<memaddr> ... requested=<req> ... event=done|stopped` line
/// (sizes in hex bytes).
pub fn is_vmem_event_line(line: &str, memaddr: u64, requested: u64) -> bool {
    let Some(i) = line.find("virtio-mem: ") else {
        return false;
    };
    let words: Vec<&str> = line[i..].split_whitespace().collect();
    let has = |w: String| words.contains(&w.as_str());
    has(format!("addr={memaddr:#x}"))
        && has(format!("requested={requested:#x}"))
        && (has("event=done".into()) || has("event=stopped".into()))
}

/// The result a guest line says (`event=done` or `event=stopped reason=...`).
pub fn vmem_result_of(line: &str) -> VmemResult {
    match line.find("reason=") {
        Some(i) if line.contains("event=stopped") => VmemResult::Stopped {
            reason: line[i + "reason=".len()..].trim().trim_matches('"').to_string(),
        },
        _ if line.contains("event=stopped") => VmemResult::Stopped { reason: "?".into() },
        _ => VmemResult::Done,
    }
}

/// The device `id` as QEMU lists it, or a clear error naming the devices there are.
pub fn find_vmem(qmp: &mut Qmp, id: &str) -> Result<VmemDevice, QmpError> {
    let devs = vmem_devices(qmp)?;
    let names: Vec<String> = devs.iter().map(|d| d.id.clone()).collect();
    devs.into_iter().find(|d| d.id == id).ok_or_else(|| QmpError::Command {
        class: "DeviceNotFound".into(),
        desc: format!(
            "no virtio-mem device `{id}` (devices: {})",
            if names.is_empty() {
                "none; add one with --virtio-mem SIZE".to_string()
            } else {
                names.join(", ")
            }
        ),
    })
}

/// `qom-set` of `requested-size` (QEMU refuses sizes that are not a block multiple or exceed
/// the region: its message is the error).
pub fn vmem_set_requested(qmp: &mut Qmp, id: &str, size: u64) -> Result<(), QmpError> {
    qmp.execute(
        "qom-set",
        Some(json!({"path": format!("/machine/peripheral/{id}"), "property": "requested-size", "value": size})),
    )
    .map(drop)
}

/// `:vmem` without a console (interactive runs): `qom-set`, then poll QEMU's plugged size
/// until it equals the request or `timeout` passes.
pub fn vmem_resize_polling(qmp: &mut Qmp, id: &str, size: u64, timeout: Duration) -> Result<Resized, QmpError> {
    let before = find_vmem(qmp, id)?;
    let mut r = Resized::unchanged(id, size, before.size);
    if before.size == size && before.requested == size {
        return Ok(r);
    }
    let t0 = Instant::now();
    vmem_set_requested(qmp, id, size)?;
    loop {
        let now = find_vmem(qmp, id)?;
        r.plugged_after = now.size;
        if now.size == size {
            r.result = VmemResult::Done;
            r.elapsed = t0.elapsed();
            return Ok(r);
        }
        if t0.elapsed() >= timeout {
            r.result = VmemResult::NoAnswer { after: t0.elapsed() };
            r.elapsed = t0.elapsed();
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `:qmp` argument → a command object: JSON as given, or a bare command name.
pub fn raw_qmp_command(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if t.starts_with('{') {
        serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))
    } else if !t.is_empty() && !t.contains(char::is_whitespace) {
        Ok(json!({ "execute": t }))
    } else {
        Err(format!(
            "expected a JSON object or a command name, got `{t}` (e.g. :qmp {{\"execute\":\"query-status\"}})"
        ))
    }
}

/// What a host command asks of the console afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// The guest is still at its prompt.
    Prompt,
    /// The guest reboots: wait for its next prompt.
    Reboot,
    /// The guest powers off: QEMU is about to exit.
    Exit,
}

/// The printable result of one host command.
#[derive(Clone, Debug)]
pub struct HostReply {
    pub lines: Vec<String>,
    pub after: After,
    /// The command failed (the lines say why); the session goes on.
    pub error: bool,
    pub plugged: Option<Plugged>,
    pub unplugged: Option<Unplugged>,
}

impl HostReply {
    fn lines(lines: Vec<String>) -> Self {
        HostReply {
            lines,
            after: After::Prompt,
            error: false,
            plugged: None,
            unplugged: None,
        }
    }

    pub fn error(line: String) -> Self {
        HostReply {
            error: true,
            ..HostReply::lines(vec![line])
        }
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

/// The short name of a command for its output lines (`plug`, `unplug`, ...).
fn label(line: &str) -> String {
    line.trim()
        .trim_start_matches(':')
        .split_whitespace()
        .next()
        .unwrap_or("host")
        .to_string()
}

/// Parses and runs one `:` line. Never fails: errors become `<cmd>: error: ...` lines.
pub fn run_host_line(qmp: &mut Qmp, line: &str, t: HostTimeouts) -> HostReply {
    let cmd = match parse_host_command(line) {
        Ok(c) => c,
        Err(e) => return HostReply::error(format!("{}: error: {e}", label(line))),
    };
    let (late, refusal) = preflight(qmp, &cmd);
    let mut reply = refusal.unwrap_or_else(|| run_parsed(qmp, line, cmd, t));
    reply.lines.splice(0..0, late);
    reply
}

fn run_parsed(qmp: &mut Qmp, line: &str, cmd: HostCommand, t: HostTimeouts) -> HostReply {
    let name = label(line);
    let res: Result<HostReply, QmpError> = (|| {
        Ok(match cmd {
            HostCommand::Help => HostReply::lines(HOST_HELP.lines().map(String::from).collect()),
            HostCommand::Plug { size, id } => {
                let p = plug(qmp, size, id.as_deref(), t.plug)?;
                let mut r = HostReply::lines(vec![p.line()]);
                r.error = !p.ok();
                r.plugged = Some(p);
                r
            }
            HostCommand::Unplug { id } => {
                let u = unplug(qmp, &id, t.unplug)?;
                let mut r = HostReply::lines(u.lines());
                r.error = !u.deleted();
                r.unplugged = Some(u);
                r
            }
            HostCommand::Dimms => {
                let rows = dimm_rows(qmp)?;
                if rows.is_empty() {
                    HostReply::lines(vec!["dimms: none".into()])
                } else {
                    HostReply::lines(rows.iter().map(|r| r.to_string()).collect())
                }
            }
            HostCommand::Vmem { id, size } => {
                let v = vmem_resize_polling(qmp, &id, size, t.plug)?;
                let mut r = HostReply::lines(vec![v.line()]);
                r.error = !v.done();
                r
            }
            HostCommand::Vmems => {
                let devs = vmem_devices(qmp)?;
                if devs.is_empty() {
                    HostReply::lines(vec!["vmems: none".into()])
                } else {
                    HostReply::lines(devs.iter().map(|d| d.to_string()).collect())
                }
            }
            HostCommand::Qmp(text) => {
                let cmd = match raw_qmp_command(&text) {
                    Ok(c) => c,
                    Err(e) => return Ok(HostReply::error(format!("qmp: error: {e}"))),
                };
                let reply = qmp.execute_raw(cmd, qmp.command_timeout)?;
                let mut r = HostReply::lines(vec![format!("qmp: {reply}")]);
                r.error = reply.get("error").is_some();
                r
            }
            HostCommand::Hmp(text) => {
                let out = qmp.human_monitor_command(&text)?;
                let mut lines: Vec<String> = out.lines().map(|l| format!("hmp: {l}")).collect();
                if lines.is_empty() {
                    lines.push("hmp: (no output)".into());
                }
                HostReply::lines(lines)
            }
            HostCommand::Reset => {
                qmp.system_reset()?;
                HostReply {
                    after: After::Reboot,
                    ..HostReply::lines(vec!["reset: system_reset sent".into()])
                }
            }
            HostCommand::Powerdown => {
                qmp.system_powerdown()?;
                HostReply {
                    after: After::Exit,
                    ..HostReply::lines(vec!["powerdown: system_powerdown sent".into()])
                }
            }
        })
    })();
    res.unwrap_or_else(|e| HostReply::error(format!("{name}: error: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("128m").unwrap(), 128 << 20);
        assert_eq!(parse_size("0x8000000").unwrap(), 128 << 20);
        assert_eq!(parse_size("1_073_741_824").unwrap(), 1 << 30);
        assert!(parse_size("0x10M").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn vmem_device_as_qemu_reports_it() {
        let d = VmemDevice::deserialize(json!({"id": "vmem0", "memaddr": 0x8000_0000u64, "size": 0,
            "requested-size": 1u64 << 30, "max-size": 4u64 << 30, "block-size": 2 << 20, "node": 0,
            "memdev": "/objects/mem-vmem0"}))
        .unwrap();
        assert_eq!(
            d.to_string(),
            "vmems: id=vmem0 addr=0x80000000 region=4G block=2M plugged=0 requested=1G node=0 memdev=mem-vmem0"
        );
    }

    #[test]
    fn commands() {
        use HostCommand::*;
        assert_eq!(
            parse_host_command(":plug 1G").unwrap(),
            Plug {
                size: 1 << 30,
                id: None
            }
        );
        assert_eq!(
            parse_host_command("  : plug 128M big.1").unwrap(),
            Plug {
                size: 128 << 20,
                id: Some("big.1".into())
            }
        );
        assert!(parse_host_command(":plug")
            .unwrap_err()
            .contains("usage: :plug SIZE [ID]"));
        assert!(parse_host_command(":plug 1G 0bad")
            .unwrap_err()
            .contains("not a valid QEMU id"));
        assert!(parse_host_command(":plug 1G a b").is_err());
        assert_eq!(
            parse_host_command(":unplug dimm0").unwrap(),
            Unplug { id: "dimm0".into() }
        );
        assert!(parse_host_command(":unplug").is_err());
        assert_eq!(parse_host_command(":dimms").unwrap(), Dimms);
        assert_eq!(
            parse_host_command(":vmem vmem0 2G").unwrap(),
            Vmem {
                id: "vmem0".into(),
                size: 2 << 30
            }
        );
        assert_eq!(
            parse_host_command(":vmem vmem1 0").unwrap(),
            Vmem {
                id: "vmem1".into(),
                size: 0
            }
        );
        assert!(parse_host_command(":vmem vmem0")
            .unwrap_err()
            .contains("usage: :vmem ID SIZE"));
        assert!(parse_host_command(":vmem vmem0 big").is_err());
        for bad in ["_", "0x", "0x_", "-1", "1.5G", "G"] {
            let e = parse_host_command(&format!(":vmem vmem0 {bad}")).unwrap_err();
            assert!(e.contains(&format!("`{bad}` is not a size")), "{bad}: {e}");
        }
        for zero in ["0", "0x0", "0G"] {
            assert_eq!(
                parse_host_command(&format!(":vmem vmem0 {zero}")).unwrap(),
                Vmem {
                    id: "vmem0".into(),
                    size: 0
                },
                "{zero}"
            );
        }
        assert_eq!(parse_host_command(":vmems").unwrap(), Vmems);
        let l = "hotmem> virtio-mem: dev=0 addr=0x80000000 event=done plugged=0x80000000 requested=0x80000000 cycles=5";
        assert!(is_vmem_event_line(l, 0x8000_0000, 2 << 30));
        assert!(!is_vmem_event_line(l, 0x8000_0000, 1 << 30));
        assert!(!is_vmem_event_line(l, 0x1_0000_0000, 2 << 30));
        assert_eq!(vmem_result_of(l), VmemResult::Done);
        assert_eq!(
            vmem_result_of("virtio-mem: dev=0 event=stopped plugged=0x0 requested=0x8000000 reason=\"busy: pinned\""),
            VmemResult::Stopped {
                reason: "busy: pinned".into()
            }
        );
        assert_eq!(
            parse_host_command(r#":qmp {"execute": "query-status"}"#).unwrap(),
            Qmp(r#"{"execute": "query-status"}"#.into())
        );
        assert_eq!(
            parse_host_command(":hmp info mtree -f").unwrap(),
            Hmp("info mtree -f".into())
        );
        assert_eq!(parse_host_command(":reset").unwrap(), Reset);
        assert_eq!(parse_host_command(":powerdown").unwrap(), Powerdown);
        assert!(parse_host_command(":reset now").is_err());
        assert_eq!(parse_host_command(":help").unwrap(), Help);
        let e = parse_host_command(":query-memory-devices").unwrap_err();
        assert!(e.contains("unknown host command `:query-memory-devices`"), "{e}");
        assert!(parse_host_command("plug 1G").is_err());
        assert!(is_host_command(" :x") && !is_host_command("x:"));
    }

    #[test]
    fn raw_qmp() {
        assert_eq!(
            raw_qmp_command("query-status").unwrap(),
            json!({"execute": "query-status"})
        );
        assert_eq!(
            raw_qmp_command(r#"{"execute":"x","arguments":{"a":1}}"#).unwrap(),
            json!({"execute": "x", "arguments": {"a": 1}})
        );
        assert!(raw_qmp_command("{bad").is_err());
        assert!(raw_qmp_command("two words").is_err());
    }

    #[test]
    fn output_lines() {
        let p = Plugged {
            id: "dimm0".into(),
            memdev: "mem-dimm0".into(),
            size: 1 << 30,
            slot: Some(0),
            addr: Some(0x8000_0000),
            result: PlugResult::Ok,
            ost: None,
            elapsed: Duration::from_millis(85),
            guest_line: None,
            refused_before: Vec::new(),
        };
        assert_eq!(
            p.line(),
            "plug: id=dimm0 ost_status=0x0 ok slot=0 addr=0x80000000 size=1G time_ms=85"
        );
        let r = Plugged {
            result: PlugResult::Refused { status: 0x82 },
            ..p.clone()
        };
        assert!(r.line().starts_with("plug: id=dimm0 ost_status=0x82 refused"));
        let u = Unplugged {
            id: "dimm0".into(),
            device: None,
            result: UnplugResult::Refused { status: 0x82 },
            elapsed: Duration::from_millis(3),
            object_del: None,
            guest_line: None,
        };
        assert_eq!(u.lines(), ["unplug: id=dimm0 refused ost_status=0x82 time_ms=3"]);
        let row = DimmRow {
            device: MemoryDevice {
                kind: "dimm".into(),
                id: Some("dimm1".into()),
                slot: Some(1),
                addr: 0xc000_0000,
                size: 128 << 20,
                memdev: Some("/objects/mem-dimm1".into()),
                hotplugged: true,
                node: Some(0),
            },
            ospm: Some(OspmStatus {
                device: Some("dimm1".into()),
                slot: "1".into(),
                slot_type: "DIMM".into(),
                source: 1,
                status: 0,
            }),
        };
        assert_eq!(
            row.to_string(),
            "dimms: id=dimm1 slot=1 addr=0xc0000000 size=128M hotplugged=true memdev=mem-dimm1 ospm_source=1 ospm_status=0x0"
        );
    }
}
