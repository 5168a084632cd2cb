//! In-guest tests (the `ktest` build): cases register themselves with [`ktest!`] into the
//! `.ktests` linker section; [`run_all`] runs them in link order, prints one line per case and
//! exits QEMU with status 0 (all passed) or 1.

use crate::{boot::dtb::Platform, println};
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
            static CASE: $crate::ktest::KTest = $crate::ktest::KTest {
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

fn cases() -> &'static [KTest] {
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

/// Run every registered case, or only those named in `only` (`ktest.only=a,b`).
pub fn run_all(plat: &Platform, only: Option<&str>) -> ! {
    let wanted = |name: &str| only.is_none_or(|o| o.split(',').any(|w| w == name));
    let cases: alloc::vec::Vec<&KTest> = cases().iter().filter(|c| wanted(c.name)).collect();
    println!(
        "ktest: start cases={} config={}",
        cases.len(),
        crate::config::CONFIG_NAME
    );
    let (mut passed, mut failed) = (0, 0);
    for c in cases {
        let t0 = arch::cpu::counter();
        match (c.run)(plat) {
            Ok(()) => {
                passed += 1;
                println!(
                    "ktest: ok name={} us={}",
                    c.name,
                    crate::drivers::timer::cycles_to_us(arch::cpu::counter() - t0)
                );
            }
            Err(msg) => {
                failed += 1;
                println!("ktest: FAIL name={} msg={}", c.name, msg);
            }
        }
    }
    println!("ktest: summary passed={passed} failed={failed}");
    arch::cpu::semihosting_exit(if failed == 0 && passed > 0 { 0 } else { 1 })
}

mod cases;
mod hotplug;
