//! TLB maintenance as seen by portable code.
//!
//! `mm` changes page tables and then calls one of these; the aarch64 implementation issues
//! `DSB ISHST; TLBI ...IS; DSB ISH; ISB` (broadcast to every CPU in the inner-shareable domain),
//! host tests implement the trait with a recorder that checks the teardown order.
//! The TLBI operand is `VA >> 12` in every granule; implementations handle that.

/// A page-table entry as the teardown checker sees it: `[va, va + size)` translated through
/// it, and `[pa, pa + pa_size)` it points at (a leaf's backing, or the next-level table page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub va: u64,
    pub size: u64,
    pub pa: u64,
    pub pa_size: u64,
    /// A table entry (cached by walk caches) rather than a leaf (page or block).
    pub table: bool,
}

/// Broadcast invalidation of kernel (TTBR1, all-ASID) translations.
pub trait TlbInvalidate {
    /// Leaf entries of `[start, end)` were cleared or changed. `stride_shift` is log2 of the
    /// size each leaf maps (page, block), so one TLBI per leaf suffices. Returns only after the
    /// invalidation completed on all CPUs (trailing `DSB ISH; ISB`). Last-level only: this does
    /// **not** clean walk caches, so it never makes a cleared table entry's page freeable.
    fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32);
    /// A table entry covering `va` was cleared: invalidate including walk caches
    /// (`TLBI VAAE1IS`), so no CPU can still walk the table page about to be freed.
    fn flush_kernel_pgtable(&mut self, va: u64);
    /// Invalidate everything (`TLBI VMALLE1IS`).
    fn flush_all(&mut self);
    /// Leaf entries of several ranges (`[start, end)` each, one leaf every `1 << stride_shift`
    /// bytes) were cleared: invalidate them all with a single completion (Linux
    /// `arch_tlbbatch_add_pending` then `arch_tlbbatch_flush`: the TLBIs back to back, one
    /// `DSB ISH`). Above `full_above` planned instructions, one `TLBI VMALLE1IS` instead
    /// ([`kernel_batch_ops`]). The default flushes range by range, which is correct, only slower.
    fn flush_kernel_batch<I>(&mut self, ranges: I, stride_shift: u32, _full_above: u64)
    where
        I: Iterator<Item = (u64, u64)> + Clone,
    {
        for (start, end) in ranges {
            self.flush_kernel_range(start, end, stride_shift);
        }
    }
    /// Notification, not maintenance: the page-table engine cleared a valid entry. The
    /// teardown-order checker uses it to know which frees must wait for an invalidation; real
    /// TLBs ignore it.
    fn cleared(&mut self, _m: Mapping) {}
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

/// Operand of the by-VA, all-ASID TLBIs (`TLBI VAAE1IS`, `VAALE1IS`; Arm ARM D8.x "TLB
/// maintenance instructions"): bits [43:0] = VA[55:12] in every granule (for 16K and 64K the
/// low 2 / 4 bits are ignored), bits [63:44] RES0 (no ASID: all-ASID forms).
pub const fn va_operand(va: u64) -> u64 {
    (va >> 12) & ((1 << 44) - 1)
}

/// The VA a by-VA operand names (VA[55] replicated into VA[63:56], as a TTBR1 or TTBR0
/// address). Granule-offset bits are zero.
pub const fn decode_va_operand(op: u64) -> u64 {
    let va = (op & ((1 << 44) - 1)) << 12;
    if va & (1 << 55) != 0 {
        va | (0xff << 56)
    } else {
        va
    }
}

/// Fields of a range TLBI operand (`TLBI RVA*`, FEAT_TLBIRANGE; Arm ARM "TLBI RVAALE1IS"):
/// bits [47:46] TG, [45:44] SCALE, [43:39] NUM, [38:37] TTL, [36:0] BaseADDR, where BaseADDR
/// is VA[48:12] (4K), VA[50:14] (16K) or VA[52:16] (64K), i.e. `VA >> page_shift`, and the
/// range is `(NUM + 1) << (5 * SCALE + 1)` granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeOperand {
    pub tg: u64,
    pub scale: u64,
    pub num: u64,
    pub ttl: u64,
    pub base: u64,
}

