//! The kernel's TLB maintenance, and — in the test build — the run-time teardown-order
//! checker: every entry the page-table engine clears is tracked until a TLB invalidation covers
//! it, and freeing a page while such an entry still points at it stops the kernel with a report.

use arch::tlb::{CpuTlb, TlbInvalidate};

/// The TLB as page-table code sees it: broadcast invalidations (plus checking in `ktest`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelTlb;

/// FEAT_TLBIRANGE, read once at boot (ID_AA64ISAR0_EL1.TLB).
static TLBI_RANGE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

pub fn init() {
    TLBI_RANGE.store(arch::cpu::has_tlbi_range(), core::sync::atomic::Ordering::Relaxed);
}

fn cpu_tlb() -> CpuTlb {
    CpuTlb {
        page_shift: crate::layout::PAGE_SHIFT,
        range: TLBI_RANGE.load(core::sync::atomic::Ordering::Relaxed),
    }
}

#[cfg(feature = "ktest")]
mod checker {
    use crate::sync::IrqSafeLock;
    use mm::teardown::TeardownChecker;
    pub static CHECKER: IrqSafeLock<TeardownChecker> = IrqSafeLock::new(TeardownChecker::new());
}

#[cfg(feature = "ktest")]
pub fn with_checker<R>(f: impl FnOnce(&mut mm::teardown::TeardownChecker) -> R) -> R {
    f(&mut checker::CHECKER.lock())
}

impl TlbInvalidate for KernelTlb {
    fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
        cpu_tlb().flush_kernel_range(start, end, stride_shift);
        #[cfg(feature = "ktest")]
        checker::CHECKER.lock().invalidated(start, end);
    }
    fn flush_kernel_pgtable(&mut self, va: u64) {
        cpu_tlb().flush_kernel_pgtable(va);
        #[cfg(feature = "ktest")]
        checker::CHECKER.lock().invalidated_pgtable(va);
    }
    fn flush_all(&mut self) {
        cpu_tlb().flush_all();
        #[cfg(feature = "ktest")]
        checker::CHECKER.lock().invalidated_all();
    }
    #[cfg(feature = "ktest")]
    fn cleared(&mut self, va: u64, size: u64, pa: u64, pa_size: u64) {
        checker::CHECKER.lock().cleared(va, size, pa, pa_size);
    }
}

/// Called before any page goes back to an allocator. In the test build, stop with a report if
/// a stale translation of it may still be cached.
pub fn check_free(_pa: u64, _size: u64) {
    #[cfg(feature = "ktest")]
    {
        let v = checker::CHECKER.lock().freeing(_pa, _size);
        if let Err(v) = v {
            crate::console::_print_panic(format_args!("\nhotmem: FATAL teardown order: {v}\n"));
            arch::cpu::semihosting_exit(crate::trap::FATAL_STATUS);
        }
    }
}
