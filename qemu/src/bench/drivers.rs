//! The bench's drivers: each boots QEMU and measures one thing on one [`Target`] (granule,
//! CPU model, `memmap_init` mode): the kernel's own `bench` ([`guest_bench`]), time to the
//! prompt ([`boot_bench`]), DIMM hotplug over QMP with QEMU's RSS growth ([`dimm_bench`]),
//! migration ([`super::migrate`]) and virtio-mem resizes ([`super::vmem`]); [`run_matrix`] runs
//! what the options ask for on every granule and mode.

use std::path::Path;
use std::time::{Duration, Instant};

use mm::size::Size;

use super::boot_stages;
use super::machines::{lazy_ram_run, remote_node_run};
use super::opts::Opts;
use super::plan::{self, Coverage, DimmSamples};
use super::record::{BootRecord, DimmRecord, GuestBench, GuestRecord, Record};
use super::sink::{Sink, Tag};
pub use super::target::{check_mode, Target};
use super::target::{qemu_rss, rss_mib_per_gib};
use crate::config::{BootMode, Granule, KernelConfig};
use crate::kernel::build_kernel_once;
use crate::run::Machine;
use crate::session::Session;

const GIB: u64 = 1 << 30;

fn median(v: &[f64]) -> f64 {
    plan::median(v).unwrap_or(0.0)
}

fn median_of(v: &[f64]) -> Option<f64> {
    plan::median(v)
}

/// What the other CPUs do while the guest bench runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Nothing (2 CPUs, the second idle).
    Idle,
    /// `torture` on 3 CPUs (4 in all): they allocate, write and verify memory throughout.
    Torture,
    /// Idle, with the memory added on a remote NUMA node: node 0 holds the boot RAM and both
    /// CPUs, node 1 (distance 20) only the held-back RAM the bench adds.
    RemoteNode,
}

/// The kernel's `bench` on held-back RAM; returns its `bench-json` objects.
pub fn guest_bench(t: &Target<'_>, sizes: &[u64]) -> Result<Vec<GuestBench>, String> {
    guest_bench_under(t, sizes, Load::Idle).map(|(objects, _)| objects)
}

/// [`guest_bench`] under `load`; also the `torture: stopped` line's `ops_per_s` (0 when idle).
pub fn guest_bench_under(t: &Target<'_>, sizes: &[u64], load: Load) -> Result<(Vec<GuestBench>, u64), String> {
    let (cpu, mode, reps) = (t.cpu, t.mode, t.reps);
    let cfg = KernelConfig::default_for(t.granule);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let max = sizes.iter().copied().max().unwrap_or(GIB);
    let ram = GIB + max;
    let mut run = match load {
        Load::RemoteNode => remote_node_run(t.qemu, kernel, cpu, max),
        _ => lazy_ram_run(t.qemu, kernel, cpu, ram),
    }
    .boot(BootMode::Firmware)
    .append(Some(format!("mem=1G memmap_init={mode}")))
    .timeout(Some(Duration::from_secs(600)));
    let sizes: Vec<String> = sizes.iter().map(|&s| Size(s).to_string()).collect();
    let cmd = format!("bench reps={reps} {}", sizes.join(" "));
    let t0 = Instant::now();
    let script: Vec<&str> = match load {
        Load::Idle | Load::RemoteNode => vec![cmd.as_str(), "poweroff"],
        Load::Torture => {
            run = run.smp(4);
            vec!["torture start", cmd.as_str(), "torture stop", "poweroff"]
        }
    };
    let out = run.run(&script).map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("guest bench failed: {}\n{}", out.describe(), out.tail(20)));
    }
    check_mode(&out.console, mode)?;
    println!(
        "\n## {} {} memmap_init={} in-guest hotplug (cycles from CNTVCT; host wall {:.1} s)",
        cfg,
        cpu,
        mode,
        t0.elapsed().as_secs_f64()
    );
    for l in out.console.lines().filter(|l| l.starts_with("bench: ")) {
        println!("{}", l.trim_end());
    }
    let objects: Vec<GuestBench> = out
        .console
        .lines()
        .filter_map(|l| l.strip_prefix("bench-json: "))
        .map(|j| serde_json::from_str(j).map_err(|e| format!("bad bench-json line `{}`: {e}", j.trim())))
        .collect::<Result<_, _>>()?;
    // A kernel that reports its mode must report the one asked for.
    for b in &objects {
        if let Some(m) = b.extra.get("memmap_init").and_then(|v| v.as_str()) {
            if m != mode.name() {
                return Err(format!("asked for memmap_init={mode}, the kernel ran {m}"));
            }
        }
    }
    if objects.is_empty() {
        return Err(format!("no bench-json line\n{}", out.tail(20)));
    }
    // The remote run must have added its memory on node 1 with the CPUs on node 0.
    let placed = |b: &GuestBench, k: &str| b.extra.get(k).and_then(|v| v.as_u64());
    if load == Load::RemoteNode
        && objects
            .iter()
            .any(|b| (placed(b, "node"), placed(b, "cpu_node")) != (Some(1), Some(0)))
    {
        return Err(String::from(
            "the remote-node bench did not add its memory on node 1 from node 0's CPUs",
        ));
    }
    let ops_per_s = match load {
        Load::Idle | Load::RemoteNode => 0,
        Load::Torture => torture_ops_per_s(&out.console)?,
    };
    Ok((objects, ops_per_s))
}

