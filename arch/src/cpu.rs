//! CPU identification, barriers, idle, and the SMCCC / semihosting conduits.

#[cfg(target_arch = "aarch64")]
use crate::sysreg::{ID_AA64ISAR0_EL1_EXT, ID_AA64PFR0_EL1_EXT};
#[cfg(target_arch = "aarch64")]
use aarch64_cpu::registers::{CurrentEL, CNTFRQ_EL0, CNTVCT_EL0, ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, TPIDR_EL1};
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, MIDR_EL1, MPIDR_EL1};
#[cfg(target_arch = "aarch64")]
use tock_registers::interfaces::Readable;
use tock_registers::{fields::Field, LocalRegisterCopy};

/// The ID_AA64MMFR0_EL1 TGran field of a granule (`page_shift` 12, 14 or 16).
fn tgran(page_shift: u32) -> Field<u64, ID_AA64MMFR0_EL1::Register> {
    match page_shift {
        12 => ID_AA64MMFR0_EL1::TGran4,
        14 => ID_AA64MMFR0_EL1::TGran16,
        _ => ID_AA64MMFR0_EL1::TGran64,
    }
}

/// Whether the CPU implements a translation granule, from the ID_AA64MMFR0_EL1 TGran
/// fields. Compared with the "not implemented" value only: with FEAT_LPA2 (QEMU `-cpu max`)
/// TGran4 reads 1 and TGran16 reads 2, values the `aarch64-cpu` enums do not know.
pub fn granule_supported(mmfr0: u64, page_shift: u32) -> bool {
    use ID_AA64MMFR0_EL1::{TGran16, TGran4, TGran64};
    let not_implemented = match page_shift {
        12 => TGran4::NotSupported,
        14 => TGran16::NotSupported,
        16 => TGran64::NotSupported,
        _ => return false,
    };
    !LocalRegisterCopy::<u64, ID_AA64MMFR0_EL1::Register>::new(mmfr0).matches_all(not_implemented)
}

/// Cortex-A76 erratum 1286807 (Linux `ARM64_WORKAROUND_REPEAT_TLBI`): on r0p0..r3p0 a TLBI
/// may complete before an earlier, racing translation is done; the workaround repeats every
/// TLBI after a `DSB ISH`. Decided from MIDR_EL1 (implementer Arm, part 0xD0B, variant 0..=3,
/// any revision up to r3p0).
pub fn needs_repeat_tlbi(midr: u64) -> bool {
    let m = LocalRegisterCopy::<u64, MIDR_EL1::Register>::new(midr);
    let variant = m.read(MIDR_EL1::Variant);
    let revision = m.read(MIDR_EL1::Revision);
    m.matches_all(MIDR_EL1::Implementer::Arm + MIDR_EL1::PartNum.val(0xd0b))
        && (variant < 3 || (variant == 3 && revision == 0))
}

#[cfg(test)]
mod tests {
    use super::needs_repeat_tlbi;

    #[test]
    fn erratum_1286807_midr_ranges() {
        assert!(needs_repeat_tlbi(0x410f_d0b0)); // Cortex-A76 r0p0
        assert!(needs_repeat_tlbi(0x412f_d0b1)); // r2p1
        assert!(needs_repeat_tlbi(0x413f_d0b0)); // r3p0
        assert!(!needs_repeat_tlbi(0x413f_d0b1)); // r3p1: fixed
        assert!(!needs_repeat_tlbi(0x414f_d0b1)); // r4p1 (QEMU's cortex-a76)
        assert!(!needs_repeat_tlbi(0x411f_d070)); // Cortex-A57
        assert!(!needs_repeat_tlbi(0x000f_0510)); // QEMU max
    }

