//! The console shell. Every command either does its job or prints a usage line; input can
//! never panic the kernel. Output lines that tests parse have a stable `key=value` form.

use crate::{
    boot::layout, drivers::psci, drivers::timer, kernel::console, kernel::mem::memory, kernel::smp, print, println,
};
use alloc::string::String;

mod bench;
#[cfg(feature = "ktest")]
mod ktests;
mod walk;

struct Command {
    name: &'static str,
    usage: &'static str,
    help: &'static str,
    run: fn(&[&str]) -> Result<(), ShellError>,
}

/// Why a command did not run.
#[derive(Debug, PartialEq, Eq)]
pub enum ShellError {
    Unknown,
    Usage,
    BadNumber(String),
    /// A word that is not one of the accepted ones (`online 16 bogus`).
    BadWord {
        word: String,
        want: &'static str,
    },
    /// More arguments than the command takes; the first extra one.
    Extra(String),
    /// Fewer arguments than the command takes.
    Missing,
}

const COMMANDS: &[Command] = &[
    Command { name: "help", usage: "help", help: "list commands", run: cmd_help },
    Command { name: "meminfo", usage: "meminfo [check]", help: "RAM, free pages, page-table pages, heap / check allocator invariants", run: cmd_meminfo },
    Command { name: "layout", usage: "layout", help: "kernel virtual memory layout", run: cmd_layout },
    Command { name: "pt", usage: "pt <va>", help: "walk the page tables for a virtual address", run: cmd_pt },
    Command { name: "page", usage: "page <pfn>", help: "decode the struct page of a PFN", run: cmd_page },
    Command { name: "sections", usage: "sections", help: "state of every present memory section", run: cmd_sections },
    Command { name: "blocks", usage: "blocks", help: "memory blocks: id, range, state, zone, group, vmemmap pages", run: cmd_blocks },
    Command { name: "probe", usage: "probe <addr> <size>", help: "hot-add memory held back by mem= (memmap on memory)", run: cmd_probe },
    Command { name: "online", usage: "online <block> [kernel|movable|auto]", help: "online a memory block", run: cmd_online },
    Command { name: "offline", usage: "offline <block>", help: "offline a memory block (migrating movable pages)", run: cmd_offline },
    Command { name: "remove", usage: "remove <addr> <size>", help: "hot-remove offline memory", run: cmd_remove },
    Command { name: "policy", usage: "policy [default offline|online|online_kernel|online_movable | online_policy contig-zones|auto-movable | ratio <percent>]", help: "show or set the online policy", run: cmd_policy },
    Command { name: "stress", usage: "stress <size> | stress verify | stress free", help: "fill movable memory with checksummed patterns / verify / free", run: cmd_stress },
    Command { name: "dimms", usage: "dimms", help: "DIMMs in use (ACPI GED memory hotplug, firmware mode)", run: cmd_dimms },
    Command { name: "vmem", usage: "vmem", help: "virtio-mem devices: region, block/unit, plugged/requested, units, group", run: cmd_vmem },
    Command { name: "pin", usage: "pin <addr> <size>", help: "hold an unmovable kernel page inside a range (to test offline refusal)", run: cmd_pin },
    Command { name: "unpin", usage: "unpin", help: "free the pages held by pin", run: cmd_unpin },
    Command { name: "bench", usage: "bench [reps=N] <size>...", help: "time add/online/offline/remove of each size on held-back memory (median)", run: cmd_bench },
    Command { name: "touch", usage: "touch <va>", help: "read a kernel VA on every CPU (faults are caught): can each CPU still translate it?", run: cmd_touch },
    Command { name: "cpus", usage: "cpus", help: "online CPUs and their timer ticks", run: cmd_cpus },
    Command { name: "poweroff", usage: "poweroff", help: "power off (PSCI SYSTEM_OFF)", run: cmd_poweroff },
    Command { name: "reboot", usage: "reboot", help: "reset the machine (PSCI SYSTEM_RESET)", run: cmd_reboot },
];

