//! Entry points: the arm64 `Image` header, the self-relocating firmware path, the EL2 → EL1
//! drop, FP enable, and the MMU switch-over for the primary and secondary CPUs.
//!
//! Contract with the kernel binary (the `platform` crate), which defines these symbols:
//! - `__hotmem_early_map(phys_start: u64, dtb: u64, entry_el: u64) -> u64` runs **with the MMU off at the load
//!   address** (not the link address), builds the boot page tables and returns the physical
//!   address of a [`BootMmu`] (0 = cannot continue: it already reported why).
//! - `__hotmem_main(dtb: u64) -> !` runs at the link address with the MMU on.
//! - `__hotmem_secondary_main(cpu: u64) -> !` likewise for secondary CPUs, whose stack top the
//!   primary stored in `SECONDARY_STACK_TOP` before `CPU_ON`.
//!
//! Boot modes:
//! - `-kernel hotmem.elf`: QEMU loads segments at their physical addresses and enters at the
//!   physical entry point (`_start_pa`), x0 = 0, DTB at the base of RAM.
//! - `-kernel hotmem.bin` (Image form): loaded at RAM base + `text_offset`, x0 = DTB.
//! - `-bios hotmem.bin`: executes from flash at 0, where plain stores are ignored; the image
//!   copies itself to [`FW_LOAD_PA`] (above the 1 MiB DTB at the base of RAM) and continues there.

#[cfg(target_arch = "aarch64")]
use core::arch::global_asm;

/// Where firmware mode copies the image: RAM base + 2 MiB, clear of QEMU's 1 MiB DTB.
pub const FW_LOAD_PA: u64 = 0x4020_0000;
/// Base of RAM on QEMU `virt`; below it is flash and MMIO.
pub const RAM_BASE: u64 = 0x4000_0000;

/// Register values the MMU switch-over loads; written by the early mapping code, read by the
/// entry assembly of every CPU (field order is used by `__enable_mmu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BootMmu {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub sctlr: u64,
}

/// Stack top (a kernel VA) for the next secondary CPU; written by the primary before CPU_ON.
#[no_mangle]
pub static SECONDARY_STACK_TOP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Physical address of the secondary entry point, for PSCI CPU_ON.
pub fn secondary_entry_pa(kimage_voffset: u64) -> u64 {
    extern "C" {
        fn secondary_entry();
    }
    (secondary_entry as *const ()) as u64 - kimage_voffset
}

#[cfg(target_arch = "aarch64")]
global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    /* arm64 Image header (Documentation/arch/arm64/booting.rst) */
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0x200000                // text_offset: load at RAM base + 2 MiB
    .quad   __image_size            // image_size (including bss)
    .quad   __image_flags           // flags: little endian, page size of this build
    .quad   0, 0, 0                 // res2-4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5 (no PE header)

primary_entry:
    mov     x19, x0                 // DTB pointer from an Image-protocol loader, else 0
    adr     x20, _start             // where this image runs now
    mov     x1, #{ram_base}
    cmp     x20, x1
    b.hs    1f
    /* Firmware mode: running from flash. Copy the file part of the image to RAM. Only reads
       touch flash (a store there would be taken as a CFI command). */
    ldr     x2, =__image_file_size
    ldr     x3, ={fw_load_pa}
    mov     x4, x20
    mov     x5, x3
    add     x6, x4, x2
0:  ldp     x7, x8, [x4], #16
    stp     x7, x8, [x5], #16
    cmp     x4, x6
    b.lo    0b
    dsb     sy
    ic      iallu
    dsb     sy
    isb
    adr     x4, 1f
    sub     x4, x4, x20
    add     x4, x4, x3
    mov     x20, x3
    br      x4
1:  mov     x21, #0                 // primary
    b       common_entry

.section .text.boot, "ax"
.global secondary_entry
secondary_entry:
    mov     x22, x0                 // PSCI context id: our CPU index
    mov     x21, #1                 // secondary

