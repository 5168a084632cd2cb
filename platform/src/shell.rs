//! The console shell. Every command either does its job or prints a usage line; input can
//! never panic the kernel. Output lines that tests parse have a stable `key=value` form.

use crate::{console, layout, memory, print, println, psci, smp, timer};
use alloc::string::String;

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
}

const COMMANDS: &[Command] = &[
    Command { name: "help", usage: "help", help: "list commands", run: cmd_help },
    Command { name: "meminfo", usage: "meminfo", help: "RAM, free pages, page-table pages, heap", run: cmd_meminfo },
    Command { name: "layout", usage: "layout", help: "kernel virtual memory layout", run: cmd_layout },
    Command { name: "pt", usage: "pt <va>", help: "walk the page tables for a virtual address", run: cmd_pt },
    Command { name: "page", usage: "page <pfn>", help: "decode the struct page of a PFN", run: cmd_page },
    Command { name: "sections", usage: "sections", help: "state of every present memory section", run: cmd_sections },
    Command { name: "cpus", usage: "cpus", help: "online CPUs and their timer ticks", run: cmd_cpus },
    Command { name: "poweroff", usage: "poweroff", help: "power off (PSCI SYSTEM_OFF)", run: cmd_poweroff },
    Command { name: "reboot", usage: "reboot", help: "reset the machine (PSCI SYSTEM_RESET)", run: cmd_reboot },
];

/// Parse a number: decimal, `0x` hex, optional `_` separators, optional K/M/G/T suffix.
pub fn parse_u64(s: &str) -> Result<u64, ShellError> {
    let bad = || ShellError::BadNumber(String::from(s));
    let t: String = s.chars().filter(|&c| c != '_').collect();
    let (digits, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        Some(b't' | b'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (&t[..], 1),
    };
    let v = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        if mult != 1 {
            return Err(bad());
        }
        u64::from_str_radix(h, 16)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| bad())?;
    v.checked_mul(mult).ok_or_else(bad)
}

/// Run one command line.
pub fn execute(line: &str) -> Result<(), ShellError> {
    let words: alloc::vec::Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else { return Ok(()) };
    let cmd = COMMANDS.iter().find(|c| c.name == name).ok_or(ShellError::Unknown)?;
    (cmd.run)(args)
}

/// Run a line and report errors the way users see them.
pub fn execute_and_report(line: &str) {
    let name = line.split_whitespace().next().unwrap_or("");
    match execute(line) {
        Ok(()) => {}
        Err(ShellError::Unknown) => println!("error: unknown command '{name}' (type 'help' for the list)"),
        Err(e) => {
            if let ShellError::BadNumber(s) = &e {
                println!("error: '{s}' is not a number (use decimal, 0x-hex, or a K/M/G suffix)");
            }
            if let Some(c) = COMMANDS.iter().find(|c| c.name == name) {
                println!("usage: {}", c.usage);
            }
        }
    }
}

fn read_line(buf: &mut String) {
    buf.clear();
    loop {
        match console::getc_blocking() {
            b'\r' | b'\n' => {
                println!();
                return;
            }
            0x7f | 0x08 => {
                if buf.pop().is_some() {
                    print!("\x08 \x08");
                }
            }
            c @ 0x20..=0x7e if buf.len() < 256 => {
                buf.push(c as char);
                print!("{}", c as char);
            }
            _ => {}
        }
    }
}

pub fn run() -> ! {
    let mut line = String::new();
    loop {
        print!("hotmem> ");
        read_line(&mut line);
        execute_and_report(&line);
    }
}

fn no_args(args: &[&str]) -> Result<(), ShellError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(ShellError::Usage)
    }
}

fn cmd_help(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    for c in COMMANDS {
        println!("  {:<12} {}", c.usage, c.help);
    }
    Ok(())
}

fn cmd_meminfo(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    use core::sync::atomic::Ordering::Relaxed;
    use mm::page::ZoneId;
    let ram = memory::RAM_PAGES.load(Relaxed);
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
                z.name(), c.managed, c.free, c.isolated, &blocks[..n]
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

fn cmd_page(args: &[&str]) -> Result<(), ShellError> {
    let [pfn] = args else { return Err(ShellError::Usage) };
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
    let link = |v: u64| if v == mm::page::NO_PFN { alloc::format!("-") } else { alloc::format!("{v:#x}") };
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
    println!("sections: section_size={} total={} present={}", layout::Size(size), sparse.nr_sections(), sparse.iter_with(mm::sparse::state::PRESENT).count());
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
        println!("section: nr={} range={:#x}-{:#x} state={} memmap={:#x}", nr, pa, pa + size, names, memory::VMEMMAP.pfn_to_page(pa >> layout::PAGE_SHIFT));
    }
    Ok(())
}

fn cmd_layout(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    crate::print_layout();
    Ok(())
}

fn cmd_pt(args: &[&str]) -> Result<(), ShellError> {
    let [va] = args else { return Err(ShellError::Usage) };
    let va = parse_u64(va)?;
    crate::walk::print_walk(va);
    Ok(())
}

fn cmd_cpus(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("cpus: online={} mask={:#x}", smp::online_count(), smp::online_mask());
    for cpu in 0..smp::MAX_CPUS {
        if smp::online_mask() & (1 << cpu) != 0 {
            println!("cpu: id={} mpidr={:#x} ticks={}", cpu, smp::mpidr_of(cpu).unwrap_or(0), timer::ticks(cpu));
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
