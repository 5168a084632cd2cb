//! What `aarch64-cpu` (11.2) does not define, in its style:
//! - the GICv3 CPU interface (ICC_*_EL1; the crate has only the EL2 side, ICC_SRE_EL2 and
//!   ICH_*): fields (`register_bitfields!`) and a tock-registers `Readable`/`Writeable`
//!   implementation over `mrs`/`msr` with the encoded name, so drivers use the same typed API
//!   as for the crate's registers;
//! - fields the crate leaves out of registers it does define (`*_EXT` below): read by
//!   wrapping the crate register's value in a `LocalRegisterCopy` of the extension.

use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// SCTLR_EL1 fields the crate lacks: the bits Linux sets with the MMU off
    /// (`INIT_SCTLR_EL1_MMU_OFF`).
    pub SCTLR_EL1_EXT [
        /// Load/store multiple atomicity and ordering (AArch32 EL0): no trap.
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// No trap of AArch32 load/store multiple to Device memory.
        nTLSMD OFFSET(28) NUMBITS(1) [],
        /// Exception entry is a context synchronisation event.
        EIS OFFSET(22) NUMBITS(1) [],
        /// Trap EL0 access to SCXTNUM_EL0 (RES1 without FEAT_CSV2).
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// Exception return is a context synchronisation event.
        EOS OFFSET(11) NUMBITS(1) []
    ],
    /// ID_AA64ISAR0_EL1 fields the crate lacks.
    pub ID_AA64ISAR0_EL1_EXT [
        /// TLB maintenance: 1 = outer-shareable TLBI, 2 = and range TLBI (FEAT_TLBIRANGE).
        TLB OFFSET(56) NUMBITS(4) [
            NotImplemented = 0,
            Os = 1,
            OsAndRange = 2
        ]
    ],
    /// ID_AA64PFR0_EL1 fields the crate lacks.
    pub ID_AA64PFR0_EL1_EXT [
        /// GIC CPU interface system registers: 0 = not implemented.
        GIC OFFSET(24) NUMBITS(4) []
    ],
    /// DCZID_EL0, which the crate does not define: what `DC ZVA` zeroes, and whether it may.
    pub DCZID_EL0 [
        /// `DC ZVA` prohibited.
        DZP OFFSET(4) NUMBITS(1) [],
        /// log2 of the block `DC ZVA` zeroes, in 4-byte words.
        BS OFFSET(0) NUMBITS(4) []
    ],
    /// CPTR_EL2 (E2H = 0) fields the crate lacks (it defines only TAM).
    pub CPTR_EL2_EXT [
        /// Trap FP/SIMD to EL2.
        TFP OFFSET(10) NUMBITS(1) [],
        /// RES1 bits 13:12 and 9.
        RES1_13_12 OFFSET(12) NUMBITS(2) [],
        RES1_9 OFFSET(9) NUMBITS(1) [],
        /// Trap SVE to EL2 (RES1 without SVE).
        TZ OFFSET(8) NUMBITS(1) [],
        /// RES1 bits 7:0.
        RES1_7_0 OFFSET(0) NUMBITS(8) []
    ]
}

register_bitfields! {u64,
    /// ICC_SRE_EL1: system register enable.
    pub ICC_SRE_EL1 [
        /// Disable IRQ bypass.
        DIB OFFSET(2) NUMBITS(1) [],
        /// Disable FIQ bypass.
        DFB OFFSET(1) NUMBITS(1) [],
        /// The CPU interface is accessed through system registers.
        SRE OFFSET(0) NUMBITS(1) []
    ],
    /// ICC_PMR_EL1: priority mask.
    pub ICC_PMR_EL1 [
        /// Interrupts with a numerically lower (higher) priority are signalled.
        Priority OFFSET(0) NUMBITS(8) []
    ],
    /// ICC_BPR1_EL1: binary point for group 1.
    pub ICC_BPR1_EL1 [
        BinaryPoint OFFSET(0) NUMBITS(3) []
    ],
    /// ICC_IGRPEN1_EL1: group 1 interrupt enable.
    pub ICC_IGRPEN1_EL1 [
        Enable OFFSET(0) NUMBITS(1) []
    ],
    /// ICC_IAR1_EL1 (read: acknowledge) and ICC_EOIR1_EL1 (write: end of interrupt).
    pub ICC_IAR1_EL1 [
        INTID OFFSET(0) NUMBITS(24) []
    ],
    /// ICC_SGI1R_EL1: generate a group 1 SGI for the CPUs `Aff3.Aff2.Aff1.<TargetList>`.
    pub ICC_SGI1R_EL1 [
        Aff3 OFFSET(48) NUMBITS(8) [],
        /// Routing mode: 0 = to the listed CPUs.
        IRM OFFSET(40) NUMBITS(1) [],
        Aff2 OFFSET(32) NUMBITS(8) [],
        INTID OFFSET(24) NUMBITS(4) [],
        Aff1 OFFSET(16) NUMBITS(8) [],
        /// One bit per Aff0 value 0..=15 of the target cluster.
        TargetList OFFSET(0) NUMBITS(16) []
    ]
}

