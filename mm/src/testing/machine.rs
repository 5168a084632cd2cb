//! The test machine: page tables, TLB model, teardown checker, sparse model, host memmap, page
//! allocator and movable handles of one configuration, with the checks the flows run against
//! (teardown order, nothing left mapping removed memory, the allocator's invariants); and the
//! boot that every hotplug test starts from.

extern crate std;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::vec::Vec;

use super::{BumpSource, HostMemmap};
use crate::buddy::{MemmapInit, PageAlloc, Violation, ZoneCounters};
use crate::geometry::Config;
use crate::hotplug::{AddFlags, BlockId, GroupId, Hotplug, HotplugError, HotplugOps, OnlineType};
use crate::migrate::{Handle, Handles};
use crate::numa::NodeId;
use crate::page::ZoneId;
use crate::pgtable::testing::{Checker, HostTables, ModelTlb};
use crate::pgtable::{Attrs, MapFlags, PageTable};
use crate::sparse::{state, Sparse};
use crate::teardown::TeardownChecker;
use crate::vmemmap::Vmemmap;

/// CPUs of the TLB model.
pub const NCPUS: usize = 4;

/// One configuration's platform for the hotplug flows ([`HotplugOps`], in `ops.rs`); the tests
/// reach into its parts (allocator, handles, tables, TLB model) directly.
pub struct Machine<C: Config> {
    pub pt: PageTable<C>,
    pub tables: HostTables,
    pub source: BumpSource,
    pub tlb: ModelTlb,
    pub checker: Checker,
    pub sparse: Sparse,
    pub memmap: HostMemmap,
    pub alloc: PageAlloc<HostMemmap>,
    pub handles: Handles,
    /// Simulated contents of movable pages (pfn → value), moved by migration.
    pub contents: HashMap<u64, u64>,
    /// Fail the N-th fallible operation (0 = the next one).
    pub fail_in: Option<u32>,
    /// Run the allocator checker after every online and offline (off while counting struct
    /// page accesses: the checker reads every initialised one).
    pub check_each_op: bool,
    /// The first PFN and node of every `online_pages` call, in order.
    pub onlined_nodes: Vec<(u64, NodeId)>,
    /// The first PFN and node of every `offline_pages` call, in order.
    pub offlined_nodes: Vec<(u64, NodeId)>,
}

impl<C: Config> Default for Machine<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Config> Machine<C> {
    pub fn new() -> Self {
        let g = C::GEOM;
        let checker: Checker = Rc::new(RefCell::new(TeardownChecker::with_config(
            g.page_shift,
            Self::linear_region(),
        )));
        let mut tables = HostTables::new(g.page_size());
        tables.checker = Some(checker.clone());
        let pt = PageTable::<C>::new(&mut tables).unwrap();
        let mut tlb = ModelTlb::new(g.page_shift, true, NCPUS);
        tlb.checker = Some(checker.clone());
        let memmap = HostMemmap {
            sections: Rc::default(),
            pages_per_section: g.pages_per_section(),
            ..HostMemmap::default()
        };
        let mut alloc = PageAlloc::new(memmap.clone(), g.max_order());
        // No bits up front: every deferred add grows the bitmap (as the kernel's hot-adds above
        // the boot RAM do).
        alloc.enable_deferred(g, 0).unwrap();
        // The window's first tables exist from the start (the kernel builds its window's tables
        // at boot), so the table count of a test with a few handles is stable.
        let mut pt = pt;
        let va = Self::window_va(Handle(0));
        pt.map(&mut tables, va, 0, g.page_size(), Attrs::NORMAL_RW, MapFlags::PAGES)
            .unwrap();
        pt.unmap_within(&mut tables, &mut tlb, va, g.page_size(), va, va + g.page_size())
            .unwrap();
        Machine {
            pt,
            tables,
            // Memmap backing far above the physical range the tests add.
            source: BumpSource::new(g.page_size(), 1 << 44, checker.clone()),
            tlb,
            checker,
            sparse: Sparse::new(g, 1 << 40),
            alloc,
            memmap,
            handles: Handles::new(),
            contents: HashMap::new(),
            fail_in: None,
            check_each_op: true,
            onlined_nodes: Vec::new(),
            offlined_nodes: Vec::new(),
        }
    }

