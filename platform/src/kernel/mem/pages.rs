//! Pages the kernel owns, as a value: [`Pages`] is a block from the page allocator reached
//! through the linear map, with safe access to its contents; [`PageChain`] keeps any number of
//! them threaded through their own first words (no heap). Code above `kernel/` (the shell, the
//! in-guest tests) uses these instead of raw pointers into the linear map.

use crate::{
    boot::layout::{self, PAGE_SIZE},
    kernel::mem::page_alloc::{alloc_pages, free_pages},
};
use mm::buddy::BuddyError;

/// 2^order naturally aligned pages from the page allocator, owned by this value (not `Clone`,
/// so there is one owner). Dropping it without [`Pages::free`] leaks the pages, on purpose: a
/// block may still be mapped elsewhere (a test window) when an error path drops it, and freeing
/// it then would hand out memory something still translates.
#[must_use = "pages are freed only by Pages::free"]
#[derive(Debug)]
pub struct Pages {
    pa: u64,
    order: u32,
}

impl Pages {
    /// Allocate 2^order pages ([`alloc_pages`]).
    pub fn alloc(order: u32) -> Option<Pages> {
        alloc_pages(order).map(|pa| Pages { pa, order })
    }

    /// Give the pages back to the allocator ([`free_pages`]).
    pub fn free(self) -> Result<(), BuddyError> {
        free_pages(self.pa, self.order)
    }

    pub fn pa(&self) -> u64 {
        self.pa
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        PAGE_SIZE << self.order
    }

    /// Number of 64-bit words.
    pub fn words(&self) -> usize {
        (self.size() / 8) as usize
    }

    fn word_ptr(&self, i: usize) -> *mut u64 {
        assert!(i < self.words(), "word {i} outside a block of {} words", self.words());
        (layout::phys_to_virt(self.pa) as *mut u64).wrapping_add(i)
    }

    /// Volatile store of word `i` (the compiler keeps every store: memory tests see them).
    pub fn store(&mut self, i: usize, v: u64) {
        let p = self.word_ptr(i);
        // SAFETY: inside the block (checked), which this value owns exclusively (`&mut self`)
        // and which the linear map maps RW.
        unsafe { p.write_volatile(v) }
    }

    /// Volatile load of word `i`.
    pub fn load(&self, i: usize) -> u64 {
        let p = self.word_ptr(i);
        // SAFETY: inside the block (checked), owned by this value, mapped by the linear map;
        // only `&mut self` methods write it.
        unsafe { p.read_volatile() }
    }

    /// Every byte of the block to `v`, with the widest stores there are (the bandwidth
    /// measurements' limit: migration copies with the same width).
    pub fn fill_bytes(&mut self, v: u8) {
        let p = layout::phys_to_virt(self.pa) as *mut u8;
        // SAFETY: the whole block, owned exclusively (`&mut self`), mapped RW by the linear map.
        unsafe { arch::memops::fill(p, v, self.size() as usize) }
    }
}

/// A stack of [`Pages`] linked through the first two words of each block (the next block's
/// PA and order), so holding any number of blocks needs no heap. Words from 2 on are the
/// owner's. Dropping a non-empty chain leaks its blocks (see [`Pages`]).
#[derive(Debug, Default)]
pub struct PageChain {
    head: Option<Pages>,
    len: u64,
}

/// "No next block" in a chain link.
const END: u64 = u64::MAX;

impl PageChain {
    pub const fn new() -> Self {
        PageChain { head: None, len: 0 }
    }

    /// Blocks in the chain.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Put `p` on top (it must have at least 2 words, which every page has).
    pub fn push(&mut self, mut p: Pages) {
        let (next, order) = self.head.take().map_or((END, 0), |h| (h.pa, h.order as u64));
        p.store(0, next);
        p.store(1, order);
        self.head = Some(p);
        self.len += 1;
    }

    /// Take the top block back.
    pub fn pop(&mut self) -> Option<Pages> {
        let top = self.head.take()?;
        let (next, order) = (top.load(0), top.load(1));
        if next != END {
            // The link was written by `push` from a block this chain owned; nobody else could
            // write it since (the chain owns its blocks).
            self.head = Some(Pages {
                pa: next,
                order: order as u32,
            });
        }
        self.len -= 1;
        Some(top)
    }

    /// Free every block; the first error is returned after all were tried.
    pub fn free_all(&mut self) -> Result<(), BuddyError> {
        let mut r = Ok(());
        while let Some(p) = self.pop() {
            let e = p.free();
            if r.is_ok() {
                r = e;
            }
        }
        r
    }
}