/// The workers' `ops_per_s` from `torture: stopped ...`, which must report no violation.
fn torture_ops_per_s(console: &str) -> Result<u64, String> {
    let line = console
        .lines()
        .find(|l| l.starts_with("torture: stopped"))
        .ok_or("no `torture: stopped` line")?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
    };
    match (field("ops_per_s"), field("violations")) {
        (Some(ops), Some(0)) => Ok(ops),
        _ => Err(format!("torture under the bench: {line}")),
    }
}

/// The guest bench idle and under `torture`, side by side (µs, medians).
fn print_under_load(idle: &[GuestBench], loaded: &[GuestBench], ops_per_s: u64) {
    let title = format!("in-guest hotplug idle vs under torture (3 workers, {ops_per_s} ops/s while it ran)");
    print_side_by_side(&title, ["idle", "load"], idle, loaded);
}

/// The guest bench with the memory on the CPUs' node and on a remote node, side by side.
fn print_remote_node(local: &[GuestBench], remote: &[GuestBench]) {
    let title = "in-guest hotplug of memory on the CPUs' node vs on a remote node (distance 20)";
    print_side_by_side(title, ["local", "remote"], local, remote);
}

/// Two guest bench runs side by side (µs, medians), columns suffixed `_a` and `_b`.
fn print_side_by_side(title: &str, [a, b]: [&str; 2], first: &[GuestBench], second: &[GuestBench]) {
    let us = |b: &GuestBench, c: u64| c as f64 * 1e6 / b.cntfrq.max(1) as f64;
    println!("\n## {title}");
    let col = |op: &str| [format!("{op}_{a}"), format!("{op}_{b}")];
    let [c0, c1] = col("add");
    let [c2, c3] = col("onl");
    let [c4, c5] = col("off");
    let [c6, c7] = col("rm");
    println!(
        "{:>9} {:>4} {c0:>12} {c1:>12} {c2:>12} {c3:>12} {c4:>12} {c5:>12} {c6:>12} {c7:>12}",
        "size", "mom"
    );
    for i in first {
        let Some(l) = second
            .iter()
            .find(|l| l.size == i.size && l.memmap_on_memory == i.memmap_on_memory)
        else {
            continue;
        };
        println!(
            "{:>9} {:>4} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>12.0}",
            Size(i.size).to_string(),
            if i.memmap_on_memory { "yes" } else { "no" },
            us(i, i.add_cycles),
            us(l, l.add_cycles),
            us(i, i.online_cycles),
            us(l, l.online_cycles),
            us(i, i.offline_cycles),
            us(l, l.offline_cycles),
            us(i, i.remove_cycles),
            us(l, l.remove_cycles)
        );
    }
}

/// Guest time to the prompt (a `reserve=off` backend: QEMU allocates only what the guest
/// touches), median of `reps` boots per size in `mems`. The boots go round the
/// sizes (1 GiB, 16 GiB, 1 GiB, ...) so host drift lands on every size alike.
pub fn boot_bench(t: &Target<'_>, mems: &[u64]) -> Result<Vec<(u64, BootFigures)>, String> {
    let mode = t.mode;
    let cfg = KernelConfig::default_for(t.granule);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let mut times = vec![Vec::new(); mems.len()];
    for _ in 0..t.reps {
        for (&mem, samples) in mems.iter().zip(&mut times) {
            let run = lazy_ram_run(t.qemu, kernel.clone(), t.cpu, mem)
                .boot(BootMode::Kernel)
                .append(Some(format!("memmap_init={mode}")))
                .timeout(Some(Duration::from_secs(300)));
            let out = run.run(&["poweroff"]).map_err(|e| e.to_string())?;
            let m = Size(mem);
            if !out.success() {
                return Err(format!("boot with {m} failed: {}\n{}", out.describe(), out.tail(20)));
            }
            check_mode(&out.console, mode)?;
            let line = boot_stages::parse(&out.console)
                .ok_or_else(|| format!("no `boot: time_to_prompt_us=` line\n{}", out.tail(20)))?;
            samples.push(line);
        }
    }
    Ok(mems
        .iter()
        .copied()
        .zip(times.iter().map(|t| boot_figures(t)))
        .collect())
}

