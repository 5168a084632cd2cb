//! virtio-mem over QMP: `:vmem ID SIZE` (`qom-set` of the device's `requested-size`, then the
//! guest's `virtio-mem: ... event=done|stopped` line, or QEMU's plugged size when there is no
//! console) and `:vmems` (every device as QEMU lists it).

use std::fmt;
use std::time::{Duration, Instant};

use mm::size::Size;
use serde::Deserialize;
use serde_json::{json, Value};

use super::device::{DeviceCommand, HostTimeouts};
use super::report::HostReply;
use crate::qmp::{Qmp, QmpError};

/// The virtio-mem host commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmemCommand {
    /// `:vmem ID SIZE`: a device's new `requested-size` (0 allowed).
    Resize { id: String, size: u64 },
    /// `:vmems`.
    List,
}

impl DeviceCommand for VmemCommand {
    const HELP: &'static str =
        "  :vmem ID SIZE     set a virtio-mem device's requested-size (0 to unplug all); waits for
                    the guest to report it done (or why it stopped) and prints the time
  :vmems            QEMU's virtio-mem devices: plugged size, requested size, region, block
";
    const NAMES: &'static [&'static str] = &["vmem", "vmems"];

    fn parse(name: &str, words: &[&str]) -> Option<Result<Self, String>> {
        Some(match (name, words) {
            ("vmem", [id, size]) => {
                // 0 is a size here (unplug everything), but only when written as one.
                mm::size::parse_size(size)
                    .map_err(|_| format!("`{size}` is not a size (examples: 0, 512M, 2G, 0x8000000)"))
                    .map(|size| VmemCommand::Resize {
                        id: id.to_string(),
                        size,
                    })
            }
            ("vmem", _) => Err("usage: :vmem ID SIZE".into()),
            ("vmems", []) => Ok(VmemCommand::List),
            ("vmems", _) => Err("usage: :vmems".into()),
            _ => return None,
        })
    }

    fn run(self, qmp: &mut Qmp, t: HostTimeouts) -> Result<HostReply, QmpError> {
        Ok(match self {
            VmemCommand::Resize { id, size } => {
                let v = vmem_resize_polling(qmp, &id, size, t.plug)?;
                HostReply::outcome(vec![v.line()], !v.done())
            }
            VmemCommand::List => {
                let devs = vmem_devices(qmp)?;
                if devs.is_empty() {
                    HostReply::lines(vec!["vmems: none".into()])
                } else {
                    HostReply::lines(devs.iter().map(|d| d.to_string()).collect())
                }
            }
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn guest_lines() {
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
    }
}