#[allow(unused_macros)]
macro_rules! sysreg {
    ($(#[$m:meta])* $konst:ident = $name:ident: $reg:path, $enc:literal, rw) => {
        sysreg!(@def $(#[$m])* $konst, $name);
        sysreg!(@read $name, $reg, $enc);
        sysreg!(@write $name, $reg, $enc);
    };
    ($(#[$m:meta])* $konst:ident = $name:ident: $reg:path, $enc:literal, r) => {
        sysreg!(@def $(#[$m])* $konst, $name);
        sysreg!(@read $name, $reg, $enc);
    };
    ($(#[$m:meta])* $konst:ident = $name:ident: $reg:path, $enc:literal, w) => {
        sysreg!(@def $(#[$m])* $konst, $name);
        sysreg!(@write $name, $reg, $enc);
    };
    (@def $(#[$m:meta])* $konst:ident, $name:ident) => {
        /// The register's accessor type (the constant of the same name as the register is
        /// the one to use, as in `aarch64-cpu`).
        pub struct $name;
        $(#[$m])*
        pub const $konst: $name = $name;
    };
    (@read $name:ident, $reg:path, $enc:literal) => {
        impl tock_registers::interfaces::Readable for $name {
            type T = u64;
            type R = $reg;
            #[inline]
            fn get(&self) -> u64 {
                #[cfg(target_arch = "aarch64")]
                {
                    let v: u64;
                    // SAFETY: reading a system register has no memory effects.
                    unsafe { core::arch::asm!(concat!("mrs {}, ", $enc), out(reg) v, options(nomem, nostack)) };
                    v
                }
                #[cfg(not(target_arch = "aarch64"))]
                unimplemented!("system registers exist only on aarch64")
            }
        }
    };
    (@write $name:ident, $reg:path, $enc:literal) => {
        impl tock_registers::interfaces::Writeable for $name {
            type T = u64;
            type R = $reg;
            #[inline]
            fn set(&self, v: u64) {
                #[cfg(target_arch = "aarch64")]
                // SAFETY: GIC CPU-interface registers only affect interrupt delivery.
                unsafe { core::arch::asm!(concat!("msr ", $enc, ", {}"), in(reg) v, options(nostack)) };
                #[cfg(not(target_arch = "aarch64"))]
                { let _ = v; unimplemented!("system registers exist only on aarch64") }
            }
        }
    };
}

sysreg!(/// System register enable (SRE) for EL1.
    ICC_SRE_EL1 = IccSreEl1: ICC_SRE_EL1::Register, "s3_0_c12_c12_5", rw);
sysreg!(/// Priority mask.
    ICC_PMR_EL1 = IccPmrEl1: ICC_PMR_EL1::Register, "s3_0_c4_c6_0", rw);
sysreg!(/// Group 1 interrupt acknowledge.
    ICC_IAR1_EL1 = IccIar1El1: ICC_IAR1_EL1::Register, "s3_0_c12_c12_0", r);
sysreg!(/// Group 1 end of interrupt.
    ICC_EOIR1_EL1 = IccEoir1El1: ICC_IAR1_EL1::Register, "s3_0_c12_c12_1", w);
sysreg!(/// Group 1 interrupt enable.
    ICC_IGRPEN1_EL1 = IccIgrpen1El1: ICC_IGRPEN1_EL1::Register, "s3_0_c12_c12_7", rw);
sysreg!(/// Binary point for group 1.
    ICC_BPR1_EL1 = IccBpr1El1: ICC_BPR1_EL1::Register, "s3_0_c12_c12_3", rw);
sysreg!(/// Generate a group 1 SGI.
    ICC_SGI1R_EL1 = IccSgi1rEl1: ICC_SGI1R_EL1::Register, "s3_0_c12_c11_5", w);