/// The median time to the prompt and the median of each stage.
type BootFigures = (f64, Vec<(String, f64)>);

fn boot_figures(boots: &[boot_stages::BootLine]) -> BootFigures {
    let totals: Vec<f64> = boots.iter().map(|b| b.time_to_prompt_us).collect();
    (median(&totals), boot_stages::median_stages(boots))
}

/// Host wall time of DIMM plug/unplug over QMP, a record per size.
pub fn dimm_bench(t: &Target<'_>, sizes: &[u64], tag: &Tag, sink: &mut Sink) -> Result<(), String> {
    let (cpu, mode, reps) = (t.cpu, t.mode, t.reps);
    let cfg = KernelConfig::default_for(t.granule);
    let machine = Machine {
        mem: "1G,slots=8,maxmem=9G".into(),
        ..Machine::default()
    };
    let (mut s, boot) = super::target::start_session(t, machine, BootMode::Firmware, Duration::from_secs(600))?;
    let cntfrq = boot
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cntfrq=")?.parse::<f64>().ok())
        .ok_or("no cntfrq= in the boot log")?;
    println!("\n## {cfg} {cpu} memmap_init={mode} DIMM hotplug over QMP (host wall time, median of {reps})");
    println!(
        "{:>9} {:>12} {:>14} {:>14} {:>14} {:>10}",
        "size", "plug_ms", "guest_add_us", "unplug_ms", "rss_mib/gib", "result"
    );
    for &size in sizes {
        let (samples, result) = dimm_samples(&mut s, size, reps, cntfrq)?;
        let (pm, um, gm) = plan::dimm_medians(&samples);
        let rss = median_of(&samples.rss_mib_per_gib);
        println!(
            "{:>9} {:>12.1} {:>14} {:>14.1} {:>14} {:>10}",
            Size(size).to_string(),
            pm,
            gm.map_or("-".into(), |v| format!("{v:.0}")),
            um,
            rss.map_or("-".into(), |v| format!("{v:.2}")),
            result
        );
        let ms = |v: f64| (v * 100.0).round() / 100.0;
        sink.push(Record::Dimm(DimmRecord {
            commit: tag.commit.clone(),
            run: tag.run,
            cpu: cpu.into(),
            mode,
            config: cfg.to_string(),
            size,
            reps,
            plug_to_ost_ms: ms(pm),
            unplug_to_deleted_ms: ms(um),
            result,
            guest_add_online_us: gm.map(f64::round),
            rss_mib_per_gib: rss.map(|v| (v * 100.0).round() / 100.0),
        }));
    }
    let _ = s.guest_exit("poweroff");
    Ok(())
}

/// `reps` plugs and unplugs of a DIMM of `size`: the samples, and `ok` or the refusal.
fn dimm_samples(s: &mut Session, size: u64, reps: u64, cntfrq: f64) -> Result<(DimmSamples, String), String> {
    let mut samples = DimmSamples::default();
    let mut result = String::from("ok");
    for i in 0..reps {
        let id = format!("b{}x{}", size >> 20, i);
        let rss0 = qemu_rss(s)?;
        let p = s.plug(size, Some(&id)).map_err(|e| e.to_string())?;
        // After the guest's `dimm:` line: its add + online have touched what they touch.
        let rss1 = qemu_rss(s)?;
        samples.plug_ms.push(p.elapsed.as_secs_f64() * 1e3);
        // The guest's add + online, from its `dimm: ... cycles=N` line.
        samples.guest_us.extend(
            p.guest_line
                .as_deref()
                .and_then(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("cycles=")?.parse::<f64>().ok())
                })
                .map(|c| c * 1e6 / cntfrq),
        );
        let accepted = p.ost.as_ref().is_some_and(|o| o.status == 0);
        if accepted {
            samples
                .rss_mib_per_gib
                .push(rss_mib_per_gib(rss1 as i64 - rss0 as i64, size));
        } else {
            result = format!("refused (ost {:?})", p.ost.map(|o| o.status));
        }
        let u = s.unplug(&id).map_err(|e| e.to_string())?;
        samples.unplug_ms.push(u.elapsed.as_secs_f64() * 1e3);
    }
    Ok((samples, result))
}

/// Runs every driver the options ask for on each granule and mode of `plan`; records go to
/// `sink`, failures to stderr. Returns whether one failed.
pub fn run_matrix(qemu: &Path, o: &Opts, plan: &Coverage, tag: &Tag, sink: &mut Sink) -> bool {
    let mut failed = false;
    for (&granule, sizes) in plan.granules.iter().zip(&plan.sizes) {
        for &mode in &o.memmap_init {
            let t = Target {
                qemu,
                granule,
                cpu: &o.cpu,
                mode,
                reps: o.reps,
            };
            failed |= !run_cell(&t, o, sizes, &plan.dimm_sizes, tag, sink);
        }
    }
    failed
}

