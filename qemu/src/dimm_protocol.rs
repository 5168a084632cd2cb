//! The DIMM hotplug protocol as QEMU sees it, checked request by request rather than by its
//! outcome alone.
//!
//! [`DimmProtocol`] observes the QMP connection ([`crate::qmp::EventObserver`]) and keeps every
//! `ACPI_DEVICE_OST` and `DEVICE_DELETED` event in arrival order; the DIMM host commands
//! ([`crate::host_cmd::dimm`]: plug, unplug, `system_reset`) record each request at the
//! sequence number of the next event. A request's *window* is the events from its own sequence number up to the
//! next request's. The rules, for each request:
//!
//! - `device_add` of a pc-dimm: exactly one source-1 (insert) `_OST` for the device;
//! - `device_del` of a pc-dimm: exactly one source-3 (eject) `_OST` for its slot; status 0 only
//!   after the device's `DEVICE_DELETED` (QEMU deletes a DIMM synchronously inside the guest's
//!   EJECT write, and the guest answers after the eject, as an ACPI OSPM calls `_OST` after
//!   `_EJ0`; so an answer before `DEVICE_DELETED` was given before the memory was gone); a
//!   failure status only without a `DEVICE_DELETED` (the DIMM stays plugged).
//!
//! Both events are on one socket in QEMU's emission order, so the order check has no race.

use crate::qmp::{EventObserver, QmpEvent, OST_SOURCE_EJECT, OST_SOURCE_INSERT};

/// A hotplug request, at the sequence number the next event would get when it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Plug {
        id: String,
        at: u64,
    },
    /// `slot`: the DIMM's slot when the request was sent (`query-memory-devices`); the answer
    /// after an eject names only the slot.
    Unplug {
        id: String,
        slot: Option<u64>,
        at: u64,
    },
    /// `system_reset`: the new boot's scan answers for every DIMM again, for no request.
    Reset {
        at: u64,
    },
}

impl Request {
    fn at(&self) -> u64 {
        match self {
            Request::Plug { at, .. } | Request::Unplug { at, .. } | Request::Reset { at } => *at,
        }
    }
}

/// A broken rule (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("plug {id}: {count} insert (source 1) _OST answers, expected exactly one")]
    InsertAnswers { id: String, count: usize },
    #[error("unplug {id}: {count} eject (source 3) _OST answers, expected exactly one (statuses {statuses:?})")]
    EjectAnswers {
        id: String,
        count: usize,
        statuses: Vec<u64>,
    },
    #[error("unplug {id}: eject _OST success (event #{ost}) before DEVICE_DELETED (event #{deleted}): the guest answered before the DIMM was gone")]
    SuccessBeforeDeleted { id: String, ost: u64, deleted: u64 },
    #[error("unplug {id}: eject _OST success (event #{ost}) without DEVICE_DELETED")]
    SuccessWithoutDeleted { id: String, ost: u64 },
    #[error("unplug {id}: eject refused with _OST status {status:#x}, yet QEMU deleted the DIMM")]
    RefusedButDeleted { id: String, status: u64 },
}

/// Requests and the hotplug events of one QMP connection.
#[derive(Clone, Debug, Default)]
pub struct DimmProtocol {
    pub requests: Vec<Request>,
    /// Every `ACPI_DEVICE_OST` and `DEVICE_DELETED` event, in arrival order.
    pub events: Vec<QmpEvent>,
}

/// Events kept at most (a long interactive session drops the oldest requests' evidence).
const MAX_EVENTS: usize = 100_000;

impl EventObserver for DimmProtocol {
    /// Keeps `e` if it is a hotplug event.
    fn observe(&mut self, e: &QmpEvent) {
        if matches!(e.name.as_str(), "ACPI_DEVICE_OST" | "DEVICE_DELETED") && self.events.len() < MAX_EVENTS {
            self.events.push(e.clone());
        }
    }
}

impl DimmProtocol {
    pub fn record(&mut self, r: Request) {
        self.requests.push(r);
    }

    /// The events of request `i`'s window.
    fn window(&self, i: usize) -> impl Iterator<Item = &QmpEvent> {
        let from = self.requests[i].at();
        let to = self.requests.get(i + 1).map_or(u64::MAX, Request::at);
        self.events.iter().filter(move |e| e.seq >= from && e.seq < to)
    }

    /// The eject answers in request `i`'s window for the DIMM `id` in `slot`: those naming the
    /// device, and those naming only its slot (after the eject).
    fn eject_answers(&self, i: usize, id: &str, slot: Option<u64>) -> Vec<(u64, u64)> {
        self.window(i)
            .filter_map(|e| {
                let o = e.ost()?;
                let ours = match o.device.as_deref() {
                    Some(d) => d == id,
                    None => slot.is_some() && o.slot_number() == slot,
                };
                (ours && o.source == OST_SOURCE_EJECT).then_some((e.seq, o.status))
            })
            .collect()
    }

    /// Has the last request, an unplug, had its eject answer yet?
    pub fn last_unplug_answered(&self) -> bool {
        let Some(i) = self.requests.len().checked_sub(1) else {
            return false;
        };
        match &self.requests[i] {
            Request::Unplug { id, slot, .. } => !self.eject_answers(i, id, *slot).is_empty(),
            _ => true,
        }
    }

