//! The benchmark driver's data (`hotmem-bench`, `qemu/src/bin/hotmem-bench.rs`):
//! - [`record`]: one line of `results.jsonl` (serde), its comparison key and metrics;
//! - [`compare`]: this run against an earlier `results.jsonl` (`--compare FILE`);
//! - [`plot`]: the scaling plot (SVG, `plotters`);
//! - [`opts`]: the command line (clap);
//! - [`plan`]: the options checked before a run, and the medians;
//! - [`docs`]: the generated section of `docs/performance.md` (`--write-docs`).

pub mod compare;
pub mod docs;
pub mod opts;
pub mod plan;
pub mod plot;
pub mod record;

pub use record::{DimmRecord, GuestBench, GuestRecord, Key, MemmapInit, Record};
