//! Load and pinning commands: `stress`, `pin`, `unpin`.

use super::*;

pub(super) fn cmd_stress(args: &[&str]) -> Result<(), ShellError> {
    use crate::kernel::mem::hotplug::{stress_fill, stress_free, stress_verify};
    let t0 = arch::cpu::counter();
    match args {
        ["verify"] => {
            let r = stress_verify();
            println!(
                "stress: verify allocations={} verified={} bad={} result={}",
                r.allocations,
                r.verified,
                r.bad,
                if r.bad == 0 { "ok" } else { "FAILED" }
            );
        }
        ["free"] => println!("stress: freed={}", stress_free()),
        [size] => {
            let size = parse_u64(size)?;
            match stress_fill(size) {
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
static PINNED: spin::Mutex<alloc::vec::Vec<u64>> = spin::Mutex::new(alloc::vec::Vec::new());

pub(super) fn cmd_pin(args: &[&str]) -> Result<(), ShellError> {
    let [addr, size] = exactly(args)?;
    let (addr, size) = (parse_u64(addr)?, parse_u64(size)?);
    // Take kernel pages until one lands in the range. The pages passed over are chained
    // through their own first word (they are ours until freed below), so the search needs no
    // heap however much RAM it walks through.
    const END: u64 = u64::MAX;
    let mut others = END;
    let mut found = None;
    while let Some(pa) = memory::alloc_pages(0) {
        if (addr..addr.saturating_add(size)).contains(&pa) {
            found = Some(pa);
            break;
        }
        // SAFETY: a page just allocated for us, reached through the linear map.
        unsafe { (layout::phys_to_virt(pa) as *mut u64).write(others) };
        others = pa;
    }
    while others != END {
        // SAFETY: a page of the chain above, still ours; its first word links the next.
        let next = unsafe { (layout::phys_to_virt(others) as *const u64).read() };
        let _ = memory::free_pages(others, 0);
        others = next;
    }
    if found.is_some() && PINNED.lock().try_reserve(1).is_err() {
        let _ = memory::free_pages(found.take().unwrap_or_default(), 0);
        println!("pin: error: no kernel heap left to record the pinned page ('unpin' releases the others)");
        return Ok(());
    }
    match found {
        Some(pa) => {
            PINNED.lock().push(pa);
            println!("pin: pfn={:#x} pa={:#x}", pa >> layout::PAGE_SHIFT, pa);
        }
        None => println!("pin: error: no free kernel page in {addr:#x}+{size:#x} (is it online in ZONE_NORMAL?)"),
    }
    Ok(())
}

pub(super) fn cmd_unpin(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    let pages = core::mem::take(&mut *PINNED.lock());
    for &pa in &pages {
        let _ = memory::free_pages(pa, 0);
    }
    println!("unpin: freed={}", pages.len());
    Ok(())
}
