//! In-guest test cases of the foundation: configuration, layout, W^X, faults, allocators,
//! CPUs and timer (the shell parser's cases live in `shell/ktests.rs`).

use crate::{
    boot::dtb::Platform,
    boot::layout::{self, G, PAGE_SIZE},
    drivers::timer,
    kernel::mem::memory,
    kernel::smp,
};
use aarch64_cpu::registers::{SCTLR_EL1, TCR_EL1};
use alloc::{string::String, vec::Vec};
use arch::{
    descriptor::Perm,
    exception::{probe_read, Probe},
};
use tock_registers::interfaces::Readable;

fn tcr_matches_configuration(_: &Platform) -> Result<(), String> {
    let tcr = TCR_EL1.get();
    let t1sz = TCR_EL1.read(TCR_EL1::T1SZ);
    kassert!(t1sz == 64 - G.va_bits as u64, "T1SZ={t1sz}, want {}", 64 - G.va_bits);
    let tg1 = (tcr >> 30) & 3;
    let want = match G.page_shift {
        12 => 0b10,
        14 => 0b01,
        _ => 0b11,
    };
    kassert!(tg1 == want, "TG1={tg1:#b}, want {want:#b} for {}", G.granule_name());
    kassert!(TCR_EL1.is_set(TCR_EL1::EPD0), "TTBR0 walks still enabled after boot");
    kassert!(
        SCTLR_EL1.is_set(SCTLR_EL1::M) && SCTLR_EL1.is_set(SCTLR_EL1::WXN),
        "SCTLR M/WXN not set"
    );
    kassert!(
        arch::cpu::granule_supported(arch::cpu::id_aa64mmfr0(), G.page_shift),
        "granule not supported?"
    );
    Ok(())
}
ktest!(tcr_matches_configuration);

/// Every page-aligned probe point of every RAM range translates (software walk and the MMU's
/// own AT) to the expected PA, and the walk has exactly the configured number of levels.
fn linear_map_covers_all_ram(plat: &Platform) -> Result<(), String> {
    for r in &plat.memory {
        let last = (r.end() - 1) & !(PAGE_SIZE - 1);
        for pa in [r.base, (r.base + r.size / 2) & !(PAGE_SIZE - 1), last] {
            let va = layout::phys_to_virt(pa);
            let walk = memory::with_kernel_pt(|pt, t| pt.walk(t, va));
            let leaf = walk
                .leaf
                .ok_or_else(|| alloc::format!("pa {pa:#x} not in the linear map"))?;
            kassert!(leaf.pa == pa, "walk of {va:#x} gives {:#x}, want {pa:#x}", leaf.pa);
            let first = walk.steps[0].level;
            kassert!(
                first == G.start_level(),
                "walk starts at L{first}, want L{}",
                G.start_level()
            );
            let hw =
                arch::mmu::hw_translate(va, true).map_err(|par| alloc::format!("AT S1E1W {va:#x}: PAR={par:#x}"))?;
            kassert!(hw == pa, "MMU translates {va:#x} to {hw:#x}, want {pa:#x}");
            kassert!(
                walk.steps[walk.n - 1].desc.attrs().map(|a| a.perm) == Some(Perm::ReadWrite),
                "linear map not RW-NX at {va:#x}"
            );
        }
    }
    Ok(())
}
ktest!(linear_map_covers_all_ram);

/// The linear map uses the largest leaf alignment allows: RAM at 1 GiB on virt is aligned for
/// a 1 GiB block (4K), a 32 MiB block in a contiguous run (16K), a 512 MiB block (64K).
fn linear_map_uses_blocks(plat: &Platform) -> Result<(), String> {
    let r = plat.memory[0];
    let want_level = if G.page_shift == 12 && r.base.is_multiple_of(1 << 30) && r.size >= 1 << 30 {
        1
    } else {
        2
    };
    if r.size < G.pmd_size() {
        return Ok(());
    }
    let leaf = memory::with_kernel_pt(|pt, t| pt.walk(t, layout::phys_to_virt(r.base)))
        .leaf
        .ok_or_else(|| String::from("RAM base not mapped"))?;
    kassert!(
        leaf.level == want_level,
        "leaf at L{} size {:#x}, want L{want_level}",
        leaf.level,
        leaf.size
    );
    Ok(())
}
ktest!(linear_map_uses_blocks);

/// W^X: text is RX, rodata R, data RW-NX (software view and the MMU's: writes to text fail).
fn kernel_image_is_w_xor_x(_: &Platform) -> Result<(), String> {
    let text = tcr_matches_configuration as *const () as u64;
    let rodata = layout::text_end();
    let data = core::ptr::addr_of!(crate::kernel::console::UART_INTID) as u64;
    for (va, want) in [
        (text, Perm::ReadExec),
        (rodata, Perm::ReadOnly),
        (data, Perm::ReadWrite),
    ] {
        let walk = memory::with_kernel_pt(|pt, t| pt.walk(t, va));
        let desc = walk.steps[walk.n.saturating_sub(1)].desc;
        kassert!(walk.leaf.is_some(), "{va:#x} not mapped");
        kassert!(
            desc.attrs().map(|a| a.perm) == Some(want),
            "{va:#x}: {desc} want {want:?}"
        );
    }
    kassert!(
        arch::mmu::hw_translate(text, true).is_err(),
        "text is writable per the MMU"
    );
    kassert!(
        arch::mmu::hw_translate(rodata, true).is_err(),
        "rodata is writable per the MMU"
    );
    kassert!(
        arch::mmu::hw_translate(data, true).is_ok(),
        "data is not writable per the MMU"
    );
    Ok(())
}
ktest!(kernel_image_is_w_xor_x);