/// Parse a number ([`crate::boot::num::parse_u64`]); a bad one is [`ShellError::BadNumber`].
pub fn parse_u64(s: &str) -> Result<u64, ShellError> {
    crate::boot::num::parse_u64(s).map_err(|_| ShellError::BadNumber(String::from(s)))
}

/// Run one command line.
pub fn execute(line: &str) -> Result<(), ShellError> {
    let words: alloc::vec::Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return Ok(());
    };
    let cmd = COMMANDS.iter().find(|c| c.name == name).ok_or(ShellError::Unknown)?;
    (cmd.run)(args)
}

/// Run a line and report errors the way users see them.
#[cfg_attr(feature = "ktest", allow(dead_code))]
pub fn execute_and_report(line: &str) {
    let name = line.split_whitespace().next().unwrap_or("");
    match execute(line) {
        Ok(()) => {}
        Err(ShellError::Unknown) => println!("error: unknown command '{name}' (type 'help' for the list)"),
        Err(e) => {
            match &e {
                ShellError::BadNumber(s) => {
                    println!("error: '{s}' is not a number (use decimal, 0x-hex, or a K/M/G suffix)")
                }
                ShellError::BadWord { word, want } => println!("error: '{word}' is not {want}"),
                ShellError::Extra(w) => println!("error: unexpected argument '{w}'"),
                ShellError::Missing => println!("error: missing argument(s)"),
                ShellError::Unknown | ShellError::Usage => {}
            }
            if let Some(c) = COMMANDS.iter().find(|c| c.name == name) {
                println!("usage: {}", c.usage);
            }
        }
    }
}

#[derive(Clone, Copy)]
#[cfg_attr(feature = "ktest", allow(dead_code))]
enum Escape {
    None,
    Start,
    Csi,
}

#[cfg_attr(feature = "ktest", allow(dead_code))]
fn read_line(buf: &mut String) {
    buf.clear();
    // Inside an escape sequence (arrow keys send ESC [ A ...): swallowed, not typed.
    let mut escape = Escape::None;
    loop {
        let c = console::getc_blocking();
        match (escape, c) {
            (Escape::None, 0x1b) => {
                escape = Escape::Start;
                continue;
            }
            (Escape::Start, b'[' | b'O') => {
                escape = Escape::Csi;
                continue;
            }
            (Escape::Csi, 0x20..=0x3f) => continue, // parameters and intermediates
            (Escape::Start | Escape::Csi, b'\r' | b'\n') => escape = Escape::None,
            (Escape::Start | Escape::Csi, _) => {
                escape = Escape::None;
                continue; // the final byte (or a lone ESC's follower)
            }
            (Escape::None, _) => {}
        }
        match c {
            0x15 => {
                // Ctrl-U: erase the whole line.
                for _ in 0..buf.len() {
                    print!("\x08 \x08");
                }
                buf.clear();
            }
            b'\r' | b'\n' => {
                println!();
                return;
            }
            0x7f | 0x08 if buf.pop().is_some() => print!("\x08 \x08"),
            c @ 0x20..=0x7e if buf.len() < 256 => {
                buf.push(c as char);
                print!("{}", c as char);
            }
            _ => {}
        }
    }
}

#[cfg_attr(feature = "ktest", allow(dead_code))]
pub fn run() -> ! {
    let mut line = String::new();
    println!("Type 'help' for the commands; 'meminfo' shows memory, 'blocks' the memory blocks, 'poweroff' quits.");
    loop {
        print!("hotmem> ");
        read_line(&mut line);
        execute_and_report(&line);
    }
}

fn no_args(args: &[&str]) -> Result<(), ShellError> {
    exactly::<0>(args).map(|_| ())
}

/// Exactly `N` arguments, or which one is extra / that some are missing.
fn exactly<'a, const N: usize>(args: &[&'a str]) -> Result<[&'a str; N], ShellError> {
    match args.get(N) {
        Some(extra) => Err(ShellError::Extra(String::from(*extra))),
        None => args.try_into().map_err(|_| ShellError::Missing),
    }
}

