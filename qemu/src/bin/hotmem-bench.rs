//! `cargo run -p hotmem-qemu --bin hotmem-bench --release -- [OPTIONS]` (`--help`; docs/performance.md)
//!
//! Boots each granule (default VA size, firmware mode) and prints one table per run:
//! 1. the kernel's own `bench` (guest cycles from CNTVCT for add/online/offline/remove of one
//!    block, 1, 4, 16 GiB — 64 GiB on 16K/64K — median of N, the memset bound, pre-existing
//!    memory per GiB with and without memmap on memory, TLBI instructions per removal) on RAM
//!    held back with `mem=1G` (a `reserve=off` backend: QEMU allocates lazily, the guest only
//!    touches the memmap), on `--cpu` (default `max,lpa2=off`), once per `--memmap-init` mode;
//! 2. the same in-guest removal on `--tlbi-cpu` (default `cortex-a76`, no FEAT_TLBIRANGE) at the
//!    sizes up to 1 GiB, to compare TLBI counts, when the main CPU has FEAT_TLBIRANGE;
//! 3. host wall time of real DIMM hotplug over QMP: `device_add` → the guest's `_OST` success,
//!    `device_del` → `DEVICE_DELETED`, for 128 MiB / 512 MiB / 1 GiB / 4 GiB DIMMs (median of N;
//!    sizes the granule cannot use are reported as refused).
//!
//! Every result is also a JSON line (`hotmem_qemu::bench::Record`), printed and appended to
//! `<out>/results.jsonl` (default `target/bench/`), so runs can be compared across commits
//! (`--compare FILE` → a table and `<out>/compare.json`). The scaling plot is written to
//! `<out>/bench-scaling.svg`; `--write-docs` regenerates the generated section of
//! `docs/performance.md` and `docs/bench-scaling.svg` from the run.

use clap::Parser;
use hotmem_qemu::bench::opts::Opts;
use hotmem_qemu::bench::plan::{self, Coverage, DimmSamples, PlanError};
use hotmem_qemu::bench::record::BootRecord;
use hotmem_qemu::bench::{compare, docs, plot, DimmRecord, GuestBench, GuestRecord, MemmapInit, Record};
use hotmem_qemu::config::{BootMode, Granule, KernelConfig};
use hotmem_qemu::discover::{qemu_once, InstallPolicy};
use hotmem_qemu::kernel::{build_kernel_once, workspace_root};
use hotmem_qemu::run::{Machine, QemuRun};
use hotmem_qemu::session::Session;
use mm::size::Size;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const GIB: u64 = 1 << 30;

fn block_size(g: Granule) -> u64 {
    if g == Granule::K64 {
        512 << 20
    } else {
        128 << 20
    }
}

fn median(v: &[f64]) -> f64 {
    plan::median(v).unwrap_or(0.0)
}

/// What every record of this run carries.
struct Tag {
    commit: String,
    run: u64,
}

/// The run's records: printed, appended to results.jsonl, kept for the plot, docs and comparison.
struct Sink {
    file: std::fs::File,
    records: Vec<Record>,
    /// Lines appended to results.jsonl, and the first write error.
    appended: usize,
    error: Option<String>,
}

impl Sink {
    fn push(&mut self, r: Record) {
        let line = serde_json::to_string(&r).expect("a bench record serialises");
        println!("{line}");
        match writeln!(self.file, "{line}") {
            Ok(()) => self.appended += 1,
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
            }
        }
        self.records.push(r);
    }
}

/// `memmap_init=MODE` on the command line; a kernel that does not know the option says so at
/// boot and runs eager (the only mode it has), which is only an error when deferred was asked.
fn check_mode(console: &str, mode: MemmapInit) -> Result<(), String> {
    if mode != MemmapInit::Eager && console.contains("unknown option 'memmap_init=") {
        return Err(format!(
            "this kernel has no memmap_init={mode} (it ignored the option); run with --memmap-init eager"
        ));
    }
    Ok(())
}

