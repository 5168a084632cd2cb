//! virtio-mem grow and shrink (`--vmem-sizes`): per granule and device mode (sub-block: a
//! 2 MiB device block, below the memory block; big-block: a 1 GiB device block, at least a
//! memory block), cycles of grow 0 → SIZE and shrink SIZE → 0 of idle memory through QMP
//! `requested-size`, then shrinks of memory half filled with `stress` data (migrated). The
//! guest's `virtio-mem: ... event=done` line gives its whole resize (`us`) and the time it
//! waited for QEMU (`device_us`); `us - device_us` is the guest's own work.
//!
//! The first grow after boot writes into host memory never backed before: it is recorded on its
//! own (`first_grow_*`) and left out of the medians, which are over the cycles after it.

use std::time::Duration;

use mm::size::Size;

use super::plan::median;
use super::record::{MemmapInit, Record, VmemRecord};
use super::sink::{Sink, Tag};
use super::target::{start_session, Target};
use crate::config::{BootMode, KernelConfig};
use crate::run::{Machine, VirtioMem};
use crate::session::Session;

/// The device block of sub-block mode (QEMU's default on a 4K host: the THP size).
pub const SUB_BLOCK: u64 = 2 << 20;
/// The device block of big-block mode: at least every granule's memory block (512 MiB on 64K).
pub const BIG_BLOCK: u64 = 1 << 30;

/// The figures of one `virtio-mem: dev=... event=done ...` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmemEvent {
    pub requested: u64,
    pub plugged: u64,
    pub cycles: u64,
    /// The whole resize, µs.
    pub us: u64,
    /// Of `us`, waiting for the device's answers.
    pub device_us: u64,
    pub migrated_pages: u64,
}

impl VmemEvent {
    /// The guest's own work, µs.
    pub fn guest_us(&self) -> u64 {
        self.us.saturating_sub(self.device_us)
    }
}

/// Why a guest line gives no figures.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmemLineError {
    #[error("not a virtio-mem event line: `{0}`")]
    NotEvent(String),
    #[error("the resize stopped short: `{0}`")]
    Stopped(String),
    #[error("virtio-mem line without a number `{field}=`: `{line}`")]
    Field { field: &'static str, line: String },
}

/// The figures of a guest `virtio-mem: dev=N addr=.. requested=0x.. plugged=0x.. from=0x..
/// event=done cycles=N us=N device_us=N migrated_pages=N` line; `event=stopped` is an error.
pub fn parse_vmem_event(line: &str) -> Result<VmemEvent, VmemLineError> {
    let line = line.trim();
    let Some(i) = line.find("virtio-mem: dev=") else {
        return Err(VmemLineError::NotEvent(line.into()));
    };
    let words: Vec<&str> = line[i..].split_whitespace().collect();
    let value = |k: &str| words.iter().find_map(|w| w.strip_prefix(k)?.strip_prefix('='));
    match value("event") {
        Some("done") => {}
        Some("stopped") => return Err(VmemLineError::Stopped(line.into())),
        _ => return Err(VmemLineError::NotEvent(line.into())),
    }
    let num = |field: &'static str| {
        value(field)
            .and_then(|v| match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            })
            .ok_or_else(|| VmemLineError::Field {
                field,
                line: line.into(),
            })
    };
    Ok(VmemEvent {
        requested: num("requested")?,
        plugged: num("plugged")?,
        cycles: num("cycles")?,
        us: num("us")?,
        device_us: num("device_us")?,
        migrated_pages: num("migrated_pages")?,
    })
}

/// One resize: the guest's event and the host's wall time from `qom-set` to its line (ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resize {
    pub event: VmemEvent,
    pub host_ms: f64,
}

/// The samples of one device mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmemSamples {
    /// Grow and shrink of idle memory, in cycle order (the first grow is the one after boot).
    pub grows: Vec<Resize>,
    pub shrinks: Vec<Resize>,
    /// Shrinks of memory half filled with stress data.
    pub loaded: Vec<Resize>,
}

