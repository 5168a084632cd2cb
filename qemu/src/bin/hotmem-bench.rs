//! `cargo run -p hotmem-qemu --bin hotmem-bench --release -- [--granule 4k|16k|64k] [--reps N] [--quick]`
//!
//! Boots each granule (default VA size, firmware mode) and prints one table per run:
//! 1. the kernel's own `bench` (guest cycles from CNTVCT for add/online/offline/remove of one
//!    block, 1, 4, 16 GiB — 64 GiB on 16K/64K — median of N, the memset bound, pre-existing
//!    memory per GiB with and without memmap on memory, TLBI instructions per removal) on RAM
//!    held back with `mem=1G` (a `reserve=off` backend: QEMU allocates lazily, the guest only
//!    touches the memmap);
//! 2. host wall time of real DIMM hotplug over QMP: `device_add` → the guest's `_OST` success,
//!    `device_del` → `DEVICE_DELETED`, for 128 MiB / 512 MiB / 1 GiB / 4 GiB DIMMs (median of N;
//!    sizes the granule cannot use are reported as refused);
//! 3. the same in-guest removal on `cortex-a76` (no FEAT_TLBIRANGE) to compare TLBI counts.
//!
//! Every result is also a JSON line (`{"kind":...}`), printed and appended to
//! `target/bench/results.jsonl`, so runs can be compared across commits.

use clap::Parser;
use hotmem_qemu::config::{BootMode, Granule, KernelConfig};
use hotmem_qemu::discover::{qemu_once, InstallPolicy};
use hotmem_qemu::kernel::build_kernel_once;
use hotmem_qemu::run::{Machine, QemuRun};
use hotmem_qemu::session::Session;
use mm::size::Size;
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

/// Times memory hotplug in the guest and over QMP for each granule (see the source's header);
/// JSON lines are appended to target/bench/results.jsonl.
#[derive(Parser)]
#[command(name = "hotmem-bench", args_override_self = true)]
struct Opts {
    /// one granule only (default: all three)
    #[arg(long, value_name = "4k|16k|64k")]
    granule: Option<Granule>,
    /// repetitions of each measurement (the median is reported)
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    reps: u64,
    /// sizes up to 1 GiB only
    #[arg(long)]
    quick: bool,
}

fn block_size(g: Granule) -> u64 {
    if g == Granule::K64 {
        512 << 20
    } else {
        128 << 20
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One line of `target/bench/results.jsonl`.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Record<'a> {
    /// One `bench-json:` object of the kernel's `bench`, tagged with the commit and CPU model.
    Guest {
        commit: &'a str,
        cpu: &'a str,
        #[serde(flatten)]
        guest: Map<String, Value>,
    },
    /// DIMM plug/unplug over QMP, host wall time (medians).
    Dimm {
        config: String,
        size: u64,
        reps: usize,
        plug_to_ost_ms: f64,
        unplug_to_deleted_ms: f64,
        result: &'a str,
    },
}

fn record(out: &mut Option<std::fs::File>, r: &Record) {
    let line = serde_json::to_string(r).expect("a bench record serialises");
    println!("{line}");
    if let Some(f) = out {
        let _ = writeln!(f, "{line}");
    }
}

/// The kernel's `bench` on held-back RAM; returns its `bench-json` objects.
fn guest_bench(
    qemu: &std::path::Path,
    g: Granule,
    cpu: &str,
    sizes: &[u64],
    reps: usize,
) -> Result<Vec<Map<String, Value>>, String> {
    let cfg = KernelConfig::default_for(g);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let max = sizes.iter().copied().max().unwrap_or(GIB);
    let ram = GIB + max;
    let mem = Size(ram).to_string();
    let run = QemuRun::new(kernel)
        .qemu(qemu)
        .machine(Machine {
            cpu: cpu.into(),
            mem: mem.clone(),
            ..Machine::default()
        })
        .boot(BootMode::Firmware)
        .append(Some("mem=1G".into()))
        .args([
            "-object".to_string(),
            format!("memory-backend-ram,id=ram0,size={mem},reserve=off"),
            "-machine".into(),
            "memory-backend=ram0".into(),
        ])
        .timeout(Some(Duration::from_secs(600)));
    let sizes: Vec<String> = sizes.iter().map(|&s| Size(s).to_string()).collect();
    let cmd = format!("bench reps={reps} {}", sizes.join(" "));
    let t0 = Instant::now();
    let out = run.run(&[cmd.as_str(), "poweroff"]).map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("guest bench failed: {}\n{}", out.describe(), out.tail(20)));
    }
    println!(
        "\n## {} {} in-guest hotplug (cycles from CNTVCT; host wall {:.1} s)",
        cfg,
        cpu,
        t0.elapsed().as_secs_f64()
    );
    for l in out.console.lines().filter(|l| l.starts_with("bench: ")) {
        println!("{}", l.trim_end());
    }
    out.console
        .lines()
        .filter_map(|l| l.strip_prefix("bench-json: "))
        .map(|j| serde_json::from_str(j).map_err(|e| format!("bad bench-json line `{}`: {e}", j.trim())))
        .collect()
}