    /// Every rule, for every request (call it once the last request has had its answers).
    pub fn check(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        for (i, r) in self.requests.iter().enumerate() {
            match r {
                Request::Plug { id, .. } => {
                    let count = self
                        .window(i)
                        .filter_map(QmpEvent::ost)
                        .filter(|o| o.device.as_deref() == Some(id.as_str()) && o.source == OST_SOURCE_INSERT)
                        .count();
                    if count != 1 {
                        v.push(Violation::InsertAnswers { id: id.clone(), count });
                    }
                }
                Request::Unplug { id, slot, .. } => {
                    let answers = self.eject_answers(i, id, *slot);
                    let deleted = self
                        .window(i)
                        .find(|e| e.name == "DEVICE_DELETED" && e.device() == Some(id.as_str()))
                        .map(|e| e.seq);
                    if answers.len() != 1 {
                        v.push(Violation::EjectAnswers {
                            id: id.clone(),
                            count: answers.len(),
                            statuses: answers.iter().map(|a| a.1).collect(),
                        });
                    }
                    for &(ost, status) in &answers {
                        match (status, deleted) {
                            (0, Some(d)) if ost < d => v.push(Violation::SuccessBeforeDeleted {
                                id: id.clone(),
                                ost,
                                deleted: d,
                            }),
                            (0, None) => v.push(Violation::SuccessWithoutDeleted { id: id.clone(), ost }),
                            (s, Some(_)) if s != 0 => v.push(Violation::RefusedButDeleted {
                                id: id.clone(),
                                status: s,
                            }),
                            _ => {}
                        }
                    }
                }
                Request::Reset { .. } => {}
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    fn ev(seq: u64, name: &str, data: serde_json::Value) -> QmpEvent {
        QmpEvent {
            seq,
            name: name.into(),
            data,
            timestamp: 0.0,
            received: Instant::now(),
        }
    }

    fn ost(seq: u64, device: Option<&str>, slot: u64, source: u64, status: u64) -> QmpEvent {
        let mut info = json!({"slot": slot.to_string(), "slot-type": "DIMM", "source": source, "status": status});
        if let Some(d) = device {
            info["device"] = json!(d);
        }
        ev(seq, "ACPI_DEVICE_OST", json!({ "info": info }))
    }

    fn deleted(seq: u64, id: &str) -> QmpEvent {
        ev(
            seq,
            "DEVICE_DELETED",
            json!({"device": id, "path": format!("/machine/peripheral/{id}")}),
        )
    }

    fn protocol(requests: Vec<Request>, events: Vec<QmpEvent>) -> DimmProtocol {
        let mut p = DimmProtocol::default();
        for r in requests {
            p.record(r);
        }
        for e in &events {
            p.observe(e);
        }
        p
    }

    fn plug(id: &str, at: u64) -> Request {
        Request::Plug { id: id.into(), at }
    }

    fn unplug(id: &str, slot: u64, at: u64) -> Request {
        Request::Unplug {
            id: id.into(),
            slot: Some(slot),
            at,
        }
    }

    #[test]
    fn the_guests_order_passes() {
        let p = protocol(
            vec![
                plug("dimm0", 0),
                unplug("dimm0", 2, 1),
                unplug("dimm0", 2, 2),
                unplug("dimm0", 2, 3),
            ],
            vec![
                ost(0, Some("dimm0"), 2, 1, 0),
                ost(1, Some("dimm0"), 2, 3, 0x82),
                ost(2, Some("dimm0"), 2, 3, 0x82),
                deleted(3, "dimm0"),
                ost(4, None, 2, 3, 0),
            ],
        );
        assert_eq!(p.check(), vec![]);
        assert!(p.last_unplug_answered());
    }

    #[test]
    fn each_rule_is_enforced() {
        // Success before the eject (and no answer after it).
        let p = protocol(
            vec![unplug("dimm1", 0, 0)],
            vec![ost(0, Some("dimm1"), 0, 3, 0), deleted(1, "dimm1")],
        );
        assert_eq!(
            p.check(),
            vec![Violation::SuccessBeforeDeleted {
                id: "dimm1".into(),
                ost: 0,
                deleted: 1
            }]
        );
        // Two answers; a refusal of a DIMM QEMU deleted; success without deletion.
        let p = protocol(
            vec![
                unplug("a", 0, 0),
                unplug("b", 1, 10),
                unplug("c", 2, 20),
                plug("d", 30),
                plug("e", 40),
            ],
            vec![
                deleted(0, "a"),
                ost(1, None, 0, 3, 0),
                ost(2, None, 0, 3, 0),
                ost(10, Some("b"), 1, 3, 0x82),
                deleted(11, "b"),
                ost(20, Some("c"), 2, 3, 0),
                ost(30, Some("d"), 3, 1, 0),
                ost(31, Some("d"), 3, 1, 0),
            ],
        );
        let v = p.check();
        assert!(matches!(&v[0], Violation::EjectAnswers { count: 2, .. }), "{v:?}");
        assert!(
            matches!(&v[1], Violation::RefusedButDeleted { status: 0x82, .. }),
            "{v:?}"
        );
        assert!(matches!(&v[2], Violation::SuccessWithoutDeleted { .. }), "{v:?}");
        assert!(matches!(&v[3], Violation::InsertAnswers { count: 2, .. }), "{v:?}");
        assert!(matches!(&v[4], Violation::InsertAnswers { count: 0, .. }), "{v:?}");
        assert_eq!(v.len(), 5);
        assert!(!protocol(vec![unplug("x", 0, 0)], vec![deleted(0, "x")]).last_unplug_answered());
    }

    #[test]
    fn a_reset_ends_the_window() {
        // The new boot's scan answers again for a plugged DIMM: no request asked for it.
        let p = protocol(
            vec![plug("dimm0", 0), Request::Reset { at: 1 }],
            vec![ost(0, Some("dimm0"), 0, 1, 0), ost(1, Some("dimm0"), 0, 1, 0)],
        );
        assert_eq!(p.check(), vec![]);
    }
}