    pub fn injected(&mut self) -> Result<(), HotplugError> {
        match self.fail_in {
            Some(0) => {
                self.fail_in = None;
                Err(HotplugError::Injected)
            }
            Some(n) => {
                self.fail_in = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn linear(pa: u64) -> u64 {
        C::GEOM.ttbr1_base() + pa
    }

    pub fn linear_region() -> (u64, u64) {
        let g = C::GEOM;
        (g.ttbr1_base(), g.ttbr1_base() + (1 << (g.va_bits - 1)))
    }

    /// The movable window: handle `h` is mapped at `start + h * 2^WINDOW_ORDER pages` (orders
    /// ≤ 3 unless a test widens it), after the vmemmap region.
    pub fn window_va(h: Handle) -> u64 {
        let g = C::GEOM;
        Self::vmemmap_region().1 + ((h.0 as u64 * g.page_size()) << WINDOW_ORDER.with(Cell::get))
    }

    /// A movable allocation, mapped at its window VA (base pages, published by the engine).
    pub fn alloc_movable(&mut self, order: u32) -> Option<Handle> {
        let g = C::GEOM;
        let h = self.handles.alloc(&mut self.alloc, order)?;
        let (pfn, _) = self.handles.get(h).unwrap();
        let size = g.page_size() << order;
        self.pt
            .map(
                &mut self.tables,
                Self::window_va(h),
                pfn << g.page_shift,
                size,
                Attrs::NORMAL_RW,
                MapFlags::PAGES,
            )
            .expect("map the movable window");
        Some(h)
    }

    /// Unmap a movable allocation from the window (clear, invalidate), then free it.
    pub fn free_movable(&mut self, h: Handle) {
        let g = C::GEOM;
        let (pfn, order) = self.handles.get(h).unwrap();
        let (va, size) = (Self::window_va(h), g.page_size() << order);
        self.pt
            .unmap_within(&mut self.tables, &mut self.tlb, va, size, va, va + size)
            .unwrap();
        if let Err(v) = self.checker.borrow_mut().freeing(pfn << g.page_shift, size) {
            panic!("teardown order violated freeing a movable page: {v}");
        }
        self.handles.free(&mut self.alloc, h).unwrap();
    }

    pub fn vmemmap_region() -> (u64, u64) {
        let g = C::GEOM;
        let start = Self::linear_region().1;
        (start, start + (((1u64 << (g.va_bits - 1)) >> g.page_shift) * 64))
    }

    pub fn vmemmap(&mut self) -> Vmemmap<'_, C, HostTables, BumpSource, ModelTlb> {
        Vmemmap {
            pt: &mut self.pt,
            tables: &mut self.tables,
            source: &mut self.source,
            tlb: &mut self.tlb,
            region: Self::vmemmap_region(),
        }
    }

    /// Every CPU reads `[va, va + size)` at `stride` (and its last page), caching translations.
    pub fn touch(&mut self, va: u64, size: u64, stride: u64) {
        let page = C::GEOM.page_size();
        for cpu in 0..NCPUS {
            let mut v = va;
            while v < va + size {
                assert!(
                    self.tlb.touch(cpu, &self.pt, &self.tables, v).is_some(),
                    "cpu {cpu}: new mapping at {v:#x} faults"
                );
                v += stride;
            }
            self.tlb.touch(cpu, &self.pt, &self.tables, va + size - page);
        }
    }

    /// No teardown-order violation so far, and no CPU walk cache points at a freed table page.
    pub fn assert_teardown_ok(&self, after: &str) {
        if let Some(v) = self.checker.borrow().violations.first() {
            panic!("teardown order violated in {after}: {v}");
        }
        for (cpu, c) in self.tlb.cpus.iter().enumerate() {
            if let Some(e) = c
                .entries
                .iter()
                .find(|e| e.table && !self.tables.live_set().contains(&e.pa))
            {
                panic!(
                    "TLB model after {after}: cpu {cpu} can still walk freed table page {:#x} (va {:#x})",
                    e.pa, e.va
                );
            }
        }
    }

    /// Nothing maps removed memory any more: checker (live/pending, PA and VA) and TLB model.
    pub fn assert_removed(&mut self, pa: u64, size: u64) {
        let g = C::GEOM;
        let vm = (
            Self::vmemmap_region().0 + (pa >> g.page_shift) * 64,
            (size >> g.page_shift) * 64,
        );
        let lin = (Self::linear(pa), size);
        {
            let mut c = self.checker.borrow_mut();
            let r = c
                .released(pa, size)
                .and_then(|_| c.quiescent(lin.0, lin.1))
                .and_then(|_| c.quiescent(vm.0, vm.1));
            if let Err(v) = r {
                panic!("teardown order violated at the end of remove_memory: {v}");
            }
        }
        for (what, (va, len)) in [("linear map", lin), ("memmap", vm)] {
            if let Some((cpu, e)) = self.tlb.stale_leaf(va, len) {
                panic!(
                    "TLB model: cpu {cpu} can still translate removed {what} va {:#x} (leaf va {:#x} size {:#x})",
                    va, e.va, e.size
                );
            }
        }
        self.assert_teardown_ok("remove_memory");
    }

    /// The page allocator's invariants over every populated section, with no offline in
    /// progress (run by the double after every online and offline, failed or not).
    pub fn check_alloc(&self) -> Result<(), Violation> {
        let pps = C::GEOM.pages_per_section();
        let ranges: Vec<(u64, u64)> = self.memmap.sections.borrow().keys().map(|&s| (s * pps, pps)).collect();
        // Deferred (uninitialised) memmap only where there is memmap: nothing left behind by a
        // removal or a rolled-back add.
        let inside: u64 = ranges.iter().map(|&(s, n)| self.alloc.uninit_pages(s, n)).sum();
        let all = self.alloc.uninit_pages(0, (1 << 40) >> C::GEOM.page_shift);
        assert_eq!(inside, all, "deferred memmap marked where there is no memmap");
        self.alloc.check(&ranges, true).map(|_| ())
    }

    pub fn assert_alloc_ok(&self, after: &str) {
        if !self.check_each_op {
            return;
        }
        if let Err(v) = self.check_alloc() {
            panic!("page allocator invariant broken after {after}: {v}");
        }
    }

    /// Everything that must return to baseline after a failed or undone operation.
    pub fn snapshot(&self) -> (usize, usize, Vec<(usize, u8)>, usize, [ZoneCounters; 2]) {
        (
            self.tables.live(),
            self.source.live.len(),
            self.sparse.iter_with(0xff).collect(),
            self.memmap.sections.borrow().len(),
            [
                self.alloc.counters(ZoneId::Normal),
                self.alloc.counters(ZoneId::Movable),
            ],
        )
    }
}

/// Both sets of invariants: the allocator's and the hotplug accounting's.
pub fn check_all<C: Config>(m: &Machine<C>, hp: &Hotplug) {
    if let Err(v) = m.check_alloc() {
        panic!("page allocator invariant broken after a hotplug operation: {v}");
    }
    if let Err(v) = hp.check() {
        panic!("hotplug accounting invariant broken: {v}");
    }
}

/// The hotplug core under test: every operation is followed by both invariant checks
/// (`Deref` gives the rest of [`Hotplug`]).
pub struct Checked(pub Hotplug);

impl std::ops::Deref for Checked {
    type Target = Hotplug;
    fn deref(&self) -> &Hotplug {
        &self.0
    }
}

impl std::ops::DerefMut for Checked {
    fn deref_mut(&mut self) -> &mut Hotplug {
        &mut self.0
    }
}

macro_rules! checked_ops {
    ($($op:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl Checked {
            $(pub fn $op<C: Config>(&mut self, m: &mut Machine<C>, $($arg: $ty),*) -> $ret {
                let r = self.0.$op(m, $($arg),*);
                check_all(m, &self.0);
                r
            })*
        }
    };
}

checked_ops! {
    add_memory(nid: NodeId, group: Option<GroupId>, start: u64, size: u64, flags: AddFlags) -> Result<Vec<BlockId>, HotplugError>;
    online_block(id: BlockId, t: OnlineType) -> Result<ZoneId, HotplugError>;
    offline_block(id: BlockId) -> Result<(), HotplugError>;
    offline_and_remove(start: u64, size: u64) -> Result<(), HotplugError>;
    remove_memory(start: u64, size: u64) -> Result<(), HotplugError>;
}

std::thread_local! {
    /// log2 of the pages of window VA per handle: the largest order a test maps.
    pub static WINDOW_ORDER: Cell<u32> = const { Cell::new(3) };
    /// The memmap initialisation mode [`boot`] gives the hotplug core (the `*_deferred`
    /// matrix modules run every flow again with `Deferred`).
    pub static MODE: Cell<MemmapInit> = const { Cell::new(MemmapInit::Eager) };
}

/// Run `f` with [`boot`] in deferred mode (used by `matrix_modes!`).
pub fn with_deferred(f: impl FnOnce()) {
    MODE.with(|m| m.set(MemmapInit::Deferred));
    f();
    MODE.with(|m| m.set(MemmapInit::Eager));
}

/// [`boot`] in `mode`.
pub fn boot_in<C: Config>(mode: MemmapInit) -> (Machine<C>, Checked) {
    let old = MODE.with(|m| m.replace(mode));
    let r = boot::<C>();
    MODE.with(|m| m.set(old));
    r
}

/// A machine with 2 boot blocks (online NORMAL) right below the test range.
pub fn boot<C: Config>() -> (Machine<C>, Checked) {
    let g = C::GEOM;
    let mut m = Machine::<C>::new();
    let mut hp = Checked(Hotplug::new(g, 1 << 40));
    hp.memmap_init = MODE.with(|m| m.get());
    for id in 2..4 {
        let pfn = id * g.pages_per_section();
        m.populate_memmap(pfn, None).unwrap();
        m.init_memmap(pfn, g.pages_per_section(), id);
        m.section_update(id, state::PRESENT | state::HAS_MEMMAP | state::EARLY | state::ONLINE, 0);
        m.alloc
            .online_range(ZoneId::Normal, 0, pfn, g.pages_per_section())
            .unwrap();
        hp.add_boot_block(id, 0).unwrap();
    }
    hp.default_online = None;
    (m, hp)
}

/// First hot-add address used by the tests: block 8.
pub fn base<C: Config>() -> u64 {
    8 * C::GEOM.section_size()
}
