//! Fault injection for the test kernel: refuse page-table pages, memmap backing pages or altmap
//! pages from the N-th request on, so the rollback of a failed hot-add runs under QEMU (the
//! `ktest` case `add_rolls_back_under_injected_faults`). Like the host tests' budgets
//! (`mm/tests/hotplug.rs`), an armed kind fails its N-th request and every later one until
//! [`disarm`]. Without the `ktest` feature nothing is ever armed and [`fails`] is `false`.

use core::sync::atomic::{AtomicI64, Ordering};

/// What can be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A page-table page (`KernelTables::alloc_table`).
    Table = 0,
    /// A memmap backing page from the page allocator (memmap not on memory).
    Backing = 1,
    /// Altmap pages: the altmap of a block holds only N pages (memmap on memory).
    Altmap = 2,
}

#[cfg(feature = "ktest")]
impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Table, Fault::Backing, Fault::Altmap];

    pub const fn name(self) -> &'static str {
        match self {
            Fault::Table => "table",
            Fault::Backing => "backing",
            Fault::Altmap => "altmap",
        }
    }
}

/// Per kind: requests still granted before the failures start; negative = not armed.
static LEFT: [AtomicI64; 3] = [const { AtomicI64::new(-1) }; 3];

/// Fail `kind` from its `n`-th request on (0 = the next one); for [`Fault::Altmap`], give each
/// block's altmap only `n` pages.
#[cfg(feature = "ktest")]
pub fn arm(kind: Fault, n: u32) {
    LEFT[kind as usize].store(i64::from(n), Ordering::Relaxed);
}

/// Every kind back to normal.
#[cfg(feature = "ktest")]
pub fn disarm() {
    for l in &LEFT {
        l.store(-1, Ordering::Relaxed);
    }
}

/// Should this request of `kind` fail? Counts the request when armed.
pub fn fails(kind: Fault) -> bool {
    if !cfg!(feature = "ktest") {
        return false;
    }
    let l = &LEFT[kind as usize];
    match l.load(Ordering::Relaxed) {
        n if n < 0 => false,
        0 => true,
        n => {
            l.store(n - 1, Ordering::Relaxed);
            false
        }
    }
}

/// [`Fault::Altmap`]: the pages an altmap may hand out (`None`: not armed).
pub fn altmap_limit() -> Option<u64> {
    left(Fault::Altmap)
}

/// Requests of `kind` still granted (`None`: not armed). Arm with a large `n`, run the
/// operation, and `n - left` is how many requests it made.
pub fn left(kind: Fault) -> Option<u64> {
    if !cfg!(feature = "ktest") {
        return None;
    }
    u64::try_from(LEFT[kind as usize].load(Ordering::Relaxed)).ok()
}
