//! Exception vectors, the trap frame, ESR decoding, and expected faults.
//!
//! Every vector saves the full register file into a [`TrapFrame`] on the current stack and
//! calls `__hotmem_trap(kind, frame)`, which the kernel binary defines. A test that must prove an
//! address is *not* mapped (e.g. after a TLB invalidation) uses [`probe_read`]: the fault is
//! expected, recorded and skipped instead of stopping the kernel.

use core::sync::atomic::{AtomicU64, Ordering};

/// Which vector was taken (current EL with SP_ELx; anything else is unexpected).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    Sync = 0,
    Irq = 1,
    Fiq = 2,
    SError = 3,
    /// A vector we never expect (EL0, SP_EL0, AArch32).
    Unexpected = 4,
}

impl TrapKind {
    pub fn from_raw(v: u64) -> Self {
        match v {
            0 => TrapKind::Sync,
            1 => TrapKind::Irq,
            2 => TrapKind::Fiq,
            3 => TrapKind::SError,
            _ => TrapKind::Unexpected,
        }
    }
}

/// Registers saved on exception entry (layout shared with the vector assembly).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub _pad: u64,
}

/// Fields of an abort's syndrome (ESR_EL1.ISS for EC = instruction/data abort) that
/// `aarch64-cpu` leaves inside its raw `ISS` field: the fault status code and, for data aborts,
/// whether the access was a write. Offsets are within ESR_EL1 (the ISS starts at bit 0).
pub mod abort_iss {
    tock_registers::register_bitfields! {u64,
        pub ESR_ABORT [
            /// Write not Read (data aborts only).
            WnR OFFSET(6) NUMBITS(1) [
                Read = 0,
                Write = 1
            ],
            /// Fault status code, whole: the codes that are not "type and level".
            FSC OFFSET(0) NUMBITS(6) [
                SyncExternal = 0x10,
                Alignment = 0x21,
                TlbConflict = 0x30
            ],
            /// Fault status code, upper four bits: the kind of a translation-table fault.
            FSC_TYPE OFFSET(2) NUMBITS(4) [
                AddressSize = 0,
                Translation = 1,
                AccessFlag = 2,
                Permission = 3
            ],
            /// Fault status code, lower two bits: the lookup level of a translation-table fault.
            FSC_LEVEL OFFSET(0) NUMBITS(2) []
        ]
    }
}

use aarch64_cpu::registers::ESR_EL1;
use abort_iss::ESR_ABORT;
use tock_registers::LocalRegisterCopy;

/// The exception class (ESR_EL1.EC) as `aarch64-cpu` names it.
pub type ExceptionClass = ESR_EL1::EC::Value;

/// A syndrome (ESR_EL1 value), decoded through the register definitions.
#[derive(Clone, Copy)]
pub struct Esr(u64);

impl core::fmt::Debug for Esr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Esr({:#x})", self.0)
    }
}

impl Esr {
    pub const fn new(raw: u64) -> Self {
        Esr(raw)
    }

