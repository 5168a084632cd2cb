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

/// Exception class names for ESR_EL1.EC (the ones a kernel meets).
pub fn esr_class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE trapped",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "MSR/MRS/system instruction trapped",
        0x20 => "instruction abort (lower EL)",
        0x21 => "instruction abort (same EL)",
        0x22 => "PC alignment fault",
        0x24 => "data abort (lower EL)",
        0x25 => "data abort (same EL)",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "reserved/other",
    }
}

/// Data/instruction fault status code (ESR ISS DFSC/IFSC) in words.
pub fn fault_status_name(fsc: u64) -> &'static str {
    match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x08..=0x0b => "access flag fault",
        0x0c..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// Level of a translation/access/permission fault (FSC low two bits).
pub fn fault_level(fsc: u64) -> u64 {
    fsc & 3
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
    let ec = esr >> 26;
    if ec == 0x25 && far != 0 && slot.load(Ordering::Relaxed) == far {
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
    // SAFETY: a single `ldr`; if `va` is unmapped the abort handler sees the armed slot, records
    // the ESR and resumes at the next instruction (x0 keeps the sentinel). No memory is written.
    unsafe {
        if word32 {
            core::arch::asm!("mov {v:x}, #0", "ldr {v:w}, [{a}]", a = in(reg) va, v = out(reg) value, options(nostack, readonly));
        } else {
            core::arch::asm!("mov {v}, #0", "ldr {v}, [{a}]", a = in(reg) va, v = out(reg) value, options(nostack, readonly));
        }
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