/// One granule and mode: the guest bench (also on `--tlbi-cpu` when the main CPU has
/// FEAT_TLBIRANGE), the boots, the DIMMs. Returns whether all went well.
fn run_cell(t: &Target<'_>, o: &Opts, sizes: &[u64], dimm_sizes: &[u64], tag: &Tag, sink: &mut Sink) -> bool {
    let (g, mode) = (t.granule, t.mode);
    let mut ok = true;
    let mut report = |what: String, r: Result<(), String>| {
        if let Err(e) = r {
            eprintln!("hotmem-bench: {what}: {e}");
            ok = false;
        }
    };
    let mut tlbirange = false;
    if !sizes.is_empty() {
        match guest_bench(t, sizes) {
            Ok(objects) => {
                tlbirange = objects.iter().any(|b| b.feat_tlbirange);
                if o.under_load {
                    let r = guest_bench_under(t, sizes, Load::Torture)
                        .map(|(loaded, ops)| print_under_load(&objects, &loaded, ops));
                    report(format!("{g} {} {mode} under torture", t.cpu), r);
                }
                if o.remote_node {
                    let r = guest_bench_under(t, sizes, Load::RemoteNode)
                        .map(|(remote, _)| print_remote_node(&objects, &remote));
                    report(format!("{g} {} {mode} on a remote node", t.cpu), r);
                }
                push_guest(sink, tag, t, objects);
            }
            Err(e) => report(format!("{g} {} {mode}", t.cpu), Err(e)),
        }
    }
    let small: Vec<u64> = sizes.iter().copied().filter(|&s| s <= GIB).collect();
    if tlbirange && o.tlbi_cpu != "none" && o.tlbi_cpu != o.cpu && !small.is_empty() {
        let tlbi = Target { cpu: &o.tlbi_cpu, ..*t };
        let r = guest_bench(&tlbi, &small).map(|objects| push_guest(sink, tag, &tlbi, objects));
        report(format!("{g} {} {mode}", o.tlbi_cpu), r);
    }
    let boot_mems: Vec<u64> = o.boot_mem.iter().flatten().copied().collect();
    if !boot_mems.is_empty() {
        let r = boot_bench(t, &boot_mems).map(|boots| push_boots(sink, tag, t, boots));
        report(format!("{g} {mode} boots"), r);
    }
    if !dimm_sizes.is_empty() {
        report(format!("{g} {mode} DIMMs"), dimm_bench(t, dimm_sizes, tag, sink));
    }
    let migrate: Vec<u64> = o.migrate_sizes.iter().flatten().copied().collect();
    if !migrate.is_empty() {
        report(
            format!("{g} {mode} migration"),
            super::migrate::migrate_bench(t, &migrate, tag, sink),
        );
    }
    if let (Granule::K64, Some(size)) = (g, o.dimm_big) {
        report(
            format!("{g} {mode} big DIMM {}", Size(size)),
            super::big_dimm::big_dimm_bench(t, size, tag, sink),
        );
    }
    for &size in o.vmem_sizes.iter().flatten() {
        report(
            format!("{g} {mode} virtio-mem {}", Size(size)),
            super::vmem::vmem_bench(t, size, tag, sink),
        );
    }
    ok
}

fn push_guest(sink: &mut Sink, tag: &Tag, t: &Target<'_>, objects: Vec<GuestBench>) {
    for bench in objects {
        sink.push(Record::Guest(GuestRecord {
            commit: tag.commit.clone(),
            run: tag.run,
            cpu: t.cpu.into(),
            mode: t.mode,
            bench,
        }));
    }
}

fn push_boots(sink: &mut Sink, tag: &Tag, t: &Target<'_>, boots: Vec<(u64, BootFigures)>) {
    let config = KernelConfig::default_for(t.granule);
    for (mem, (us, stages_us)) in boots {
        println!(
            "\n## {config} {} memmap_init={} boot to prompt with {}: {us:.0} µs (guest, median of {}); stages µs: {}",
            t.cpu,
            t.mode,
            Size(mem),
            t.reps,
            boot_stages::stages_text(&stages_us)
        );
        sink.push(Record::Boot(BootRecord {
            commit: tag.commit.clone(),
            run: tag.run,
            cpu: t.cpu.into(),
            mode: t.mode,
            config: config.to_string(),
            mem,
            reps: t.reps,
            time_to_prompt_us: us.round(),
            stages_us,
        }));
    }
}
