//! Data-cache maintenance by VA (to the point of coherency).

/// Clean `[va, va + len)` to the point of coherency so a CPU running with its MMU (and thus
/// data cache) still off reads what we wrote: secondaries read their boot parameters that way.
/// QEMU does not model caches; real hardware needs this. `aarch64-cpu` has no cache
/// maintenance instructions, so this wraps `dc cvac` itself.
#[cfg(target_arch = "aarch64")]
pub fn clean_to_poc(va: u64, len: u64) {
    const LINE: u64 = 64; // minimum line size on every Armv8 core; safe lower bound
    let mut a = va & !(LINE - 1);
    while a < va + len {
        // SAFETY: DC CVAC on a mapped kernel address only writes back cache lines.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += LINE;
    }
    // SAFETY: barrier only.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}