fn cmd_help(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    // Usage lines longer than the column go on a line of their own, so the help texts align.
    const COL: usize = 36;
    for c in COMMANDS {
        if c.usage.len() <= COL {
            println!("  {:<COL$} {}", c.usage, c.help);
        } else {
            println!("  {}", c.usage);
            println!("  {:<COL$} {}", "", c.help);
        }
    }
    Ok(())
}

fn cmd_meminfo(args: &[&str]) -> Result<(), ShellError> {
    match args {
        [] => {}
        ["check"] => return cmd_meminfo_check(),
        [word] => {
            return Err(ShellError::BadWord {
                word: String::from(*word),
                want: "a meminfo mode (only 'check')",
            })
        }
        [_, extra, ..] => return Err(ShellError::Extra(String::from(*extra))),
    }
    use core::sync::atomic::Ordering::Relaxed;
    use mm::page::ZoneId;
    // RAM = boot RAM + online hot-added blocks (present pages, like Linux's MemTotal basis).
    let hot = crate::kernel::mem::hotplug::with_hotplug(|hp, _| {
        hp.blocks()
            .filter(|b| !b.early && b.zone.is_some())
            .map(|b| b.nr_pages)
            .sum::<u64>()
    });
    let ram = memory::RAM_PAGES.load(Relaxed) + hot;
    let free = memory::free_page_count();
    let pt = memory::PT_PAGES.load(Relaxed);
    let memmap = memory::MEMMAP_BYTES.load(Relaxed);
    let self_hosted = memory::MEMMAP_SELF_HOSTED_BYTES.load(Relaxed);
    let (heap_used, heap_total) = memory::heap_stats();
    let ram_bytes = ram << layout::PAGE_SHIFT;
    // Overhead in parts per million of RAM: memmap plus page-table pages.
    let overhead_ppm = ((memmap + (pt << layout::PAGE_SHIFT)) as u128 * 1_000_000 / ram_bytes.max(1) as u128) as u64;
    println!(
        "meminfo: ram_bytes={} ram_pages={} free_pages={} used_pages={} pt_pages={} memmap_bytes={} memmap_self_hosted_bytes={} overhead_ppm={} page_size={} heap_used={} heap_total={}",
        ram_bytes, ram, free, ram.saturating_sub(free), pt, memmap, self_hosted, overhead_ppm, layout::PAGE_SIZE, heap_used, heap_total
    );
    memory::with_page_alloc(|a| {
        for z in ZoneId::ALL {
            let c = a.counters(z);
            let blocks = a.free_blocks(z);
            let n = a.max_order() as usize + 1;
            println!(
                "meminfo: zone={} managed_pages={} free_pages={} isolated_pages={} free_blocks_by_order={:?}",
                z.name(),
                c.managed,
                c.free,
                c.isolated,
                &blocks[..n]
            );
        }
    });
    println!(
        "  RAM {}  free {}  memmap {} ({}.{:02}% with page tables)  page tables {} pages  heap {}/{} bytes",
        layout::Size(ram_bytes),
        layout::Size(free << layout::PAGE_SHIFT),
        layout::Size(memmap),
        overhead_ppm / 10_000,
        overhead_ppm / 100 % 100,
        pt,
        heap_used,
        heap_total
    );
    Ok(())
}

/// `meminfo check`: every allocator and hotplug invariant against a full recount.
fn cmd_meminfo_check() -> Result<(), ShellError> {
    use mm::page::ZoneId;
    match crate::kernel::mem::hotplug::with_hotplug(|hp, _| crate::kernel::mem::hotplug::check_invariants(hp)) {
        Ok(census) => {
            for z in ZoneId::ALL {
                let c = census[z as usize];
                println!(
                    "meminfo check: zone={} free_pages={} allocated_pages={} isolated_pages={}",
                    z.name(),
                    c.free,
                    c.allocated,
                    c.isolated
                );
            }
            println!("meminfo check: ok");
        }
        Err(e) => println!("meminfo check: FAILED: {e}"),
    }
    Ok(())
}

