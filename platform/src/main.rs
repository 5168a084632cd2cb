//! hotmem: the kernel binary for QEMU `virt`.
//!
//! Boot path: `arch::boot` entry assembly → [`early`] (MMU off: boot page tables) → MMU on →
//! [`__hotmem_main`]: device tree, linear map, console, page allocator, GIC, timer, PSCI,
//! secondary CPUs, then the shell (or, in the `ktest` build, the in-guest tests).
#![no_std]
#![no_main]

extern crate alloc;

mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}
mod boot;
mod drivers;
#[macro_use]
mod kernel;
// The shell and the in-guest tests have no unsafe code of their own: what they need from raw
// memory or registers is a safe API in `kernel/` (e.g. `kernel::mem::pages`).
#[cfg(feature = "ktest")]
#[deny(unsafe_code)]
mod ktest;
#[deny(unsafe_code)]
mod shell;
#[deny(unsafe_code)]
mod workload;

use boot::{cmdline, dtb, early, layout};
use drivers::{fw_cfg, gic, psci, timer};
use kernel::exit::{self, ExitStatus};
use kernel::mem::{counters, heap, hotplug, kernel_pt, memblock, page_alloc, teardown, vmemmap};
use kernel::{console, irq, pci, smp, sync};

use core::sync::atomic::Ordering;
use layout::{Size, G};

/// QEMU virt's PL011, used only to report a device tree we cannot parse.
const FALLBACK_UART_PA: u64 = 0x0900_0000;

/// Stop a boot that cannot continue: `hotmem: FATAL <what>`, status [`ExitStatus::BootFailed`].
fn boot_failed(what: core::fmt::Arguments) -> ! {
    if !console::is_ready() {
        // Before the UART is mapped (the linear map or the UART mapping itself failed): map the
        // fallback UART if tables are left, and say it through semihosting as well, which
        // needs no mapping at all.
        if let Ok(va) = kernel_pt::ioremap(FALLBACK_UART_PA, 0x1000) {
            // SAFETY: just mapped as device memory over the fallback UART, for good.
            unsafe { console::init(va) };
        }
        console::early_report(format_args!("hotmem: FATAL {what}\n"));
    }
    console::_print_panic(format_args!("hotmem: FATAL {what}\n"));
    exit::exit(ExitStatus::BootFailed)
}

