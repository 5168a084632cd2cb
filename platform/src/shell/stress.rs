//! Load and pinning commands: `stress`, `pin`, `unpin`.

use super::*;

pub(super) fn cmd_stress(args: &[&str]) -> Result<(), ShellError> {
    use crate::workload::stress;
    let t0 = arch::cpu::counter();
    match args {
        ["verify"] => {
            let r = stress::verify();
            println!(
                "stress: verify allocations={} verified={} bad={} result={}",
                r.allocations,
                r.verified,
                r.bad,
                if r.bad == 0 { "ok" } else { "FAILED" }
            );
        }
        ["free"] => println!("stress: freed={}", stress::free()),
        [size] => {
            let size = parse_u64(size)?;
            match stress::fill(size) {
                Ok(r) => println!(
                    "stress: allocated={} bytes={} verified={} bad={} result={} cycles={}",
                    r.allocations,
                    r.bytes,
                    r.verified,
                    r.bad,
                    if r.bad == 0 { "ok" } else { "FAILED" },
                    arch::cpu::counter() - t0
                ),
                Err(e) => println!("stress: error: {e} (the allocations made are kept; 'stress free' releases them)"),
            }
        }
        _ => return Err(ShellError::Usage),
    }
    Ok(())
}

/// Pages held by `pin`.
static PINNED: crate::kernel::sync::Mutex<PageChain> =
    crate::kernel::sync::Mutex::new("pinned pages", PageChain::new());

pub(super) fn cmd_pin(args: &[&str]) -> Result<(), ShellError> {
    let [addr, size] = exactly(args)?;
    let (addr, size) = (parse_u64(addr)?, parse_u64(size)?);
    // Take kernel pages until one lands in the range. The pages passed over, and the pinned
    // ones, are chained through their own first words (`PageChain`), so neither the search
    // nor the pins need heap however much RAM they walk through.
    let mut others = PageChain::new();
    let mut found = None;
    while let Some(p) = Pages::alloc(0) {
        if (addr..addr.saturating_add(size)).contains(&p.pa()) {
            found = Some(p);
            break;
        }
        others.push(p);
    }
    let _ = others.free_all();
    match found {
        Some(p) => {
            let pa = p.pa();
            PINNED.lock().push(p);
            println!("pin: pfn={:#x} pa={:#x}", pa >> layout::PAGE_SHIFT, pa);
        }
        None => println!("pin: error: no free kernel page in {addr:#x}+{size:#x} (is it online in ZONE_NORMAL?)"),
    }
    Ok(())
}

pub(super) fn cmd_unpin(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    let mut pages = core::mem::take(&mut *PINNED.lock());
    let n = pages.len();
    let _ = pages.free_all();
    println!("unpin: freed={n}");
    Ok(())
}
