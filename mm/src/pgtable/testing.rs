//! Host-side doubles for testing code that builds page tables (not built for the kernel
//! target): a [`TableAlloc`] on aligned heap pages where PA = the pointer value, a
//! [`TlbInvalidate`] recorder, and [`ModelTlb`], a per-CPU TLB model that executes the real
//! TLBI instructions (decoded from their operands) and feeds the teardown checker. They can
//! share one [`EventLog`] so a test can check that every table page is freed only after the
//! invalidation covering it.
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

use super::{Config, PageTable, PhysAddr, TableAlloc, VirtAddr};
use crate::teardown::TeardownChecker;
use arch::tlb::{kernel_batch_ops, kernel_range_ops, va_operand, Mapping, TlbInvalidate, Tlbi};

/// A teardown checker shared by the doubles of one test machine.
pub type Checker = Rc<RefCell<TeardownChecker>>;

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
    /// Told about every entry made valid and every table page freed.
    pub checker: Option<Checker>,
    /// The barrier count (`arch::barrier::host::published`) when an entry was last made valid
    /// and not yet published: `Some` means a new mapping may not be used yet.
    unpublished: Option<u64>,
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
            checker: None,
            unpublished: None,
        }
    }

    /// Whether every entry made valid so far was followed by `DSB ISHST; ISB`.
    pub fn all_published(&self) -> bool {
        self.unpublished.is_none_or(|at| arch::barrier::host::published() > at)
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

// SAFETY: pages come from `alloc_zeroed` with a page-sized, page-aligned layout and stay
// allocated (live, then quarantined) until the `HostTables` is dropped; `table_ptr` is the
// identity on live pages (and asserts liveness), and the engine is the only user of them.
unsafe impl TableAlloc for HostTables {
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
        if let Some(c) = &self.checker {
            let _ = c.borrow_mut().freeing(pa, self.page as u64);
        }
        self.quarantine.push(pa);
        self.frees += 1;
        self.log.borrow_mut().push(Event::Free(pa));
    }

    fn table_ptr(&self, pa: PhysAddr) -> *mut u64 {
        assert!(self.live.contains(&pa), "table_ptr({pa:#x}): not a live table page");
        pa as *mut u64
    }

    fn made_valid(&mut self, m: Mapping) {
        if self.all_published() {
            self.unpublished = Some(arch::barrier::host::published());
        }
        if let Some(c) = &self.checker {
            c.borrow_mut().made_valid(m);
        }
    }

    fn published(&mut self) {
        if let Some(c) = &self.checker {
            c.borrow_mut().published();
        }
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

/// What one CPU's TLB holds: leaf translations and walk-cache (table) entries.
#[derive(Clone, Debug, Default)]
pub struct CpuTlbState {
    /// Cached entries by VA (leaves and table entries alike).
    pub entries: Vec<Mapping>,
}

/// A model of every CPU's TLB for host tests. CPUs cache what they [`touch`](Self::touch)
/// (the leaf, and a walk-cache entry per table level on the way), and drop an entry only when
/// an instruction that architecturally covers it is executed: the same instruction sequence
/// the kernel issues ([`kernel_range_ops`]), decoded from the real operands (VALE vs VAE,
/// range TG/SCALE/NUM/BaseADDR per granule). A broadcast (IS) instruction reaches every CPU,
/// a local one only the issuing CPU 0. It also feeds an optional teardown checker (clears and invalidations).
pub struct ModelTlb {
    pub page_shift: u32,
    /// FEAT_TLBIRANGE (range operations) or not (per-leaf, full flush above 512).
    pub range: bool,
    pub cpus: Vec<CpuTlbState>,
    pub checker: Option<Checker>,
    pub log: EventLog,
    /// Instructions executed.
    pub executed: Vec<Tlbi>,
}

impl ModelTlb {
    pub fn new(page_shift: u32, range: bool, ncpus: usize) -> Self {
        ModelTlb {
            page_shift,
            range,
            cpus: std::vec![CpuTlbState::default(); ncpus],
            checker: None,
            log: EventLog::default(),
            executed: Vec::new(),
        }
    }

    /// Run `op` as issued by CPU 0 (the CPU the host tests' hotplug code runs on): a
    /// broadcast instruction reaches every CPU, a local one only CPU 0.
    fn execute(&mut self, op: Tlbi) {
        let shift = self.page_shift;
        let reach = if op.broadcast() { self.cpus.len() } else { 1 };
        for c in self.cpus.iter_mut().take(reach) {
            c.entries.retain(|e| !op.covers(e.va, e.size, e.table, shift));
        }
        if let Some(ch) = &self.checker {
            ch.borrow_mut().invalidated(op);
        }
        self.executed.push(op);
    }

    /// CPU `cpu` reads `va`: walks the tables (as the MMU would) and caches the leaf and the
    /// table entries it went through. Panics if a mapping is used before it was published
    /// (`DSB ISHST; ISB` after it was made valid). Returns the PA, or `None` (fault).
    pub fn touch<C: Config>(
        &mut self,
        cpu: usize,
        pt: &PageTable<C>,
        tables: &HostTables,
        va: VirtAddr,
    ) -> Option<PhysAddr> {
        if let Some(pa) = self.translate(cpu, va) {
            return Some(pa);
        }
        assert!(
            tables.all_published(),
            "va {va:#x} used after new entries were made valid without DSB ISHST; ISB"
        );
        let w = pt.walk(tables, va);
        let leaf = w.leaf?;
        let g = C::GEOM;
        for s in w.steps() {
            if s.desc.is_table(s.level == 3) {
                let size = g.level_size(s.level);
                let e = Mapping {
                    va: va & !(size - 1),
                    size,
                    pa: s.desc.output_address(),
                    pa_size: g.page_size(),
                    table: true,
                };
                // A walk cache holds one entry per table, however often it is walked.
                if !self.cpus[cpu].entries.contains(&e) {
                    self.cpus[cpu].entries.push(e);
                }
            }
        }
        self.cpus[cpu].entries.push(Mapping {
            va: va & !(leaf.size - 1),
            size: leaf.size,
            pa: leaf.pa & !(leaf.size - 1),
            pa_size: leaf.size,
            table: false,
        });
        Some(leaf.pa)
    }

    /// What CPU `cpu` translates `va` to from its TLB alone (a stale entry included).
    pub fn translate(&self, cpu: usize, va: VirtAddr) -> Option<PhysAddr> {
        self.cpus[cpu]
            .entries
            .iter()
            .find(|e| !e.table && va >= e.va && va - e.va < e.size)
            .map(|e| e.pa + (va - e.va))
    }

    /// A CPU that still holds a leaf of `[va, va + size)`, or a walk-cache entry pointing at a
    /// table page inside `[table_lo, table_hi)` (pages that were freed).
    pub fn stale_leaf(&self, va: VirtAddr, size: u64) -> Option<(usize, Mapping)> {
        let last = va + (size - 1);
        self.cpus.iter().enumerate().find_map(|(i, c)| {
            c.entries
                .iter()
                .find(|e| !e.table && e.va <= last && va <= e.va + (e.size - 1))
                .map(|e| (i, *e))
        })
    }

    /// A CPU whose walk cache still points at table page `pa`.
    pub fn stale_table(&self, pa: PhysAddr) -> Option<(usize, Mapping)> {
        self.cpus
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.entries.iter().find(|e| e.table && e.pa == pa).map(|e| (i, *e)))
    }
}

impl TlbInvalidate for ModelTlb {
    fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
        self.log.borrow_mut().push(Event::FlushRange {
            start,
            end,
            stride_shift,
        });
        let mut ops = Vec::new();
        kernel_range_ops(start, end, stride_shift, self.page_shift, self.range, |op| ops.push(op));
        for op in ops {
            self.execute(op);
        }
    }
    fn flush_kernel_pgtable(&mut self, va: u64) {
        self.log.borrow_mut().push(Event::FlushPgtable(va));
        self.execute(Tlbi::Vaae1is(va_operand(va)));
    }
    fn flush_all(&mut self) {
        self.log.borrow_mut().push(Event::FlushAll);
        self.execute(Tlbi::Vmalle1is);
    }
    fn flush_kernel_batch<I>(&mut self, ranges: I, stride_shift: u32, full_above: u64)
    where
        I: Iterator<Item = (u64, u64)> + Clone,
    {
        for (start, end) in ranges.clone() {
            self.log.borrow_mut().push(Event::FlushRange {
                start,
                end,
                stride_shift,
            });
        }
        let mut ops = Vec::new();
        kernel_batch_ops(ranges, stride_shift, self.page_shift, self.range, full_above, |op| {
            ops.push(op)
        });
        for op in ops {
            self.execute(op);
        }
    }
    fn cleared(&mut self, m: Mapping) {
        if let Some(c) = &self.checker {
            c.borrow_mut().cleared(m);
        }
    }
}
