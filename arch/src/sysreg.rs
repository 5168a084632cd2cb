//! System registers `aarch64-cpu` does not define: the GICv3 CPU interface (ICC_*_EL1; the
//! crate has only the EL2 side, ICC_SRE_EL2 and ICH_*). Each register gets its fields
//! (`register_bitfields!`) and a tock-registers `Readable`/`Writeable` implementation over
//! `mrs`/`msr` with its encoded name, so drivers use the same typed API as for the crate's
//! registers.

use tock_registers::register_bitfields;

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
