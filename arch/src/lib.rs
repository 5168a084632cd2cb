//! aarch64 support for hotmem: boot entry, exception vectors, MMU registers, stage-1
//! descriptors, TLB and cache maintenance.
//!
//! The pure parts (descriptor encodings, the TLB maintenance trait, register value
//! composition) build on any host so `mm` can be tested there; everything that executes
//! aarch64 instructions is compiled only for `target_arch = "aarch64"`.
#![no_std]

pub mod barrier;
pub mod boot;
pub mod cache;
pub mod cpu;
pub mod descriptor;
pub mod exception;
pub mod memops;
pub mod mmu;
pub mod mutant;
pub mod sysreg;
pub mod tlb;