/// Mask of BaseADDR (37 bits).
pub const RANGE_BASE_MASK: u64 = (1 << 37) - 1;

impl RangeOperand {
    /// The operand Linux `__TLBI_VADDR_RANGE` builds for `op` (TTL 0: no level hint).
    pub const fn for_op(op: RangeOp, page_shift: u32) -> RangeOperand {
        RangeOperand {
            tg: range_tg(page_shift),
            scale: op.scale,
            num: op.num,
            ttl: 0,
            base: op.base & RANGE_BASE_MASK,
        }
    }

    pub const fn encode(self) -> u64 {
        (self.base & RANGE_BASE_MASK)
            | (self.ttl & 3) << 37
            | (self.num & 0x1f) << 39
            | (self.scale & 3) << 44
            | (self.tg & 3) << 46
    }

    pub const fn decode(op: u64) -> RangeOperand {
        RangeOperand {
            tg: (op >> 46) & 3,
            scale: (op >> 44) & 3,
            num: (op >> 39) & 0x1f,
            ttl: (op >> 37) & 3,
            base: op & RANGE_BASE_MASK,
        }
    }

    /// Granules the operation covers.
    pub const fn pages(self) -> u64 {
        (self.num + 1) << (5 * self.scale + 1)
    }
}

/// One TLB invalidation instruction with its real operand. All are all-ASID (kernel mappings
/// are global); the kernel only issues the broadcast (inner-shareable, `IS`) forms, the local
/// ones exist so a mutant and the TLB model can express "local instead of broadcast".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tlbi {
    /// `TLBI VAALE1, Xt`: as `VAALE1IS`, this CPU only.
    Vaale1(u64),
    /// `TLBI VAALE1IS, Xt`: last-level (leaf) entries translating one VA. Walk caches keep
    /// their entries.
    Vaale1is(u64),
    /// `TLBI VAAE1IS, Xt`: entries of every level for one VA, walk caches included.
    Vaae1is(u64),
    /// `TLBI RVAALE1IS, Xt`: last-level entries of a VA range.
    Rvaale1is(u64),
    /// `TLBI VMALLE1IS`: everything of the EL1&0 regime.
    Vmalle1is,
}

impl Tlbi {
    /// Whether this instruction invalidates a cached entry translating `[va, va + size)`
    /// (`table`: a walk-cache entry for a table descriptor) under granule `page_shift`,
    /// decoded from the operand as the hardware would. A range operation whose TG is not the
    /// granule in use invalidates nothing here (the architecture leaves it unpredictable).
    pub fn covers(self, va: u64, size: u64, table: bool, page_shift: u32) -> bool {
        let last = va.wrapping_add(size).wrapping_sub(1);
        match self {
            Tlbi::Vmalle1is => true,
            Tlbi::Vaae1is(op) => {
                let t = decode_va_operand(op);
                (va..=last).contains(&t)
            }
            Tlbi::Vaale1is(op) | Tlbi::Vaale1(op) => {
                let t = decode_va_operand(op);
                !table && (va..=last).contains(&t)
            }
            Tlbi::Rvaale1is(op) => {
                let r = RangeOperand::decode(op);
                if table || r.tg != range_tg(page_shift) {
                    return false;
                }
                // Compare granule numbers modulo 2^37, as BaseADDR holds them.
                let first = (va >> page_shift) & RANGE_BASE_MASK;
                let n = (size >> page_shift).max(1);
                let into_range = first.wrapping_sub(r.base) & RANGE_BASE_MASK;
                let into_entry = r.base.wrapping_sub(first) & RANGE_BASE_MASK;
                into_range < r.pages() || into_entry < n
            }
        }
    }

    /// Last-level only (does not clean walk caches).
    pub const fn leaf_only(self) -> bool {
        matches!(self, Tlbi::Vaale1is(_) | Tlbi::Vaale1(_) | Tlbi::Rvaale1is(_))
    }