    /// The raw ESR_EL1 value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    fn esr(self) -> LocalRegisterCopy<u64, ESR_EL1::Register> {
        LocalRegisterCopy::new(self.0)
    }

    fn abort(self) -> LocalRegisterCopy<u64, ESR_ABORT::Register> {
        LocalRegisterCopy::new(self.0)
    }

    /// ESR_EL1.EC as a number (for messages).
    pub fn class_raw(self) -> u64 {
        self.esr().read(ESR_EL1::EC)
    }

    /// ESR_EL1.EC, if it is a class the crate names.
    pub fn class(self) -> Option<ExceptionClass> {
        self.esr().read_as_enum(ESR_EL1::EC)
    }

    /// Whether the exception is an instruction or data abort (lower or same EL).
    pub fn is_abort(self) -> bool {
        use ESR_EL1::EC::Value::*;
        matches!(
            self.class(),
            Some(InstrAbortLowerEL | InstrAbortCurrentEL | DataAbortLowerEL | DataAbortCurrentEL)
        )
    }

    /// Whether the exception is a data abort (lower or same EL).
    pub fn is_data_abort(self) -> bool {
        matches!(
            self.class(),
            Some(ExceptionClass::DataAbortLowerEL | ExceptionClass::DataAbortCurrentEL)
        )
    }

    /// A data abort taken at the current EL whose fault status is a translation fault: what an
    /// access to an unmapped kernel address raises.
    pub fn is_kernel_translation_fault(self) -> bool {
        self.class() == Some(ExceptionClass::DataAbortCurrentEL)
            && self.abort().matches_all(ESR_ABORT::FSC_TYPE::Translation)
    }

    /// The fault status code (ISS DFSC/IFSC) of an abort.
    pub fn fault_status(self) -> u64 {
        self.abort().read(ESR_ABORT::FSC)
    }

    /// The fault status code in words.
    pub fn fault_status_name(self) -> &'static str {
        use ESR_ABORT::{FSC::Value as Fsc, FSC_TYPE::Value as Kind};
        let r = self.abort();
        match r.read_as_enum(ESR_ABORT::FSC_TYPE) {
            Some(Kind::AddressSize) => "address size fault",
            Some(Kind::Translation) => "translation fault",
            Some(Kind::AccessFlag) => "access flag fault",
            Some(Kind::Permission) => "permission fault",
            None => match r.read_as_enum(ESR_ABORT::FSC) {
                Some(Fsc::SyncExternal) => "synchronous external abort",
                Some(Fsc::Alignment) => "alignment fault",
                Some(Fsc::TlbConflict) => "TLB conflict abort",
                None => "other fault",
            },
        }
    }

    /// Lookup level of a translation/access/permission fault (the FSC's low two bits).
    pub fn fault_level(self) -> u64 {
        self.abort().read(ESR_ABORT::FSC_LEVEL)
    }

    /// Whether a data abort was raised by a write.
    pub fn is_write(self) -> bool {
        self.is_data_abort() && self.abort().matches_all(ESR_ABORT::WnR::Write)
    }

    /// The exception class in words (the ones a kernel meets).
    pub fn class_name(self) -> &'static str {
        use ESR_EL1::EC::Value::*;
        match self.class() {
            Some(Unknown) => "unknown reason",
            Some(TrappedWFIorWFE) => "WFI/WFE trapped",
            Some(TrappedFP) => "FP/SIMD access trapped",
            Some(IllegalExecutionState) => "illegal execution state",
            Some(SVC64) => "SVC (AArch64)",
            Some(HVC64) => "HVC (AArch64)",
            Some(SMC64) => "SMC (AArch64)",
            Some(TrappedMsrMrs) => "MSR/MRS/system instruction trapped",
            Some(InstrAbortLowerEL) => "instruction abort (lower EL)",
            Some(InstrAbortCurrentEL) => "instruction abort (same EL)",
            Some(PCAlignmentFault) => "PC alignment fault",
            Some(DataAbortLowerEL) => "data abort (lower EL)",
            Some(DataAbortCurrentEL) => "data abort (same EL)",
            Some(SPAlignmentFault) => "SP alignment fault",
            Some(SError) => "SError",
            Some(BreakpointLowerEL | BreakpointCurrentEL) => "breakpoint",
            Some(SoftwareStepLowerEL | SoftwareStepCurrentEL) => "software step",
            Some(WatchpointLowerEL | WatchpointCurrentEL) => "watchpoint",
            Some(Brk64) => "BRK instruction",
            _ => "reserved/other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Esr;

    #[test]
    fn esr_decoding() {
        // Data abort, same EL, translation fault at level 3, read.
        let e = Esr::new(0x9600_0007);
        assert_eq!(e.class_raw(), 0x25);
        assert!(e.is_abort() && e.is_data_abort() && e.is_kernel_translation_fault() && !e.is_write());
        assert_eq!((e.fault_status_name(), e.fault_level()), ("translation fault", 3));
        assert_eq!(e.class_name(), "data abort (same EL)");
        // Same, a write (WnR) permission fault at level 2.
        let e = Esr::new(0x9600_004e);
        assert!(e.is_write() && !e.is_kernel_translation_fault());
        assert_eq!((e.fault_status_name(), e.fault_level()), ("permission fault", 2));
        // Instruction abort: never a write; synchronous external abort.
        let e = Esr::new(0x8600_0050);
        assert!(e.is_abort() && !e.is_data_abort() && !e.is_write());
        assert_eq!(e.fault_status_name(), "synchronous external abort");
        assert_eq!(Esr::new(0x9600_0021).fault_status_name(), "alignment fault");
        assert_eq!(Esr::new(0x9600_0030).fault_status_name(), "TLB conflict abort");
        assert_eq!(Esr::new(0x9600_0011).fault_status_name(), "other fault");
        assert_eq!(Esr::new(0xf200_0000).class_name(), "BRK instruction");
        assert_eq!(Esr::new(0xc800_0000).class_name(), "software step");
        assert_eq!(Esr::new(0x0800_0000).class_name(), "reserved/other");
        assert_eq!(Esr::new(0).class_name(), "unknown reason");
    }
}

/// One CPU's armed expectation: "a data abort at this VA is expected". 0 = not armed.
/// Indexed by CPU number; each CPU only arms its own slot.
const MAX_CPUS: usize = 8;
static EXPECT_FAR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CAUGHT_ESR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Called by the kernel's trap handler for a synchronous exception: if this CPU expected a data
/// abort at exactly `far`, record `esr`, skip the faulting load and return true.
pub fn take_expected_fault(cpu: usize, esr: u64, far: u64, frame: &mut TrapFrame) -> bool {
    let Some(slot) = EXPECT_FAR.get(cpu) else { return false };
    if Esr::new(esr).class() == Some(ExceptionClass::DataAbortCurrentEL)
        && far != 0
        && slot.load(Ordering::Relaxed) == far
    {
        slot.store(0, Ordering::Relaxed);
        CAUGHT_ESR[cpu].store(esr, Ordering::Relaxed);
        frame.elr += 4; // skip the single load instruction of `probe_read`
        return true;
    }
    false
}