fn cmd_page(args: &[&str]) -> Result<(), ShellError> {
    let [pfn] = exactly(args)?;
    let pfn = parse_u64(pfn)?;
    let Some(p) = memory::with_page_alloc(|a| a.page(pfn)) else {
        println!("page: pfn={pfn:#x} has no memmap (pfn_valid is false)");
        return Ok(());
    };
    let mut names = String::new();
    for (bit, name) in mm::page::flags::NAMES {
        if p.flags & bit != 0 {
            if !names.is_empty() {
                names.push('|');
            }
            names.push_str(name);
        }
    }
    let link = |v: u64| {
        if v == mm::page::NO_PFN {
            alloc::string::String::from("-")
        } else {
            alloc::format!("{v:#x}")
        }
    };
    println!(
        "page: pfn={:#x} pa={:#x} struct_page={:#x} flags={:#x} ({}) order={} zone={} node={} refcount={} block={} next={} prev={}",
        pfn,
        pfn << layout::PAGE_SHIFT,
        memory::VMEMMAP.pfn_to_page(pfn),
        p.flags,
        if names.is_empty() { "none" } else { &names },
        p.order,
        p.zone_id().map_or("?", |z| z.name()),
        p.node,
        p.refcount,
        p.block,
        link(p.next),
        link(p.prev)
    );
    Ok(())
}

fn cmd_sections(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    let sparse = memory::sparse();
    let size = layout::G.section_size();
    println!(
        "sections: section_size={} total={} present={}",
        layout::Size(size),
        sparse.nr_sections(),
        sparse.iter_with(mm::sparse::state::PRESENT).count()
    );
    for (nr, st) in sparse.iter_with(mm::sparse::state::PRESENT) {
        let mut names = String::new();
        for (bit, name) in mm::sparse::state::NAMES {
            if st & bit != 0 {
                if !names.is_empty() {
                    names.push(',');
                }
                names.push_str(name);
            }
        }
        let pa = nr as u64 * size;
        println!(
            "section: nr={} range={:#x}-{:#x} state={} memmap={:#x}",
            nr,
            pa,
            pa + size,
            names,
            memory::VMEMMAP.pfn_to_page(pa >> layout::PAGE_SHIFT)
        );
    }
    Ok(())
}

fn cmd_layout(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    crate::kernel::mem::print_layout();
    Ok(())
}

fn cmd_pt(args: &[&str]) -> Result<(), ShellError> {
    let [va] = exactly(args)?;
    let va = parse_u64(va)?;
    crate::shell::walk::print_walk(va);
    Ok(())
}

fn zone_name(z: Option<mm::page::ZoneId>) -> &'static str {
    z.map_or("-", |z| z.name())
}

fn cmd_vmem(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    crate::kernel::mem::virtio_mem::print_devices();
    Ok(())
}

fn cmd_blocks(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    crate::kernel::mem::hotplug::with_hotplug(|hp, _| {
        println!(
            "blocks: block_size={} count={}",
            layout::Size(hp.block_size()),
            hp.blocks().count()
        );
        for b in hp.blocks() {
            let start = b.start_pfn << layout::PAGE_SHIFT;
            let group = b
                .group
                .map_or(alloc::string::String::from("-"), |g| alloc::format!("{g}"));
            println!(
                "block: id={} range={:#x}-{:#x} state={} zone={} group={} vmemmap_pages={} early={}",
                b.id,
                start,
                start + (b.nr_pages << layout::PAGE_SHIFT),
                b.state.name(),
                zone_name(b.zone),
                group,
                b.nr_vmemmap_pages(),
                b.early
            );
        }
    });
    Ok(())
}

fn report<T>(what: &str, r: Result<T, mm::hotplug::HotplugError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            println!("{what}: error: {e}");
            None
        }
    }
}

fn cmd_probe(args: &[&str]) -> Result<(), ShellError> {
    let [addr, size] = exactly(args)?;
    let (addr, size) = (parse_u64(addr)?, parse_u64(size)?);
    if !crate::kernel::mem::hotplug::probe_allowed(addr, size) {
        println!("probe: error: {addr:#x}+{size:#x} is not RAM held back by mem= (see the boot: held_back lines)");
        return Ok(());
    }
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| {
        hp.add_memory(ops, None, addr, size, mm::hotplug::AddFlags { memmap_on_memory: true })
    });
    let cycles = arch::cpu::counter() - t0;
    if let Some(ids) = report("probe", r) {
        println!(
            "probe: added={:#x}+{:#x} blocks={:?} cycles={}",
            addr, size, ids, cycles
        );
    }
    Ok(())
}