/// Counter stamps of the boot stages, printed once at the prompt (`boot: stages_us ...`), so
/// that a slow stage shows without the console writes in between skewing the others.
struct Stages {
    t0: u64,
    last: u64,
    marks: [(&'static str, u64); 16],
    len: usize,
}

impl Stages {
    fn start() -> Self {
        let t0 = arch::cpu::counter();
        Stages {
            t0,
            last: t0,
            marks: [("", 0); 16],
            len: 0,
        }
    }

    /// The stage `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = arch::cpu::counter();
        if let Some(m) = self.marks.get_mut(self.len) {
            *m = (name, now - self.last);
            self.len += 1;
        }
        self.last = now;
    }

    fn print(&self) {
        let cycles = self.last - self.t0;
        print!(
            "boot: time_to_prompt_us={} cycles={} stages_us",
            timer::cycles_to_us(cycles),
            cycles
        );
        for (name, c) in &self.marks[..self.len] {
            print!(" {name}={}", timer::cycles_to_us(*c));
        }
        println!();
    }
}

/// What the machine and the user told the kernel: the device tree, the command line, and the
/// RAM it decided to use.
struct Machine {
    plat: dtb::Platform,
    dtb_pa: u64,
    cmdline: alloc::string::String,
    opts: cmdline::Options,
    cmdline_warnings: alloc::vec::Vec<cmdline::CmdlineWarning>,
    /// fw_cfg's DMA interface, if there is a fw_cfg: `ok`, `failed` or `none`.
    fw_cfg_dma: Option<&'static str>,
    /// RAM that `mem=` held back (for `probe`).
    held_back: alloc::vec::Vec<dtb::Range>,
    /// RAM the linear map cannot reach.
    beyond_linear: u64,
    /// The planted bug `mutant=` turned on, or why it could not.
    mutant: Option<Result<arch::mutant::Mutant, arch::mutant::SelectError>>,
}

#[no_mangle]
extern "C" fn __hotmem_main(_x0: u64) -> ! {
    let mut stages = Stages::start();
    kernel::lockdep::stop_with(exit::fatal_stop);
    heap::init_heap();
    teardown::init();
    let boot_mmu = early::boot_mmu();
    kernel_pt::install(boot_mmu.ttbr1);
    stages.mark("early");
    let mut m = read_machine(&mut stages);
    stages.mark("cmdline");
    map_memory(&m);
    stages.mark("linear_map");
    start_console(&m);
    stages.mark("console");
    init_memory(&mut m, &mut stages);
    start_interrupts(&m);
    stages.mark("gic");
    let started = start_cpus(&m);
    stages.mark("smp");
    start_devices(&m);
    stages.mark("devices");
    cpus_online(&m, started);
    stages.mark("smp_online");
    stages.print();
    kernel::deferred::start_idle_work();

    #[cfg(feature = "ktest")]
    ktest::run_all(&m.plat, m.opts.ktest_only.as_deref());
    #[cfg(not(feature = "ktest"))]
    shell::run()
}

/// The device tree (mapped read-only at FDT_VADDR by the early code) and the kernel command
/// line: /chosen/bootargs (-append), else the fw_cfg file (firmware mode). A planted bug (test
/// kernel with `mutants` only) is turned on here, before anything it breaks runs.
fn read_machine(stages: &mut Stages) -> Machine {
    let dtb_pa = early::DTB_PA.load(Ordering::Relaxed);
    let dtb_va = layout::FDT_VADDR + (dtb_pa & (layout::PAGE_SIZE - 1));
    // SAFETY: the early code mapped FDT_MAPPED bytes from the DTB's address at FDT_VADDR.
    let mut plat = match unsafe { dtb::parse(dtb_va as *const u8, layout::FDT_MAPPED) } {
        Ok(p) => p,
        Err(e) => boot_failed(format_args!("device tree at pa={dtb_pa:#x}: {e}")),
    };
    stages.mark("dtb");
    let fw_cfg = plat.fw_cfg.and_then(|r| {
        let va = kernel_pt::ioremap(r.base, r.size).ok()?;
        // SAFETY: a fresh device mapping (whole pages) of the fw_cfg registers named by
        // the DTB, `r.size` bytes of them.
        Some(unsafe { fw_cfg::FwCfg::new(va, r.size) })
    });
    // The DIMM slot count from QEMU's ACPI tables (firmware mode): their first table, the
    // DSDT, read only where it is one DMA transfer.
    let slots = fw_cfg.as_ref().filter(|f| f.has_dma()).and_then(|f| {
        let head = f.read_file(fw_cfg::ACPI_TABLES_FILE, parse::acpi::HEADER_LEN)?;
        let dsdt = f.read_file(fw_cfg::ACPI_TABLES_FILE, parse::acpi::dsdt_len(&head)?.min(1 << 20))?;
        parse::acpi::memory_slots(&dsdt, drivers::ged::MAX_SLOTS)
    });
    drivers::ged::set_slots(slots);
    let cmdline_text = if !plat.bootargs.is_empty() {
        plat.bootargs.clone()
    } else {
        fw_cfg.as_ref().and_then(fw_cfg::cmdline).unwrap_or_default()
    };
    let (opts, cmdline_warnings) = cmdline::parse(&cmdline_text);
    let mutant = opts.mutant.as_deref().map(arch::mutant::select);
    let (ram, held_back) = cmdline::apply_mem_limit(&plat.memory, opts.mem);
    let (ram, beyond_linear) = kernel_pt::clip_to_linear(&ram);
    plat.memory = ram;
    Machine {
        plat,
        dtb_pa,
        cmdline: cmdline_text,
        opts,
        cmdline_warnings,
        fw_cfg_dma: fw_cfg.as_ref().map(fw_cfg::FwCfg::dma_state),
        held_back,
        beyond_linear,
        mutant,
    }
}

/// Memblock (all RAM minus the image, the DTB and DT reservations) first: the linear map takes
/// its tables from it once the early pool's share is used.
fn map_memory(m: &Machine) {
    let kimage_pa = layout::image_start().wrapping_sub(layout::kimage_voffset());
    let mut reserved = m.plat.reserved.clone();
    reserved.push(dtb::Range {
        base: kimage_pa,
        size: layout::image_end() - layout::image_start(),
    });
    reserved.push(dtb::Range {
        base: m.dtb_pa,
        size: m.plat.dtb_size,
    });
    memblock::init(&m.plat.memory, &reserved);
    if let Err(e) = kernel_pt::map_linear(&m.plat.memory) {
        boot_failed(format_args!(
            "cannot build the linear map of {} RAM range(s): {e:?} (early page-table pool: {} of {} tables used)",
            m.plat.memory.len(),
            early::EARLY_POOL_USED.load(Ordering::Relaxed),
            early::POOL_TABLES
        ));
    }
}

/// The UART and the interrupts the kernel itself owns (subsystems register theirs at their
/// init), then the boot lines: banner, command line, mutant, memory.
fn start_console(m: &Machine) {
    let plat = &m.plat;
    match kernel_pt::ioremap(plat.uart.base, plat.uart.size) {
        // SAFETY: just mapped as device memory over the DT's UART, for good.
        Ok(va) => unsafe { console::init(va) },
        Err(e) => boot_failed(format_args!("cannot map the UART: {e:?}")),
    }
    console::UART_INTID.store(plat.uart_intid, Ordering::Relaxed);
    let core_irqs: [(u32, irq::Handler); 3] = [
        (timer::INTID_VTIMER, |_, cpu| timer::handle_irq(cpu)),
        (gic::SGI_WAKE, |_, _| {}),
        (plat.uart_intid, |_, _| console::handle_rx_irq()),
    ];
    for (intid, handler) in core_irqs {
        if let Err(e) = irq::register(intid, handler) {
            boot_failed(format_args!("cannot register the handler of intid={intid}: {e:?}"));
        }
    }
    println!();
    println!(
        "hotmem {} ({}, {} build) on {}",
        env!("CARGO_PKG_VERSION"),
        config::CONFIG_NAME,
        if config::KTEST { "ktest" } else { "kernel" },
        plat.model
    );
    println!(
        "boot: granule={} va_bits={} levels={} el={} entry_el={} mpidr={:#x} dtb={:#x} dtb_size={} kimage_pa={:#x} tlbi_range={}",
        G.granule_name(),
        G.va_bits,
        G.levels(),
        arch::cpu::current_el(),
        early::ENTRY_EL.load(Ordering::Relaxed),
        arch::cpu::mpidr_affinity(),
        m.dtb_pa,
        plat.dtb_size,
        layout::image_start().wrapping_sub(layout::kimage_voffset()),
        arch::cpu::has_tlbi_range()
    );
    print_options(m);
    for r in &plat.memory {
        println!("boot: memory base={:#x} size={:#x} ({})", r.base, r.size, Size(r.size));
    }
    for r in &m.held_back {
        println!(
            "boot: held_back base={:#x} size={:#x} ({}) (mem=; add it with probe)",
            r.base,
            r.size,
            Size(r.size)
        );
    }
    kernel::mem::print_layout();
    if m.beyond_linear > 0 {
        println!(
            "boot: ignored {} of RAM above the linear map's reach ({:#x}; va_bits={})",
            Size(m.beyond_linear),
            layout::LINEAR_SIZE,
            G.va_bits
        );
    }
}

/// The command line as the kernel took it: its text, its warnings, and the planted bug it
/// turns on (a mutant run that silently ran without its mutant would pass for the wrong
/// reason, so an unknown one stops the boot).
fn print_options(m: &Machine) {
    println!("boot: cmdline=\"{}\"", m.cmdline);
    if let Some(dma) = m.fw_cfg_dma {
        println!("boot: fw_cfg dma={dma}");
    }
    for w in &m.cmdline_warnings {
        println!("cmdline: {w}");
    }
    // Only the test build poisons deferred memmap; elsewhere the option would do nothing unseen.
    if let (false, Some(on)) = (cfg!(feature = "ktest"), m.opts.memmap_poison) {
        println!(
            "cmdline: 'memmap_poison={}' ignored: only the test kernel (--ktest) poisons deferred memmap",
            if on { "on" } else { "off" }
        );
    }
    if let (Some(name), Some(selected)) = (m.opts.mutant.as_deref(), m.mutant) {
        match selected {
            Ok(_) => println!("boot: mutant={name} (a planted bug: tests only)"),
            Err(e) => boot_failed(format_args!(
                "mutant={name}: {}",
                match e {
                    arch::mutant::SelectError::Unknown => "no such mutant",
                    arch::mutant::SelectError::NotBuilt => "this kernel was built without the `mutants` feature",
                }
            )),
        }
    }
}

/// Boot memory: the NUMA nodes, the sparse model with the memmap of every boot section (backed from
/// memblock), the buddy allocator in it, the heap's growth, and the hotplug state.
fn init_memory(m: &mut Machine, stages: &mut Stages) {
    kernel::numa::init(&boot::numa::topology(&m.plat), &m.plat.cpus);
    page_alloc::set_memmap_init(
        m.opts.memmap_init.unwrap_or(mm::buddy::MemmapInit::Deferred),
        m.opts.memmap_poison,
    );
    match vmemmap::init_memmap(&m.plat.memory) {
        Ok(mm) => {
            let ram = counters::RAM_PAGES.load(Ordering::Relaxed) << layout::PAGE_SHIFT;
            println!(
                "memmap: sections={} path={} blocks={} pages={} cont_pages={} bytes={} cycles={} cycles_per_gib={}",
                mm.sections,
                if mm.stats.blocks > 0 { "section" } else { "basepages" },
                mm.stats.blocks,
                mm.stats.pages,
                mm.stats.cont_pages,
                mm.stats.bytes,
                mm.cycles,
                (mm.cycles as u128 * (1 << 30) / ram.max(1) as u128) as u64
            );
        }
        Err(e) => boot_failed(format_args!("cannot populate the boot memmap: {e:?}")),
    }
    stages.mark("memmap");
    page_alloc::init_page_allocator();
    stages.mark("page_alloc");
    heap::grow_heap();
    stages.mark("heap");
    hotplug::init(core::mem::take(&mut m.held_back), &m.opts);
    stages.mark("hotplug");
}

/// Interrupts, timer, PSCI.
fn start_interrupts(m: &Machine) {
    let plat = &m.plat;
    psci::init(plat.psci_method.as_deref());
    let (gicd, gicc) = (plat.gic.gicd, plat.gic.gicc_or_gicr);
    let (Ok(gicd_va), Ok(gicc_va)) = (
        kernel_pt::ioremap(gicd.base, gicd.size),
        kernel_pt::ioremap(gicc.base, gicc.size),
    ) else {
        boot_failed(format_args!("cannot map the GIC"))
    };
    // SAFETY: both were just mapped as device memory over the DT's GIC regions, for good.
    unsafe { gic::init_distributor(plat.gic.version, gicd_va, gicc_va, gicc.size) };
    gic::init_cpu(&[timer::INTID_VTIMER]);
    gic::enable_spi(plat.uart_intid, gic::Trigger::Level);
    timer::init_cpu();
    sync::irq_enable();
    let (maj, min) = psci::version();
    println!(
        "boot: gic=v{} psci={}.{} conduit={} timer_hz={} cntfrq={}",
        if plat.gic.version == dtb::GicVersion::V3 { 3 } else { 2 },
        maj,
        min,
        psci::conduit_name(),
        timer::HZ,
        arch::cpu::counter_freq()
    );
}

/// Secondary CPUs, started (they need the identity map until they enter the kernel, so drop
/// ours only afterwards); their set-up overlaps the devices', [`cpus_online`] waits for it.
fn start_cpus(m: &Machine) -> alloc::vec::Vec<smp::Started> {
    let started = smp::boot_secondaries(&m.plat.cpus);
    smp::drop_identity_map();
    started
}

/// Wait for the started CPUs to report in, and say which are online.
fn cpus_online(m: &Machine, mut started: alloc::vec::Vec<smp::Started>) {
    let cpus = &m.plat.cpus;
    smp::wait_online(&mut started);
    for s in started {
        if let Err(why) = s.result {
            println!("smp: cpu={} mpidr={:#x} FAILED: {}", s.cpu, s.mpidr, why);
        }
    }
    println!("smp: online={} of {} cpus", smp::online_count(), cpus.len());
    if cpus.len() > smp::MAX_CPUS {
        println!(
            "smp: {} of the {} CPUs in the device tree stay off: this kernel brings up at most {} (smp::MAX_CPUS: per-CPU stacks, mailboxes and timer state are fixed arrays)",
            cpus.len() - smp::MAX_CPUS,
            cpus.len(),
            smp::MAX_CPUS
        );
    }
}

/// The buses, then every registered memory device type on them.
fn start_devices(m: &Machine) {
    let mut pci = match pci::init(m.plat.pci.as_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            println!("pci: none: {e}");
            None
        }
    };
    kernel::mem::device::init_all(&mut kernel::mem::device::Buses { pci: pci.as_mut() });
}