/// A run of `kernel` on `cpu` with `mem` bytes of RAM behind a `reserve=off` backend: QEMU
/// allocates only what the guest touches, so sizes far beyond the host's memory are cheap.
fn lazy_ram_run(qemu: &Path, kernel: hotmem_qemu::kernel::Kernel, cpu: &str, mem: u64) -> QemuRun {
    let mem = Size(mem).to_string();
    QemuRun::new(kernel)
        .qemu(qemu)
        .machine(Machine {
            cpu: cpu.into(),
            mem: mem.clone(),
            ..Machine::default()
        })
        .args([
            "-object".to_string(),
            format!("memory-backend-ram,id=ram0,size={mem},reserve=off"),
            "-machine".into(),
            "memory-backend=ram0".into(),
        ])
}

/// The kernel's `bench` on held-back RAM; returns its `bench-json` objects.
fn guest_bench(
    qemu: &Path,
    g: Granule,
    cpu: &str,
    mode: MemmapInit,
    sizes: &[u64],
    reps: u64,
) -> Result<Vec<GuestBench>, String> {
    let cfg = KernelConfig::default_for(g);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let max = sizes.iter().copied().max().unwrap_or(GIB);
    let ram = GIB + max;
    let run = lazy_ram_run(qemu, kernel, cpu, ram)
        .boot(BootMode::Firmware)
        .append(Some(format!("mem=1G memmap_init={mode}")))
        .timeout(Some(Duration::from_secs(600)));
    let sizes: Vec<String> = sizes.iter().map(|&s| Size(s).to_string()).collect();
    let cmd = format!("bench reps={reps} {}", sizes.join(" "));
    let t0 = Instant::now();
    let out = run.run(&[cmd.as_str(), "poweroff"]).map_err(|e| e.to_string())?;
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
    Ok(objects)
}

/// Guest time to the prompt with `mem` of RAM (a `reserve=off` backend: QEMU allocates only
/// what the guest touches), median of `reps` boots.
/// Guest time to the prompt, median of `reps` boots per size in `mems`. The boots go round the
/// sizes (1 GiB, 16 GiB, 1 GiB, ...) so host drift lands on every size alike.
fn boot_bench(
    qemu: &Path,
    g: Granule,
    cpu: &str,
    mode: MemmapInit,
    mems: &[u64],
    reps: u64,
) -> Result<Vec<(u64, f64)>, String> {
    let cfg = KernelConfig::default_for(g);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let mut times = vec![Vec::new(); mems.len()];
    for _ in 0..reps {
        for (&mem, t) in mems.iter().zip(&mut times) {
            let run = lazy_ram_run(qemu, kernel.clone(), cpu, mem)
                .boot(BootMode::Kernel)
                .append(Some(format!("memmap_init={mode}")))
                .timeout(Some(Duration::from_secs(300)));
            let out = run.run(&["poweroff"]).map_err(|e| e.to_string())?;
            let m = Size(mem);
            if !out.success() {
                return Err(format!("boot with {m} failed: {}\n{}", out.describe(), out.tail(20)));
            }
            check_mode(&out.console, mode)?;
            let us = out
                .console
                .lines()
                .find_map(|l| l.trim().strip_prefix("boot: time_to_prompt_us="))
                .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
                .ok_or_else(|| format!("no `boot: time_to_prompt_us=` line\n{}", out.tail(20)))?;
            t.push(us);
        }
    }
    Ok(mems.iter().copied().zip(times.iter().map(|t| median(t))).collect())
}

