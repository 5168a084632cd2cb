//! What every driver shares: the [`Target`] it measures on, the check that the kernel ran the
//! memmap mode asked for, and QEMU's resident memory (its `/proc/<pid>/status`).

use std::path::Path;

use std::time::Duration;

use super::record::MemmapInit;
use crate::config::{BootMode, Granule, KernelConfig};
use crate::kernel::build_kernel_once;
use crate::run::{Machine, QemuRun};
use crate::session::Session;

/// What a driver measures on.
pub struct Target<'a> {
    pub qemu: &'a Path,
    pub granule: Granule,
    /// QEMU's `-cpu`.
    pub cpu: &'a str,
    pub mode: MemmapInit,
    /// Repetitions (medians of this many).
    pub reps: u64,
}

/// `memmap_init=MODE` on the command line; a kernel that does not know the option says so at
/// boot and runs eager (the only mode it has), which is only an error when deferred was asked.
pub fn check_mode(console: &str, mode: MemmapInit) -> Result<(), String> {
    if mode != MemmapInit::Eager && console.contains("unknown option 'memmap_init=") {
        return Err(format!(
            "this kernel has no memmap_init={mode} (it ignored the option); run with --memmap-init eager"
        ));
    }
    Ok(())
}

/// A session on `t`'s default kernel: `machine` with `t`'s CPU, booted `boot` with
/// `memmap_init=` of `t`, killed after `timeout`; booted, its mode checked. Returns the session
/// and the boot log.
pub fn start_session(
    t: &Target<'_>,
    machine: Machine,
    boot: BootMode,
    timeout: Duration,
) -> Result<(Session, String), String> {
    let kernel = build_kernel_once(KernelConfig::default_for(t.granule)).map_err(|e| e.to_string())?;
    let run = QemuRun::new(kernel)
        .qemu(t.qemu)
        .machine(Machine {
            cpu: t.cpu.into(),
            ..machine
        })
        .boot(boot)
        .append(Some(format!("memmap_init={}", t.mode)))
        .timeout(Some(timeout));
    let mut s = Session::start(run).map_err(|e| e.to_string())?;
    let log = s.boot().map_err(|e| e.to_string())?;
    check_mode(&log, t.mode)?;
    Ok((s, log))
}

/// `VmRSS` of a `/proc/<pid>/status` text, bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut w = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = w.next()?.parse().ok()?;
    (w.next()? == "kB").then_some(kib << 10)
}

/// QEMU's resident memory now (its `/proc/<pid>/status`), bytes.
pub fn qemu_rss(s: &Session) -> Result<u64, String> {
    let pid = s.console.pid();
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_vm_rss(&text).ok_or_else(|| format!("{path}: no `VmRSS: N kB` line"))
}

/// RSS growth (bytes) of a plug of `size` bytes, as MiB per GiB added.
pub fn rss_mib_per_gib(growth: i64, size: u64) -> f64 {
    growth as f64 / (1u64 << 20) as f64 / (size as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tqemu-system-aarch\nVmHWM:\t  300000 kB\nVmRSS:\t  262144 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(256 << 20));
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        // 8 MiB for a 512 MiB DIMM is 16 MiB per GiB; a shrink is negative.
        assert_eq!(rss_mib_per_gib(8 << 20, 512 << 20), 16.0);
        assert_eq!(rss_mib_per_gib(-(1 << 20), 1 << 30), -1.0);
    }
}