/// Host wall time of DIMM plug/unplug over QMP.
fn dimm_bench(
    qemu: &std::path::Path,
    g: Granule,
    reps: usize,
    sizes: &[u64],
    out: &mut Option<std::fs::File>,
) -> Result<(), String> {
    let cfg = KernelConfig::default_for(g);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let run = QemuRun::new(kernel)
        .qemu(qemu)
        .machine(Machine {
            mem: "1G,slots=8,maxmem=9G".into(),
            ..Machine::default()
        })
        .boot(BootMode::Firmware)
        .timeout(Some(Duration::from_secs(600)));
    let mut s = Session::start(run).map_err(|e| e.to_string())?;
    s.boot().map_err(|e| e.to_string())?;
    println!("\n## {cfg} DIMM hotplug over QMP (host wall time, median of {reps})");
    println!("{:>9} {:>12} {:>14} {:>10}", "size", "plug_ms", "unplug_ms", "result");
    for &size in sizes {
        let (mut plug, mut unplug) = (Vec::new(), Vec::new());
        let mut result = String::from("ok");
        for i in 0..reps {
            let id = format!("b{}x{}", size >> 20, i);
            let p = s.plug(size, Some(&id)).map_err(|e| e.to_string())?;
            plug.push(p.elapsed.as_secs_f64() * 1e3);
            let accepted = p.ost.as_ref().is_some_and(|o| o.status == 0);
            if !accepted {
                result = format!("refused (ost {:?})", p.ost.map(|o| o.status));
            }
            let u = s.unplug(&id).map_err(|e| e.to_string())?;
            unplug.push(u.elapsed.as_secs_f64() * 1e3);
        }
        let (pm, um) = (median(&mut plug), median(&mut unplug));
        println!("{:>9} {:>12.1} {:>14.1} {:>10}", Size(size).to_string(), pm, um, result);
        let ms = |v: f64| (v * 100.0).round() / 100.0;
        let (plug_to_ost_ms, unplug_to_deleted_ms) = (ms(pm), ms(um));
        let config = cfg.to_string();
        let r = Record::Dimm {
            config,
            size,
            reps,
            plug_to_ost_ms,
            unplug_to_deleted_ms,
            result: &result,
        };
        record(out, &r);
    }
    let _ = s.guest_exit("poweroff");
    Ok(())
}

fn main() {
    // Bad options: clap's message and exit status 2.
    let o = Opts::parse();
    let reps = o.reps as usize;
    let qemu = match qemu_once(InstallPolicy::IfRoot) {
        Ok(q) => q.path,
        Err(e) => {
            eprintln!("hotmem-bench: {e}");
            std::process::exit(1);
        }
    };
    let dir = hotmem_qemu::kernel::workspace_root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("results.jsonl"))
        .ok();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let t0 = Instant::now();
    let mut failed = false;
    for g in o.granule.map_or(Granule::ALL.to_vec(), |g| vec![g]) {
        let bs = block_size(g);
        let mut sizes = vec![bs, GIB];
        if !o.quick {
            sizes.extend([4 * GIB, 16 * GIB]);
            if g != Granule::K4 {
                sizes.push(64 * GIB);
            }
        }
        sizes.dedup();
        for cpu in ["max,lpa2=off", "cortex-a76"] {
            let s: Vec<u64> = if cpu == "cortex-a76" {
                vec![bs, GIB]
            } else {
                sizes.clone()
            };
            match guest_bench(&qemu, g, cpu, &s, reps) {
                Ok(objects) => {
                    for guest in objects {
                        record(
                            &mut out,
                            &Record::Guest {
                                commit: &commit,
                                cpu,
                                guest,
                            },
                        );
                    }
                }
                Err(e) => {
                    eprintln!("hotmem-bench: {g:?}: {e}");
                    failed = true;
                }
            }
        }
        let dimm_sizes = [128 << 20, 512 << 20, GIB, 4 * GIB];
        if let Err(e) = dimm_bench(&qemu, g, reps, &dimm_sizes, &mut out) {
            eprintln!("hotmem-bench: {g:?} DIMMs: {e}");
            failed = true;
        }
    }
    println!(
        "\nhotmem-bench: done in {:.0} s; JSON lines appended to {}",
        t0.elapsed().as_secs_f64(),
        dir.join("results.jsonl").display()
    );
    std::process::exit(if failed { 1 } else { 0 });
}
