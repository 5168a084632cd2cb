//! The kernel's TLB maintenance, and — in the test build — the run-time teardown-order
//! checker (`mm::teardown`): it learns every entry the page-table engine makes valid or clears
//! and every TLBI the kernel issues (the same instruction sequence, decoded from the real
//! operands), and stops the kernel with a report when a page is freed while an entry still maps
//! it or a cleared one is not yet invalidated, or when removed memory is still translatable.
//! The release kernel does not build it.

use arch::tlb::{CpuTlb, Mapping, TlbInvalidate};

/// The TLB as page-table code sees it: broadcast invalidations (plus checking in `ktest`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelTlb;

/// FEAT_TLBIRANGE (ID_AA64ISAR0_EL1.TLB), a system-wide capability: set by the boot CPU,
/// cleared by any secondary that lacks it ([`init_secondary`]), so a broadcast range TLBI is
/// only ever issued when every CPU that receives it implements it.
static TLBI_RANGE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Erratum 1286807 on some CPU (from its MIDR): repeat every TLBI.
static REPEAT_TLBI: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Each secondary CPU, before it runs anything else: drop system-wide capabilities it lacks and
/// add the errata workarounds it needs.
pub fn init_secondary() {
    use core::sync::atomic::Ordering::Relaxed;
    if !arch::cpu::has_tlbi_range() {
        TLBI_RANGE.store(false, Relaxed);
    }
    if arch::cpu::needs_repeat_tlbi(arch::cpu::midr()) {
        REPEAT_TLBI.store(true, Relaxed);
    }
}

/// Whether range TLBIs are used (every online CPU has FEAT_TLBIRANGE).
pub fn tlbi_range() -> bool {
    TLBI_RANGE.load(core::sync::atomic::Ordering::Relaxed)
}

pub fn init() {
    TLBI_RANGE.store(arch::cpu::has_tlbi_range(), core::sync::atomic::Ordering::Relaxed);
    REPEAT_TLBI.store(
        arch::cpu::needs_repeat_tlbi(arch::cpu::midr()),
        core::sync::atomic::Ordering::Relaxed,
    );
    #[cfg(feature = "ktest")]
    checker::CHECKER.lock().configure(
        crate::boot::layout::PAGE_SHIFT,
        (
            crate::boot::layout::PAGE_OFFSET,
            crate::boot::layout::PAGE_OFFSET + crate::boot::layout::LINEAR_SIZE,
        ),
    );
}

fn cpu_tlb() -> CpuTlb {
    CpuTlb {
        page_shift: crate::boot::layout::PAGE_SHIFT,
        range: TLBI_RANGE.load(core::sync::atomic::Ordering::Relaxed),
        repeat: REPEAT_TLBI.load(core::sync::atomic::Ordering::Relaxed),
    }
}

#[cfg(feature = "ktest")]
mod checker {
    use crate::kernel::sync::IrqSafeLock;
    use mm::teardown::TeardownChecker;
    pub static CHECKER: IrqSafeLock<TeardownChecker> = IrqSafeLock::new("teardown checker", TeardownChecker::new());
    /// The CPU whose map has made entries valid and not yet published them (`usize::MAX`:
    /// none); written under `CHECKER`. Maps are serialised by the kernel page-table lock, but a
    /// free on another CPU may come between a map's `made_valid` and its `published`: that map
    /// is in flight, not missing its barrier.
    pub static MAPPING_CPU: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);
}

#[cfg(feature = "ktest")]
pub fn with_checker<R>(f: impl FnOnce(&mut mm::teardown::TeardownChecker) -> R) -> R {
    f(&mut checker::CHECKER.lock())
}

impl TlbInvalidate for KernelTlb {
    fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
        cpu_tlb().flush_kernel_range(start, end, stride_shift);
        #[cfg(feature = "ktest")]
        {
            let mut c = checker::CHECKER.lock();
            cpu_tlb().range_ops(start, end, stride_shift, |op| c.invalidated(op));
        }
    }
    fn flush_kernel_pgtable(&mut self, va: u64) {
        cpu_tlb().flush_kernel_pgtable(va);
        #[cfg(feature = "ktest")]
        checker::CHECKER
            .lock()
            .invalidated(arch::tlb::Tlbi::Vaae1is(arch::tlb::va_operand(va)));
    }
    fn flush_all(&mut self) {
        cpu_tlb().flush_all();
        #[cfg(feature = "ktest")]
        checker::CHECKER.lock().invalidated(arch::tlb::Tlbi::Vmalle1is);
    }
    fn flush_kernel_batch<I>(&mut self, ranges: I, stride_shift: u32, full_above: u64)
    where
        I: Iterator<Item = (u64, u64)> + Clone,
    {
        cpu_tlb().flush_kernel_batch(ranges.clone(), stride_shift, full_above);
        #[cfg(feature = "ktest")]
        {
            let mut c = checker::CHECKER.lock();
            cpu_tlb().batch_ops(ranges, stride_shift, full_above, |op| c.invalidated(op));
        }
        #[cfg(not(feature = "ktest"))]
        let _ = ranges;
    }
    #[cfg(feature = "ktest")]
    fn cleared(&mut self, m: Mapping) {
        checker::CHECKER.lock().cleared(m);
    }
}

