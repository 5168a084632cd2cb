//! DIMM hotplug over QMP: `:plug` (backend + `pc-dimm`, then the guest's insert `_OST`),
//! `:unplug` (`device_del`, then `DEVICE_DELETED` or the guest's refusal) and `:dimms`. Every
//! request is booked in the connection's [`super::ledger`] and recorded for the protocol check
//! ([`crate::dimm_protocol`]); `system_reset` is recorded here too, as the protocol needs it.

use std::fmt;
use std::time::{Duration, Instant};

use mm::size::Size;
use serde_json::Value;

use super::device::{DeviceCommand, HostTimeouts};
use super::ledger::{add_backend, add_dimm, del_backend, ledger, PendingUnplug};
use super::report::HostReply;
use crate::config::parse_nonzero_size;
use crate::dimm_protocol::{DimmProtocol, Request};
use crate::qmp::{MemoryDevice, OspmStatus, Qmp, QmpError, QmpEvent, OST_SOURCE_EJECT, OST_SOURCE_INSERT};

/// The DIMM host commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DimmCommand {
    /// `:plug SIZE [ID] [node=N]`.
    Plug {
        size: u64,
        id: Option<String>,
        node: Option<u32>,
    },
    /// `:unplug ID`.
    Unplug { id: String },
    /// `:dimms`.
    List,
}

impl DeviceCommand for DimmCommand {
    const HELP: &'static str = "  :plug SIZE [ID] [node=N]
                    hot-plug a pc-dimm of SIZE (e.g. 1G, 128M) with backend mem-<ID> on
                    NUMA node N (default 0); ID defaults to the lowest free dimm<N>; waits
                    for the guest's _OST
  :unplug ID        device_del; waits for DEVICE_DELETED (then deletes the backend) or the
                    guest's refusal (_OST eject failure)
  :dimms            QEMU's DIMMs (query-memory-devices) with their OSPM status
";
    const NAMES: &'static [&'static str] = &["plug", "unplug", "dimms"];

    fn parse(name: &str, words: &[&str]) -> Option<Result<Self, String>> {
        let usage = |u: &str| Err(format!("usage: {u}"));
        Some(match (name, words) {
            ("plug", [size, rest @ ..]) if rest.len() <= 2 => parse_plug(size, rest),
            ("plug", _) => usage(":plug SIZE [ID] [node=N]"),
            ("unplug", [id]) => Ok(DimmCommand::Unplug { id: id.to_string() }),
            ("unplug", _) => usage(":unplug ID"),
            ("dimms", []) => Ok(DimmCommand::List),
            ("dimms", _) => usage(":dimms"),
            _ => return None,
        })
    }

    fn needs_ged(&self) -> Option<&'static str> {
        match self {
            DimmCommand::Plug { .. } => Some("plug"),
            DimmCommand::Unplug { .. } => Some("unplug"),
            DimmCommand::List => None,
        }
    }

    fn refusal(&self, qmp: &mut Qmp) -> Option<String> {
        let DimmCommand::Plug { id, node, .. } = self else {
            return None;
        };
        if let Some(n) = *node {
            let why = match qmp.numa_nodes() {
                Ok(count) => node_refusal(n, count),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = why {
                return Some(format!("plug: error: {why}"));
            }
        }
        let id = id.as_ref()?;
        match id_in_use(qmp, id) {
            Ok(None) => None,
            Ok(Some(what)) => Some(format!(
                "plug: error: id `{id}` is in use ({what}): `:unplug {id}` first, or choose another ID"
            )),
            Err(e) => Some(format!("plug: error: {e}")),
        }
    }

    fn run(self, qmp: &mut Qmp, t: HostTimeouts) -> Result<HostReply, QmpError> {
        Ok(match self {
            DimmCommand::Plug { size, id, node } => {
                let p = plug_on_node(qmp, size, id.as_deref(), node, t.plug)?;
                HostReply::outcome(vec![p.line()], !p.ok())
            }
            DimmCommand::Unplug { id } => {
                let u = unplug(qmp, &id, t.unplug)?;
                HostReply::outcome(u.lines(), !u.deleted())
            }
            DimmCommand::List => {
                let rows = dimm_rows(qmp)?;
                if rows.is_empty() {
                    HostReply::lines(vec!["dimms: none".into()])
                } else {
                    HostReply::lines(rows.iter().map(|r| r.to_string()).collect())
                }
            }
        })
    }
}

