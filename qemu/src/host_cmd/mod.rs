//! Host commands of the runner: lines starting with `:` typed at the console prompt or given in
//! `--exec`, carried out on the host through QMP ([`crate::qmp`]).
//!
//! | command | what it does |
//! |---|---|
//! | `:plug SIZE [ID] [node=N]` | `object-add memory-backend-ram mem-<ID>` + `device_add pc-dimm <ID>` (on node N), then wait for the guest's `ACPI_DEVICE_OST` (source 1) for it |
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
//!
//! This file is the grammar and the dispatch, and the machine's own commands (`:qmp`, `:hmp`,
//! `:reset`, `:powerdown`, `:help`). A device type's commands are one file
//! (`host_cmd/<dev>.rs`, its command type implementing [`DeviceCommand`]) and one line of
//! `device_commands!` below. Arrows point down: this file → `dimm`, `vmem` → `device` →
//! `report` → `ledger` → [`crate::qmp`] (`dimm` also uses `ledger` and the protocol record,
//! [`crate::dimm_protocol`]).

pub mod device;
pub mod dimm;
pub mod ledger;
pub mod report;
pub mod vmem;

pub use mm::size::Size;
use serde_json::{json, Value};

pub use self::device::{DeviceCommand, HostTimeouts};
pub use self::dimm::{
    dimm_rows, next_dimm_id, node_refusal, plug, plug_on_node, unplug, DimmCommand, DimmRow, PlugResult, Plugged,
    UnplugResult, Unplugged,
};
pub use self::report::{exit_report, reap_late_unplugs, After, HostReply};
pub use self::vmem::{
    find_vmem, is_vmem_event_line, vmem_devices, vmem_resize_polling, vmem_result_of, vmem_set_requested, Resized,
    VmemCommand, VmemDevice, VmemResult,
};
pub use crate::config::parse_nonzero_size as parse_size;
use crate::qmp::{Qmp, QmpError};
pub use crate::qmp::{OST_SOURCE_EJECT, OST_SOURCE_INSERT};

