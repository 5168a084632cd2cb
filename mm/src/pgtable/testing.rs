//! Host-side doubles for testing code that builds page tables (not built for the kernel
//! target): a [`TableAlloc`] on aligned heap pages where PA = the pointer value, and a
//! [`TlbInvalidate`] recorder. Both can share one [`EventLog`] so a test can check that every
//! table page is freed only after the invalidation covering it.
//!
//! The allocator panics on misuse (freeing a page that is not live, reaching a page through
//! `table_ptr` that is not live). Freed pages are poisoned with an invalid non-zero pattern
//! and kept until drop, so a use-after-free reads garbage instead of reused memory.

extern crate std;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::vec::Vec;

use super::{PhysAddr, TableAlloc, VirtAddr};
use arch::tlb::TlbInvalidate;

/// Invalid (bit 0 clear), non-zero: what a freed table page reads as.
pub const POISON: u64 = 0xdead_beef_dead_bee0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Alloc(PhysAddr),
    Free(PhysAddr),
    FlushRange {
        start: VirtAddr,
        end: VirtAddr,
        stride_shift: u32,
    },
    FlushPgtable(VirtAddr),
    FlushAll,
}

pub type EventLog = Rc<RefCell<Vec<Event>>>;

/// Table pages on the host heap.
pub struct HostTables {
    page: usize,
    live: BTreeSet<PhysAddr>,
    quarantine: Vec<PhysAddr>,
    log: EventLog,
    budget: Option<u64>,
    /// Successful allocations so far.
    pub allocs: u64,
    /// Frees so far.
    pub frees: u64,
}

impl HostTables {
    pub fn new(page_size: u64) -> Self {
        Self::with_log(page_size, EventLog::default())
    }

    pub fn with_log(page_size: u64, log: EventLog) -> Self {
        assert!(page_size.is_power_of_two() && page_size >= 4096);
        HostTables {
            page: page_size as usize,
            live: BTreeSet::new(),
            quarantine: Vec::new(),
            log,
            budget: None,
            allocs: 0,
            frees: 0,
        }
    }

    /// Allow `n` more allocations, then fail (`None`: unlimited).
    pub fn set_budget(&mut self, n: Option<u64>) {
        self.budget = n;
    }

    /// Table pages currently allocated.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    pub fn live_set(&self) -> &BTreeSet<PhysAddr> {
        &self.live
    }

    pub fn log(&self) -> EventLog {
        self.log.clone()
    }

    fn layout(&self) -> Layout {
        Layout::from_size_align(self.page, self.page).unwrap()
    }
}

impl TableAlloc for HostTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        match self.budget {
            Some(0) => return None,
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(self.layout()) };
        assert!(!p.is_null(), "host out of memory");
        let pa = p as PhysAddr;
        self.live.insert(pa);
        self.allocs += 1;
        self.log.borrow_mut().push(Event::Alloc(pa));
        Some(pa)
    }

    fn free_table(&mut self, pa: PhysAddr) {
        assert!(self.live.remove(&pa), "free_table({pa:#x}): not a live table page");
        let words = self.page / 8;
        // SAFETY: `pa` is a live page of `self.page` bytes from `alloc_zeroed`.
        unsafe { std::slice::from_raw_parts_mut(pa as *mut u64, words) }.fill(POISON);
        self.quarantine.push(pa);
        self.frees += 1;
        self.log.borrow_mut().push(Event::Free(pa));
    }

    fn table_ptr(&self, pa: PhysAddr) -> *mut u64 {
        assert!(self.live.contains(&pa), "table_ptr({pa:#x}): not a live table page");
        pa as *mut u64
    }
}

impl Drop for HostTables {
    fn drop(&mut self) {
        let layout = self.layout();
        for &pa in self.live.iter().chain(self.quarantine.iter()) {
            // SAFETY: every page in these sets came from `alloc_zeroed(layout)`, once.
            unsafe { dealloc(pa as *mut u8, layout) };
        }
    }
}

/// Records every TLB maintenance call.
#[derive(Default)]
pub struct RecordingTlb {
    pub log: EventLog,
}

impl RecordingTlb {
    pub fn with_log(log: EventLog) -> Self {
        RecordingTlb { log }
    }
}

impl TlbInvalidate for RecordingTlb {
    fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
        self.log.borrow_mut().push(Event::FlushRange {
            start,
            end,
            stride_shift,
        });
    }
    fn flush_kernel_pgtable(&mut self, va: u64) {
        self.log.borrow_mut().push(Event::FlushPgtable(va));
    }
    fn flush_all(&mut self) {
        self.log.borrow_mut().push(Event::FlushAll);
    }
}
