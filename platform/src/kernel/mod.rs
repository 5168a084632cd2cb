//! The kernel proper: traps and interrupt dispatch, the console, secondary CPUs, locking,
//! and memory management ([`mem`]).

pub mod console;
pub mod mem;
pub mod smp;
pub mod sync;
pub mod trap;
