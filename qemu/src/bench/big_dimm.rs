//! One big DIMM on 64K (`--dimm-big SIZE`): QEMU's resident memory growth over the hot-add and
//! online of a DIMM far larger than the host's memory, which only a lazily backed backend
//! (`reserve=off`: no swap reservation, pages allocated on first touch) makes possible. What
//! the guest writes of the DIMM, and what QEMU allocates for it (dirty bitmaps, memory maps),
//! is what the RSS grows by.

use std::time::{Duration, Instant};

use mm::size::Size;
use serde_json::json;

use super::record::{DimmRecord, Record};
use super::sink::{Sink, Tag};
use super::target::{qemu_rss, rss_mib_per_gib, start_session, Target};
use crate::config::{BootMode, KernelConfig};
use crate::run::Machine;
use crate::session::is_dimm_event_line;

const GIB: u64 = 1 << 30;
/// Limit of the plug and of the unplug (a large DIMM's memmap takes its time under TCG).
const WAIT: Duration = Duration::from_secs(600);

/// Boot `t` with room for one DIMM of `size`, plug it once (backend `reserve=off`), record
/// the plug, QEMU's RSS growth and the unplug.
pub fn big_dimm_bench(t: &Target<'_>, size: u64, tag: &Tag, sink: &mut Sink) -> Result<(), String> {
    let cfg = KernelConfig::default_for(t.granule);
    let machine = Machine {
        mem: format!("1G,slots=2,maxmem={}", Size(GIB + size)),
        ..Machine::default()
    };
    let (mut s, boot) = start_session(t, machine, BootMode::Firmware, Duration::from_secs(1800))?;
    let cntfrq = boot
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cntfrq=")?.parse::<f64>().ok())
        .ok_or("no cntfrq= in the boot log")?;
    let q = |e: crate::qmp::QmpError| e.to_string();
    s.qmp
        .execute(
            "object-add",
            Some(json!({"qom-type": "memory-backend-ram", "id": "mem-big", "size": size, "reserve": false})),
        )
        .map_err(q)?;
    let rss0 = qemu_rss(&s)?;
    s.console.pump();
    let from = s.console.output_len();
    let mark = s.qmp.mark();
    let t0 = Instant::now();
    s.qmp.device_add_dimm("big", "mem-big", None).map_err(q)?;
    let ost = s
        .qmp
        .wait_event_since(mark, WAIT, "_OST for big", |e| {
            e.ost()
                .is_some_and(|o| o.device.as_deref() == Some("big") && o.source == 1)
        })
        .map_err(q)?;
    let plug_ms = ost.received.saturating_duration_since(t0).as_secs_f64() * 1e3;
    let status = ost.ost().map_or(u64::MAX, |o| o.status);
    let slot = s
        .qmp
        .query_memory_devices()
        .map_err(q)?
        .into_iter()
        .find(|d| d.id.as_deref() == Some("big"))
        .and_then(|d| d.slot)
        .ok_or("the big DIMM is not in query-memory-devices")?;
    let line = s
        .wait_line(from, WAIT, "the guest's dimm line for the big DIMM", |l| {
            is_dimm_event_line(l, slot, false)
        })
        .map_err(|e| e.to_string())?;
    let rss1 = qemu_rss(&s)?;
    let guest_us = line
        .as_deref()
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("cycles=")?.parse::<f64>().ok())
        })
        .map(|c| (c * 1e6 / cntfrq).round());
    let rss = rss_mib_per_gib(rss1 as i64 - rss0 as i64, size);
    let u = s.unplug("big").map_err(|e| e.to_string())?;
    let _ = s.guest_exit("poweroff");
    let result = if status == 0 {
        "ok".to_string()
    } else {
        format!("refused (ost {status:#x})")
    };
    println!(
        "\n## {cfg} {} memmap_init={} one {} DIMM (backend reserve=off): plug {plug_ms:.1} ms, guest add + online {} µs, QEMU RSS {} → {} MiB ({rss:.3} MiB/GiB, {:.1} MiB per TiB), unplug {:.1} ms, {result}",
        t.cpu,
        t.mode,
        Size(size),
        guest_us.map_or("-".into(), |v| format!("{v:.0}")),
        rss0 >> 20,
        rss1 >> 20,
        rss * 1024.0,
        u.elapsed.as_secs_f64() * 1e3
    );
    sink.push(Record::Dimm(DimmRecord {
        commit: tag.commit.clone(),
        run: tag.run,
        cpu: t.cpu.into(),
        mode: t.mode,
        config: cfg.to_string(),
        size,
        reps: 1,
        plug_to_ost_ms: (plug_ms * 100.0).round() / 100.0,
        unplug_to_deleted_ms: (u.elapsed.as_secs_f64() * 1e5).round() / 100.0,
        result,
        guest_add_online_us: guest_us,
        rss_mib_per_gib: Some((rss * 1000.0).round() / 1000.0),
    }));
    Ok(())
}
