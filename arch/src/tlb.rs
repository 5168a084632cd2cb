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

/// Without FEAT_TLBIRANGE, above this many per-leaf invalidations one `TLBI VMALLE1IS` is
/// cheaper (Linux `MAX_TLBI_OPS` = PTRS_PER_PTE; we use the 4K value, 512, for every granule).
/// With FEAT_TLBIRANGE a range of any size costs at most a few range operations (one per
/// scale), so there is no full flush.
pub const MAX_TLBI_OPS: u64 = 512;

/// Instruction counts, for `meminfo`, `remove` and the benchmarks.
pub mod stats {
    use core::sync::atomic::{AtomicU64, Ordering};
    /// Per-address invalidations (`TLBI VAALE1IS`, `VAAE1IS`).
    pub static TLBI_VA: AtomicU64 = AtomicU64::new(0);
    /// Range invalidations (`TLBI RVAALE1IS`).
    pub static TLBI_RANGE: AtomicU64 = AtomicU64::new(0);
    /// Full invalidations (`TLBI VMALLE1IS`).
    pub static TLBI_ALL: AtomicU64 = AtomicU64::new(0);
    pub fn va() -> u64 {
        TLBI_VA.load(Ordering::Relaxed)
    }
    pub fn range() -> u64 {
        TLBI_RANGE.load(Ordering::Relaxed)
    }
    pub fn all() -> u64 {
        TLBI_ALL.load(Ordering::Relaxed)
    }
}

/// Largest range the range operations can express (Linux `MAX_TLBI_RANGE_PAGES` =
/// `(31 + 1) << (5 * 3 + 1)`); at or above it, invalidate everything.
pub const MAX_TLBI_RANGE_PAGES: u64 = 32 << 16;

/// One range operation of a range invalidation: the `TLBI RVA*` operand fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeOp {
    /// First address, in granule units (bits [36:0] of the operand).
    pub base: u64,
    pub scale: u64,
    pub num: u64,
    /// Pages it covers: `(num + 1) << (5 * scale + 1)`.
    pub pages: u64,
}

/// Split `pages` granule pages starting at `start` into range operations the way Linux
/// `__flush_tlb_range_op` does (largest scale first; an odd single page is returned with
/// `pages == 1` and must be invalidated with a per-address TLBI). `pages` must be below
/// [`MAX_TLBI_RANGE_PAGES`].
pub fn range_ops(start: u64, mut pages: u64, page_shift: u32, mut out: impl FnMut(RangeOp)) {
    let mut addr = start;
    let mut scale: i64 = 3;
    while pages > 0 {
        if pages == 1 || scale < 0 {
            out(RangeOp {
                base: addr >> page_shift,
                scale: 0,
                num: 0,
                pages: 1,
            });
            addr += 1 << page_shift;
            pages -= 1;
            continue;
        }
        let s = scale as u64;
        let num = ((pages >> (5 * s + 1)) & 0x1f) as i64 - 1;
        if num >= 0 {
            let n = ((num as u64) + 1) << (5 * s + 1);
            out(RangeOp {
                base: addr >> page_shift,
                scale: s,
                num: num as u64,
                pages: n,
            });
            addr += n << page_shift;
            pages -= n;
        }
        scale -= 1;
    }
}

/// The TG field of range TLBI operands: 1 = 4K, 2 = 16K, 3 = 64K.
pub const fn range_tg(page_shift: u32) -> u64 {
    match page_shift {
        12 => 1,
        14 => 2,
        _ => 3,
    }
}

/// The CPU's TLB, invalidated by broadcast (inner-shareable) TLBI instructions.
#[derive(Clone, Copy, Debug)]
pub struct CpuTlb {
    pub page_shift: u32,
    /// FEAT_TLBIRANGE: use `TLBI RVAALE1IS`.
    pub range: bool,
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::{range_ops, range_tg, stats, CpuTlb, TlbInvalidate, MAX_TLBI_OPS, MAX_TLBI_RANGE_PAGES};
    use core::sync::atomic::Ordering;

    /// TLBI operand for a VA: bits [55:12] of the address, whatever the granule.
    fn operand(va: u64) -> u64 {
        (va >> 12) & ((1 << 44) - 1)
    }

