//! The `bench` command (the measurement itself is [`super::bench`]).

use super::*;

pub(super) fn cmd_bench(args: &[&str]) -> Result<(), ShellError> {
    let (reps, sizes) = match args {
        [] => return Err(ShellError::Usage),
        [first, rest @ ..] if first.starts_with("reps=") => (parse_u64(&first[5..])? as usize, rest),
        all => (5, all),
    };
    if sizes.is_empty() || reps == 0 {
        return Err(ShellError::Usage);
    }
    if reps > crate::shell::bench::MAX_REPS {
        println!(
            "bench: error: reps={reps} is more than {} (every rep adds, onlines, offlines and removes each size twice)",
            crate::shell::bench::MAX_REPS
        );
        return Ok(());
    }
    let sizes = sizes
        .iter()
        .map(|s| parse_u64(s))
        .collect::<Result<alloc::vec::Vec<u64>, _>>()?;
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