/// Registers device types: `Variant(module::Command)` per line makes `HostCommand::Variant`,
/// and puts the type's help, names, parser, GED need, refusal and runner in the grammar and
/// the dispatch, in the order of the lines.
macro_rules! device_commands {
    ($($(#[$doc:meta])* $variant:ident($module:ident::$ty:ident),)*) => {
        /// One parsed host command: a device type's, or one of the machine's.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum HostCommand {
            $($(#[$doc])* $variant($module::$ty),)*
            /// Raw QMP: the JSON text (or a bare command name).
            Qmp(String),
            Hmp(String),
            Reset,
            Powerdown,
            Help,
        }

        /// The device types' `:help` lines, in registration order.
        const DEVICE_HELP: &[&str] = &[$(<$module::$ty as DeviceCommand>::HELP),*];
        /// The device types' command names, in registration order.
        const DEVICE_NAMES: &[&[&str]] = &[$(<$module::$ty as DeviceCommand>::NAMES),*];

        /// The device command `name` with `words`, if a device type has one of that name.
        fn parse_device(name: &str, words: &[&str]) -> Option<Result<HostCommand, String>> {
            $(if let Some(r) = <$module::$ty as DeviceCommand>::parse(name, words) {
                return Some(r.map(HostCommand::$variant));
            })*
            None
        }

        impl HostCommand {
            /// The command's name when it needs the ACPI GED (firmware boots only).
            pub fn needs_ged(&self) -> Option<&'static str> {
                match self {
                    $(HostCommand::$variant(c) => c.needs_ged(),)*
                    HostCommand::Powerdown => Some("powerdown"),
                    _ => None,
                }
            }

            /// A device command's own refusal ([`DeviceCommand::refusal`]).
            fn device_refusal(&self, qmp: &mut Qmp) -> Option<String> {
                match self {
                    $(HostCommand::$variant(c) => c.refusal(qmp),)*
                    _ => None,
                }
            }

            /// Carries the command out through QMP.
            fn run(self, qmp: &mut Qmp, t: HostTimeouts) -> Result<HostReply, QmpError> {
                match self {
                    $(HostCommand::$variant(c) => c.run(qmp, t),)*
                    HostCommand::Qmp(text) => run_qmp(qmp, &text),
                    HostCommand::Hmp(text) => run_hmp(qmp, &text),
                    HostCommand::Reset => run_reset(qmp),
                    HostCommand::Powerdown => run_powerdown(qmp),
                    HostCommand::Help => Ok(HostReply::lines(host_help().lines().map(String::from).collect())),
                }
            }
        }
    };
}

device_commands! {
    /// `:plug`, `:unplug`, `:dimms`.
    Dimm(dimm::DimmCommand),
    /// `:vmem`, `:vmems`.
    Vmem(vmem::VmemCommand),
}

/// The machine's own commands (after the device types' in `:help` and in the list of names).
const MACHINE_HELP: &str =
    "  :qmp JSON|NAME    raw QMP command, e.g. :qmp {\"execute\":\"query-status\"} or :qmp query-status
  :hmp LINE         human monitor command, e.g. :hmp info memory-devices
  :reset            system_reset (DIMMs stay plugged)
  :powerdown        system_powerdown (the guest powers off)
  :help             this text
";
const MACHINE_NAMES: &[&str] = &["qmp", "hmp", "reset", "powerdown"];

/// Help text of the host commands (the runner prints it for `:help`).
pub fn host_help() -> String {
    let mut s = String::from("host commands (a line starting with `:`; carried out by the runner through QMP):\n");
    DEVICE_HELP.iter().for_each(|h| s.push_str(h));
    s.push_str(MACHINE_HELP);
    s
}

/// Is `line` a host command (first non-blank character `:`)?
pub fn is_host_command(line: &str) -> bool {
    line.trim_start().starts_with(':')
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
    if let Some(r) = parse_device(name, &words) {
        return r;
    }
    let usage = |u: &str| Err(format!("usage: {u}"));
    match name {
        "qmp" if !rest.is_empty() => Ok(HostCommand::Qmp(rest.to_string())),
        "qmp" => usage(":qmp JSON|COMMAND"),
        "hmp" if !rest.is_empty() => Ok(HostCommand::Hmp(rest.to_string())),
        "hmp" => usage(":hmp LINE"),
        "reset" if words.is_empty() => Ok(HostCommand::Reset),
        "powerdown" if words.is_empty() => Ok(HostCommand::Powerdown),
        "reset" | "powerdown" => usage(&format!(":{name}")),
        "help" | "?" => Ok(HostCommand::Help),
        "" => Err("empty host command (`:help` lists them)".into()),
        other => {
            let names: Vec<String> = DEVICE_NAMES
                .iter()
                .flat_map(|n| n.iter())
                .chain(MACHINE_NAMES)
                .map(|n| format!(":{n}"))
                .collect();
            Err(format!(
                "unknown host command `:{other}` (`:help` lists them: {})",
                names.join(", ")
            ))
        }
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

/// What every host command does first: handle late ejects (their lines come first), and
/// refuse, before doing anything, a command this machine cannot carry out (`:plug`,
/// `:unplug`, `:powerdown` without the GED of a firmware boot; a device type's own refusal,
/// such as a DIMM id in use).
pub fn preflight(qmp: &mut Qmp, cmd: &HostCommand) -> (Vec<String>, Option<HostReply>) {
    let late = reap_late_unplugs(qmp);
    let refusal = cmd.needs_ged().and_then(|name| match has_acpi_ged(qmp) {
        Ok(true) => None,
        Ok(false) => Some(HostReply::error(format!(
            "{name}: error: needs --boot firmware: this machine has no ACPI GED (QEMU gives `virt` one, \
             with DIMM hotplug and the power button, only when the kernel is loaded with -bios)"
        ))),
        Err(e) => Some(HostReply::error(format!("{name}: error: {e}"))),
    });
    let refusal = refusal.or_else(|| cmd.device_refusal(qmp).map(HostReply::error));
    (late, refusal)
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
    let mut reply = refusal.unwrap_or_else(|| {
        cmd.run(qmp, t)
            .unwrap_or_else(|e| HostReply::error(format!("{}: error: {e}", label(line))))
    });
    reply.lines.splice(0..0, late);
    reply
}

/// `:qmp`: the reply as QEMU gave it (an `error` reply makes the command fail).
fn run_qmp(qmp: &mut Qmp, text: &str) -> Result<HostReply, QmpError> {
    let cmd = match raw_qmp_command(text) {
        Ok(c) => c,
        Err(e) => return Ok(HostReply::error(format!("qmp: error: {e}"))),
    };
    let reply = qmp.execute_raw(cmd, qmp.command_timeout)?;
    Ok(HostReply::outcome(
        vec![format!("qmp: {reply}")],
        reply.get("error").is_some(),
    ))
}

/// `:hmp`: the monitor's output, a line each.
fn run_hmp(qmp: &mut Qmp, text: &str) -> Result<HostReply, QmpError> {
    let out = qmp.human_monitor_command(text)?;
    let mut lines: Vec<String> = out.lines().map(|l| format!("hmp: {l}")).collect();
    if lines.is_empty() {
        lines.push("hmp: (no output)".into());
    }
    Ok(HostReply::lines(lines))
}

/// `:reset` (recorded for the DIMM protocol check: the new boot answers for every DIMM again).
fn run_reset(qmp: &mut Qmp) -> Result<HostReply, QmpError> {
    dimm::system_reset(qmp)?;
    Ok(HostReply {
        after: After::Reboot,
        ..HostReply::lines(vec!["reset: system_reset sent".into()])
    })
}

/// `:powerdown`: the GED's power button; QEMU exits when the guest powers off.
fn run_powerdown(qmp: &mut Qmp) -> Result<HostReply, QmpError> {
    qmp.system_powerdown()?;
    Ok(HostReply {
        after: After::Exit,
        ..HostReply::lines(vec!["powerdown: system_powerdown sent".into()])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        use HostCommand::*;
        assert_eq!(
            parse_host_command(":plug 1G").unwrap(),
            Dimm(DimmCommand::Plug {
                size: 1 << 30,
                id: None,
                node: None
            })
        );
        assert_eq!(
            parse_host_command("  : plug 128M big.1").unwrap(),
            Dimm(DimmCommand::Plug {
                size: 128 << 20,
                id: Some("big.1".into()),
                node: None
            })
        );
        assert!(parse_host_command(":plug")
            .unwrap_err()
            .contains("usage: :plug SIZE [ID] [node=N]"));
        assert!(parse_host_command(":plug 1G 0bad")
            .unwrap_err()
            .contains("not a valid QEMU id"));
        assert!(parse_host_command(":plug 1G a b").is_err());
        assert_eq!(
            parse_host_command(":unplug dimm0").unwrap(),
            Dimm(DimmCommand::Unplug { id: "dimm0".into() })
        );
        assert!(parse_host_command(":unplug").is_err());
        assert_eq!(parse_host_command(":dimms").unwrap(), Dimm(DimmCommand::List));
        assert_eq!(
            parse_host_command(":vmem vmem0 2G").unwrap(),
            Vmem(VmemCommand::Resize {
                id: "vmem0".into(),
                size: 2 << 30
            })
        );
        assert_eq!(
            parse_host_command(":vmem vmem1 0").unwrap(),
            Vmem(VmemCommand::Resize {
                id: "vmem1".into(),
                size: 0
            })
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
                Vmem(VmemCommand::Resize {
                    id: "vmem0".into(),
                    size: 0
                }),
                "{zero}"
            );
        }
        assert_eq!(parse_host_command(":vmems").unwrap(), Vmem(VmemCommand::List));
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
        let e = parse_host_command(":nope").unwrap_err();
        assert!(
            e.ends_with("(`:help` lists them: :plug, :unplug, :dimms, :vmem, :vmems, :qmp, :hmp, :reset, :powerdown)"),
            "{e}"
        );
        assert_eq!(HostCommand::Powerdown.needs_ged(), Some("powerdown"));
        assert!(is_host_command(" :x") && !is_host_command("x:"));
    }

    #[test]
    fn plug_takes_a_node() {
        use HostCommand::*;
        assert_eq!(
            parse_host_command(":plug 1G node=2").unwrap(),
            Dimm(DimmCommand::Plug {
                size: 1 << 30,
                id: None,
                node: Some(2)
            })
        );
        assert_eq!(
            parse_host_command(":plug 1G node=1 d1").unwrap(),
            Dimm(DimmCommand::Plug {
                size: 1 << 30,
                id: Some("d1".into()),
                node: Some(1)
            })
        );
        for (bad, want) in [
            (":plug 1G node=x", "`node=x`: the node is a number, e.g. node=1"),
            (":plug 1G node=1 node=2", "`node=2`: node= given twice"),
            (":plug 1G a b", "`b`: a second ID"),
            (":plug 1G a node=1 b", "usage: :plug SIZE [ID] [node=N]"),
        ] {
            let e = parse_host_command(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn help_lists_every_command() {
        let h = host_help();
        for name in DEVICE_NAMES.iter().flat_map(|n| n.iter()).chain(MACHINE_NAMES) {
            assert!(h.contains(&format!("\n  :{name} ")), "{name}: {h}");
        }
        assert!(
            h.starts_with("host commands (a line starting with `:`") && h.ends_with("  :help             this text\n")
        );
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
}
