//! MMU control registers: MAIR_EL1, TCR_EL1 and SCTLR_EL1 values for a granule and VA size.
//!
//! Values are composed with `aarch64-cpu` field definitions; the boot assembly loads them (the
//! same values on every CPU) through [`crate::boot::BootMmu`].

use crate::descriptor::{MAIR_IDX_DEVICE, MAIR_IDX_NORMAL};
use crate::sysreg::SCTLR_EL1_EXT;
#[cfg(target_arch = "aarch64")]
use aarch64_cpu::registers::PAR_EL1;
use aarch64_cpu::registers::{MAIR_EL1, SCTLR_EL1, TCR_EL1};
use tock_registers::{fields::FieldValue, LocalRegisterCopy};

/// SCTLR_EL1 with the MMU off: only RES1 bits and exception-entry/exit synchronisation
/// (Linux `INIT_SCTLR_EL1_MMU_OFF`: LSMAOE, nTLSMD, EIS, TSCXT, EOS). A constant for the boot
/// assembly, so composed from the fields' `value`s (`+` on field values is not `const`).
pub const SCTLR_EL1_MMU_OFF: u64 = SCTLR_EL1_EXT::LSMAOE::SET.value
    | SCTLR_EL1_EXT::nTLSMD::SET.value
    | SCTLR_EL1_EXT::EIS::SET.value
    | SCTLR_EL1_EXT::TSCXT::SET.value
    | SCTLR_EL1_EXT::EOS::SET.value;

/// SCTLR_EL1 with the MMU and caches on, SP alignment checks, and WXN: any writable kernel
/// mapping is never executable, so W^X holds even if a descriptor were built wrong.
pub fn sctlr_mmu_on() -> u64 {
    let v: FieldValue<u64, SCTLR_EL1::Register> = SCTLR_EL1::M::Enable
        + SCTLR_EL1::C::Cacheable
        + SCTLR_EL1::I::Cacheable
        + SCTLR_EL1::SA::Enable
        + SCTLR_EL1::SA0::Enable
        + SCTLR_EL1::WXN::Enable;
    SCTLR_EL1_MMU_OFF | v.value
}

/// MAIR_EL1: index [`MAIR_IDX_DEVICE`] = Device-nGnRE, index [`MAIR_IDX_NORMAL`] = Normal
/// write-back read/write-allocate.
pub fn mair() -> u64 {
    const _: () = assert!(MAIR_IDX_DEVICE == 0 && MAIR_IDX_NORMAL == 1);
    let v: FieldValue<u64, MAIR_EL1::Register> = MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
        + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
        + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc;
    v.value
}

/// TCR_EL1 for both halves: `va_bits` wide, granule `page_shift`, inner-shareable write-back
/// walks, and the physical address size the CPU reports (`pa_range` = ID_AA64MMFR0_EL1.PARange,
/// capped at 48 bits since LPA is not used).
pub fn tcr(page_shift: u32, va_bits: u32, pa_range: u64) -> u64 {
    let mut r: LocalRegisterCopy<u64, TCR_EL1::Register> = LocalRegisterCopy::new(0);
    let tsz = 64 - va_bits as u64;
    r.modify(TCR_EL1::T0SZ.val(tsz) + TCR_EL1::T1SZ.val(tsz));
    r.modify(match page_shift {
        12 => TCR_EL1::TG0::KiB_4 + TCR_EL1::TG1::KiB_4,
        14 => TCR_EL1::TG0::KiB_16 + TCR_EL1::TG1::KiB_16,
        _ => TCR_EL1::TG0::KiB_64 + TCR_EL1::TG1::KiB_64,
    });
    r.modify(
        TCR_EL1::SH0::Inner
            + TCR_EL1::SH1::Inner
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable,
    );
    r.modify(TCR_EL1::IPS.val(pa_range.min(5)));
    r.get()
}

/// TCR_EL1 with TTBR0 walks disabled (EPD0), used once a CPU runs in the high half: the
/// identity map exists only for the MMU switch-over.
pub fn tcr_without_ttbr0(tcr: u64) -> u64 {
    let mut r: LocalRegisterCopy<u64, TCR_EL1::Register> = LocalRegisterCopy::new(tcr);
    r.modify(TCR_EL1::EPD0::DisableTTBR0Walks);
    r.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn tcr_granule_encodings() {
        // TG1 encodings differ from TG0 (4K=0b10, 16K=0b01, 64K=0b11).
        let r = |v| LocalRegisterCopy::<u64, TCR_EL1::Register>::new(v);
        assert_eq!(r(tcr(12, 48, 5)).read(TCR_EL1::TG1), 0b10);
        assert_eq!(r(tcr(14, 47, 5)).read(TCR_EL1::TG1), 0b01);
        assert_eq!(r(tcr(16, 42, 5)).read(TCR_EL1::TG1), 0b11);
        assert_eq!(r(tcr(16, 42, 5)).read(TCR_EL1::TG0), 0b01);
        assert_eq!(r(tcr(14, 36, 5)).read(TCR_EL1::T0SZ), 28);
    }

    #[test]
    fn sctlr_mmu_off_is_linux_init_value() {
        // Linux INIT_SCTLR_EL1_MMU_OFF (without EE/E0E on little endian).
        assert_eq!(SCTLR_EL1_MMU_OFF, 0x3050_0800);
        assert_eq!(sctlr_mmu_on() & !SCTLR_EL1_MMU_OFF, 0x8_101d);
    }
}

/// Ask the MMU itself to translate `va` for an EL1 access (`AT S1E1R`/`AT S1E1W`): the PA on
/// success, or the PAR_EL1 fault value. Tests cross-check the software walker with this.
#[cfg(target_arch = "aarch64")]
pub fn hw_translate(va: u64, write: bool) -> Result<u64, u64> {
    use tock_registers::interfaces::Readable;
    // `aarch64-cpu` has no AT instructions: the one small wrapper, an `at` and the `isb` that
    // makes its PAR_EL1 update visible to the read below.
    if write {
        // SAFETY: address translation instructions only update PAR_EL1; they never fault.
        unsafe { core::arch::asm!("at s1e1w, {va}", "isb", va = in(reg) va, options(nostack)) };
    } else {
        // SAFETY: as above.
        unsafe { core::arch::asm!("at s1e1r, {va}", "isb", va = in(reg) va, options(nostack)) };
    }
    let par = PAR_EL1.extract();
    if par.matches_all(PAR_EL1::F::TranslationAborted) {
        Err(par.get())
    } else {
        // PAR_EL1.PA is the output address of the 4 KiB page (bits 47:12, in place) whatever
        // the granule; the offset in that page comes from the VA.
        Ok((par.get() & PAR_EL1::PA::SET.mask()) | (va % 4096))
    }
}