common_entry:
    msr     daifset, #0xf
    mrs     x0, CurrentEL
    lsr     x0, x0, #2
    mov     x23, x0                 // entry EL, reported by the kernel
    cmp     x0, #2
    b.ne    el1_entry
    /* EL2: configure EL1 to run without a hypervisor and drop to it. Nothing stays at EL2.
       The register values are the constants of `el2`, composed from register fields. */
    ldr     x0, ={hcr_el2}          // EL1 is AArch64; no traps, no stage 2
    msr     hcr_el2, x0
    ldr     x0, ={cnthctl_el2}      // EL1 may read the physical counter and use its timer
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    ldr     x0, ={cptr_el2}         // RES1 bits (and TZ); FP/SIMD not trapped
    msr     cptr_el2, x0
    msr     hstr_el2, xzr
    msr     vttbr_el2, xzr
    mrs     x0, midr_el1
    msr     vpidr_el2, x0
    mrs     x0, mpidr_el1
    msr     vmpidr_el2, x0
    mrs     x0, id_aa64pfr0_el1     // GICv3 system registers present?
    ubfx    x0, x0, #{pfr0_gic_shift}, #{pfr0_gic_bits}
    cbz     x0, 2f
    mrs     x0, s3_4_c12_c9_5       // ICC_SRE_EL2: let EL1 use ICC_* (SRE | Enable)
    ldr     x1, ={icc_sre_el2}
    orr     x0, x0, x1
    msr     s3_4_c12_c9_5, x0
    isb
    msr     s3_4_c12_c11_0, xzr     // ICH_HCR_EL2: no virtual interrupts
2:  adr     x0, el1_entry
    msr     elr_el2, x0
    ldr     x0, ={spsr_el2}         // EL1h, DAIF masked
    msr     spsr_el2, x0
    isb
    eret

el1_entry:
    ldr     x0, ={sctlr_mmu_off}
    msr     sctlr_el1, x0
    ldr     x0, ={cpacr_el1}        // no FP/SIMD traps (Rust uses NEON)
    msr     cpacr_el1, x0
    isb
    cbnz    x21, secondary_mmu
    /* Primary: stack and bss at their physical (load) addresses, then build the tables. */
    adrp    x0, __boot_stack_top
    add     x0, x0, :lo12:__boot_stack_top
    mov     sp, x0
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
3:  cmp     x0, x1
    b.hs    4f
    stp     xzr, xzr, [x0], #16
    b       3b
4:  mov     x0, x20
    mov     x1, x19
    mov     x2, x23
    bl      __hotmem_early_map
    cbz     x0, park
    bl      __enable_mmu
    ldr     x0, =primary_switched
    br      x0

secondary_mmu:
    adrp    x0, BOOT_MMU_PA_SLOT
    add     x0, x0, :lo12:BOOT_MMU_PA_SLOT
    ldr     x0, [x0]
    bl      __enable_mmu
    ldr     x0, =secondary_switched
    br      x0

