//! The console shell. Every command either does its job or prints a usage line; input can
//! never panic the kernel. Output lines that tests parse have a stable `key=value` form.

use crate::{
    boot::layout,
    drivers::psci,
    drivers::timer,
    kernel::console,
    kernel::mem::{
        counters, device, heap, memmap, page_alloc,
        pages::{PageChain, Pages},
    },
    kernel::smp,
    print, println,
};
use alloc::string::String;
use parse::shell::{no_args, ShellError};

mod bench;
mod bench_cmd;
mod bench_migrate;
mod cpu;
mod hotplug;
mod info;
#[cfg(feature = "ktest")]
mod ktests;
mod line;
mod numa;
mod stress;
mod walk;

use bench_cmd::*;
use cpu::*;
use hotplug::*;
use info::*;
use numa::*;
use stress::*;

struct Command {
    name: &'static str,
    usage: &'static str,
    help: &'static str,
    run: fn(&[&str]) -> Result<(), ShellError>,
}

const COMMANDS: &[Command] = &[
    Command { name: "help", usage: "help", help: "list commands", run: cmd_help },
    Command { name: "meminfo", usage: "meminfo [check|settle]", help: "RAM, free pages, page-table pages, heap / check allocator invariants / first finish deferred struct page init", run: cmd_meminfo },
    Command { name: "layout", usage: "layout", help: "kernel virtual memory layout", run: cmd_layout },
    Command { name: "pt", usage: "pt <va>", help: "walk the page tables for a virtual address", run: cmd_pt },
    Command { name: "page", usage: "page <pfn>", help: "decode the struct page of a PFN", run: cmd_page },
    Command { name: "sections", usage: "sections", help: "state of every present memory section", run: cmd_sections },
    Command { name: "blocks", usage: "blocks", help: "memory blocks: id, range, node, state, zone, group, vmemmap pages", run: cmd_blocks },
    Command { name: "numa", usage: "numa [locality]", help: "NUMA nodes: CPUs, memory, distances / check each CPU allocates from its node first", run: cmd_numa },
    Command { name: "probe", usage: "probe <addr> <size> [node=N]", help: "hot-add memory held back by mem= (memmap on memory) to its node, or node N", run: cmd_probe },
    Command { name: "online", usage: "online <block> [kernel|movable|auto]", help: "online a memory block", run: cmd_online },
    Command { name: "offline", usage: "offline <block>", help: "offline a memory block (migrating movable pages)", run: cmd_offline },
    Command { name: "remove", usage: "remove <addr> <size>", help: "hot-remove offline memory", run: cmd_remove },
    Command { name: "policy", usage: "policy [default offline|online|online_kernel|online_movable | online_policy contig-zones|auto-movable | ratio <percent>]", help: "show or set the online policy", run: cmd_policy },
    Command { name: "stress", usage: "stress <size> [node=N] | stress verify | stress free", help: "fill movable memory (node N first; default: this CPU's) with checksummed patterns / verify (pages per node) / free", run: cmd_stress },
    Command { name: "torture", usage: "torture start | torture status | torture stop", help: "every other CPU allocates, writes and verifies memory (window and linear map) while you hotplug", run: cmd_torture },
    Command { name: "pin", usage: "pin <addr> <size>", help: "hold an unmovable kernel page inside a range (to test offline refusal)", run: cmd_pin },
    Command { name: "unpin", usage: "unpin", help: "free the pages held by pin", run: cmd_unpin },
    Command { name: "bench", usage: "bench [reps=N] <size>... | bench migrate [batch=N] [full=N] <size>...", help: "time add/online/offline/remove of each size on held-back memory (median); migrate: offline of that much used memory", run: cmd_bench },
    Command { name: "touch", usage: "touch <va>", help: "read a kernel VA on every CPU (faults are caught): can each CPU still translate it?", run: cmd_touch },
    Command { name: "cpus", usage: "cpus", help: "online CPUs and their timer ticks", run: cmd_cpus },
    Command { name: "poweroff", usage: "poweroff", help: "power off (PSCI SYSTEM_OFF)", run: cmd_poweroff },
    Command { name: "reboot", usage: "reboot", help: "reset the machine (PSCI SYSTEM_RESET)", run: cmd_reboot },
];

/// Run one command line.
pub fn execute(line: &str) -> Result<(), ShellError> {
    let words: alloc::vec::Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return Ok(());
    };
    if let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) {
        return (cmd.run)(args);
    }
    // The memory device types' views (`dimms`, `vmem`): commands without arguments.
    let view = device::view(name).ok_or(ShellError::Unknown)?;
    no_args(args)?;
    (view.show)();
    Ok(())
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
            } else if let Some(v) = device::view(name) {
                println!("usage: {}", v.name);
            }
        }
    }
}

#[cfg_attr(feature = "ktest", allow(dead_code))]
pub fn run() -> ! {
    use line::{LineEditor, Outcome, LINE_MAX};
    let mut ed = LineEditor::new();
    let mut line = String::new();
    println!("Type 'help' for the commands; 'meminfo' shows memory, 'blocks' the memory blocks, 'poweroff' quits.");
    loop {
        print!("hotmem> ");
        let outcome = loop {
            let c = console::getc_blocking();
            let done = ed.feed(c, &mut |bytes| console::write_bytes(bytes));
            if let Some(o) = done {
                line.clear();
                line.push_str(ed.text());
                break o;
            }
        };
        match outcome {
            Outcome::Line => execute_and_report(&line),
            Outcome::TooLong { len } => {
                println!("error: line too long ({len} bytes; a line holds at most {LINE_MAX}): not run")
            }
            Outcome::NotUtf8 { at, byte } => {
                println!("error: byte {byte:#04x} at offset {at} of the line is not UTF-8: not run")
            }
        }
    }
}

fn cmd_help(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    // Usage lines longer than the column go on a line of their own, so the help texts align.
    const COL: usize = 36;
    let views = device::views().map(|v| (v.name, v.help));
    for (usage, help) in COMMANDS.iter().map(|c| (c.usage, c.help)).chain(views) {
        if usage.len() <= COL {
            println!("  {:<COL$} {}", usage, help);
        } else {
            println!("  {}", usage);
            println!("  {:<COL$} {}", "", help);
        }
    }
    Ok(())
}