/// Host wall time of DIMM plug/unplug over QMP.
#[allow(clippy::too_many_arguments)]
fn dimm_bench(
    qemu: &Path,
    g: Granule,
    cpu: &str,
    mode: MemmapInit,
    reps: u64,
    sizes: &[u64],
    tag: &Tag,
    sink: &mut Sink,
) -> Result<(), String> {
    let cfg = KernelConfig::default_for(g);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let run = QemuRun::new(kernel)
        .qemu(qemu)
        .machine(Machine {
            cpu: cpu.into(),
            mem: "1G,slots=8,maxmem=9G".into(),
            ..Machine::default()
        })
        .boot(BootMode::Firmware)
        .append(Some(format!("memmap_init={mode}")))
        .timeout(Some(Duration::from_secs(600)));
    let mut s = Session::start(run).map_err(|e| e.to_string())?;
    let boot = s.boot().map_err(|e| e.to_string())?;
    check_mode(&boot, mode)?;
    let cntfrq = boot
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cntfrq=")?.parse::<f64>().ok())
        .ok_or("no cntfrq= in the boot log")?;
    println!("\n## {cfg} {cpu} memmap_init={mode} DIMM hotplug over QMP (host wall time, median of {reps})");
    println!(
        "{:>9} {:>12} {:>14} {:>14} {:>10}",
        "size", "plug_ms", "guest_add_us", "unplug_ms", "result"
    );
    for &size in sizes {
        let mut samples = DimmSamples::default();
        let mut result = String::from("ok");
        for i in 0..reps {
            let id = format!("b{}x{}", size >> 20, i);
            let p = s.plug(size, Some(&id)).map_err(|e| e.to_string())?;
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
            if !accepted {
                result = format!("refused (ost {:?})", p.ost.map(|o| o.status));
            }
            let u = s.unplug(&id).map_err(|e| e.to_string())?;
            samples.unplug_ms.push(u.elapsed.as_secs_f64() * 1e3);
        }
        let (pm, um, gm) = plan::dimm_medians(&samples);
        println!(
            "{:>9} {:>12.1} {:>14} {:>14.1} {:>10}",
            Size(size).to_string(),
            pm,
            gm.map_or("-".into(), |v| format!("{v:.0}")),
            um,
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
        }));
    }
    let _ = s.guest_exit("poweroff");
    Ok(())
}

/// The in-guest sizes of granule `g` (checked: [`plan::check_sizes`]; skipped ones noted).
fn sizes_for(g: Granule, o: &Opts, notes: &mut Vec<String>) -> Result<Vec<u64>, PlanError> {
    let bs = block_size(g);
    let mut sizes = if o.sizes.is_empty() {
        let mut v = vec![bs, GIB];
        v.extend([4 * GIB, 16 * GIB]);
        if g != Granule::K4 {
            v.push(64 * GIB);
        }
        v
    } else {
        o.sizes.clone()
    };
    if o.quick {
        sizes.retain(|&s| s <= GIB);
    }
    plan::check_sizes(g, bs, &sizes, notes)
}

fn dimm_sizes_of(o: &Opts) -> Vec<u64> {
    if o.dimm_sizes.is_empty() {
        vec![128 << 20, 512 << 20, GIB, 4 * GIB]
    } else {
        o.dimm_sizes.iter().flatten().copied().collect()
    }
}

