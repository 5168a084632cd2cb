//! Whole-block memory operations the page allocator and migration use, at the widest the
//! architecture offers: zero with `DC ZVA`, copy with pairs of 128-bit registers. Under TCG
//! each instruction is one host operation, so a 4K page is 64 `DC ZVA` instead of 512 stores,
//! and 384 instructions of copy instead of 2048 of the word-wise `memcpy`.

/// The bytes one `DC ZVA` zeroes, from a DCZID_EL0 value (`None`: the instruction is
/// prohibited).
pub fn zva_block_bytes(dczid: u64) -> Option<u64> {
    use crate::sysreg::DCZID_EL0;
    let r = tock_registers::LocalRegisterCopy::<u64, DCZID_EL0::Register>::new(dczid);
    (r.read(DCZID_EL0::DZP) == 0).then(|| 4u64 << r.read(DCZID_EL0::BS))
}

/// Zero `[p, p + len)`: one `DC ZVA` per block when the range is whole blocks, else a memset.
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
            if start.is_multiple_of(block as u64) && len.is_multiple_of(block) {
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

/// Copy `len` bytes from `src` to `dst`: 64 bytes per loop (two `LDP`/`STP` of Q registers)
/// when both are 64-byte aligned and `len` a multiple of 64 (whole pages always are), else
/// `memcpy`.
///
/// # Safety
/// `[src, src + len)` readable and `[dst, dst + len)` writable Normal memory, not
/// overlapping, the destination the caller's.
pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "aarch64")]
    if len != 0 && (dst as usize | src as usize | len).is_multiple_of(64) {
        // SAFETY: the caller's contract covers every byte the loop reads and writes; it
        // clobbers only the registers named (v0-v3 are caller-saved).
        unsafe {
            core::arch::asm!(
                "2:",
                "ldp q0, q1, [{s}], #32",
                "ldp q2, q3, [{s}], #32",
                "stp q0, q1, [{d}], #32",
                "stp q2, q3, [{d}], #32",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                s = inout(reg) src => _,
                d = inout(reg) dst => _,
                n = inout(reg) len => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                options(nostack),
            )
        };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { core::ptr::copy_nonoverlapping(src, dst, len) };
}

/// Set every byte of `[p, p + len)` to `v`: 64 bytes per loop (two `STP` of Q registers) when
/// `p` is 64-byte aligned and `len` a multiple of 64, else `memset`.
///
/// # Safety
/// `[p, p + len)` is writable Normal memory the caller owns.
pub unsafe fn fill(p: *mut u8, v: u8, len: usize) {
    #[cfg(target_arch = "aarch64")]
    if len != 0 && (p as usize | len).is_multiple_of(64) {
        // SAFETY: the caller's contract covers every byte the loop writes; it clobbers only
        // the registers named.
        unsafe {
            core::arch::asm!(
                "dup v0.16b, {v:w}",
                "mov v1.16b, v0.16b",
                "2:",
                "stp q0, q1, [{d}], #32",
                "stp q0, q1, [{d}], #32",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                v = in(reg) v as u32,
                d = inout(reg) p => _,
                n = inout(reg) len => _,
                out("v0") _, out("v1") _,
                options(nostack),
            )
        };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_bytes(p, v, len) };
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
    fn zero_and_copy_reach_exactly_their_range() {
        let mut b = [0xffu8; 200];
        // SAFETY: inside the array.
        unsafe { super::zero(b.as_mut_ptr().wrapping_add(3), 100) };
        assert!(b[3..103].iter().all(|&x| x == 0) && b[..3].iter().chain(&b[103..]).all(|&x| x == 0xff));
        let src: [u8; 256] = core::array::from_fn(|i| i as u8);
        let mut dst = [0u8; 256];
        // SAFETY: both arrays hold 255 bytes from their second.
        unsafe { super::copy(dst.as_mut_ptr().wrapping_add(1), src.as_ptr().wrapping_add(1), 255) };
        assert_eq!((dst[0], &dst[1..]), (0, &src[1..]));
        let mut b = [0u8; 100];
        // SAFETY: inside the array.
        unsafe { super::fill(b.as_mut_ptr().wrapping_add(1), 7, 98) };
        assert!(b[1..99].iter().all(|&x| x == 7) && b[0] == 0 && b[99] == 0);
    }
}
