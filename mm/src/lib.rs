//! Portable memory management for hotmem, generic over the translation granule.
//!
//! Nothing here touches a register: the arch crate supplies descriptor encodings and TLB
//! maintenance through traits, so every algorithm also runs (and is tested) on the host for
//! the 4K, 16K and 64K granules and every VA size of the matrix.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod altmap;
pub mod buddy;
pub mod geometry;
pub mod hotplug;
pub mod migrate;
pub mod numa;
pub mod page;
pub mod pgtable;
pub mod size;
pub mod sparse;
pub mod teardown;
/// Host doubles of the hotplug platform (mm's own tests; never in the kernel).
#[cfg(all(feature = "testing", not(target_os = "none")))]
pub mod testing;
pub mod vmem;
pub mod vmemmap;

pub use geometry::{Config, Geometry};