/// `:plug SIZE [ID] [node=N]`'s arguments (`rest`: ID and `node=N`, each at most once).
fn parse_plug(size: &str, rest: &[&str]) -> Result<DimmCommand, String> {
    let size = parse_nonzero_size(size)?;
    let (mut id, mut node) = (None, None);
    for &w in rest {
        if let Some(n) = w.strip_prefix("node=") {
            let n = n
                .parse::<u32>()
                .map_err(|_| format!("`{w}`: the node is a number, e.g. node=1"))?;
            if node.replace(n).is_some() {
                return Err(format!("`{w}`: node= given twice (usage: :plug SIZE [ID] [node=N])"));
            }
        } else if !valid_id(w) {
            return Err(format!(
                "`{w}` is not a valid QEMU id (a letter, then letters, digits, `-`, `.`, `_`)"
            ));
        } else if id.replace(w.to_string()).is_some() {
            return Err(format!("`{w}`: a second ID (usage: :plug SIZE [ID] [node=N])"));
        }
    }
    Ok(DimmCommand::Plug { size, id, node })
}

impl DimmCommand {
    /// The NUMA node a `:plug` asks for.
    pub fn node(&self) -> Option<u32> {
        match self {
            DimmCommand::Plug { node, .. } => *node,
            _ => None,
        }
    }
}

/// Why node `n` cannot take a DIMM on a machine with `nodes` NUMA nodes, or `None`.
pub fn node_refusal(n: u32, nodes: u32) -> Option<String> {
    (n >= nodes).then(|| {
        format!(
            "node={n} does not exist: the machine has {nodes} NUMA node{} (0{}; add nodes with --numa, e.g. --numa 1G,0)",
            if nodes == 1 { "" } else { "s" },
            if nodes > 1 { format!("-{}", nodes - 1) } else { String::new() }
        )
    })
}

fn valid_id(id: &str) -> bool {
    // QEMU ids: a letter, then letters, digits, '-', '.', '_'.
    let mut c = id.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic()) && c.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// The connection's DIMM protocol record (made on first use, before the first request).
pub fn protocol(qmp: &mut Qmp) -> &mut DimmProtocol {
    qmp.observer::<DimmProtocol>()
}

/// `system_reset`, recorded for the protocol check (the new boot answers for every DIMM again).
pub fn system_reset(qmp: &mut Qmp) -> Result<(), QmpError> {
    protocol(qmp);
    let at = qmp.mark();
    protocol(qmp).record(Request::Reset { at });
    qmp.system_reset()
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
    plug_on_node(qmp, size, id, None, timeout)
}

