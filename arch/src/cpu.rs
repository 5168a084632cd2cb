//! CPU identification, barriers, idle, and the SMCCC / semihosting conduits.

use aarch64_cpu::registers::MPIDR_EL1;
#[cfg(target_arch = "aarch64")]
use aarch64_cpu::registers::{
    CurrentEL, CNTFRQ_EL0, CNTVCT_EL0, ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1, ID_AA64PFR0_EL1, TPIDR_EL1,
};
#[cfg(target_arch = "aarch64")]
use tock_registers::interfaces::Readable;
use tock_registers::LocalRegisterCopy;

/// Whether the CPU implements a translation granule, from the raw ID_AA64MMFR0_EL1 TGran
/// fields. Raw values on purpose: with FEAT_LPA2 (QEMU `-cpu max`) TGran4 reads 1 and TGran16
/// reads 2, values the `aarch64-cpu` enums do not know.
pub fn granule_supported(mmfr0: u64, page_shift: u32) -> bool {
    match page_shift {
        12 => (mmfr0 >> 28) & 0xf != 0xf, // TGran4: 0xF = not implemented
        14 => (mmfr0 >> 20) & 0xf != 0x0, // TGran16: 0 = not implemented
        16 => (mmfr0 >> 24) & 0xf != 0xf, // TGran64: 0xF = not implemented
        _ => false,
    }
}

/// Cortex-A76 erratum 1286807 (Linux `ARM64_WORKAROUND_REPEAT_TLBI`): on r0p0..r3p0 a TLBI
/// may complete before an earlier, racing translation is done; the workaround repeats every
/// TLBI after a `DSB ISH`. Decided from the raw MIDR_EL1 (implementer 0x41, part 0xD0B,
/// variant 0..=3, any revision up to r3p0).
pub const fn needs_repeat_tlbi(midr: u64) -> bool {
    let implementer = (midr >> 24) & 0xff;
    let variant = (midr >> 20) & 0xf;
    let part = (midr >> 4) & 0xfff;
    let revision = midr & 0xf;
    implementer == 0x41 && part == 0xd0b && (variant < 3 || (variant == 3 && revision == 0))
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
    fn mpidr_affinity_fields() {
        let m = super::Mpidr::new(0x12_c103_0201); // RES1, U and MT (bits 31, 30, 24) dropped
        assert_eq!(m.raw(), 0x0012_0003_0201);
        assert_eq!((m.aff3(), m.aff2(), m.aff1(), m.aff0()), (0x12, 0x03, 0x02, 0x01));
    }
}

/// MIDR_EL1, raw.
#[cfg(target_arch = "aarch64")]
pub fn midr() -> u64 {
    aarch64_cpu::registers::MIDR_EL1.get()
}

/// Name of the TGran field for a granule, for error messages.
pub fn tgran_field(page_shift: u32) -> (&'static str, u32) {
    match page_shift {
        12 => ("TGran4", 28),
        14 => ("TGran16", 20),
        _ => ("TGran64", 24),
    }
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

/// FEAT_TLBIRANGE: ID_AA64ISAR0_EL1.TLB (bits 59:56) == 2. Read raw: the crate has no field.
#[cfg(target_arch = "aarch64")]
pub fn has_tlbi_range() -> bool {
    (ID_AA64ISAR0_EL1.get() >> 56) & 0xf >= 2
}

/// GICv3 CPU interface system registers implemented (ID_AA64PFR0_EL1.GIC != 0).
#[cfg(target_arch = "aarch64")]
pub fn has_gicv3_sysregs() -> bool {
    (ID_AA64PFR0_EL1.get() >> 24) & 0xf != 0
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
    // SAFETY: an SMCCC call transfers control to the firmware (QEMU's built-in PSCI), which
    // clobbers at most x0-x17 per SMCCC 1.1; we declare x0-x3 and mark x4-x17 clobbered.
    unsafe {
        match conduit {
            Conduit::Hvc => {
                core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
            }
            Conduit::Smc => {
                core::arch::asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
            }
        }
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
