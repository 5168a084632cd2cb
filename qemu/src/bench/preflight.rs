//! The bench's options checked before anything is built or booted: against QEMU's CPU models
//! (`-cpu help`), the granules' memory blocks, and for `--write-docs` the page the run will
//! regenerate. The result is the run's [`Coverage`].

use std::path::Path;

use clap::Parser;

use super::docs;
use super::opts::Opts;
use super::plan::{self, Coverage, PlanError};
use crate::config::Granule;

const GIB: u64 = 1 << 30;

/// The memory block of granule `g` (the smallest size hot-added).
fn block_size(g: Granule) -> u64 {
    plan::memory_block(g)
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
pub fn check_options(o: &Opts, root: &Path, qemu: &Path, notes: &mut Vec<String>) -> Result<Coverage, PlanError> {
    let offered = qemu_cpus(qemu).map_err(PlanError::CpuList)?;
    plan::check_boot_mem(&o.boot_mem.iter().flatten().copied().collect::<Vec<_>>())?;
    plan::check_dimm_sizes(&dimm_sizes_of(o))?;
    plan::check_dimm_big(o.dimm_big)?;
    plan::check_vmem_sizes(&o.vmem_sizes.iter().flatten().copied().collect::<Vec<_>>())?;
    let run = coverage(o, &offered, notes)?;
    if o.tlbi_cpu != "none" {
        plan::check_cpu("--tlbi-cpu", &o.tlbi_cpu, &offered)?;
    }
    if o.write_docs {
        check_write_docs(o, root, &run, &offered)?;
    }
    Ok(run)
}
