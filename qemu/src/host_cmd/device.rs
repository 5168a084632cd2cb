//! What a device type's host commands provide, so that the grammar and dispatch
//! ([`super`]) know them by one registration line: the parsed command type of
//! `host_cmd/<dev>.rs` implements [`DeviceCommand`].

use std::time::Duration;

use super::report::HostReply;
use crate::qmp::{Qmp, QmpError};

/// A device type's parsed host commands (`:plug`, `:vmem`, ...).
pub trait DeviceCommand: Sized {
    /// The `:help` lines of these commands (each ends with a newline).
    const HELP: &'static str;
    /// The command names, for the list in the unknown-command message.
    const NAMES: &'static [&'static str];

    /// `Some` when `name` is one of these commands: the command, or why `words` (its
    /// arguments, split at blanks) do not fit it.
    fn parse(name: &str, words: &[&str]) -> Option<Result<Self, String>>;

    /// The command's name when it needs the ACPI GED, which QEMU gives `virt` only in
    /// firmware boots.
    fn needs_ged(&self) -> Option<&'static str> {
        None
    }

    /// Why this machine cannot carry the command out, asked of QEMU before anything is done
    /// (an `<name>: error: ...` line), or `None`.
    fn refusal(&self, _qmp: &mut Qmp) -> Option<String> {
        None
    }

    /// Carries the command out through QMP (without the console: the session's own drivers
    /// wait for the guest's lines where there is one).
    fn run(self, qmp: &mut Qmp, t: HostTimeouts) -> Result<HostReply, QmpError>;
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