/// [`plug`] with the DIMM on NUMA node `node` (`None`: QEMU's default, node 0).
pub fn plug_on_node(
    qmp: &mut Qmp,
    size: u64,
    id: Option<&str>,
    node: Option<u32>,
    timeout: Duration,
) -> Result<Plugged, QmpError> {
    let id = match id {
        Some(i) => i.to_string(),
        None => next_dimm_id(qmp)?,
    };
    let memdev = format!("mem-{id}");
    add_backend(qmp, &memdev, size)?;
    protocol(qmp);
    let mark = qmp.mark();
    let t0 = Instant::now();
    if let Err(e) = add_dimm(qmp, &id, &memdev, node) {
        let _ = del_backend(qmp, &memdev);
        return Err(e);
    }
    protocol(qmp).record(Request::Plug {
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
    let refused_before = match (&result, &dev) {
        (PlugResult::Refused { .. }, Some(d)) => refused_below(qmp, &devices, d),
        _ => Vec::new(),
    };
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

/// The DIMMs below `d` whose insert the guest refused (QEMU placed `d` after them, so a refusal
/// of `d` may be theirs).
fn refused_below(qmp: &mut Qmp, devices: &[MemoryDevice], d: &MemoryDevice) -> Vec<String> {
    let ospm = qmp.query_acpi_ospm_status().unwrap_or_default();
    let refused = |o: &MemoryDevice| {
        ospm.iter()
            .any(|s| o.slot.is_some() && s.slot_number() == o.slot && s.source == OST_SOURCE_INSERT && s.status != 0)
    };
    devices
        .iter()
        .filter(|o| o.kind == "dimm" && o.addr < d.addr && refused(o))
        .filter_map(|o| o.id.clone())
        .collect()
}

/// `:unplug`: `device_del`, then waits up to `timeout` for `DEVICE_DELETED`, the guest's eject
/// refusal, or QEMU's unplug error; after `DEVICE_DELETED` the backend is deleted.
pub fn unplug(qmp: &mut Qmp, id: &str, timeout: Duration) -> Result<Unplugged, QmpError> {
    // This wait takes over an earlier unplug of the same id that got no answer.
    ledger(qmp).pending_unplugs.remove(id);
    protocol(qmp);
    let device = qmp
        .query_memory_devices()?
        .into_iter()
        .find(|d| d.id.as_deref() == Some(id));
    let mark = qmp.mark();
    let t0 = Instant::now();
    qmp.device_del(id)?;
    if device.as_ref().is_some_and(|d| d.kind == "dimm") {
        protocol(qmp).record(Request::Unplug {
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
            // DEVICE_DELETED is noticed whenever it comes (`report::reap_late_unplugs`).
            ledger(qmp).pending_unplugs.insert(
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
        (UnplugResult::Deleted, Some(m)) => Some(del_backend(qmp, m).map_err(|e| e.to_string())),
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
    /// `dimms: id=dimm0 slot=0 addr=0x80000000 size=1G node=0 hotplugged=true memdev=mem-dimm0 ospm_source=1 ospm_status=0x0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.device;
        write!(
            f,
            "dimms: id={} slot={} addr={:#x} size={} node={} hotplugged={} memdev={}",
            d.id.as_deref().unwrap_or("-"),
            d.slot.map_or("-".into(), |s| s.to_string()),
            d.addr,
            Size(d.size),
            d.node.map_or("-".into(), |n| n.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let p = |w: &[&str]| DimmCommand::parse(w[0], &w[1..]).expect("a DIMM command");
        assert_eq!(
            p(&["plug", "1G"]),
            Ok(DimmCommand::Plug {
                size: 1 << 30,
                id: None,
                node: None
            })
        );
        assert_eq!(p(&["plug", "1G", "node=3"]).unwrap().node(), Some(3));
        assert_eq!(node_refusal(2, 3), None);
        assert_eq!(
            node_refusal(3, 3).unwrap(),
            "node=3 does not exist: the machine has 3 NUMA nodes (0-2; add nodes with --numa, e.g. --numa 1G,0)"
        );
        assert!(node_refusal(1, 1).unwrap().contains("has 1 NUMA node (0;"));
        assert!(p(&["plug", "1G", "0bad"]).unwrap_err().contains("not a valid QEMU id"));
        assert_eq!(p(&["dimms"]), Ok(DimmCommand::List));
        assert!(DimmCommand::parse("vmem", &[]).is_none());
        assert_eq!(
            DimmCommand::Plug {
                size: 1,
                id: None,
                node: None
            }
            .needs_ged(),
            Some("plug")
        );
        assert_eq!(DimmCommand::List.needs_ged(), None);
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
            "dimms: id=dimm1 slot=1 addr=0xc0000000 size=128M node=0 hotplugged=true memdev=mem-dimm1 ospm_source=1 ospm_status=0x0"
        );
    }
}
