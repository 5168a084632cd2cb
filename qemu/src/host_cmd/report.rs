//! What the host commands report: the printable reply of one command ([`HostReply`]), the
//! late ejects noticed between commands ([`reap_late_unplugs`]) and what is left when the run
//! ends ([`exit_report`]), from QEMU or from the connection's [`super::ledger`].

use super::ledger::{del_backend, ledger};
use crate::qmp::Qmp;

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
}

impl HostReply {
    /// A reply of `lines`, the guest still at its prompt.
    pub fn lines(lines: Vec<String>) -> Self {
        HostReply {
            lines,
            after: After::Prompt,
            error: false,
        }
    }

    /// A reply of `lines`, failed when `error`.
    pub fn outcome(lines: Vec<String>, error: bool) -> Self {
        HostReply {
            error,
            ..HostReply::lines(lines)
        }
    }

    pub fn error(line: String) -> Self {
        HostReply::outcome(vec![line], true)
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

/// Handles the `DEVICE_DELETED` events of unplugs whose wait had ended
/// ([`super::dimm::unplug`] gave `NoAnswer`): deletes each one's backend and returns a line for
/// each. Called before every host command, while the interactive console idles, and at exit
/// ([`exit_report`]).
pub fn reap_late_unplugs(qmp: &mut Qmp) -> Vec<String> {
    let _ = qmp.poll();
    let late = std::mem::take(&mut ledger(qmp).late_deletes);
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
                    ledger(qmp).backends.remove(&m);
                    format!("{head}; QEMU has exited (backend {m} went with it)")
                }
                Some(m) => match del_backend(qmp, &m) {
                    Ok(()) => format!("{head}; backend {m} deleted"),
                    Err(e) => format!("{head}; warning: object-del {m}: {e}"),
                },
            }
        })
        .collect()
}

/// What is still present at the end of a run.
struct Left {
    /// DIMMs: id and backend.
    devices: Vec<(String, String)>,
    /// Backends this connection made that no DIMM uses.
    backends: Vec<String>,
}

/// What is left, asked of QEMU; `None` when QEMU does not answer.
fn left_in_qemu(qmp: &mut Qmp) -> Option<Left> {
    if qmp.is_closed() {
        return None;
    }
    let (devs, objs) = qmp.query_memory_devices().and_then(|d| Ok((d, qmp.objects()?))).ok()?;
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
    let made = &ledger(qmp).backends;
    let backends = objs
        .into_iter()
        .filter(|o| made.contains(o) && !used.contains(&o.as_str()))
        .collect();
    Some(Left { devices, backends })
}

/// What is left by what this connection made and saw go away.
fn left_in_ledger(qmp: &mut Qmp) -> Left {
    let l = ledger(qmp);
    let devices = l.devices.iter().map(|(i, m)| (i.clone(), m.clone())).collect();
    let backends = l
        .backends
        .iter()
        .filter(|b| !l.devices.values().any(|m| m == *b))
        .cloned()
        .collect();
    Left { devices, backends }
}

/// What the runner reports when the run ends: late ejects handled now ([`reap_late_unplugs`]),
/// then every DIMM or backend still present — asked of QEMU when it still runs, else from what
/// this connection made and saw go away ([`super::ledger::Ledger`]). Empty when nothing is left.
pub fn exit_report(qmp: &mut Qmp) -> Vec<String> {
    let mut lines = reap_late_unplugs(qmp);
    let Left { devices, backends } = match left_in_qemu(qmp) {
        Some(left) => left,
        None => left_in_ledger(qmp),
    };
    let when = if qmp.is_closed() { "when QEMU exited" } else { "at exit" };
    for (id, memdev) in devices {
        let pending = if ledger(qmp).pending_unplugs.contains_key(&id) {
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