    #[test]
    fn tgran_fields() {
        use super::{granule_supported, tgran_field};
        // QEMU max with FEAT_LPA2: TGran4 = 1, TGran64 = 0, TGran16 = 2 (bits 31:28, 27:24, 23:20).
        let lpa2 = 0x1020_0000;
        assert!(granule_supported(lpa2, 12) && granule_supported(lpa2, 14) && granule_supported(lpa2, 16));
        // cortex-a57: TGran4 = 0, TGran64 = 0, TGran16 = 0 (no 16K).
        assert!(granule_supported(0, 12) && !granule_supported(0, 14) && granule_supported(0, 16));
        // Neither 4K nor 64K.
        let none = 0xff00_0000;
        assert!(!granule_supported(none, 12) && !granule_supported(none, 16) && !granule_supported(none, 13));
        assert_eq!(tgran_field(lpa2, 14), ("TGran16", 2));
        assert_eq!(tgran_field(none, 16), ("TGran64", 0xf));
    }

    #[test]
    fn mpidr_affinity_fields() {
        let m = super::Mpidr::new(0x12_c103_0201); // RES1, U and MT (bits 31, 30, 24) dropped
        assert_eq!(m.raw(), 0x0012_0003_0201);
        assert_eq!((m.aff3(), m.aff2(), m.aff1(), m.aff0()), (0x12, 0x03, 0x02, 0x01));
    }
}

/// MIDR_EL1, raw.
#[cfg(target_arch = "aarch64")]
pub fn midr() -> u64 {
    MIDR_EL1.get()
}

/// Name and value of the TGran field for a granule, for error messages.
pub fn tgran_field(mmfr0: u64, page_shift: u32) -> (&'static str, u64) {
    let name = match page_shift {
        12 => "TGran4",
        14 => "TGran16",
        _ => "TGran64",
    };
    (name, tgran(page_shift).read(mmfr0))
}

#[cfg(target_arch = "aarch64")]
pub fn id_aa64mmfr0() -> u64 {
    ID_AA64MMFR0_EL1.get()
}

/// ID_AA64MMFR0_EL1.PARange.
#[cfg(target_arch = "aarch64")]
pub fn pa_range() -> u64 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange)
}

/// FEAT_TLBIRANGE: ID_AA64ISAR0_EL1.TLB >= 2 (the crate has no TLB field: [`ID_AA64ISAR0_EL1_EXT`]).
#[cfg(target_arch = "aarch64")]
pub fn has_tlbi_range() -> bool {
    LocalRegisterCopy::<u64, ID_AA64ISAR0_EL1_EXT::Register>::new(ID_AA64ISAR0_EL1.get())
        .read(ID_AA64ISAR0_EL1_EXT::TLB)
        >= ID_AA64ISAR0_EL1_EXT::TLB::OsAndRange.read(ID_AA64ISAR0_EL1_EXT::TLB)
}

/// GICv3 CPU interface system registers implemented (ID_AA64PFR0_EL1.GIC != 0; the crate has
/// no GIC field: [`ID_AA64PFR0_EL1_EXT`]).
#[cfg(target_arch = "aarch64")]
pub fn has_gicv3_sysregs() -> bool {
    LocalRegisterCopy::<u64, ID_AA64PFR0_EL1_EXT::Register>::new(ID_AA64PFR0_EL1.get()).read(ID_AA64PFR0_EL1_EXT::GIC)
        != 0
}

/// Exception level we run at (always 1 after boot).
#[cfg(target_arch = "aarch64")]
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// MPIDR_EL1 affinity (Aff3..Aff0) of this CPU.
#[cfg(target_arch = "aarch64")]
pub fn mpidr_affinity() -> u64 {
    Mpidr::new(MPIDR_EL1.get()).raw()
}

/// A CPU's affinity (MPIDR_EL1 Aff3..Aff0, other fields dropped), read through
/// `aarch64-cpu`'s MPIDR_EL1 fields.
#[derive(Clone, Copy, Debug)]
pub struct Mpidr(LocalRegisterCopy<u64, MPIDR_EL1::Register>);

