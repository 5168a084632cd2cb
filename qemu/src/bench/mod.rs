//! The benchmark driver's data (`hotmem-bench`, `qemu/src/bin/hotmem-bench.rs`):
//! - [`record`]: one line of `results.jsonl` (serde), its comparison key and metrics;
//! - [`compare`]: this run against an earlier `results.jsonl` (`--compare FILE`);
//! - [`plot`]: the scaling plot (SVG, `plotters`);
//! - [`opts`]: the command line (clap);
//! - [`plan`]: the options checked before a run, and the medians;
//! - [`docs`]: the generated section of `docs/performance.md` (`--write-docs`);
//! - [`preflight`]: every option checked against QEMU and the docs page before a run;
//! - [`drivers`]: the measurements, each booting QEMU ([`drivers::run_matrix`] runs them all);
//!   [`migrate`], [`vmem`] and [`big_dimm`] are the migration, virtio-mem and big DIMM ones
//!   (with their console parsers), [`target`] what they all share;
//! - [`sink`]: where the records go (`results.jsonl`);
//! - [`outputs`]: the plot, the comparison, the docs and the closing line after a run.
//!
//! The binary only parses the options and calls these. Arrows point down: `outputs`,
//! `preflight` → `drivers` → `migrate`, `vmem`, `big_dimm` → `target`, `sink` → `plan`, `opts`,
//! `record`; the run's drivers use
//! [`crate::session`] and [`crate::run`].

pub mod big_dimm;
pub mod boot_stages;
pub mod compare;
pub mod docs;
pub mod drivers;
pub mod machines;
pub mod migrate;
pub mod opts;
pub mod outputs;
pub mod plan;
pub mod plot;
pub mod preflight;
pub mod record;
pub mod sink;
pub mod target;
pub mod vmem;

pub use record::{DimmRecord, GuestBench, GuestRecord, Key, MemmapInit, Record};