    /// Reaches every CPU of the inner-shareable domain (not only the issuing one).
    pub const fn broadcast(self) -> bool {
        !matches!(self, Tlbi::Vaale1(_))
    }
}

/// The instructions that invalidate the leaves of `[start, end)` (`end == 0`: to the top of
/// the address space), one leaf every `1 << stride_shift` bytes: per-leaf `VAALE1IS` up to
/// [`MAX_TLBI_OPS`], range operations with FEAT_TLBIRANGE, else one `VMALLE1IS`. Pure, so the
/// kernel, the run-time checker and the host TLB model all see the same sequence.
pub fn kernel_range_ops(
    start: u64,
    end: u64,
    stride_shift: u32,
    page_shift: u32,
    range: bool,
    mut out: impl FnMut(Tlbi),
) {
    let len = end.wrapping_sub(start);
    let n = len >> stride_shift;
    let pages = len >> page_shift;
    if (!range && n > MAX_TLBI_OPS) || (range && pages >= MAX_TLBI_RANGE_PAGES) {
        return out(Tlbi::Vmalle1is);
    }
    leaf_ops(start, end, stride_shift, page_shift, range, out)
}

/// [`kernel_range_ops`] without its full-flush threshold (the range operations' size limit
/// still applies: the caller checks it).
fn leaf_ops(start: u64, end: u64, stride_shift: u32, page_shift: u32, range: bool, mut out: impl FnMut(Tlbi)) {
    let len = end.wrapping_sub(start);
    let n = len >> stride_shift;
    let pages = len >> page_shift;
    let start = match crate::mutant::on(crate::mutant::Mutant::TlbiOffByOnePage) {
        true => start.wrapping_add(1 << page_shift),
        false => start,
    };
    if range {
        range_ops(start, pages, page_shift, |op| {
            if op.pages == 1 {
                out(Tlbi::Vaale1is(va_operand(op.base << page_shift)));
            } else {
                out(Tlbi::Rvaale1is(RangeOperand::for_op(op, page_shift).encode()));
            }
        });
    } else {
        for i in 0..n {
            let op = va_operand(start.wrapping_add(i << stride_shift));
            // Mutant: local instead of broadcast (only the issuing CPU forgets the entries).
            if crate::mutant::on(crate::mutant::Mutant::LocalTlbi) {
                out(Tlbi::Vaale1(op));
            } else {
                out(Tlbi::Vaale1is(op));
            }
        }
    }
}

/// The instructions that invalidate the leaves of every range of a batch with one completion:
/// each range's per-leaf or range operations back to back, or one `VMALLE1IS` when the batch
/// would take more than `full_above` instructions (the batch's threshold replaces
/// [`MAX_TLBI_OPS`]; a range too large for range operations is a full flush too). Pure, like
/// [`kernel_range_ops`], so the kernel, the checker and the TLB model see the same sequence.
pub fn kernel_batch_ops<I>(
    ranges: I,
    stride_shift: u32,
    page_shift: u32,
    range: bool,
    full_above: u64,
    mut out: impl FnMut(Tlbi),
) where
    I: Iterator<Item = (u64, u64)> + Clone,
{
    let mut planned = 0u64;
    let mut full = false;
    for (start, end) in ranges.clone() {
        let pages = end.wrapping_sub(start) >> page_shift;
        full |= range && pages >= MAX_TLBI_RANGE_PAGES;
        if !full {
            leaf_ops(start, end, stride_shift, page_shift, range, |_| planned += 1);
        }
        if full || planned > full_above {
            return out(Tlbi::Vmalle1is);
        }
    }
    for (start, end) in ranges {
        leaf_ops(start, end, stride_shift, page_shift, range, &mut out);
    }
}

/// The CPU's TLB, invalidated by broadcast (inner-shareable) TLBI instructions.
#[derive(Clone, Copy, Debug)]
pub struct CpuTlb {
    pub page_shift: u32,
    /// FEAT_TLBIRANGE on every CPU: use `TLBI RVAALE1IS`.
    pub range: bool,
    /// Some CPU has erratum 1286807: repeat each TLBI after `DSB ISH`.
    pub repeat: bool,
}

