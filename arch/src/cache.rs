//! Data-cache operations by VA: clean to the point of coherency, and zero (`DC ZVA`).

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

/// The bytes one `DC ZVA` zeroes, from a DCZID_EL0 value (`None`: the instruction is
/// prohibited).
pub fn zva_block_bytes(dczid: u64) -> Option<u64> {
    use crate::sysreg::DCZID_EL0;
    let r = tock_registers::LocalRegisterCopy::<u64, DCZID_EL0::Register>::new(dczid);
    (r.read(DCZID_EL0::DZP) == 0).then(|| 4u64 << r.read(DCZID_EL0::BS))
}

/// Zero `[p, p + len)`: one `DC ZVA` per block when the range is whole blocks (a 4K page is
/// 64 instructions instead of 512 stores; under TCG each is one host memset), else a memset.
///
/// # Safety
/// `[p, p + len)` is writable Normal memory the caller owns: `DC ZVA` on Device memory faults.
pub unsafe fn zero(p: *mut u8, len: usize) {
    #[cfg(target_arch = "aarch64")]
    {
        let dczid: u64;
        // SAFETY: reads an ID register, readable at EL0 and above.
        unsafe { core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack, preserves_flags)) };
        if let Some(block) = zva_block_bytes(dczid) {
            let (start, block) = (p as u64, block as usize);
            if start % block as u64 == 0 && len % block == 0 {
                for off in (0..len).step_by(block) {
                    let a = start + off as u64;
                    // SAFETY: zeroes the aligned block at `a`, inside the caller's range.
                    unsafe { core::arch::asm!("dc zva, {}", in(reg) a, options(nostack, preserves_flags)) };
                }
                return;
            }
        }
    }
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_bytes(p, 0, len) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn zva_block_bytes_decodes_dczid() {
        assert_eq!(super::zva_block_bytes(4), Some(64), "BS=4: 16 words");
        assert_eq!(super::zva_block_bytes(9), Some(2048));
        assert_eq!(super::zva_block_bytes(0x14), None, "DZP set");
    }

    #[test]
    fn zero_zeroes_unaligned_ranges_too() {
        let mut b = [0xffu8; 200];
        // SAFETY: inside the array.
        unsafe { super::zero(b.as_mut_ptr().wrapping_add(3), 100) };
        assert!(b[3..103].iter().all(|&x| x == 0) && b[..3].iter().chain(&b[103..]).all(|&x| x == 0xff));
    }
}
