//! The `bench` command (the measurement itself is [`super::bench`]).

use super::*;
use parse::shell::{bench_args, bench_sizes};

pub(super) fn cmd_bench(args: &[&str]) -> Result<(), ShellError> {
    let (reps, sizes) = bench_args(args)?;
    if reps > crate::shell::bench::MAX_REPS {
        println!(
            "bench: error: reps={reps} is more than {} (every rep adds, onlines, offlines and removes each size twice)",
            crate::shell::bench::MAX_REPS
        );
        return Ok(());
    }
    let sizes = bench_sizes(sizes)?;
    let block = layout::G.section_size();
    if let Some(bad) = sizes.iter().find(|&&s| s == 0 || s % block != 0) {
        println!(
            "bench: error: size {bad:#x} is not a non-zero multiple of the memory block size ({})",
            layout::Size(block)
        );
        return Ok(());
    }
    if let Err(e) = crate::shell::bench::run(&sizes, reps) {
        println!("bench: error: {e}");
    }
    Ok(())
}
