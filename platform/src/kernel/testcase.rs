//! In-guest test cases (the `ktest` build): the case type and the macros that register a case
//! into the `.ktests` linker section. They sit low so that any module can carry its own cases
//! (the shell's parser cases live in `shell/`) without importing the runner (`ktest/`).

use crate::boot::dtb::Platform;
use alloc::string::String;

pub struct KTest {
    pub name: &'static str,
    pub run: fn(&Platform) -> Result<(), String>,
}

/// Register `fn name(&Platform) -> Result<(), String>` as an in-guest test.
#[macro_export]
macro_rules! ktest {
    ($f:ident) => {
        const _: () = {
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