    impl TlbInvalidate for CpuTlb {
        fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
            // `end == 0` means "to the top of the address space" (a range ending at 2^64).
            let len = end.wrapping_sub(start);
            let n = len >> stride_shift;
            let pages = len >> self.page_shift;
            if (!self.range && n > MAX_TLBI_OPS) || (self.range && pages >= MAX_TLBI_RANGE_PAGES) {
                return self.flush_all();
            }
            // SAFETY: barriers and TLB invalidation have no memory-safety effect; DSB ISHST makes
            // the cleared descriptors visible to other walkers before the invalidation, the
            // trailing DSB ISH waits for completion on all CPUs, ISB resynchronises this one.
            unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
            if self.range {
                let tg = range_tg(self.page_shift);
                range_ops(start, pages, self.page_shift, |op| {
                    if op.pages == 1 {
                        // SAFETY: see above.
                        unsafe {
                            core::arch::asm!("tlbi vaale1is, {}", in(reg) operand(op.base << self.page_shift), options(nostack, preserves_flags))
                        };
                        stats::TLBI_VA.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let arg = (op.base & ((1 << 37) - 1)) | tg << 46 | op.scale << 44 | op.num << 39;
                        // SAFETY: see above (FEAT_TLBIRANGE is implemented: checked at boot).
                        unsafe {
                            core::arch::asm!(".arch_extension tlb-rmi", "tlbi rvaale1is, {}", in(reg) arg, options(nostack, preserves_flags))
                        };
                        stats::TLBI_RANGE.fetch_add(1, Ordering::Relaxed);
                    }
                });
            } else {
                for i in 0..n {
                    let va = start.wrapping_add(i << stride_shift);
                    // SAFETY: see above.
                    unsafe {
                        core::arch::asm!("tlbi vaale1is, {}", in(reg) operand(va), options(nostack, preserves_flags))
                    };
                }
                stats::TLBI_VA.fetch_add(n, Ordering::Relaxed);
            }
            // SAFETY: see above.
            unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
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
                core::arch::asm!(
                    "dsb ishst",
                    "tlbi vmalle1is",
                    "dsb ish",
                    "isb",
                    options(nostack, preserves_flags)
                );
            }
            stats::TLBI_ALL.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(start: u64, pages: u64, shift: u32) -> Vec<RangeOp> {
        let mut v = Vec::new();
        range_ops(start, pages, shift, |o| v.push(o));
        v
    }

    extern crate std;
    use std::vec::Vec;

    #[test]
    fn range_ops_cover_exactly() {
        for shift in [12, 14, 16] {
            for pages in [
                1u64,
                2,
                3,
                31,
                32,
                33,
                512,
                513,
                8192,
                32768,
                65535,
                MAX_TLBI_RANGE_PAGES - 1,
            ] {
                let start = 0xffff_0000_4000_0000u64;
                let v = ops(start, pages, shift);
                assert_eq!(v.iter().map(|o| o.pages).sum::<u64>(), pages, "{pages} pages");
                let mut next = start >> shift;
                for o in &v {
                    assert_eq!(o.base, next & ((1 << 52) - 1) | (next & !((1 << 52) - 1)));
                    assert!(o.num < 32 && o.scale < 4);
                    assert_eq!(
                        o.pages,
                        if o.pages == 1 && o.num == 0 && o.scale == 0 {
                            1
                        } else {
                            (o.num + 1) << (5 * o.scale + 1)
                        }
                    );
                    next += o.pages;
                }
                assert!(v.len() <= 4 * 2 + 1, "{pages} pages took {} ops", v.len());
            }
        }
    }

    #[test]
    fn linux_examples() {
        // 512 pages (a 2 MiB PMD of 4K pages): one op at scale 1 (64-page units), num 7.
        assert_eq!(
            ops(0, 512, 12),
            [RangeOp {
                base: 0,
                scale: 1,
                num: 7,
                pages: 512
            }]
        );
        // 3 pages: one op of 2 (scale 0, num 0), then a single page.
        let v = ops(0, 3, 12);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].scale, v[0].num, v[0].pages), (0, 0, 2));
        assert_eq!(v[1].pages, 1);
    }
}
