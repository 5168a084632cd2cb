//! [`SharedMemmap`]: a memmap the threads of a model checker share (`Send + Sync`, unlike
//! [`HostMemmap`](super::HostMemmap)): one flat run of struct pages, every one [`Page::POISON`]
//! until written. The allocator behind the model's mutex and the holder of a deferred chunk
//! (writing its struct pages outside that mutex) reach it at once, as the kernel's CPUs reach
//! the vmemmap.

extern crate std;

use std::boxed::Box;
use std::cell::UnsafeCell;
use std::sync::Arc;
use std::vec::Vec;

use crate::page::{Memmap, Page};

/// The struct pages of `[start, start + len)`.
#[derive(Clone)]
pub struct SharedMemmap {
    start: u64,
    pages: Arc<Pages>,
}

struct Pages(Box<[UnsafeCell<Page>]>);

// SAFETY: the pages are only reached through raw pointers from `Memmap::page`, whose callers
// serialise every access to one struct page (the allocator lock, or ownership of a deferred
// chunk), as the kernel's memmap is shared between CPUs.
unsafe impl Sync for Pages {}
// SAFETY: as above; the box moves with no reference into it alive.
unsafe impl Send for Pages {}

impl SharedMemmap {
    /// A memmap for `[start, start + len)`, every struct page poison.
    pub fn new(start: u64, len: u64) -> Self {
        let pages: Vec<UnsafeCell<Page>> = (0..len).map(|_| UnsafeCell::new(Page::POISON)).collect();
        SharedMemmap {
            start,
            pages: Arc::new(Pages(pages.into_boxed_slice())),
        }
    }
}

// SAFETY: every valid PFN has its own element of a boxed slice that never moves while any clone
// of this memmap lives.
unsafe impl Memmap for SharedMemmap {
    fn page(&self, pfn: u64) -> *mut Page {
        self.pages.0[(pfn - self.start) as usize].get()
    }
    fn valid(&self, pfn: u64) -> bool {
        pfn >= self.start && pfn - self.start < self.pages.0.len() as u64
    }
}