/// The medians of one mode, as a record without its tag (commit and run empty). `None` when
/// there is no cycle after the first.
pub fn vmem_figures(s: &VmemSamples) -> Option<VmemRecord> {
    let first = s.grows.first()?;
    if s.grows.len() < 2 || s.shrinks.len() < 2 || s.loaded.is_empty() {
        return None;
    }
    let us = |v: &[Resize], f: fn(&Resize) -> f64| median(&v.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
    let (grows, shrinks) = (&s.grows[1..], &s.shrinks[1..]);
    Some(VmemRecord {
        commit: String::new(),
        run: 0,
        cpu: String::new(),
        mode: MemmapInit::default(),
        config: String::new(),
        size: first.event.requested,
        block: 0,
        vmem_mode: String::new(),
        cycles: grows.len() as u64,
        first_grow_us: first.event.us as f64,
        first_grow_guest_us: first.event.guest_us() as f64,
        grow_us: us(grows, |r| r.event.us as f64),
        grow_guest_us: us(grows, |r| r.event.guest_us() as f64),
        grow_host_ms: round2(us(grows, |r| r.host_ms)),
        shrink_us: us(shrinks, |r| r.event.us as f64),
        shrink_guest_us: us(shrinks, |r| r.event.guest_us() as f64),
        shrink_host_ms: round2(us(shrinks, |r| r.host_ms)),
        loaded_reps: s.loaded.len() as u64,
        loaded_shrink_us: us(&s.loaded, |r| r.event.us as f64),
        loaded_shrink_guest_us: us(&s.loaded, |r| r.event.guest_us() as f64),
        loaded_shrink_host_ms: round2(us(&s.loaded, |r| r.host_ms)),
        loaded_migrated_pages: us(&s.loaded, |r| r.event.migrated_pages as f64) as u64,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `sub-block` or `big-block`: the device block against granule `g`'s memory block.
pub fn mode_name(block: u64, memory_block: u64) -> &'static str {
    if block < memory_block {
        "sub-block"
    } else {
        "big-block"
    }
}

/// One resize of `vmem0` to `size`, which must end `done` at that size.
fn resize(s: &mut Session, size: u64) -> Result<Resize, String> {
    let r = s.vmem("vmem0", size).map_err(|e| e.to_string())?;
    if !r.done() || r.plugged_after != size {
        return Err(format!("vmem0 → {}: {}", Size(size), r.line()));
    }
    let line = r
        .guest_line
        .as_deref()
        .ok_or_else(|| format!("vmem0 → {}: no guest line: {}", Size(size), r.line()))?;
    let event = parse_vmem_event(line).map_err(|e| e.to_string())?;
    Ok(Resize {
        event,
        host_ms: r.elapsed.as_secs_f64() * 1e3,
    })
}

fn guest_ok(s: &mut Session, cmd: &str, want: &str) -> Result<String, String> {
    let t = s.guest(cmd).map_err(|e| format!("{cmd}: {e}"))?;
    if !t.contains(want) {
        return Err(format!("{cmd}: no `{want}`: {}", t.trim()));
    }
    Ok(t)
}

/// Boots `t.granule` with one virtio-mem device of `size` and device block `block`, runs the
/// cycles; the samples.
pub fn vmem_samples(t: &Target<'_>, size: u64, block: u64) -> Result<VmemSamples, String> {
    let machine = Machine {
        mem: "1G".into(),
        virtio_mem: vec![VirtioMem {
            block: Some(block),
            ..VirtioMem::new(size)
        }],
        ..Machine::default()
    };
    let (mut s, _) = start_session(t, machine, BootMode::Kernel, Duration::from_secs(900))?;
    // Background struct page init of the boot RAM finished: it does not run beside the cycles.
    s.guest("meminfo settle").map_err(|e| e.to_string())?;
    let mut out = VmemSamples::default();
    for _ in 0..=t.reps {
        out.grows.push(resize(&mut s, size)?);
        out.shrinks.push(resize(&mut s, 0)?);
    }
    let stress = format!("stress {:#x}", size / 2);
    for _ in 0..t.reps {
        resize(&mut s, size)?;
        guest_ok(&mut s, &stress, "result=ok")?;
        out.loaded.push(resize(&mut s, 0)?);
        guest_ok(&mut s, "stress verify", "bad=0")?;
        guest_ok(&mut s, "stress free", "")?;
    }
    let _ = s.guest_exit("poweroff");
    Ok(out)
}

/// Both device modes of one granule at `size`: printed, a record each.
pub fn vmem_bench(t: &Target<'_>, size: u64, tag: &Tag, sink: &mut Sink) -> Result<(), String> {
    let cfg = KernelConfig::default_for(t.granule);
    let memory_block = super::plan::memory_block(t.granule);
    println!(
        "\n## {cfg} {} memmap_init={} virtio-mem 0 → {} → 0 (guest µs from its virtio-mem line, guest = us − device_us; host ms qom-set → line; medians of {} cycles after the first, loaded: half the size under stress, median of {})",
        t.cpu,
        t.mode,
        Size(size),
        t.reps,
        t.reps
    );
    println!(
        "{:>10} {:>6} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9}",
        "mode",
        "block",
        "1st_grow_g",
        "grow_g",
        "grow",
        "grow_ms",
        "shrink_g",
        "shrink",
        "shrnk_ms",
        "loaded_g",
        "loaded",
        "migrated"
    );
    for block in [SUB_BLOCK, BIG_BLOCK] {
        let samples = vmem_samples(t, size, block)?;
        let mut r = vmem_figures(&samples).ok_or("fewer than two idle cycles or no loaded shrink")?;
        r.commit = tag.commit.clone();
        r.run = tag.run;
        r.cpu = t.cpu.into();
        r.mode = t.mode;
        r.config = cfg.to_string();
        r.block = block;
        r.vmem_mode = mode_name(block, memory_block).into();
        println!(
            "{:>10} {:>6} {:>12.0} {:>9.0} {:>9.0} {:>9.1} {:>9.0} {:>9.0} {:>9.1} {:>11.0} {:>9.0} {:>9}",
            r.vmem_mode,
            Size(block).to_string(),
            r.first_grow_guest_us,
            r.grow_guest_us,
            r.grow_us,
            r.grow_host_ms,
            r.shrink_guest_us,
            r.shrink_us,
            r.shrink_host_ms,
            r.loaded_shrink_guest_us,
            r.loaded_shrink_us,
            r.loaded_migrated_pages
        );
        sink.push(Record::Vmem(r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(requested: u64, us: u64, device_us: u64, migrated: u64) -> String {
        format!(
            "virtio-mem: dev=0 addr=0x80000000 requested={requested:#x} plugged={requested:#x} from=0x0 event=done \
             cycles={} us={us} device_us={device_us} migrated_pages={migrated}\r",
            us * 1000
        )
    }

    fn resize(requested: u64, us: u64, device_us: u64, migrated: u64, host_ms: f64) -> Resize {
        Resize {
            event: parse_vmem_event(&line(requested, us, device_us, migrated)).unwrap(),
            host_ms,
        }
    }

    #[test]
    fn event_lines_are_read() {
        let e = parse_vmem_event(&format!("[  1.5] {}", line(1 << 30, 3000, 1000, 7))).unwrap();
        assert_eq!(
            e,
            VmemEvent {
                requested: 1 << 30,
                plugged: 1 << 30,
                cycles: 3_000_000,
                us: 3000,
                device_us: 1000,
                migrated_pages: 7
            }
        );
        assert_eq!(e.guest_us(), 2000);
    }

    #[test]
    fn bad_lines_are_errors() {
        let stopped = "virtio-mem: dev=0 addr=0x80000000 requested=0x0 plugged=0x200000 from=0x40000000 \
                       event=stopped cycles=1 us=1 device_us=0 migrated_pages=0 next_retry_s=1 reason=\"memory busy\"";
        assert!(matches!(parse_vmem_event(stopped), Err(VmemLineError::Stopped(_))));
        assert!(matches!(
            parse_vmem_event("vmem: id=vmem0 requested=1G"),
            Err(VmemLineError::NotEvent(_))
        ));
        let no_us = line(1 << 30, 3000, 1000, 7).replace(" us=3000", " us=lots");
        let e = parse_vmem_event(&no_us).unwrap_err();
        assert_eq!(
            e,
            VmemLineError::Field {
                field: "us",
                line: no_us.trim().into()
            }
        );
        assert!(
            e.to_string()
                .starts_with("virtio-mem line without a number `us=`: `virtio-mem: dev=0"),
            "{e}"
        );
        let no_device = line(1 << 30, 3000, 1000, 7).replace(" device_us=1000", "");
        assert!(matches!(
            parse_vmem_event(&no_device),
            Err(VmemLineError::Field { field: "device_us", .. })
        ));
    }

    /// The first grow is kept apart; the medians are of the later cycles, each figure from its
    /// own samples.
    #[test]
    fn figures_leave_the_first_grow_out_of_the_medians() {
        let g = 1 << 30;
        let s = VmemSamples {
            grows: vec![
                resize(g, 60_000, 1000, 0, 70.0),
                resize(g, 3000, 1000, 0, 5.0),
                resize(g, 2500, 400, 0, 4.0),
                resize(g, 2800, 300, 0, 6.0),
            ],
            shrinks: vec![
                resize(0, 900, 100, 0, 2.0),
                resize(0, 1200, 100, 0, 3.0),
                resize(0, 1100, 200, 0, 3.5),
                resize(0, 1000, 100, 0, 2.5),
            ],
            loaded: vec![resize(0, 500_000, 100, 131072, 510.0)],
        };
        let r = vmem_figures(&s).unwrap();
        assert_eq!((r.size, r.cycles), (g, 3));
        assert_eq!((r.first_grow_us, r.first_grow_guest_us), (60_000.0, 59_000.0));
        assert_eq!((r.grow_us, r.grow_guest_us, r.grow_host_ms), (2800.0, 2100.0, 5.0));
        assert_eq!((r.shrink_us, r.shrink_guest_us, r.shrink_host_ms), (1100.0, 900.0, 3.0));
        assert_eq!(
            (r.loaded_shrink_guest_us, r.loaded_migrated_pages, r.loaded_reps),
            (499_900.0, 131072, 1)
        );
        let only_first = VmemSamples {
            grows: s.grows[..1].to_vec(),
            shrinks: s.shrinks[..1].to_vec(),
            loaded: s.loaded.clone(),
        };
        assert_eq!(vmem_figures(&only_first), None);
        assert_eq!(mode_name(SUB_BLOCK, 128 << 20), "sub-block");
        assert_eq!(mode_name(BIG_BLOCK, 512 << 20), "big-block");
    }
}