/// A read of an unmapped kernel VA faults (translation fault) and the expected-fault mechanism
/// resumes; a mapped one reads normally.
fn expected_fault_is_caught(_: &Platform) -> Result<(), String> {
    let unmapped = layout::VMEMMAP_START + layout::VMEMMAP_SIZE - PAGE_SIZE;
    match probe_read(unmapped) {
        Probe::Fault { esr } => {
            kassert!(esr >> 26 == 0x25, "ESR class {:#x}, want data abort", esr >> 26);
            kassert!((esr & 0x3f) >> 2 == 1, "FSC {:#x}, want translation fault", esr & 0x3f);
        }
        Probe::Value(v) => return Err(alloc::format!("read of unmapped {unmapped:#x} returned {v:#x}")),
    }
    static WORD: u64 = 0x5eed_f00d;
    kassert!(
        probe_read(core::ptr::addr_of!(WORD) as u64) == Probe::Value(0x5eed_f00d),
        "mapped probe failed"
    );
    Ok(())
}
ktest!(expected_fault_is_caught);

fn heap_allocates_and_frees(_: &Platform) -> Result<(), String> {
    let before = memory::heap_stats().0;
    {
        let v: Vec<u64> = (0..100_000).collect();
        kassert!(v.iter().sum::<u64>() == 100_000 * 99_999 / 2, "heap data corrupted");
    }
    kassert!(memory::heap_stats().0 == before, "heap usage not restored");
    Ok(())
}
ktest!(heap_allocates_and_frees);

/// Allocate every free page (mixed orders; the list of blocks is threaded through the blocks
/// themselves, so the test needs no memory of its own), check contents, free all; twice; the
/// free count ends where it started.
fn page_allocator_round_trip_all_memory(_: &Platform) -> Result<(), String> {
    let baseline = memory::free_page_count();
    for round in 0..2u64 {
        let mut head: u64 = 0; // PA of the last block, 0 = none
        let mut count = 0u64;
        let mut order = memory::with_page_alloc(|a| a.max_order());
        loop {
            match memory::alloc_pages(order) {
                Some(pa) => {
                    let va = layout::phys_to_virt(pa) as *mut u64;
                    // SAFETY: a block we own now, reached through the linear map.
                    unsafe {
                        va.write_volatile(head);
                        va.add(1).write_volatile(order as u64);
                        va.add(2).write_volatile(pa ^ round);
                    }
                    head = pa;
                    count += 1 << order;
                    order = (order + 5) % 8;
                }
                None if order > 0 => order -= 1,
                None => break,
            }
        }
        kassert!(
            count == baseline,
            "round {round}: allocated {count} pages, {baseline} were free"
        );
        kassert!(memory::free_page_count() == 0, "pages left after allocating everything");
        while head != 0 {
            let va = layout::phys_to_virt(head) as *const u64;
            // SAFETY: still ours; written above.
            let (next, o, tag) = unsafe { (va.read_volatile(), va.add(1).read_volatile(), va.add(2).read_volatile()) };
            kassert!(tag == head ^ round, "block {head:#x} lost its contents");
            memory::free_pages(head, o as u32).map_err(|e| alloc::format!("free {head:#x}: {e:?}"))?;
            head = next;
        }
        kassert!(
            memory::free_page_count() == baseline,
            "round {round}: free pages not at baseline"
        );
    }
    Ok(())
}
ktest!(page_allocator_round_trip_all_memory);

/// The boot memmap went through the expected path: a PMD block per section on 4K, base pages
/// on 16K/64K, as the walker shows for every populated section's memmap.
fn boot_memmap_path_and_descriptors(_: &Platform) -> Result<(), String> {
    let sparse = memory::sparse();
    let mut n = 0;
    for (nr, _) in sparse.iter_with(mm::sparse::state::EARLY) {
        let va = memory::VMEMMAP.pfn_to_page(sparse.section_nr_to_pfn(nr));
        for off in [0, G.memmap_per_section() - PAGE_SIZE] {
            let leaf = memory::with_kernel_pt(|pt, t| pt.walk(t, va + off))
                .leaf
                .ok_or_else(|| alloc::format!("memmap of section {nr} not mapped"))?;
            let want = if G.page_shift == 12 { 2 } else { 3 };
            kassert!(
                leaf.level == want,
                "section {nr} memmap leaf at L{}, want L{want}",
                leaf.level
            );
            let hw = arch::mmu::hw_translate(va + off, true)
                .map_err(|p| alloc::format!("AT {:#x}: PAR={p:#x}", va + off))?;
            kassert!(hw == leaf.pa, "MMU and walker disagree at {:#x}", va + off);
        }
        n += 1;
    }
    kassert!(n > 0, "no early sections");
    Ok(())
}
ktest!(boot_memmap_path_and_descriptors);

