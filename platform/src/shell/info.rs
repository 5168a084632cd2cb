//! Inspection commands: `meminfo`, `page`, `sections`, `layout`, `pt`, `vmem`, `blocks`.

use super::*;
use parse::shell::{meminfo_args, one_number, MeminfoMode};

pub(super) fn cmd_meminfo(args: &[&str]) -> Result<(), ShellError> {
    match meminfo_args(args)? {
        MeminfoMode::Show => {}
        MeminfoMode::Check => return cmd_meminfo_check(),
        // Finish deferred struct page initialisation first, so the figures no longer change
        // under idle CPUs (for comparing them with a debugger's view, for instance).
        MeminfoMode::Settle => page_alloc::deferred_init_complete(),
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
    let ram = counters::RAM_PAGES.load(Relaxed) + hot;
    let free = page_alloc::free_page_count();
    let pt = counters::PT_PAGES.load(Relaxed);
    let memmap = counters::MEMMAP_BYTES.load(Relaxed);
    let self_hosted = counters::MEMMAP_SELF_HOSTED_BYTES.load(Relaxed);
    let (heap_used, heap_total) = heap::heap_stats();
    let ram_bytes = ram << layout::PAGE_SHIFT;
    // Overhead in parts per million of RAM: memmap plus page-table pages.
    let overhead_ppm = ((memmap + (pt << layout::PAGE_SHIFT)) as u128 * 1_000_000 / ram_bytes.max(1) as u128) as u64;
    let deferred = page_alloc::with_page_alloc(|a| ZoneId::ALL.iter().map(|&z| a.counters(z).deferred).sum::<u64>());
    println!(
        "meminfo: ram_bytes={} ram_pages={} free_pages={} used_pages={} pt_pages={} memmap_bytes={} memmap_self_hosted_bytes={} overhead_ppm={} page_size={} heap_used={} heap_total={} memmap_init={} deferred_pages={}",
        ram_bytes, ram, free, ram.saturating_sub(free), pt, memmap, self_hosted, overhead_ppm, layout::PAGE_SIZE, heap_used, heap_total,
        page_alloc::memmap_init().name(), deferred
    );
    page_alloc::with_page_alloc(|a| {
        for z in ZoneId::ALL {
            let c = a.counters(z);
            let blocks = a.free_blocks(z);
            let n = a.max_order() as usize + 1;
            println!(
                "meminfo: zone={} managed_pages={} free_pages={} isolated_pages={} deferred_pages={} free_blocks_by_order={:?}",
                z.name(),
                c.managed,
                c.free,
                c.isolated,
                c.deferred,
                &blocks[..n]
            );
        }
    });
    print_node_meminfo();
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

/// `meminfo`'s per-node lines (Linux `/sys/devices/system/node/nodeN/meminfo`): a summary per
/// online node, then each of its zones that holds memory, with the keys of the zone lines (GDB's
/// `hm-freelists` prints the same).
fn print_node_meminfo() {
    use mm::page::ZoneId;
    let mem = super::numa::node_memory();
    for nid in super::numa::online_nodes(&mem).iter() {
        let zones = ZoneId::ALL
            .map(|z| page_alloc::with_page_alloc(|a| (z, a.node_counters(nid, z), a.node_free_blocks(nid, z))));
        println!(
            "meminfo: node={nid} present_bytes={} online_bytes={} managed_pages={} free_pages={}",
            mem[nid as usize].present,
            mem[nid as usize].online,
            zones.iter().map(|(_, c, _)| c.managed).sum::<u64>(),
            zones.iter().map(|(_, c, _)| c.available()).sum::<u64>(),
        );
        let n = page_alloc::with_page_alloc(|a| a.max_order()) as usize + 1;
        for (z, c, blocks) in zones
            .iter()
            .filter(|(_, c, _)| c.managed > 0 || c.free > 0 || c.deferred > 0)
        {
            println!(
                "meminfo: node={nid} zone={} managed_pages={} free_pages={} isolated_pages={} deferred_pages={} free_blocks_by_order={:?}",
                z.name(),
                c.managed,
                c.free,
                c.isolated,
                c.deferred,
                &blocks[..n]
            );
        }
    }
}

/// `meminfo check`: every allocator and hotplug invariant against a full recount.
pub(super) fn cmd_meminfo_check() -> Result<(), ShellError> {
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

pub(super) fn cmd_page(args: &[&str]) -> Result<(), ShellError> {
    let pfn = one_number(args)?;
    use mm::buddy::{DeferredState, PageLookup};
    let p = match page_alloc::with_page_alloc(|a| a.lookup(pfn)) {
        PageLookup::Page(p) => p,
        PageLookup::NoMemmap => {
            println!("page: pfn={pfn:#x} has no memmap (pfn_valid is false)");
            return Ok(());
        }
        PageLookup::Deferred(DeferredState::SelfHosted { zone }) => {
            println!(
                "page: pfn={:#x} pa={:#x} struct_page={:#x} vmemmap_self_hosted, not initialised (self-hosted memmap page of a block {})",
                pfn,
                pfn << layout::PAGE_SHIFT,
                memmap::VMEMMAP.pfn_to_page(pfn),
                zone.map_or(String::from("offline"), |z| alloc::format!("online in zone {}", z.name()))
            );
            return Ok(());
        }
        PageLookup::Deferred(d) => {
            let state = match d {
                DeferredState::Offline => String::from("offline"),
                DeferredState::Zone { zone, isolated } => alloc::format!(
                    "free in zone {}{}",
                    zone.name(),
                    if isolated { ", isolated" } else { "" }
                ),
                DeferredState::InFlight { zone } => alloc::format!("being initialised for zone {}", zone.name()),
                DeferredState::SelfHosted { .. } => String::new(),
            };
            println!(
                "page: pfn={:#x} pa={:#x} struct_page={:#x} deferred, not initialised ({state})",
                pfn,
                pfn << layout::PAGE_SHIFT,
                memmap::VMEMMAP.pfn_to_page(pfn)
            );
            return Ok(());
        }
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
        memmap::VMEMMAP.pfn_to_page(pfn),
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

pub(super) fn cmd_sections(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    let sparse = memmap::sparse();
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
        let node = crate::kernel::mem::hotplug::with_hotplug(|hp, _| {
            hp.blocks()
                .find(|b| (b.start_pfn..b.start_pfn + b.nr_pages).contains(&(pa >> layout::PAGE_SHIFT)))
                .map(|b| b.node)
        });
        println!(
            "section: nr={} range={:#x}-{:#x} node={} state={} memmap={:#x}",
            nr,
            pa,
            pa + size,
            node.map_or(String::from("-"), |n| alloc::format!("{n}")),
            names,
            memmap::VMEMMAP.pfn_to_page(pa >> layout::PAGE_SHIFT)
        );
    }
    Ok(())
}

pub(super) fn cmd_layout(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    crate::kernel::mem::print_layout();
    Ok(())
}

pub(super) fn cmd_pt(args: &[&str]) -> Result<(), ShellError> {
    let va = one_number(args)?;
    crate::shell::walk::print_walk(va);
    Ok(())
}

fn zone_name(z: Option<mm::page::ZoneId>) -> &'static str {
    z.map_or("-", |z| z.name())
}

pub(super) fn cmd_blocks(args: &[&str]) -> Result<(), ShellError> {
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
                "block: id={} range={:#x}-{:#x} node={} state={} zone={} group={} vmemmap_pages={} early={}",
                b.id,
                start,
                start + (b.nr_pages << layout::PAGE_SHIFT),
                b.node,
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
