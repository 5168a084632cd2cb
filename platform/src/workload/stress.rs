//! `stress`: movable memory filled with checksummed patterns, verified through the movable
//! window (so a migration that loses or misplaces data shows up as a bad page).
//!
//! Stress allocations are the live entries of the movable window (nothing else allocates
//! movable memory): each is one page whose first word is its pattern seed, so the only
//! bookkeeping is the window's handle table.

use crate::boot::layout::{self, PAGE_SIZE};
use crate::kernel::mem::movable::{self, MovableError};
use mm::numa::{NodeId, MAX_NUMNODES};

/// The pattern word `i` of a stress allocation with `seed`.
fn pattern(seed: u64, i: u64) -> u64 {
    (seed ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StressReport {
    pub allocations: u64,
    pub bytes: u64,
    pub verified: u64,
    pub bad: u64,
}

/// Why `stress <size>` stopped early (the allocations made so far are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // each says what ran out
pub enum StressError {
    /// No free movable page left after `done` allocations.
    OutOfMemory { done: u64 },
    /// The handle table (kernel heap) cannot grow past `done` allocations.
    OutOfBookkeeping { done: u64 },
    /// The movable window is full after `done` allocations.
    OutOfWindow { done: u64 },
}

impl core::fmt::Display for StressError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StressError::OutOfMemory { done } => write!(f, "out of memory after {done} allocations"),
            StressError::OutOfBookkeeping { done } => write!(
                f,
                "the kernel heap cannot track more than {done} allocations (stress at most {} at once)",
                layout::Size(done * PAGE_SIZE)
            ),
            StressError::OutOfWindow { done } => write!(
                f,
                "the movable window is full after {done} allocations (stress at most {} at once)",
                layout::Size(layout::MOVABLE_SIZE)
            ),
        }
    }
}

/// Allocate `bytes` of movable memory (order-0 pages, each at its window VA) from `node` first
/// (default: the calling CPU's node), fill with checksummed patterns and verify.
pub fn fill(bytes: u64, node: Option<NodeId>) -> Result<StressReport, StressError> {
    let n = bytes.div_ceil(PAGE_SIZE);
    let nid = node.unwrap_or_else(crate::kernel::numa::this_node);
    let mut r = StressReport::default();
    for done in 0..n {
        movable::alloc_page_on(nid, |h, d| {
            let seed = arch::cpu::counter() ^ ((h.0 as u64) << 32);
            d[0] = seed;
            for (i, w) in d.iter_mut().enumerate().skip(1) {
                *w = pattern(seed, i as u64);
            }
        })
        .map_err(|e| match e {
            MovableError::NoMemory => StressError::OutOfMemory { done },
            MovableError::NoBookkeeping => StressError::OutOfBookkeeping { done },
            MovableError::WindowFull => StressError::OutOfWindow { done },
        })?;
        r.allocations += 1;
        r.bytes += PAGE_SIZE;
    }
    let v = verify();
    r.verified = v.verified;
    r.bad = v.bad;
    Ok(r)
}

/// Whether a stress page's pattern is intact (`d[0]` is its seed).
fn intact(d: &[u64]) -> bool {
    d.iter().enumerate().skip(1).all(|(i, &w)| w == pattern(d[0], i as u64))
}

/// Check every live stress allocation against its pattern, reading through the window (any
/// CPU may call it); a page whose window VA faults counts as bad.
pub fn verify() -> StressReport {
    let mut r = StressReport::default();
    for i in 0..slots() {
        let Some(ok) = verify_one(i) else {
            continue;
        };
        r.allocations += 1;
        r.bytes += PAGE_SIZE;
        if ok {
            r.verified += 1;
        } else {
            r.bad += 1;
        }
    }
    r
}

/// Check stress allocation `i` through its window VA from any CPU: `None` if no allocation
/// has that index, `Some(false)` if its data is wrong or its window VA faults.
pub fn verify_one(i: usize) -> Option<bool> {
    movable::with_page(i, |d| intact(d)).map(|r| r.unwrap_or(false))
}

/// Pages of live stress allocations per node (where migration left them).
pub fn pages_per_node() -> [u64; MAX_NUMNODES] {
    movable::pages_per_node()
}

/// Stress allocation indices are below this.
pub fn slots() -> usize {
    movable::slot_count()
}

/// Pages of live stress allocations in `[pfn, pfn + nr)` (in-guest tests).
#[cfg(feature = "ktest")]
pub fn pages_in(pfn: u64, nr: u64) -> u64 {
    movable::pages_in(pfn, nr)
}

/// Free every stress allocation; returns how many there were.
pub fn free() -> u64 {
    movable::free_all()
}
