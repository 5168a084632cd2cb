//! What the DIMM host commands made on this QMP connection and have not seen go away: backends,
//! DIMMs, and unplugs still without an outcome. The ledger observes the connection
//! ([`EventObserver`]) so a `DEVICE_DELETED` is booked whichever wait claims it, and the runner
//! can report (and clean up) what is left even after QEMU exited ([`super::report`]).
//!
//! The adds and deletes here are the QMP commands with their booking: use them, not the bare
//! [`Qmp`] helpers, for anything the ledger should know about.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::qmp::{EventObserver, Qmp, QmpError, QmpEvent};

/// A `device_del` whose outcome did not come in time: the guest may still eject the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUnplug {
    /// The device's backend (deleted once the device is).
    pub memdev: Option<String>,
    /// When `device_del` was sent.
    pub sent: Instant,
}

/// A device the guest ejected after the wait for it had ended ([`PendingUnplug`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LateDelete {
    pub id: String,
    pub memdev: Option<String>,
    /// From `device_del` to the `DEVICE_DELETED` event.
    pub after: Duration,
}

/// What this connection created and has not seen go away: kept up to date as commands succeed
/// and as `DEVICE_DELETED` events arrive.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Backends made by [`add_backend`] and not deleted by [`del_backend`].
    pub backends: BTreeSet<String>,
    /// DIMMs added by [`add_dimm`] (id → backend) without a `DEVICE_DELETED` yet.
    pub devices: BTreeMap<String, String>,
    /// `device_del` requests still without an outcome (id → request).
    pub pending_unplugs: BTreeMap<String, PendingUnplug>,
    /// Pending unplugs whose `DEVICE_DELETED` has arrived, not yet handled.
    pub late_deletes: Vec<LateDelete>,
}

impl EventObserver for Ledger {
    fn observe(&mut self, e: &QmpEvent) {
        if e.name != "DEVICE_DELETED" {
            return;
        }
        let Some(id) = e.device() else { return };
        self.devices.remove(id);
        if let Some(p) = self.pending_unplugs.remove(id) {
            self.late_deletes.push(LateDelete {
                id: id.to_string(),
                memdev: p.memdev,
                after: e.received.saturating_duration_since(p.sent),
            });
        }
    }
}

/// The connection's ledger (made empty on first use).
pub fn ledger(qmp: &mut Qmp) -> &mut Ledger {
    qmp.observer::<Ledger>()
}

/// Is an unplug still open: sent without an outcome, or ejected late and not yet handled?
pub fn unplugs_open(qmp: &Qmp) -> bool {
    qmp.observer_if::<Ledger>()
        .is_some_and(|l| !l.pending_unplugs.is_empty() || !l.late_deletes.is_empty())
}

/// `object-add` of a `memory-backend-ram` of `size` bytes, booked.
pub fn add_backend(qmp: &mut Qmp, id: &str, size: u64) -> Result<(), QmpError> {
    ledger(qmp);
    qmp.object_add_ram(id, size)?;
    ledger(qmp).backends.insert(id.to_string());
    Ok(())
}

/// `device_add` of a `pc-dimm` on the backend `memdev` (on NUMA node `node`, `None`: QEMU's
/// default), booked until its `DEVICE_DELETED`.
pub fn add_dimm(qmp: &mut Qmp, id: &str, memdev: &str, node: Option<u32>) -> Result<(), QmpError> {
    ledger(qmp);
    qmp.device_add_dimm(id, memdev, node)?;
    ledger(qmp).devices.insert(id.to_string(), memdev.to_string());
    Ok(())
}

/// `object-del` of a backend, booked.
pub fn del_backend(qmp: &mut Qmp, id: &str) -> Result<(), QmpError> {
    qmp.object_del(id)?;
    ledger(qmp).backends.remove(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deleted(id: &str, received: Instant) -> QmpEvent {
        QmpEvent {
            seq: 0,
            name: "DEVICE_DELETED".into(),
            data: json!({ "device": id }),
            timestamp: 0.0,
            received,
        }
    }

    #[test]
    fn device_deleted_books_the_device_and_a_late_unplug() {
        let sent = Instant::now();
        let mut l = Ledger::default();
        l.devices.insert("dimm0".into(), "mem-dimm0".into());
        l.devices.insert("dimm1".into(), "mem-dimm1".into());
        l.pending_unplugs.insert(
            "dimm1".into(),
            PendingUnplug {
                memdev: Some("mem-dimm1".into()),
                sent,
            },
        );
        l.observe(&deleted("dimm0", sent));
        assert!(!l.devices.contains_key("dimm0") && l.late_deletes.is_empty());
        l.observe(&deleted("dimm1", sent + Duration::from_secs(2)));
        assert!(l.devices.is_empty() && l.pending_unplugs.is_empty());
        assert_eq!(
            l.late_deletes,
            [LateDelete {
                id: "dimm1".into(),
                memdev: Some("mem-dimm1".into()),
                after: Duration::from_secs(2),
            }]
        );
    }
}
