//! TLB maintenance as seen by portable code.
//!
//! `mm` changes page tables and then calls one of these; the aarch64 implementation issues
//! `DSB ISHST; TLBI ...IS; DSB ISH; ISB` (broadcast to every CPU in the inner-shareable domain),
//! host tests implement the trait with a recorder that checks the teardown order.
//! The TLBI operand is `VA >> 12` in every granule; implementations handle that.

/// Broadcast invalidation of kernel (TTBR1, all-ASID) translations.
pub trait TlbInvalidate {
    /// Leaf entries of `[start, end)` were cleared or changed. `stride_shift` is log2 of the
    /// size each leaf maps (page, block), so one TLBI per leaf suffices. Returns only after the
    /// invalidation completed on all CPUs (trailing `DSB ISH; ISB`).
    fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32);
    /// A table entry covering `va` was cleared: invalidate including walk caches
    /// (`TLBI VAAE1IS`), so no CPU can still walk the table page about to be freed.
    fn flush_kernel_pgtable(&mut self, va: u64);
    /// Invalidate everything (`TLBI VMALLE1IS`).
    fn flush_all(&mut self);
    /// Notification, not maintenance: the page-table engine cleared a valid entry that
    /// translated `[va, va + size)` to `[pa, pa + pa_size)` (a leaf's backing, or the table
    /// page a table entry pointed at). The teardown-order checker uses it to know which
    /// frees must wait for an invalidation; real TLBs ignore it.
    fn cleared(&mut self, _va: u64, _size: u64, _pa: u64, _pa_size: u64) {}
}

/// Above this many per-page invalidations one `TLBI VMALLE1IS` is cheaper (Linux uses
/// `MAX_TLBI_OPS` = PTRS_PER_PTE; we use the 4K value for every granule).
pub const MAX_TLBI_OPS: u64 = 512;

/// Instruction counts, for `meminfo` and the benchmarks.
pub mod stats {
    use core::sync::atomic::{AtomicU64, Ordering};
    pub static TLBI_VA: AtomicU64 = AtomicU64::new(0);
    pub static TLBI_ALL: AtomicU64 = AtomicU64::new(0);
    pub fn va() -> u64 {
        TLBI_VA.load(Ordering::Relaxed)
    }
    pub fn all() -> u64 {
        TLBI_ALL.load(Ordering::Relaxed)
    }
}

/// The CPU's TLB, invalidated by broadcast (inner-shareable) TLBI instructions.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTlb;

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::{stats, CpuTlb, TlbInvalidate, MAX_TLBI_OPS};
    use core::sync::atomic::Ordering;

    /// TLBI operand for a VA: bits [55:12] of the address, whatever the granule.
    fn operand(va: u64) -> u64 {
        (va >> 12) & ((1 << 44) - 1)
    }

    impl TlbInvalidate for CpuTlb {
        fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
            // `end == 0` means "to the top of the address space" (a range ending at 2^64).
            let n = end.wrapping_sub(start) >> stride_shift;
            if n > MAX_TLBI_OPS {
                return self.flush_all();
            }
            // SAFETY: barriers and TLB invalidation have no memory-safety effect; DSB ISHST makes
            // the cleared descriptors visible to other walkers before the invalidation, the
            // trailing DSB ISH waits for completion on all CPUs, ISB resynchronises this one.
            unsafe {
                core::arch::asm!("dsb ishst", options(nostack, preserves_flags));
                for i in 0..n {
                    let va = start.wrapping_add(i << stride_shift);
                    core::arch::asm!("tlbi vaale1is, {}", in(reg) operand(va), options(nostack, preserves_flags));
                }
                core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags));
            }
            stats::TLBI_VA.fetch_add(n, Ordering::Relaxed);
        }

        fn flush_kernel_pgtable(&mut self, va: u64) {
            // SAFETY: as above; VAAE1IS (not the last-level-only form) also drops cached walks
            // through the table entry that was cleared.
            unsafe {
                core::arch::asm!("dsb ishst", "tlbi vaae1is, {}", "dsb ish", "isb", in(reg) operand(va), options(nostack, preserves_flags));
            }
            stats::TLBI_VA.fetch_add(1, Ordering::Relaxed);
        }

        fn flush_all(&mut self) {
            // SAFETY: see flush_kernel_range.
            unsafe {
                core::arch::asm!("dsb ishst", "tlbi vmalle1is", "dsb ish", "isb", options(nostack, preserves_flags));
            }
            stats::TLBI_ALL.fetch_add(1, Ordering::Relaxed);
        }
    }
}
