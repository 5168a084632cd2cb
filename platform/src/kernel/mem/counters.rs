//! Page and byte counters of the memory subsystem, shown by `meminfo` and checked by the tests.

use core::sync::atomic::AtomicU64;

/// Pages of boot RAM (the hotplugged memory is counted by the hotplug state).
pub static RAM_PAGES: AtomicU64 = AtomicU64::new(0);
/// Page-table pages of the kernel page table (TTBR1), the early pool included.
pub static PT_PAGES: AtomicU64 = AtomicU64::new(0);
/// Bytes of memmap populated (struct pages backed by memory).
pub static MEMMAP_BYTES: AtomicU64 = AtomicU64::new(0);
/// Of those, backed by the memory they describe (altmap).
pub static MEMMAP_SELF_HOSTED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Guest cycles spent populating and initialising the boot memmap.
pub static BOOT_MEMMAP_CYCLES: AtomicU64 = AtomicU64::new(0);