impl Mpidr {
    /// The affinity fields of an MPIDR_EL1 value (or of an affinity the DTB gives).
    pub fn new(mpidr: u64) -> Self {
        use MPIDR_EL1::{Aff0, Aff1, Aff2, Aff3};
        let affinity = Aff3::SET + Aff2::SET + Aff1::SET + Aff0::SET;
        Mpidr(LocalRegisterCopy::new(mpidr).bitand(affinity.mask()))
    }

    /// The affinity as an MPIDR_EL1 value (what PSCI CPU_ON takes).
    pub fn raw(self) -> u64 {
        self.0.get()
    }

    pub fn aff0(self) -> u8 {
        self.0.read(MPIDR_EL1::Aff0) as u8
    }

    pub fn aff1(self) -> u8 {
        self.0.read(MPIDR_EL1::Aff1) as u8
    }

    pub fn aff2(self) -> u8 {
        self.0.read(MPIDR_EL1::Aff2) as u8
    }

    pub fn aff3(self) -> u8 {
        self.0.read(MPIDR_EL1::Aff3) as u8
    }
}

/// Index of this CPU (0 = boot CPU), kept in TPIDR_EL1 by the entry code.
#[cfg(target_arch = "aarch64")]
pub fn cpu_index() -> usize {
    TPIDR_EL1.get() as usize
}

/// Virtual counter (CNTVCT_EL0), ordered after preceding instructions.
#[cfg(target_arch = "aarch64")]
pub fn counter() -> u64 {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTVCT_EL0.get()
}

/// Counter frequency in Hz.
#[cfg(target_arch = "aarch64")]
pub fn counter_freq() -> u64 {
    CNTFRQ_EL0.get()
}

/// Sleep until an interrupt (or other wake-up event) arrives.
#[cfg(target_arch = "aarch64")]
pub fn wfi() {
    aarch64_cpu::asm::wfi();
}

/// Which instruction reaches the firmware (PSCI) on this platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

/// An SMC Calling Convention call with three arguments; returns x0.
#[cfg(target_arch = "aarch64")]
pub fn smccc(conduit: Conduit, fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let mut x0 = fid as u64;
    // An SMCCC call transfers control to the firmware (QEMU's built-in PSCI), which clobbers at
    // most x0-x17 per SMCCC 1.1; each call declares x0-x3 and marks x4-x17 clobbered.
    match conduit {
        // SAFETY: see above.
        Conduit::Hvc => unsafe {
            core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
        },
        // SAFETY: see above.
        Conduit::Smc => unsafe {
            core::arch::asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
        },
    }
    x0 as i64
}

/// Write a NUL-terminated string to the semihosting console (SYS_WRITE0; QEMU prints it on
/// its own stderr). Needs no mapped device: the way to report a failure before the UART is
/// mapped. `s` must end with a NUL byte; otherwise nothing is written.
#[cfg(target_arch = "aarch64")]
pub fn semihosting_write0(s: &[u8]) {
    if s.last() != Some(&0) {
        return;
    }
    // SAFETY: `hlt #0xf000` is the A64 semihosting trap; SYS_WRITE0 (4) reads the string at x1
    // up to its NUL, which `s` holds; x0 may be clobbered.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") 4u64 => _, in("x1") s.as_ptr(), options(nostack));
    }
}

/// Exit QEMU with `code` through semihosting SYS_EXIT (needs `-semihosting`; this is
/// how test kernels and refused boots report a status). Falls back to parking the CPU.
#[cfg(target_arch = "aarch64")]
pub fn semihosting_exit(code: u32) -> ! {
    // ADP_Stopped_ApplicationExit with the exit code as subcode.
    let block: [u64; 2] = [0x20026, code as u64];
    // SAFETY: `hlt #0xf000` is the A64 semihosting trap; QEMU reads the two-word parameter
    // block we pass by address and terminates. Without `-semihosting` it raises an exception.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("w0") 0x18u32, in("x1") block.as_ptr(), options(nostack));
    }
    loop {
        wfi();
    }
}