fn cmd_remove(args: &[&str]) -> Result<(), ShellError> {
    let [addr, size] = exactly(args)?;
    let (addr, size) = (parse_u64(addr)?, parse_u64(size)?);
    let (tlbi0, range0, all0) = (
        arch::tlb::stats::va(),
        arch::tlb::stats::range(),
        arch::tlb::stats::all(),
    );
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| hp.remove_unowned_memory(ops, addr, size));
    let cycles = arch::cpu::counter() - t0;
    if report("remove", r).is_some() {
        println!(
            "remove: removed={:#x}+{:#x} cycles={} tlbi_va={} tlbi_range={} tlbi_all={}",
            addr,
            size,
            cycles,
            arch::tlb::stats::va() - tlbi0,
            arch::tlb::stats::range() - range0,
            arch::tlb::stats::all() - all0
        );
    }
    Ok(())
}

fn cmd_online(args: &[&str]) -> Result<(), ShellError> {
    use mm::hotplug::OnlineType;
    let (id, t) = match args {
        [id] => (id, OnlineType::Auto),
        [id, "kernel"] => (id, OnlineType::Kernel),
        [id, "movable"] => (id, OnlineType::Movable),
        [id, "auto"] => (id, OnlineType::Auto),
        [_, zone] => {
            return Err(ShellError::BadWord {
                word: String::from(*zone),
                want: "a zone (kernel, movable or auto)",
            })
        }
        [_, _, extra, ..] => return Err(ShellError::Extra(String::from(*extra))),
        [] => return Err(ShellError::Missing),
    };
    let id = parse_u64(id)?;
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| hp.online_block(ops, id, t));
    let cycles = arch::cpu::counter() - t0;
    if let Some(z) = report("online", r) {
        println!("online: block={} zone={} cycles={}", id, z.name(), cycles);
    }
    Ok(())
}

fn cmd_offline(args: &[&str]) -> Result<(), ShellError> {
    let [id] = exactly(args)?;
    let id = parse_u64(id)?;
    let migrated0 = crate::kernel::mem::hotplug::HANDLES.lock().migrated_pages;
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| hp.offline_block(ops, id));
    let cycles = arch::cpu::counter() - t0;
    if report("offline", r).is_some() {
        let migrated = crate::kernel::mem::hotplug::HANDLES.lock().migrated_pages - migrated0;
        println!("offline: block={} migrated_pages={} cycles={}", id, migrated, cycles);
    }
    Ok(())
}

fn cmd_policy(args: &[&str]) -> Result<(), ShellError> {
    use mm::hotplug::OnlinePolicy;
    crate::kernel::mem::hotplug::with_hotplug(|hp, _| {
        match args {
            [] => {}
            ["default", v] => {
                hp.default_online = crate::boot::cmdline::parse_online_state(v).ok_or(ShellError::Usage)?
            }
            ["online_policy", "contig-zones"] => hp.policy = OnlinePolicy::ContigZones,
            ["online_policy", "auto-movable"] => hp.policy = OnlinePolicy::AutoMovable,
            ["ratio", v] => hp.ratio = parse_u64(v)?,
            _ => return Err(ShellError::Usage),
        }
        let default = match hp.default_online {
            None => "offline",
            Some(mm::hotplug::OnlineType::Auto) => "online",
            Some(mm::hotplug::OnlineType::Kernel) => "online_kernel",
            Some(mm::hotplug::OnlineType::Movable) => "online_movable",
        };
        let policy = match hp.policy {
            OnlinePolicy::ContigZones => "contig-zones",
            OnlinePolicy::AutoMovable => "auto-movable",
        };
        println!(
            "policy: default={} online_policy={} auto_movable_ratio={} present_normal={} present_movable={} kernel_early={}",
            default, policy, hp.ratio, hp.present.normal, hp.present.movable, hp.present.kernel_early
        );
        Ok(())
    })
}

