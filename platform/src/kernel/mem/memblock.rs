//! Boot-time physical memory (Linux `memblock`): the free ranges of RAM before the page
//! allocator exists. It backs the boot memmap and early page tables; whatever it still holds
//! when the memmap is ready is handed to the buddy allocator, and it is retired.

use crate::{
    boot::dtb::Range,
    boot::early,
    boot::layout::{PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::counters,
    kernel::sync::IrqSafeLock,
};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

pub struct Memblock {
    /// Free ranges, sorted, disjoint.
    free: Vec<Range>,
    /// Bytes handed out (kept reserved for good: memmap, boot page tables).
    pub allocated: u64,
    /// Allocations end at or below this address (Linux `memblock_set_current_limit`): while
    /// the linear map is built, only RAM it already covers can hold new page tables.
    limit: u64,
}

impl Memblock {
    pub const fn new() -> Self {
        Memblock {
            free: Vec::new(),
            allocated: 0,
            limit: u64::MAX,
        }
    }

    /// Start from `ram` minus `reserved`.
    pub fn init(&mut self, ram: &[Range], reserved: &[Range]) {
        let mut free: Vec<Range> = ram.to_vec();
        for r in reserved {
            free = free.into_iter().flat_map(|f| subtract(f, *r)).collect();
        }
        free.sort_by_key(|r| r.base);
        self.free = free;
    }

    /// Allocate only below `limit` from now on.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// `size` bytes aligned to `align`, top-down (like Linux, so low memory stays free), below
    /// the current limit.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        self.alloc_within(size, align, 0, u64::MAX)
    }

    /// As [`alloc`](Self::alloc), inside `[lo, hi)` (a node's memory: Linux
    /// `memblock_alloc_try_nid` without the fallback, which is the caller's).
    pub fn alloc_within(&mut self, size: u64, align: u64, lo: u64, hi: u64) -> Option<u64> {
        for i in (0..self.free.len()).rev() {
            let r = self.free[i];
            let Some(top) = r.end().min(self.limit).min(hi).checked_sub(size) else {
                continue;
            };
            let base = top & !(align - 1);
            if base < r.base || base < lo {
                continue;
            }
            let pieces: Vec<Range> = subtract(r, Range { base, size }).collect();
            self.free.splice(i..=i, pieces);
            self.allocated += size;
            return Some(base);
        }
        None
    }

    /// Hand out the remaining free ranges (the buddy takes them) and retire.
    pub fn take_all(&mut self) -> Vec<Range> {
        core::mem::take(&mut self.free)
    }
}

/// `a` minus `b`: zero, one or two ranges.
pub fn subtract(a: Range, b: Range) -> impl Iterator<Item = Range> {
    let overlap = b.base < a.end() && b.end() > a.base;
    let left = Range {
        base: a.base,
        size: b.base.saturating_sub(a.base).min(a.size),
    };
    let rs = b.end().clamp(a.base, a.end());
    let right = Range {
        base: rs,
        size: a.end() - rs,
    };
    let parts = if overlap {
        [Some(left), Some(right)]
    } else {
        [Some(a), None]
    };
    parts.into_iter().flatten().filter(|r| r.size > 0)
}

// ---------------------------------------------------------------------------------------------
// The kernel's memblock

/// The kernel's memblock: the RAM the boot memmap and early page tables come from, until
/// [`take_all`] hands the rest to the page allocator.
static MEMBLOCK: IrqSafeLock<Memblock> = IrqSafeLock::new("memblock", Memblock::new());

/// Memblock: all RAM minus the image, the DTB and DT reservations. Starts the RAM and
/// page-table counters.
pub fn init(ram: &[Range], reserved: &[Range]) {
    MEMBLOCK.lock().init(ram, reserved);
    let mut total = 0;
    for r in ram {
        total += (align_down(r.end(), PAGE_SIZE) - align_up(r.base, PAGE_SIZE)) >> PAGE_SHIFT;
    }
    counters::RAM_PAGES.store(total, Ordering::Relaxed);
    counters::PT_PAGES.store(early::EARLY_POOL_USED.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
}

/// `size` bytes aligned to `align` from the kernel's memblock ([`Memblock::alloc`]).
pub fn alloc(size: u64, align: u64) -> Option<u64> {
    MEMBLOCK.lock().alloc(size, align)
}

/// `size` bytes aligned to `align` from `node`'s memory (`[lo, hi)`), or anywhere when it has
/// none left (Linux `memblock_alloc_try_nid`).
pub fn alloc_try_node(size: u64, align: u64, node: Range) -> Option<u64> {
    let mut m = MEMBLOCK.lock();
    m.alloc_within(size, align, node.base, node.end())
        .or_else(|| m.alloc(size, align))
}

/// Allocate only below `limit` from now on ([`Memblock::set_limit`]).
pub fn set_limit(limit: u64) {
    MEMBLOCK.lock().set_limit(limit);
}

/// What the kernel's memblock still holds, handed out once (the page allocator takes it).
pub fn take_all() -> Vec<Range> {
    MEMBLOCK.lock().take_all()
}

pub const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}
pub const fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}
