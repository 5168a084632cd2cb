//! Load and pinning commands: `stress`, `torture`, `pin`, `unpin`.

use super::*;
use parse::shell::{addr_size, stress_args, Stress};

pub(super) fn cmd_stress(args: &[&str]) -> Result<(), ShellError> {
    use crate::workload::stress;
    let t0 = arch::cpu::counter();
    match stress_args(args)? {
        Stress::Verify => {
            let r = stress::verify();
            println!(
                "stress: verify allocations={} verified={} bad={} result={} nodes={}",
                r.allocations,
                r.verified,
                r.bad,
                if r.bad == 0 { "ok" } else { "FAILED" },
                per_node(stress::pages_per_node())
            );
        }
        Stress::Free => println!("stress: freed={}", stress::free()),
        Stress::Fill(size, node) => match stress::fill(size, node) {
            Ok(r) => println!(
                "stress: allocated={} bytes={} verified={} bad={} result={} cycles={} nodes={}",
                r.allocations,
                r.bytes,
                r.verified,
                r.bad,
                if r.bad == 0 { "ok" } else { "FAILED" },
                arch::cpu::counter() - t0,
                per_node(stress::pages_per_node())
            ),
            Err(e) => println!("stress: error: {e} (the allocations made are kept; 'stress free' releases them)"),
        },
    }
    Ok(())
}

/// `0:12,2:5`: the nodes holding pages and how many (`-`: none).
fn per_node(pages: [u64; mm::numa::MAX_NUMNODES]) -> String {
    let words: alloc::vec::Vec<String> = pages
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .map(|(nid, n)| alloc::format!("{nid}:{n}"))
        .collect();
    if words.is_empty() {
        String::from("-")
    } else {
        words.join(",")
    }
}

/// Pages held by `pin`.
static PINNED: crate::kernel::sync::Mutex<PageChain> =
    crate::kernel::sync::Mutex::new("pinned pages", PageChain::new());

pub(super) fn cmd_pin(args: &[&str]) -> Result<(), ShellError> {
    let (addr, size) = addr_size(args)?;
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

pub(super) fn cmd_torture(args: &[&str]) -> Result<(), ShellError> {
    use crate::workload::torture::{self, TortureReport};
    let print = |what: &str, r: &TortureReport| {
        println!(
            "torture: {what} workers={} seconds={} ops={} ops_per_s={} window_writes={} migration_waits={} alloc_failures={} lost_writes={} kernel_bad={} violations={}",
            r.workers,
            r.seconds,
            r.ops,
            r.ops / r.seconds.max(1),
            r.window_writes,
            r.migration_waits,
            r.alloc_failures,
            r.lost_writes,
            r.kernel_bad,
            r.violations()
        )
    };
    match args {
        ["start"] => match torture::start() {
            Ok(n) => println!("torture: started workers={n}"),
            Err(e) => println!("torture: error: {e}"),
        },
        ["status"] => print(
            if torture::running() { "running" } else { "stopped" },
            &torture::report(),
        ),
        ["stop"] => match torture::stop() {
            Ok(r) => print("stopped", &r),
            Err(e) => println!("torture: error: {e}"),
        },
        [] => return Err(ShellError::Missing),
        [w] => {
            return Err(ShellError::BadWord {
                word: String::from(*w),
                want: "start, status or stop",
            })
        }
        [_, extra, ..] => return Err(ShellError::Extra(String::from(*extra))),
    }
    Ok(())
}