fn cmd_stress(args: &[&str]) -> Result<(), ShellError> {
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

fn cmd_dimms(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    crate::kernel::mem::dimm::print_dimms();
    Ok(())
}

/// Pages held by `pin`.
static PINNED: spin::Mutex<alloc::vec::Vec<u64>> = spin::Mutex::new(alloc::vec::Vec::new());

fn cmd_pin(args: &[&str]) -> Result<(), ShellError> {
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

fn cmd_unpin(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    let pages = core::mem::take(&mut *PINNED.lock());
    for &pa in &pages {
        let _ = memory::free_pages(pa, 0);
    }
    println!("unpin: freed={}", pages.len());
    Ok(())
}

fn cmd_bench(args: &[&str]) -> Result<(), ShellError> {
    let (reps, sizes) = match args {
        [] => return Err(ShellError::Usage),
        [first, rest @ ..] if first.starts_with("reps=") => (parse_u64(&first[5..])? as usize, rest),
        all => (5, all),
    };
    if sizes.is_empty() || reps == 0 {
        return Err(ShellError::Usage);
    }
    if reps > crate::shell::bench::MAX_REPS {
        println!(
            "bench: error: reps={reps} is more than {} (every rep adds, onlines, offlines and removes each size twice)",
            crate::shell::bench::MAX_REPS
        );
        return Ok(());
    }
    let sizes = sizes
        .iter()
        .map(|s| parse_u64(s))
        .collect::<Result<alloc::vec::Vec<u64>, _>>()?;
    let block = layout::G.section_size();
    if let Some(bad) = sizes.iter().find(|&&s| s == 0 || s % block != 0) {
        println!(
            "bench: error: size {bad:#x} is not a non-zero multiple of the memory block size ({})",
            layout::Size(block)
        );
        return Ok(());
    }
    if let Err(e) = crate::shell::bench::run(&sizes, reps) {
        println!("bench: error: {e}");
    }
    Ok(())
}

fn read_on_cpu(va: u64) -> u64 {
    match arch::exception::probe_read(va) {
        arch::exception::Probe::Value(_) => 0,
        arch::exception::Probe::Fault { esr } => esr,
    }
}

fn cmd_touch(args: &[&str]) -> Result<(), ShellError> {
    let [va] = exactly(args)?;
    let va = parse_u64(va)?;
    if va == 0 || va % 8 != 0 {
        println!("touch: error: the address must be non-zero and 8-byte aligned");
        return Ok(());
    }
    if (layout::IOREMAP_START..layout::IOREMAP_START + layout::IOREMAP_SIZE).contains(&va) {
        println!("touch: error: {va:#x} is in the ioremap window (device registers: a read can have side effects)");
        return Ok(());
    }
    for (cpu, r) in smp::run_on_all(read_on_cpu, va) {
        match r {
            Some(0) => println!("touch: cpu={cpu} va={va:#x} result=mapped"),
            Some(esr) => println!(
                "touch: cpu={cpu} va={va:#x} result=fault esr={esr:#x} ({})",
                arch::exception::fault_status_name(esr & 0x3f)
            ),
            None => println!("touch: cpu={cpu} va={va:#x} result=no-answer"),
        }
    }
    Ok(())
}

fn cmd_cpus(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("cpus: online={} mask={:#x}", smp::online_count(), smp::online_mask());
    for cpu in 0..smp::MAX_CPUS {
        if smp::online_mask() & (1 << cpu) != 0 {
            println!(
                "cpu: id={} mpidr={:#x} ticks={}",
                cpu,
                smp::mpidr_of(cpu).unwrap_or(0),
                timer::ticks(cpu)
            );
        }
    }
    Ok(())
}

fn cmd_poweroff(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("poweroff: PSCI SYSTEM_OFF");
    psci::system_off()
}

fn cmd_reboot(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("reboot: PSCI SYSTEM_RESET");
    psci::system_reset()
}
