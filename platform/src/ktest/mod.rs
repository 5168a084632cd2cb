//! In-guest tests (the `ktest` build): cases register themselves with `ktest!`
//! ([`crate::kernel::testcase`]) into the `.ktests` linker section; [`run_all`] runs them in link order, prints one line per case and
//! exits QEMU with status 0 (all passed) or 1.

use crate::kernel::exit::{exit, ExitStatus};
use crate::{boot::dtb::Platform, kernel::testcase::KTest, println};

fn cases() -> &'static [KTest] {
    crate::kernel::testcase::registered()
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
    crate::kernel::lockdep::for_each_order(|a, b| println!("lockdep: order {a} -> {b}"));
    println!("ktest: summary passed={passed} failed={failed}");
    exit(if failed == 0 && passed > 0 {
        ExitStatus::TestsPassed
    } else {
        ExitStatus::TestsFailed
    })
}

mod cases;
mod hotplug;
mod toy_device;
