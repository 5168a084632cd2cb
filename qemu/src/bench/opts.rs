//! The options of the benchmark driver (`hotmem-bench`), here so that the docs test parses
//! every documented `hotmem-bench` command with the driver's own parser.

use crate::bench::MemmapInit;
use crate::config::Granule;
use crate::run::DEFAULT_CPU;
use clap::Parser;
use mm::size::parse_size;
use std::path::PathBuf;

/// Times memory hotplug in the guest and over QMP for each granule (see the source's header);
/// JSON lines are appended to <out>/results.jsonl.
#[derive(Parser)]
#[command(name = "hotmem-bench", args_override_self = true)]
pub struct Opts {
    /// one granule only (default: all three)
    #[arg(long, value_name = "4k|16k|64k")]
    pub granule: Option<Granule>,
    /// repetitions of each measurement (the median is reported)
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub reps: u64,
    /// sizes up to 1 GiB only
    #[arg(long)]
    pub quick: bool,
    /// in-guest sizes, comma-separated (default: one block, 1G, 4G, 16G, and 64G on 16K/64K);
    /// sizes below a granule's memory block are skipped
    #[arg(long, value_name = "SIZE,...", value_delimiter = ',', value_parser = size)]
    pub sizes: Vec<u64>,
    /// DIMM sizes, comma-separated (default: 128M,512M,1G,4G); `--dimm-sizes none`: no DIMM runs
    #[arg(long, value_name = "SIZE,...|none", value_delimiter = ',', value_parser = dimm_size)]
    pub dimm_sizes: Vec<Option<u64>>,
    /// QEMU CPU model of the runs (`-cpu`), recorded in every record
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CPU)]
    pub cpu: String,
    /// CPU without FEAT_TLBIRANGE for the TLBI comparison (sizes up to 1 GiB), or `none`
    #[arg(long, value_name = "NAME|none", default_value = "cortex-a76")]
    pub tlbi_cpu: String,
    /// memmap initialisation mode(s) to run, comma-separated (kernel `memmap_init=`)
    #[arg(
        long,
        value_name = "eager|deferred",
        value_delimiter = ',',
        default_value = "deferred,eager"
    )]
    pub memmap_init: Vec<MemmapInit>,
    /// RAM sizes to time the boot to the prompt with, comma-separated; `none`: no boot runs
    #[arg(long, value_name = "SIZE,...|none", value_delimiter = ',', value_parser = dimm_size, default_value = "1G,16G")]
    pub boot_mem: Vec<Option<u64>>,
    /// sizes of used memory to time the migration of (the kernel's `bench migrate`: offline of
    /// that much memory filled with movable pages), comma-separated, e.g. `128M,1G`; `none`:
    /// no migration runs
    #[arg(long, value_name = "SIZE,...|none", value_delimiter = ',', value_parser = dimm_size, default_value = "none")]
    pub migrate_sizes: Vec<Option<u64>>,
    /// virtio-mem sizes to grow to and shrink from, comma-separated, whole GiB up to 8G (per
    /// granule, a 2 MiB device block and a 1 GiB one: reps + 1 idle cycles, then reps shrinks
    /// of memory half filled with stress data); `none`: no virtio-mem runs
    #[arg(long, value_name = "SIZE,...|none", value_delimiter = ',', value_parser = dimm_size, default_value = "none")]
    pub vmem_sizes: Vec<Option<u64>>,
    /// on 64K, also plug one DIMM of this size once (backend reserve=off, lazily backed; room
    /// made for it) and record its plug, unplug and QEMU's RSS growth, e.g. `1T` (default: none)
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub dimm_big: Option<u64>,
    /// also run the in-guest hotplug bench with `torture` on 3 more CPUs (4 in all) and print
    /// it next to the idle figures, with the workers' operations per second
    #[arg(long)]
    pub under_load: bool,
    /// also run the in-guest hotplug bench with the memory on a remote NUMA node (node 1, no
    /// CPUs, distance 20; both CPUs on node 0) and print it next to the local figures
    #[arg(long)]
    pub remote_node: bool,
    /// compare this run with an earlier results.jsonl (per metric old, new, new/old; written
    /// to <out>/compare.json)
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// regenerate the generated section of docs/performance.md and docs/bench-scaling.svg
    /// (refused when the run covers less than the page's run: see --partial)
    #[arg(long)]
    pub write_docs: bool,
    /// with --write-docs: write the page even when this run has fewer granules, sizes,
    /// repetitions, modes, boot or DIMM sizes than the run that made it
    #[arg(long, requires = "write_docs")]
    pub partial: bool,
    /// directory of results.jsonl, bench-scaling.svg and compare.json
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn dimm_size(s: &str) -> Result<Option<u64>, String> {
    if s == "none" {
        Ok(None)
    } else {
        size(s).map(Some)
    }
}

impl Opts {
    /// The options of `args` (the words after `hotmem-bench`), or clap's refusal: what the
    /// driver's start does, without running anything.
    pub fn try_parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Opts, clap::Error> {
        Opts::try_parse_from(std::iter::once("hotmem-bench".to_string()).chain(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn options_parse() {
        Opts::command().debug_assert();
        let o = Opts::try_parse_args(
            ["--dimm-big", "1T", "--vmem-sizes", "1G,2G", "--migrate-sizes", "none"].map(String::from),
        )
        .unwrap();
        assert_eq!(o.dimm_big, Some(1 << 40));
        assert_eq!(o.vmem_sizes, [Some(1 << 30), Some(2 << 30)]);
        assert_eq!(o.migrate_sizes, [None]);
        let d = Opts::try_parse_args([]).unwrap();
        assert_eq!((d.dimm_big, d.vmem_sizes.as_slice()), (None, &[None][..]));
    }
}
