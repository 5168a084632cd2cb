//! The kernel proper: traps and interrupt dispatch, the console, secondary CPUs, locking,
//! and memory management ([`mem`]).

pub mod console;
pub mod deferred;
pub mod exit;
pub mod irq;
pub mod lockdep;
pub mod mem;
pub mod numa;
pub mod pci;
pub mod smp;
pub mod sync;
#[cfg(feature = "ktest")]
#[macro_use]
pub mod testcase;
pub mod trap;
pub mod virtio;