impl CpuTlb {
    /// What `flush_kernel_range` issues (see [`kernel_range_ops`]).
    pub fn range_ops(&self, start: u64, end: u64, stride_shift: u32, out: impl FnMut(Tlbi)) {
        kernel_range_ops(start, end, stride_shift, self.page_shift, self.range, out)
    }

    /// What `flush_kernel_batch` issues (see [`kernel_batch_ops`]).
    pub fn batch_ops<I>(&self, ranges: I, stride_shift: u32, full_above: u64, out: impl FnMut(Tlbi))
    where
        I: Iterator<Item = (u64, u64)> + Clone,
    {
        kernel_batch_ops(ranges, stride_shift, self.page_shift, self.range, full_above, out)
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::{stats, va_operand, CpuTlb, TlbInvalidate, Tlbi};
    use core::sync::atomic::Ordering;

    /// Issue one TLBI (no barriers). `aarch64-cpu` has no TLB maintenance instructions (nor
    /// FEAT_TLBIRANGE's range forms), so this is the one wrapper over `tlbi`; the operands are
    /// built and host-tested above ([`va_operand`], [`super::RangeOperand`]).
    fn execute(op: Tlbi) {
        // TLB invalidation has no memory-safety effect; FEAT_TLBIRANGE is implemented whenever a
        // range operation is planned (checked at boot).
        match op {
            Tlbi::Vaale1is(x) => {
                // SAFETY: a TLB invalidation, no memory-safety effect.
                unsafe { core::arch::asm!("tlbi vaale1is, {}", in(reg) x, options(nostack, preserves_flags)) };
                stats::TLBI_VA.fetch_add(1, Ordering::Relaxed);
            }
            Tlbi::Vaale1(x) => {
                // SAFETY: a TLB invalidation, no memory-safety effect.
                unsafe { core::arch::asm!("tlbi vaale1, {}", in(reg) x, options(nostack, preserves_flags)) };
                stats::TLBI_VA.fetch_add(1, Ordering::Relaxed);
            }
            Tlbi::Vaae1is(x) => {
                // SAFETY: a TLB invalidation, no memory-safety effect.
                unsafe { core::arch::asm!("tlbi vaae1is, {}", in(reg) x, options(nostack, preserves_flags)) };
                stats::TLBI_VA.fetch_add(1, Ordering::Relaxed);
            }
            Tlbi::Rvaale1is(x) => {
                // SAFETY: a TLB invalidation; FEAT_TLBIRANGE is implemented (range ops are planned only then).
                unsafe {
                    core::arch::asm!(".arch_extension tlb-rmi", "tlbi rvaale1is, {}", in(reg) x, options(nostack, preserves_flags))
                };
                stats::TLBI_RANGE.fetch_add(1, Ordering::Relaxed);
            }
            Tlbi::Vmalle1is => {
                // SAFETY: a TLB invalidation, no memory-safety effect.
                unsafe { core::arch::asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
                stats::TLBI_ALL.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `DSB ISHST`: cleared descriptors are visible to other walkers before the invalidation.
    fn before() {
        // SAFETY: barrier only.
        unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
    }

    /// `DSB ISH; ISB`: wait for completion on all CPUs, resynchronise this one.
    fn after() {
        // SAFETY: barriers only.
        unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
    }

    impl CpuTlb {
        /// One TLBI; with the erratum 1286807 workaround, `DSB ISH` and the same TLBI again
        /// (Linux `__tlbi` under `ARM64_WORKAROUND_REPEAT_TLBI`).
        fn issue(&self, op: Tlbi) {
            execute(op);
            if self.repeat {
                // SAFETY: barrier only.
                unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
                execute(op);
            }
        }
    }

    impl TlbInvalidate for CpuTlb {
        fn flush_kernel_range(&mut self, start: u64, end: u64, stride_shift: u32) {
            before();
            self.range_ops(start, end, stride_shift, |op| self.issue(op));
            after();
        }

        fn flush_kernel_pgtable(&mut self, va: u64) {
            before();
            // VAAE1IS (not the last-level-only form) also drops cached walks through the table
            // entry that was cleared.
            self.issue(Tlbi::Vaae1is(va_operand(va)));
            after();
        }

        fn flush_all(&mut self) {
            before();
            self.issue(Tlbi::Vmalle1is);
            after();
        }

        fn flush_kernel_batch<I>(&mut self, ranges: I, stride_shift: u32, full_above: u64)
        where
            I: Iterator<Item = (u64, u64)> + Clone,
        {
            // No DSB between the TLBIs: they complete together at the one `DSB ISH`.
            before();
            self.batch_ops(ranges, stride_shift, full_above, |op| self.issue(op));
            after();
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
                    // Each operation starts where the previous one ended.
                    assert_eq!(o.base, next, "{pages} pages: gap or overlap");
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

    /// Known answers, per granule, worked out by hand from the operand layout of the Arm ARM
    /// (TLBI RVAALE1IS: TG [47:46], SCALE [45:44], NUM [43:39], TTL [38:37], BaseADDR [36:0]
    /// = VA >> granule shift; the same layout Linux `__TLBI_VADDR_RANGE` builds).
    #[test]
    fn range_operand_known_answers() {
        // 4K, a 2 MiB PMD of pages at 0xffff_0000_4000_0000: SCALE 1, NUM 7 (8 × 64 pages).
        // BaseADDR = VA[48:12] = 0x10_0004_0000 (VA[48] = 1).
        let v = ops(0xffff_0000_4000_0000, 512, 12);
        assert_eq!(v.len(), 1);
        assert_eq!(RangeOperand::for_op(v[0], 12).encode(), 0x5390_0004_0000);
        // 16K, 64 pages (1 MiB) at 0xffff_8000_0000_0000: the largest scale first, so SCALE 1,
        // NUM 0 (one 64-page unit), TG 2, BaseADDR = VA[50:14] = 0x1e_0000_0000.
        let v = ops(0xffff_8000_0000_0000, 64, 14);
        assert_eq!(v.len(), 1);
        assert_eq!(RangeOperand::for_op(v[0], 14).encode(), 0x901e_0000_0000);
        // 64K, 2048 pages (128 MiB) at 0xffff_0000_8000_0000: SCALE 2, NUM 0, TG 3,
        // BaseADDR = VA[52:16] = 0x1f_0000_8000.
        let v = ops(0xffff_0000_8000_0000, 2048, 16);
        assert_eq!(v.len(), 1);
        assert_eq!(RangeOperand::for_op(v[0], 16).encode(), 0xe01f_0000_8000);
        // 16K-36, the whole largest range (2^21 pages = 32 GiB) at the linear map base
        // 0xffff_fff0_0000_0000 is one op short of MAX_TLBI_RANGE_PAGES: SCALE 3, NUM 31.
        let op = RangeOperand {
            tg: 2,
            scale: 3,
            num: 31,
            ttl: 0,
            base: (0xffff_fff8_0000_0000u64 >> 14) & RANGE_BASE_MASK,
        };
        assert_eq!(op.encode(), 0xbf9f_ffe0_0000);
        assert_eq!(op.pages(), 1 << 21);
        // Decoding gives the fields back.
        assert_eq!(
            RangeOperand::decode(0x5390_0004_0000),
            RangeOperand {
                tg: 1,
                scale: 1,
                num: 7,
                ttl: 0,
                base: 0x10_0004_0000
            }
        );
        // By-VA operand: VA[55:12], the ASID field zero.
        assert_eq!(va_operand(0xffff_0000_4020_1000), 0xff0_0004_0201);
        assert_eq!(decode_va_operand(0xff0_0004_0201), 0xffff_0000_4020_1000);
    }

    /// The decoded operations cover exactly the leaves they were planned for, per granule,
    /// with and without FEAT_TLBIRANGE, and nothing next to them.
    #[test]
    fn planned_ops_cover_exactly_the_range() {
        for shift in [12u32, 14, 16] {
            let page = 1u64 << shift;
            for range in [false, true] {
                for pages in [1u64, 2, 3, 33, 512, 600] {
                    let start = 0xffff_0000_4000_0000u64;
                    let end = start + pages * page;
                    let mut v = Vec::new();
                    kernel_range_ops(start, end, shift, shift, range, |o| v.push(o));
                    let covered = |va: u64| v.iter().any(|o| o.covers(va, page, false, shift));
                    for i in 0..pages {
                        assert!(covered(start + i * page), "{shift} {range} {pages}: page {i} missed");
                    }
                    if !v.contains(&Tlbi::Vmalle1is) {
                        assert!(
                            !covered(start - page) && !covered(end),
                            "{shift} {range} {pages}: too wide"
                        );
                    }
                    // Leaf-only operations never clean a walk-cache entry.
                    assert!(v
                        .iter()
                        .all(|o| *o == Tlbi::Vmalle1is || !o.covers(start, page, true, shift)));
                }
            }
            // A per-leaf flush at block stride over page leaves misses all but one per block.
            let mut v = Vec::new();
            kernel_range_ops(
                0xffff_0000_4000_0000,
                0xffff_0000_4000_0000 + (page << 4),
                shift + 4,
                shift,
                false,
                |o| v.push(o),
            );
            assert!(!v
                .iter()
                .any(|o| o.covers(0xffff_0000_4000_0000 + page, page, false, shift)));
            // A range op with another granule's TG invalidates nothing.
            let op = Tlbi::Rvaale1is(
                RangeOperand {
                    tg: range_tg(shift) % 3 + 1,
                    scale: 0,
                    num: 31,
                    ttl: 0,
                    base: (0xffff_0000_4000_0000u64 >> shift) & RANGE_BASE_MASK,
                }
                .encode(),
            );
            assert!(!op.covers(0xffff_0000_4000_0000, page, false, shift));
        }
    }

    /// A batch is every range's own plan back to back, and one full flush past the threshold.
    #[test]
    fn batch_plans_every_range_or_one_full_flush() {
        let base = 0xffff_0000_4000_0000u64;
        for shift in [12u32, 14, 16] {
            let page = 1u64 << shift;
            let ranges = [
                (base, base + page),
                (base + 8 * page, base + 11 * page),
                (base + 40 * page, base + 41 * page),
            ];
            for range in [false, true] {
                let mut batch = Vec::new();
                kernel_batch_ops(ranges.iter().copied(), shift, shift, range, MAX_TLBI_OPS, |o| {
                    batch.push(o)
                });
                let mut each = Vec::new();
                for &(s, e) in &ranges {
                    kernel_range_ops(s, e, shift, shift, range, |o| each.push(o));
                }
                assert_eq!(batch, each, "{shift}: range={range}");
                for &(s, e) in &ranges {
                    for va in (s..e).step_by(page as usize) {
                        assert!(batch.iter().any(|o| o.covers(va, page, false, shift)), "{va:#x} left");
                    }
                }
                let mut full = Vec::new();
                kernel_batch_ops(ranges.iter().copied(), shift, shift, range, 1, |o| full.push(o));
                assert_eq!(full, [Tlbi::Vmalle1is]);
            }
            // The batch's threshold replaces the per-range one: past MAX_TLBI_OPS leaves in
            // one range, per-leaf operations while the batch allows them.
            let big = [(base, base + page), (base, base + (MAX_TLBI_OPS + 1) * page)];
            let mut v = Vec::new();
            kernel_batch_ops(big.iter().copied(), shift, shift, false, u64::MAX, |o| v.push(o));
            assert_eq!(v.len() as u64, MAX_TLBI_OPS + 2);
            let mut v = Vec::new();
            kernel_batch_ops(big.iter().copied(), shift, shift, false, MAX_TLBI_OPS, |o| v.push(o));
            assert_eq!(v, [Tlbi::Vmalle1is]);
        }
    }
}
