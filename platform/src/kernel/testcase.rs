//! In-guest test cases (the `ktest` build): the case type and the macros that register a case
//! into the `.ktests` linker section. They sit low so that any module can carry its own cases
//! (the shell's parser cases live in `shell/`) without importing the runner (`ktest/`).

use crate::boot::dtb::Platform;
use alloc::string::String;

pub struct KTest {
    pub name: &'static str,
    pub run: fn(&Platform) -> Result<(), String>,
}

/// Every case `ktest!` registered, in link order.
pub fn registered() -> &'static [KTest] {
    extern "C" {
        static __ktests_start: u8;
        static __ktests_end: u8;
    }
    let start = core::ptr::addr_of!(__ktests_start).cast::<KTest>();
    let end = core::ptr::addr_of!(__ktests_end).cast::<KTest>();
    let n = (end as usize - start as usize) / core::mem::size_of::<KTest>();
    // SAFETY: the linker script collects exactly the `KTest` statics of `.ktests` between the
    // two symbols (8-byte aligned, same type), and they live for the whole run.
    unsafe { core::slice::from_raw_parts(start, n) }
}

/// Register `fn name(&Platform) -> Result<(), String>` as an in-guest test.
#[macro_export]
macro_rules! ktest {
    ($f:ident) => {
        const _: () = {
            // The one unsafe attribute of a case, owned here: `registered` reads the section.
            #[allow(unsafe_code)]
            #[link_section = ".ktests"]
            #[used]
            static CASE: $crate::kernel::testcase::KTest = $crate::kernel::testcase::KTest {
                name: stringify!($f),
                run: $f,
            };
        };
    };
}

/// Fail the current test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! kassert {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($msg)*));
        }
    };
}
