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
//!    sizes the granule cannot use are reported as refused), with QEMU's RSS growth per GiB;
//! 4. with `--migrate-sizes`, the kernel's `bench migrate` (migration of used memory, batched and
//!    block by block); with `--vmem-sizes`, virtio-mem grow and shrink in sub-block and big-block
//!    mode; with `--dimm-big`, one large DIMM on 64K.
//!
//! Every result is also a JSON line (`hotmem_qemu::bench::Record`), printed and appended to
//! `<out>/results.jsonl` (default `target/bench/`), so runs can be compared across commits
//! (`--compare FILE` → a table and `<out>/compare.json`). The scaling plot is written to
//! `<out>/bench-scaling.svg`; `--write-docs` regenerates the generated section of
//! `docs/performance.md` and `docs/bench-scaling.svg` from the run.

use clap::Parser;
use hotmem_qemu::bench::drivers::run_matrix;
use hotmem_qemu::bench::opts::Opts;
use hotmem_qemu::bench::outputs::{finish, Finish};
use hotmem_qemu::bench::plan::{self, PlanError};
use hotmem_qemu::bench::preflight::check_options;
use hotmem_qemu::bench::sink::{Sink, Tag};
use hotmem_qemu::bench::Record;
use hotmem_qemu::discover::{qemu_once, InstallPolicy};
use hotmem_qemu::kernel::workspace_root;
use std::path::Path;
use std::time::Instant;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("hotmem-bench: {msg}");
    std::process::exit(1);
}

/// An option that cannot run: one line, exit status 2 (as clap's), nothing built or booted.
fn refuse(msg: impl std::fmt::Display) -> ! {
    eprintln!("hotmem-bench: {msg}");
    std::process::exit(2);
}

/// `--compare FILE`: its name and records (lines that are not records are skipped, and said).
fn read_old(p: &Path) -> (String, Vec<Record>) {
    match plan::read_compare(p) {
        Ok((recs, bad)) => {
            if bad > 0 {
                eprintln!("hotmem-bench: {}: {bad} line(s) are not records, skipped", p.display());
            }
            (p.display().to_string(), recs)
        }
        Err(e) => refuse(e),
    }
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
    let old = o.compare.as_deref().map(read_old);
    let qemu = qemu_once(InstallPolicy::IfRoot).unwrap_or_else(|e| fail(e));
    let mut notes = Vec::new();
    let run_plan = check_options(&o, &root, &qemu.path, &mut notes).unwrap_or_else(|e| refuse(e));
    for n in &notes {
        eprintln!("hotmem-bench: {n}");
    }
    let mut sink = Sink::open(&dir.join("results.jsonl")).unwrap_or_else(|e| refuse(e));
    let tag = Tag::now(&root);
    let t0 = Instant::now();
    let failed = run_matrix(&qemu.path, &o, &run_plan, &tag, &mut sink);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let f = Finish {
        opts: &o,
        root: &root,
        dir: &dir,
        qemu_version: &qemu.version,
        tag: &tag,
        sink: &sink,
        old: old.as_ref(),
        wall: t0.elapsed().as_secs_f64(),
        args: &args,
    };
    std::process::exit(finish(&f, failed));
}