/// pfn_to_page / page_to_pfn round-trip for every boot PFN, and each struct page agrees with
/// the allocator's view (free pages in the Normal zone, the kernel image reserved).
fn pfn_to_page_round_trip_every_boot_pfn(plat: &Platform) -> Result<(), String> {
    let v = memory::VMEMMAP;
    let mut checked = 0u64;
    for r in &plat.memory {
        let (s, e) = (r.base >> layout::PAGE_SHIFT, r.end() >> layout::PAGE_SHIFT);
        for pfn in s..e {
            let page = v.pfn_to_page(pfn);
            kassert!(v.page_to_pfn(page) == pfn, "round trip of pfn {pfn:#x}");
            kassert!(memory::sparse().pfn_valid(pfn), "pfn {pfn:#x} not valid");
            checked += 1;
        }
    }
    let text_pfn = (layout::image_start().wrapping_sub(layout::kimage_voffset())) >> layout::PAGE_SHIFT;
    let p = memory::with_page_alloc(|a| a.page(text_pfn)).ok_or_else(|| String::from("kernel text pfn invalid"))?;
    kassert!(
        p.has(mm::page::flags::RESERVED),
        "kernel image page not reserved: flags {:#x}",
        p.flags
    );
    kassert!(
        checked == memory::RAM_PAGES.load(core::sync::atomic::Ordering::Relaxed),
        "checked {checked} PFNs"
    );
    Ok(())
}
ktest!(pfn_to_page_round_trip_every_boot_pfn);

/// vmemmap_populate + vmemmap_free of a section beyond RAM (backed by the buddy), under the
/// run-time teardown-order checker: no violation, and page-table pages, free pages and
/// memmap counters all return to their baseline.
fn vmemmap_populate_free_round_trip(plat: &Platform) -> Result<(), String> {
    use core::sync::atomic::Ordering::Relaxed;
    let end = plat.memory.iter().map(|r| r.end()).max().unwrap_or(0);
    let nr = (end.next_multiple_of(G.section_size()) >> G.section_shift()) + 2;
    let start = memory::VMEMMAP.pfn_to_page(nr << (G.section_shift() - G.page_shift));
    let (pt0, free0) = (memory::PT_PAGES.load(Relaxed), memory::free_page_count());
    for _ in 0..3 {
        let st = memory::with_vmemmap(|v| v.populate(start, start + G.memmap_per_section(), None))
            .map_err(|e| alloc::format!("populate: {e:?}"))?;
        kassert!(st.bytes == G.memmap_per_section(), "populated {} bytes", st.bytes);
        kassert!(matches!(probe_read(start), Probe::Value(_)), "new memmap not readable");
        memory::with_vmemmap(|v| v.free(start, start + G.memmap_per_section(), None))
            .map_err(|e| alloc::format!("free: {e:?}"))?;
        // The translation is gone on this CPU (a stale TLB entry would let the read succeed).
        kassert!(
            matches!(probe_read(start), Probe::Fault { .. }),
            "freed memmap still readable"
        );
    }
    kassert!(
        memory::free_page_count() == free0,
        "free pages {} -> {}",
        free0,
        memory::free_page_count()
    );
    kassert!(
        memory::PT_PAGES.load(Relaxed) <= pt0 + 1,
        "page-table pages {} -> {}",
        pt0,
        memory::PT_PAGES.load(Relaxed)
    );
    let (violations, clears) = crate::kernel::mem::teardown::with_checker(|c| (c.violations.len(), c.clears));
    kassert!(violations == 0, "teardown checker saw {violations} violations");
    kassert!(clears > 0, "the engine reported no clears to the checker");
    Ok(())
}
ktest!(vmemmap_populate_free_round_trip);

fn all_cpus_online(plat: &Platform) -> Result<(), String> {
    let want = plat.cpus.len().min(smp::MAX_CPUS) as u32;
    kassert!(
        smp::online_count() == want,
        "{} CPUs online, DTB lists {want}",
        smp::online_count()
    );
    Ok(())
}
ktest!(all_cpus_online);

fn timer_ticks_on_every_cpu(_: &Platform) -> Result<(), String> {
    let before: Vec<u64> = (0..smp::MAX_CPUS).map(timer::ticks).collect();
    timer::sleep_ms(60);
    for (cpu, &ticks) in before.iter().enumerate() {
        if smp::online_mask() & (1 << cpu) != 0 {
            kassert!(timer::ticks(cpu) > ticks, "cpu {cpu} timer did not tick");
        }
    }
    Ok(())
}
ktest!(timer_ticks_on_every_cpu);