/// What the options will run: granules on `--cpu`, their sizes, modes, boot and DIMM sizes.
fn coverage(o: &Opts, offered: &[String], notes: &mut Vec<String>) -> Result<Coverage, PlanError> {
    let lacks = plan::check_cpu("--cpu", &o.cpu, offered)?;
    let granules = plan::granules_for(o.granule, &o.cpu, lacks, notes)?;
    let sizes = granules
        .iter()
        .map(|&g| sizes_for(g, o, notes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Coverage {
        granules,
        sizes,
        reps: o.reps,
        modes: o.memmap_init.iter().map(|m| m.name().to_string()).collect(),
        boot_mems: o.boot_mem.iter().flatten().copied().collect(),
        dimm_sizes: dimm_sizes_of(o),
    })
}

/// `qemu-system-aarch64 -M virt -cpu help`: the CPU models QEMU offers.
fn qemu_cpus(qemu: &Path) -> Result<Vec<String>, String> {
    let out = std::process::Command::new(qemu)
        .args(["-M", "virt", "-cpu", "help"])
        .output()
        .map_err(|e| format!("{} -cpu help: {e}", qemu.display()))?;
    let models = plan::parse_cpu_help(&String::from_utf8_lossy(&out.stdout));
    if models.is_empty() {
        return Err(format!("{} -M virt -cpu help listed no CPU models", qemu.display()));
    }
    Ok(models)
}

/// `--write-docs` before the run: both files writable, the page's markers present, and the run
/// covering what the page's own run covered (unless `--partial`).
fn check_write_docs(o: &Opts, root: &Path, run: &Coverage, offered: &[String]) -> Result<(), PlanError> {
    let page = root.join("docs/performance.md");
    let svg = root.join("docs/bench-scaling.svg");
    for p in [&page, &svg] {
        plan::check_writable(p).map_err(|reason| PlanError::DocsNotWritable {
            path: p.clone(),
            reason,
        })?;
    }
    let text = std::fs::read_to_string(&page).map_err(|e| PlanError::DocsNotWritable {
        path: page.clone(),
        reason: e.to_string(),
    })?;
    docs::replace_section(&text, "").map_err(|e| PlanError::DocsNotWritable {
        path: page.clone(),
        reason: e.to_string(),
    })?;
    if o.partial {
        return Ok(());
    }
    // The page's run, read back through these options; a page without one covers nothing.
    let Some(args) = plan::page_options(&text) else {
        return Ok(());
    };
    let Ok(page_opts) = Opts::try_parse_from(std::iter::once("hotmem-bench".to_string()).chain(args)) else {
        return Ok(());
    };
    let Ok(page_run) = coverage(&page_opts, offered, &mut Vec::new()) else {
        return Ok(());
    };
    let lacks = run.lacks(&page_run);
    if lacks.is_empty() {
        return Ok(());
    }
    Err(PlanError::Partial(plan::describe_lacks(&lacks)))
}

/// Every option checked, nothing built or booted yet: the run's coverage, or the first error.
fn check_options(o: &Opts, root: &Path, qemu: &Path, notes: &mut Vec<String>) -> Result<Coverage, PlanError> {
    let offered = qemu_cpus(qemu).map_err(PlanError::CpuList)?;
    plan::check_boot_mem(&o.boot_mem.iter().flatten().copied().collect::<Vec<_>>())?;
    plan::check_dimm_sizes(&dimm_sizes_of(o))?;
    let run = coverage(o, &offered, notes)?;
    if o.tlbi_cpu != "none" {
        plan::check_cpu("--tlbi-cpu", &o.tlbi_cpu, &offered)?;
    }
    if o.write_docs {
        check_write_docs(o, root, &run, &offered)?;
    }
    Ok(run)
}

fn git(root: &Path, args: &[&str]) -> String {
    std::process::Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)` → `QEMU 10.0.2`.
fn qemu_name(version: &str) -> String {
    let v = version.split(" (").next().unwrap_or(version);
    v.replace("emulator version ", "")
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("hotmem-bench: {msg}");
    std::process::exit(1);
}

/// An option that cannot run: one line, exit status 2 (as clap's), nothing built or booted.
fn refuse(msg: impl std::fmt::Display) -> ! {
    eprintln!("hotmem-bench: {msg}");
    std::process::exit(2);
}

fn main() {
    // Bad options: clap's message and exit status 2.
    let o = Opts::parse();
    let root = workspace_root();
    let dir = o.out.clone().unwrap_or_else(|| root.join("target/bench"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        refuse(PlanError::Out {
            path: dir.clone(),
            reason: e.to_string(),
        });
    }
    // Read the earlier results first: the file may be the one this run appends to.
    let old = o.compare.as_ref().map(|p| match plan::read_compare(p) {
        Ok((recs, bad)) => {
            if bad > 0 {
                eprintln!("hotmem-bench: {}: {bad} line(s) are not records, skipped", p.display());
            }
            (p.display().to_string(), recs)
        }
        Err(e) => refuse(e),
    });
    let qemu = qemu_once(InstallPolicy::IfRoot).unwrap_or_else(|e| fail(e));
    let mut notes = Vec::new();
    let run_plan = check_options(&o, &root, &qemu.path, &mut notes).unwrap_or_else(|e| refuse(e));
    for n in &notes {
        eprintln!("hotmem-bench: {n}");
    }
    let results = dir.join("results.jsonl");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results)
        .unwrap_or_else(|e| {
            refuse(PlanError::Out {
                path: results.clone(),
                reason: e.to_string(),
            })
        });
    let mut sink = Sink {
        file,
        records: Vec::new(),
        appended: 0,
        error: None,
    };
    let tag = Tag {
        commit: git(&root, &["describe", "--always", "--dirty", "--abbrev=7"]),
        run: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let dimm_sizes = run_plan.dimm_sizes.clone();
    let t0 = Instant::now();
    let mut failed = false;
    let guest_record = |cpu: &str, mode, bench| {
        Record::Guest(GuestRecord {
            commit: tag.commit.clone(),
            run: tag.run,
            cpu: cpu.into(),
            mode,
            bench,
        })
    };
    for (&g, sizes) in run_plan.granules.iter().zip(&run_plan.sizes) {
        for &mode in &o.memmap_init {
            let mut tlbirange = false;
            if !sizes.is_empty() {
                match guest_bench(&qemu.path, g, &o.cpu, mode, sizes, o.reps) {
                    Ok(objects) => {
                        tlbirange = objects.iter().any(|b| b.feat_tlbirange);
                        for b in objects {
                            sink.push(guest_record(&o.cpu, mode, b));
                        }
                    }
                    Err(e) => {
                        eprintln!("hotmem-bench: {g} {} {mode}: {e}", o.cpu);
                        failed = true;
                    }
                }
            }
            let small: Vec<u64> = sizes.iter().copied().filter(|&s| s <= GIB).collect();
            if tlbirange && o.tlbi_cpu != "none" && o.tlbi_cpu != o.cpu && !small.is_empty() {
                match guest_bench(&qemu.path, g, &o.tlbi_cpu, mode, &small, o.reps) {
                    Ok(objects) => {
                        for b in objects {
                            sink.push(guest_record(&o.tlbi_cpu, mode, b));
                        }
                    }
                    Err(e) => {
                        eprintln!("hotmem-bench: {g} {} {mode}: {e}", o.tlbi_cpu);
                        failed = true;
                    }
                }
            }
            let boot_mems: Vec<u64> = o.boot_mem.iter().flatten().copied().collect();
            if !boot_mems.is_empty() {
                match boot_bench(&qemu.path, g, &o.cpu, mode, &boot_mems, o.reps) {
                    Ok(boots) => {
                        for (mem, us) in boots {
                            println!(
                                "\n## {} {} memmap_init={mode} boot to prompt with {}: {us:.0} µs (guest, median of {})",
                                KernelConfig::default_for(g),
                                o.cpu,
                                Size(mem),
                                o.reps
                            );
                            sink.push(Record::Boot(BootRecord {
                                commit: tag.commit.clone(),
                                run: tag.run,
                                cpu: o.cpu.clone(),
                                mode,
                                config: KernelConfig::default_for(g).to_string(),
                                mem,
                                reps: o.reps,
                                time_to_prompt_us: us.round(),
                            }));
                        }
                    }
                    Err(e) => {
                        eprintln!("hotmem-bench: {g} {mode} boots: {e}");
                        failed = true;
                    }
                }
            }
            if !dimm_sizes.is_empty() {
                if let Err(e) = dimm_bench(&qemu.path, g, &o.cpu, mode, o.reps, &dimm_sizes, &tag, &mut sink) {
                    eprintln!("hotmem-bench: {g} {mode} DIMMs: {e}");
                    failed = true;
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();

    // The scaling plot: the main CPU's in-guest records.
    let plotted: Vec<GuestRecord> = sink
        .records
        .iter()
        .filter_map(Record::as_guest)
        .filter(|g| g.cpu == o.cpu)
        .cloned()
        .collect();
    let reps = plotted.first().map_or(o.reps, |g| g.bench.reps);
    let title = format!(
        "hotmem {}: guest time of one hot-add cycle (CNTVCT, median of {reps}, memmap on memory), -cpu {}, {}",
        tag.commit,
        o.cpu,
        qemu_name(&qemu.version)
    );
    let svg_path = dir.join("bench-scaling.svg");
    // What was written where, for the closing line.
    let mut written: Vec<String> = Vec::new();
    let svg = match plot::scaling_svg(&plotted, &title) {
        Ok(svg) => match std::fs::write(&svg_path, &svg) {
            Ok(()) => {
                written.push(format!("plot {}", svg_path.display()));
                Some(svg)
            }
            Err(e) => {
                eprintln!("hotmem-bench: {}: {e}", svg_path.display());
                failed = true;
                None
            }
        },
        Err(e) => {
            eprintln!("hotmem-bench: plot: {e}");
            failed = true;
            None
        }
    };

    if let Some((name, old)) = &old {
        let c = compare::compare(name, old, &sink.records);
        println!("\n## compared with {name} (ratio = new / old)\n{}", compare::table(&c));
        let path = dir.join("compare.json");
        let json = serde_json::to_string_pretty(&c).expect("a comparison serialises");
        if let Err(e) = std::fs::write(&path, json + "\n") {
            eprintln!("hotmem-bench: {}: {e}", path.display());
            failed = true;
        } else {
            println!("comparison written to {}", path.display());
            written.push(format!("comparison {}", path.display()));
        }
    }

    if o.write_docs {
        match (failed, &svg) {
            (false, Some(svg)) => {
                let args: Vec<String> = std::env::args().skip(1).collect();
                let info = docs::RunInfo {
                    commit: tag.commit.clone(),
                    date: utc_date(),
                    qemu: qemu_name(&qemu.version),
                    options: args.join(" "),
                    wall_s: wall,
                    plot: "bench-scaling.svg".into(),
                };
                let page = root.join("docs/performance.md");
                let done = std::fs::read_to_string(&page)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        docs::replace_section(&text, &docs::render(&sink.records, &info)).map_err(|e| e.to_string())
                    })
                    .and_then(|text| std::fs::write(&page, text).map_err(|e| e.to_string()))
                    .and_then(|()| std::fs::write(root.join("docs/bench-scaling.svg"), svg).map_err(|e| e.to_string()));
                match done {
                    Ok(()) => {
                        println!("docs/performance.md and docs/bench-scaling.svg regenerated");
                        written.push("docs/performance.md and docs/bench-scaling.svg".into());
                    }
                    Err(e) => {
                        eprintln!("hotmem-bench: --write-docs: {}: {e}", page.display());
                        failed = true;
                    }
                }
            }
            _ => eprintln!("hotmem-bench: --write-docs: the run failed, docs left as they were"),
        }
    }
    if let Some(e) = &sink.error {
        eprintln!("hotmem-bench: {}: {e}", results.display());
        failed = true;
    }
    let lines = match sink.appended {
        0 => format!("no JSON line appended to {}", results.display()),
        n => format!("{n} JSON line(s) appended to {}", results.display()),
    };
    written.insert(0, lines);
    println!(
        "\nhotmem-bench: {} in {wall:.0} s; {}",
        if failed { "failed" } else { "done" },
        written.join("; ")
    );
    std::process::exit(if failed { 1 } else { 0 });
}