/// Result of reading a kernel VA that may be unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Value(u64),
    /// The read faulted; the ESR_EL1 value.
    Fault {
        esr: u64,
    },
}

/// Read the 64-bit word at `va`, expecting that it may fault. Must not be called with `va == 0`.
#[cfg(target_arch = "aarch64")]
pub fn probe_read(va: u64) -> Probe {
    probe(va, false)
}

/// Read the 32-bit word at `va` (for device registers that refuse 8-byte accesses), expecting
/// that it may fault.
#[cfg(target_arch = "aarch64")]
pub fn probe_read32(va: u64) -> Probe {
    probe(va, true)
}

#[cfg(target_arch = "aarch64")]
fn probe(va: u64, word32: bool) -> Probe {
    let cpu = crate::cpu::cpu_index();
    let slot = &EXPECT_FAR[cpu];
    CAUGHT_ESR[cpu].store(0, Ordering::Relaxed);
    slot.store(va, Ordering::Relaxed);
    let value: u64;
    // A single `ldr`; if `va` is unmapped the abort handler sees the armed slot, records the
    // ESR and resumes at the next instruction (the register keeps the sentinel). No memory is
    // written.
    if word32 {
        // SAFETY: see above.
        unsafe {
            core::arch::asm!("mov {v:x}, #0", "ldr {v:w}, [{a}]", a = in(reg) va, v = out(reg) value, options(nostack, readonly))
        };
    } else {
        // SAFETY: see above.
        unsafe {
            core::arch::asm!("mov {v}, #0", "ldr {v}, [{a}]", a = in(reg) va, v = out(reg) value, options(nostack, readonly))
        };
    }
    let esr = CAUGHT_ESR[cpu].swap(0, Ordering::Relaxed);
    slot.store(0, Ordering::Relaxed);
    if esr != 0 {
        Probe::Fault { esr }
    } else {
        Probe::Value(value)
    }
}

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    r#"
.macro VENTRY kind
    .balign 0x80
    sub     sp, sp, #(34 * 8)
    stp     x0, x1, [sp, #(0 * 8)]
    mov     x0, #\kind
    b       __hotmem_trap_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __hotmem_vectors
__hotmem_vectors:
    VENTRY 4    // current EL, SP_EL0: sync
    VENTRY 4    //                    irq
    VENTRY 4    //                    fiq
    VENTRY 4    //                    serror
    VENTRY 0    // current EL, SP_ELx: sync
    VENTRY 1    //                    irq
    VENTRY 2    //                    fiq
    VENTRY 3    //                    serror
    VENTRY 4    // lower EL, AArch64 (unused: no EL0 yet)
    VENTRY 4
    VENTRY 4
    VENTRY 4
    VENTRY 4    // lower EL, AArch32
    VENTRY 4
    VENTRY 4
    VENTRY 4

__hotmem_trap_common:
    stp     x2, x3, [sp, #(2 * 8)]
    stp     x4, x5, [sp, #(4 * 8)]
    stp     x6, x7, [sp, #(6 * 8)]
    stp     x8, x9, [sp, #(8 * 8)]
    stp     x10, x11, [sp, #(10 * 8)]
    stp     x12, x13, [sp, #(12 * 8)]
    stp     x14, x15, [sp, #(14 * 8)]
    stp     x16, x17, [sp, #(16 * 8)]
    stp     x18, x19, [sp, #(18 * 8)]
    stp     x20, x21, [sp, #(20 * 8)]
    stp     x22, x23, [sp, #(22 * 8)]
    stp     x24, x25, [sp, #(24 * 8)]
    stp     x26, x27, [sp, #(26 * 8)]
    stp     x28, x29, [sp, #(28 * 8)]
    mrs     x1, elr_el1
    mrs     x2, spsr_el1
    stp     x30, x1, [sp, #(30 * 8)]
    str     x2, [sp, #(32 * 8)]
    mov     x1, sp
    bl      __hotmem_trap
    ldp     x30, x1, [sp, #(30 * 8)]
    ldr     x2, [sp, #(32 * 8)]
    msr     elr_el1, x1
    msr     spsr_el1, x2
    ldp     x0, x1, [sp, #(0 * 8)]
    ldp     x2, x3, [sp, #(2 * 8)]
    ldp     x4, x5, [sp, #(4 * 8)]
    ldp     x6, x7, [sp, #(6 * 8)]
    ldp     x8, x9, [sp, #(8 * 8)]
    ldp     x10, x11, [sp, #(10 * 8)]
    ldp     x12, x13, [sp, #(12 * 8)]
    ldp     x14, x15, [sp, #(14 * 8)]
    ldp     x16, x17, [sp, #(16 * 8)]
    ldp     x18, x19, [sp, #(18 * 8)]
    ldp     x20, x21, [sp, #(20 * 8)]
    ldp     x22, x23, [sp, #(22 * 8)]
    ldp     x24, x25, [sp, #(24 * 8)]
    ldp     x26, x27, [sp, #(26 * 8)]
    ldp     x28, x29, [sp, #(28 * 8)]
    add     sp, sp, #(34 * 8)
    eret
"#
);
