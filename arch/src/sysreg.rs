//! System registers `aarch64-cpu` does not define: the GICv3 CPU interface (ICC_*_EL1).
//! Each register gets a tock-registers `Readable`/`Writeable` implementation over `mrs`/`msr`
//! with its encoded name, so drivers use the same API as for the crate's registers.

#[allow(unused_macros)]
macro_rules! sysreg {
    ($(#[$m:meta])* $name:ident, $enc:literal, rw) => {
        sysreg!(@def $(#[$m])* $name);
        sysreg!(@read $name, $enc);
        sysreg!(@write $name, $enc);
    };
    ($(#[$m:meta])* $name:ident, $enc:literal, r) => {
        sysreg!(@def $(#[$m])* $name);
        sysreg!(@read $name, $enc);
    };
    ($(#[$m:meta])* $name:ident, $enc:literal, w) => {
        sysreg!(@def $(#[$m])* $name);
        sysreg!(@write $name, $enc);
    };
    (@def $(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[allow(non_camel_case_types)]
        pub struct $name;
    };
    (@read $name:ident, $enc:literal) => {
        impl tock_registers::interfaces::Readable for $name {
            type T = u64;
            type R = ();
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
    (@write $name:ident, $enc:literal) => {
        impl tock_registers::interfaces::Writeable for $name {
            type T = u64;
            type R = ();
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
    ICC_SRE_EL1, "s3_0_c12_c12_5", rw);
sysreg!(/// Priority mask.
    ICC_PMR_EL1, "s3_0_c4_c6_0", rw);
sysreg!(/// Group 1 interrupt acknowledge.
    ICC_IAR1_EL1, "s3_0_c12_c12_0", r);
sysreg!(/// Group 1 end of interrupt.
    ICC_EOIR1_EL1, "s3_0_c12_c12_1", w);
sysreg!(/// Group 1 interrupt enable.
    ICC_IGRPEN1_EL1, "s3_0_c12_c12_7", rw);
sysreg!(/// Binary point for group 1.
    ICC_BPR1_EL1, "s3_0_c12_c12_3", rw);
sysreg!(/// Generate a group 1 SGI.
    ICC_SGI1R_EL1, "s3_0_c12_c11_5", w);