/// The page-table engine made `m` valid (test build: the checker learns what is mapped).
pub fn made_valid(_m: Mapping) {
    #[cfg(feature = "ktest")]
    {
        let mut c = checker::CHECKER.lock();
        c.made_valid(_m);
        checker::MAPPING_CPU.store(arch::cpu::cpu_index(), core::sync::atomic::Ordering::Relaxed);
    }
}

/// Test build: a CPU other than the boot CPU waits this long between making entries valid and
/// recording their publication, as a vCPU the host deschedules mid-map does (0: no wait). Set
/// by a case only; a free or removal on the boot CPU meanwhile must wait for the map, not
/// report it.
#[cfg(feature = "ktest")]
pub static PUBLISH_HOLD_US: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Test build: the CPU whose map has made entries valid and not yet published them.
#[cfg(feature = "ktest")]
pub fn map_in_flight() -> Option<usize> {
    let cpu = checker::MAPPING_CPU.load(core::sync::atomic::Ordering::Relaxed);
    (cpu != usize::MAX).then_some(cpu)
}

/// The engine published what it made valid (`DSB ISHST; ISB`).
pub fn published() {
    #[cfg(feature = "ktest")]
    {
        let hold = PUBLISH_HOLD_US.load(core::sync::atomic::Ordering::Relaxed);
        if hold > 0 && arch::cpu::cpu_index() != 0 {
            let end = arch::cpu::counter() + arch::cpu::counter_freq() * hold / 1_000_000;
            while arch::cpu::counter() < end {
                core::hint::spin_loop();
            }
        }
        let mut c = checker::CHECKER.lock();
        c.published();
        checker::MAPPING_CPU.store(usize::MAX, core::sync::atomic::Ordering::Relaxed);
    }
}

/// `teardown_check=off` (test build): the checker keeps recording but does not stop the
/// kernel, so the in-guest tests alone must notice a broken order (the mutant runs use it to
/// show that the base-page-window test fails on its own, not only the checker).
#[cfg(feature = "ktest")]
static ENFORCE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

#[cfg(feature = "ktest")]
pub fn set_enforce(on: bool) {
    ENFORCE.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Stop with the violation; with `teardown_check=off`, say it once and go on.
#[cfg(feature = "ktest")]
fn fatal(v: mm::teardown::Violation) {
    use core::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if ENFORCE.load(Ordering::Relaxed) {
        crate::kernel::exit::fatal_stop(format_args!("teardown order: {v}"))
    }
    if !SAID.swap(true, Ordering::Relaxed) {
        crate::println!("teardown order (teardown_check=off, going on): {v}");
    }
}

/// `f` on the checker once no other CPU's map is in flight (test build). Another CPU's map
/// publishes before it returns: wait for it (its CPU holds the page-table lock, which no caller
/// holds without holding it itself, so the wait ends), at most 2 s: a map that has not
/// published by then never will, and is reported. (Its vCPU can be off the host CPU for over
/// 100 ms when the host is loaded: a shorter wait reports a map that is only slow.) Every check
/// that reads the unpublished state comes through here, frees and removals alike.
#[cfg(feature = "ktest")]
fn check_when_published(f: impl FnOnce(&mut mm::teardown::TeardownChecker) -> Result<(), mm::teardown::Violation>) {
    use core::sync::atomic::Ordering::Relaxed;
    let me = arch::cpu::cpu_index();
    let deadline = arch::cpu::counter() + 2 * arch::cpu::counter_freq();
    let v = loop {
        let mut c = checker::CHECKER.lock();
        let cpu = checker::MAPPING_CPU.load(Relaxed);
        if cpu == usize::MAX || cpu == me || arch::cpu::counter() > deadline {
            break f(&mut c);
        }
        drop(c);
        core::hint::spin_loop();
    };
    if let Err(v) = v {
        fatal(v);
    }
}

/// Called before any page goes back to an allocator (buddy, altmap, early pool). In the test
/// build, stop with a report if an entry still maps it or a stale translation may be cached.
pub fn check_free(_pa: u64, _size: u64) {
    #[cfg(feature = "ktest")]
    check_when_published(|c| c.freeing(_pa, _size));
}

/// Called when hot-removed memory leaves the kernel (before `remove` returns, so before the
/// DIMM's eject): no entry of its PA range, its linear map or its memmap may be live or
/// pending. Test build only.
pub fn check_removed(_pa: u64, _size: u64, _linear_va: u64, _memmap_va: u64, _memmap_size: u64) {
    #[cfg(feature = "ktest")]
    check_when_published(|c| {
        c.released(_pa, _size)
            .and_then(|_| c.quiescent(_linear_va, _size))
            .and_then(|_| c.quiescent(_memmap_va, _memmap_size))
    });
}
