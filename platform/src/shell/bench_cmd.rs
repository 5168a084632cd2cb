//! The `bench` command (the measurement itself is [`super::bench`]).

use super::*;
use parse::shell::{bench_args, bench_sizes};

pub(super) fn cmd_bench(args: &[&str]) -> Result<(), ShellError> {
    if let ["migrate", rest @ ..] = args {
        return cmd_bench_migrate(rest);
    }
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

/// `bench migrate [batch=PAGES] [full=TLBIS] <size>...` (see [`super::bench_migrate`]).
fn cmd_bench_migrate(mut args: &[&str]) -> Result<(), ShellError> {
    let mut knobs = crate::shell::bench_migrate::Knobs {
        batch: crate::kernel::mem::movable::MIGRATE_BATCH_BYTES >> layout::PAGE_SHIFT,
        full_above: crate::kernel::mem::movable::DEFAULT_FULL_FLUSH_ABOVE,
    };
    while let Some((first, rest)) = args.split_first() {
        if let Some(n) = first.strip_prefix("batch=") {
            knobs.batch = parse::shell::parse_u64(n)?;
        } else if let Some(n) = first.strip_prefix("full=") {
            knobs.full_above = parse::shell::parse_u64(n)?;
        } else {
            break;
        }
        args = rest;
    }
    let sizes = bench_sizes(args)?;
    if sizes.is_empty() || !(1..=mm::migrate::MIGRATE_BATCH_PAGES).contains(&knobs.batch) {
        return Err(ShellError::Usage);
    }
    if let Some(bad) = sizes.iter().find(|&&s| s == 0 || s % layout::PAGE_SIZE != 0) {
        println!(
            "bench-migrate: error: size {bad:#x} is not a non-zero multiple of the page size ({})",
            layout::Size(layout::PAGE_SIZE)
        );
        return Ok(());
    }
    if let Err(e) = crate::shell::bench_migrate::run(&sizes, knobs) {
        println!("bench-migrate: error: {e}");
    }
    Ok(())
}