/* x0 = physical address of a BootMmu. Runs from the identity map. */
__enable_mmu:
    ldp     x1, x2, [x0]
    ldp     x3, x4, [x0, #16]
    ldr     x5, [x0, #32]
    msr     mair_el1, x1
    msr     tcr_el1, x2
    msr     ttbr0_el1, x3
    msr     ttbr1_el1, x4
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    msr     sctlr_el1, x5
    isb
    ic      iallu
    dsb     nsh
    isb
    ret

park:
    wfe
    b       park

.section .text, "ax"
primary_switched:
    ldr     x0, =__hotmem_vectors
    msr     vbar_el1, x0
    ldr     x0, =__boot_stack_top
    mov     sp, x0
    msr     tpidr_el1, xzr          // CPU index 0
    isb
    mov     x0, x19
    ldr     x1, =__hotmem_main
    blr     x1
    b       park

secondary_switched:
    ldr     x0, =__hotmem_vectors
    msr     vbar_el1, x0
    ldr     x0, =SECONDARY_STACK_TOP
    ldr     x0, [x0]
    mov     sp, x0
    msr     tpidr_el1, x22
    isb
    mov     x0, x22
    ldr     x1, =__hotmem_secondary_main
    blr     x1
    b       park
"#,
    ram_base = const RAM_BASE,
    fw_load_pa = const FW_LOAD_PA,
    sctlr_mmu_off = const crate::mmu::SCTLR_EL1_MMU_OFF,
    hcr_el2 = const el2::HCR_EL2_VALUE,
    cnthctl_el2 = const el2::CNTHCTL_EL2_VALUE,
    cptr_el2 = const el2::CPTR_EL2_VALUE,
    pfr0_gic_shift = const el2::PFR0_GIC.shift,
    pfr0_gic_bits = const el2::PFR0_GIC.mask.count_ones(),
    icc_sre_el2 = const el2::ICC_SRE_EL2_VALUE,
    spsr_el2 = const el2::SPSR_EL2_VALUE,
    cpacr_el1 = const el2::CPACR_EL1_VALUE,
);

/// The values the entry code writes to drop from EL2 to EL1 (and CPACR_EL1 once at EL1),
/// composed from `aarch64-cpu`'s register fields (and [`crate::sysreg`]'s where the crate
/// lacks them). Constants, because the assembly runs before there is a stack; `+` on field
/// values is not `const`, so they are or-ed from the fields' `value`s.
pub mod el2 {
    use crate::sysreg::{CPTR_EL2_EXT, ID_AA64PFR0_EL1_EXT};
    use aarch64_cpu::registers::{CNTHCTL_EL2, CPACR_EL1, HCR_EL2, ICC_SRE_EL2, SPSR_EL2};
    use tock_registers::fields::Field;

    /// EL1 is AArch64; nothing trapped, no stage 2.
    pub const HCR_EL2_VALUE: u64 = HCR_EL2::RW::EL1IsAarch64.value;
    /// EL1 may read the physical counter (EL1PCTEN) and use the physical timer (EL1PCEN).
    pub const CNTHCTL_EL2_VALUE: u64 = CNTHCTL_EL2::EL1PCTEN::SET.value | CNTHCTL_EL2::EL1PCEN::SET.value;
    /// The RES1 bits, and TZ (SVE traps; the kernel does not use SVE); TFP clear: FP/SIMD not
    /// trapped.
    pub const CPTR_EL2_VALUE: u64 = CPTR_EL2_EXT::RES1_13_12::SET.value
        | CPTR_EL2_EXT::RES1_9::SET.value
        | CPTR_EL2_EXT::TZ::SET.value
        | CPTR_EL2_EXT::RES1_7_0::SET.value
        | CPTR_EL2_EXT::TFP::CLEAR.value;
    /// ID_AA64PFR0_EL1.GIC: non-zero when the GIC system registers exist.
    pub const PFR0_GIC: Field<u64, ID_AA64PFR0_EL1_EXT::Register> = ID_AA64PFR0_EL1_EXT::GIC;
    /// Or-ed into ICC_SRE_EL2: system registers at EL2, and EL1 may use them (Enable).
    pub const ICC_SRE_EL2_VALUE: u64 = ICC_SRE_EL2::SRE::SET.value | ICC_SRE_EL2::ENABLE::SET.value;
    /// Return to EL1 with SP_EL1 (EL1h) and D, A, I, F masked.
    pub const SPSR_EL2_VALUE: u64 = SPSR_EL2::D::Masked.value
        | SPSR_EL2::A::Masked.value
        | SPSR_EL2::I::Masked.value
        | SPSR_EL2::F::Masked.value
        | SPSR_EL2::M::EL1h.value;
    /// CPACR_EL1.FPEN: FP/SIMD not trapped at EL1 (Rust uses NEON).
    pub const CPACR_EL1_VALUE: u64 = CPACR_EL1::FPEN::TrapNothing.value;

    #[cfg(test)]
    mod tests {
        #[test]
        fn el2_drop_values() {
            // The values the entry code wrote as literals before they were composed from fields.
            assert_eq!(super::HCR_EL2_VALUE, 1 << 31);
            assert_eq!(super::CNTHCTL_EL2_VALUE, 3);
            assert_eq!(super::CPTR_EL2_VALUE, 0x33ff);
            assert_eq!((super::PFR0_GIC.shift, super::PFR0_GIC.mask), (24, 0xf));
            assert_eq!(super::ICC_SRE_EL2_VALUE, 0x9);
            assert_eq!(super::SPSR_EL2_VALUE, 0x3c5);
            assert_eq!(super::CPACR_EL1_VALUE, 3 << 20);
        }
    }
}

/// Physical address of the [`BootMmu`] secondaries load with their MMU off (set once by the
/// primary, then cleaned to the point of coherency).
#[no_mangle]
pub static BOOT_MMU_PA_SLOT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
