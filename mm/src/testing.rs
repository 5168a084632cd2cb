//! Host doubles for the hotplug core (not for the kernel: built with the `testing` feature, which
//! mm's own tests enable). [`Machine`] is the platform of the hotplug flows: it uses the real
//! page-table engine (linear map, vmemmap), the real `vmemmap_populate`/`free` with altmaps, the
//! real buddy over a host memmap ([`HostMemmap`]), and real migration; it can fail the N-th
//! fallible operation. Every page-table change, TLBI and free goes through the teardown checker
//! and a 4-CPU TLB model: the CPUs touch every new mapping, and after each removal no CPU may
//! still translate a removed VA nor walk a freed table page. Movable data is reached through a
//! movable window (as the kernel's `stress` pages are), so migration re-points real
//! translations: every CPU reads a block right before it moves, and none may reach the old frame
//! afterwards. [`BumpSource`] is the physical page source behind memmap without an altmap.
//!
//! [`Checked`] wraps [`Hotplug`](crate::hotplug::Hotplug) so that every operation is followed
//! by both invariant checks (the allocator's and the hotplug accounting's); [`boot`] gives a
//! machine with two boot blocks.

extern crate std;

use std::boxed::Box;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::vec::Vec;

use crate::page::{Memmap, Page};
use crate::pgtable::testing::Checker;
use crate::pgtable::PhysAddr;
use crate::vmemmap::PageSource;

mod machine;
mod ops;
mod shared;
pub use machine::{base, boot, boot_in, check_all, with_deferred, Checked, Machine, MODE, NCPUS, WINDOW_ORDER};
pub use shared::SharedMemmap;

/// The struct pages of one section.
pub type SectionPages = Box<[UnsafeCell<Page>]>;

/// Host storage for the struct pages of populated sections. A fresh section holds
/// [`Page::POISON`] (what uninitialised memory holds in the test builds). Every `page()` call
/// (a struct page read or write by the allocator or the double) is counted, per PFN range.
#[derive(Clone, Default)]
pub struct HostMemmap {
    pub sections: Rc<RefCell<BTreeMap<u64, SectionPages>>>,
    pub pages_per_section: u64,
    /// Struct page accesses (`page()` calls) so far.
    pub accesses: Rc<Cell<u64>>,
    /// Of those, to PFNs in `watched` ranges.
    pub watched_accesses: Rc<Cell<u64>>,
    pub watched: Rc<RefCell<Vec<(u64, u64)>>>,
}

impl HostMemmap {
    /// The struct page of `pfn` as stored, bypassing the counters.
    pub fn peek(&self, pfn: u64) -> Page {
        let s = self.sections.borrow();
        // SAFETY: a read of a live element; no `&mut` to it exists outside allocator calls.
        unsafe { *s[&(pfn / self.pages_per_section)][(pfn % self.pages_per_section) as usize].get() }
    }
}

// SAFETY: every populated section has its own boxed slice that never moves while present.
unsafe impl Memmap for HostMemmap {
    fn page(&self, pfn: u64) -> *mut Page {
        self.accesses.set(self.accesses.get() + 1);
        if self.watched.borrow().iter().any(|&(s, e)| (s..e).contains(&pfn)) {
            self.watched_accesses.set(self.watched_accesses.get() + 1);
        }
        let s = self.sections.borrow();
        s[&(pfn / self.pages_per_section)][(pfn % self.pages_per_section) as usize].get()
    }
    fn valid(&self, pfn: u64) -> bool {
        self.sections.borrow().contains_key(&(pfn / self.pages_per_section))
    }
}

/// A fake physical allocator (PAs are never dereferenced): naturally aligned blocks from a
/// bump pointer, with exact accounting, an optional budget, and frees reported to the teardown
/// checker (backing freed while a mapping or a TLB entry may still reach it is a violation).
pub struct BumpSource {
    /// The next free PA (the bump pointer).
    pub next: u64,
    pub page_size: u64,
    /// Live blocks: PA → order.
    pub live: BTreeMap<u64, u32>,
    /// Allocations left before the source refuses (`None`: unlimited).
    pub budget: Option<u32>,
    pub checker: Checker,
}

impl BumpSource {
    /// A source handing out PAs from `start` on, in pages of `page_size`.
    pub fn new(page_size: u64, start: u64, checker: Checker) -> Self {
        BumpSource {
            next: start,
            page_size,
            live: BTreeMap::new(),
            budget: None,
            checker,
        }
    }
}

impl PageSource for BumpSource {
    fn alloc_pages(&mut self, order: u32) -> Option<PhysAddr> {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                return None;
            }
            *b -= 1;
        }
        let size = self.page_size << order;
        let pa = self.next.next_multiple_of(size);
        self.next = pa + size;
        self.live.insert(pa, order);
        Some(pa)
    }
    fn free_pages(&mut self, pa: PhysAddr, order: u32) {
        assert_eq!(
            self.live.remove(&pa),
            Some(order),
            "free of {pa:#x} order {order}: not allocated so"
        );
        let _ = self.checker.borrow_mut().freeing(pa, self.page_size << order);
    }
    fn altmap_free(&mut self, pa: PhysAddr, size: u64) {
        let _ = self.checker.borrow_mut().freeing(pa, size);
    }
}
