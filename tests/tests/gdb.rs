//! GDB sessions that understand hotmem: QEMU halted at reset with its gdbstub on
//! 127.0.0.1, `gdb-multiarch -batch` with the project's gdbinit, and the console driven at the
//! same time, for every configuration: the default VA size of each granule, both 2-level
//! configurations (16k-36, 64k-42), and 4k-39 / 16k-48.
//!
//! The session (firmware boot, 3 GiB with `mem=1G`, so 2 GiB wait for `probe`, and an empty
//! virtio-mem device, so there is a memory group):
//! 1. at reset: `hm-config` (from HOTMEM_DEBUG_INFO), `hm-walk` says there are no tables yet,
//!    usage errors, `hm-selftest` (walker/decoder/ptdump on synthetic tables, all 7 configs);
//! 2. `hm-hbreak populate` → the boot memmap populate of the first section: its vmemmap VA is
//!    not mapped yet (fault level reported), the linear map and the TTBR0 identity map are;
//!    run to the return (`thbreak *$x30`): now the memmap is mapped;
//! 3. `hm-hbreak cmd:probe`, boot to the prompt; the test types `sections`, `blocks`,
//!    `meminfo`, `page`, `pt` (the kernel's own view), then `probe 0x80000000 <block>`: gdb
//!    stops in the shell's probe handler and snapshots sections, blocks, free lists (checked
//!    list by list), struct pages — they must equal what the shell printed;
//! 4. `hm-hbreak populate` again → the hot-add populate: the new block's memmap is not mapped,
//!    its linear map already is; after the return the memmap is mapped *inside the block*
//!    (memmap on memory);
//! 5. the test types `online <block> movable` and `stress <block size>` (every page of the new
//!    block not holding its memmap becomes a movable page), then, with `hm-hbreak cmd:blocks`,
//!    `blocks`: gdb lists the new block (with its altmap) and the device's memory group (as
//!    key=value), walks, pages, free lists, ptdump,
//!    the `$hm_*()` convenience functions and the flag table (`hm-flags`, which must be the
//!    kernel's `mm::page::flags::NAMES` bit for bit). The kernel never leaves a page isolated
//!    while its shell runs (isolation lasts inside one `offline`), so gdb sets the isolated bit
//!    of a reserved kernel-image page itself (`set var $hm_page(..).flags`); then it detaches.
//!    The shell's `blocks`, `sections`, `page` (movable pages and the isolated one among them),
//!    `pt` and `meminfo` must agree with every one of them.
//!
//! The test fails on any "Python Exception" / "Error occurred in Python". gdb and QEMU have
//! deadlines and are SIGKILLed when they pass (or when the test panics).
//! `HOTMEM_GDB_SHOW=1 cargo test -p hotmem-tests --test gdb -- --nocapture` prints each session.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use hotmem_qemu::config::BootMode::Firmware;
use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_qemu::config::KernelConfig;
use hotmem_qemu::console::{Console, ConsoleError};
use hotmem_qemu::gdb::{start_session, GdbBatch, GdbOutcome, GdbSession};
use hotmem_qemu::run::VirtioMem;
use hotmem_qemu::util::tail_lines;
use hotmem_tests::gdb::{compare_page, compare_walks, ptdump_mapped, Layout};
use hotmem_tests::parse::{hex, kv, lines_with, parse_walk, zone_lines, Walk};
use hotmem_tests::{cases, kernel, run_timeout, BootCase, QemuSlot, TAIL_LINES};

const RAM_BASE: u64 = 0x4000_0000;
/// Where firmware boot copies the image (identity-mapped by TTBR0 during boot).
const KIMAGE_PA: u64 = 0x4020_0000;
/// First byte held back by `mem=1G` (RAM is 3 GiB from 0x4000_0000).
const PROBE_PA: u64 = 0x8000_0000;
/// Never probed: has no memmap.
const HELD_BACK_PA: u64 = 0xc000_0000;
/// A linear-map block descriptor of this granule (level of the PMD).
const BLOCK_DESC: u64 = 0x0060_0000_4000_0705;

/// gdb-multiarch, installed first when missing and we are root with apt-get (as QEMU is).
fn gdb_binary() -> PathBuf {
    hotmem_tests::gdb_path()
}

/// The kernel's page flag table, the one the extension must report.
fn kernel_flags() -> Vec<(u32, String)> {
    mm::page::flags::NAMES
        .iter()
        .map(|&(bit, name)| (bit, name.to_string()))
        .collect()
}

/// The bit of the kernel's page flag `name`.
fn kernel_flag(name: &str) -> u32 {
    mm::page::flags::NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|&(bit, _)| bit)
        .unwrap_or_else(|| panic!("the kernel has no page flag {name}"))
}

/// The addresses and PFNs of one configuration's session.
struct Plan {
    cfg: KernelConfig,
    va: u32,
    l: Layout,
    /// Memory block (= section) size.
    block: u64,
    block_id: u64,
    boot_sections: u64,
    boot_memmap: u64,
    new_memmap: u64,
    lin_ram: u64,
    lin_new: u64,
    /// Pages printed at the probe: RAM base, kernel image, middle of RAM, last boot page,
    /// held back.
    boot_pfns: [u64; 5],
    /// Pages printed after the hot-add: the block's first (memmap), first after its memmap and
    /// last (movable after `stress`), and the RAM base.
    new_pfns: [u64; 4],
}

/// The session's machine: firmware boot (3 GiB, 2 GiB held back for `probe`, see
/// `BootCase`), and an empty virtio-mem device, whose memory group `hm-blocks` must list.
fn boot_case(g: Granule, va: u32) -> BootCase {
    let mut case = BootCase::new(g, va, Firmware);
    case.machine.virtio_mem = vec![VirtioMem::new(1 << 30)];
    case
}

impl Plan {
    fn new(g: Granule, va: u32) -> Plan {
        let cfg = boot_case(g, va).config;
        let l = Layout::of(&cfg);
        let block = l.section_size();
        let memmap_pages = l.memmap_per_section() >> l.page_shift;
        Plan {
            cfg,
            va,
            l,
            block,
            block_id: PROBE_PA >> l.section_shift,
            boot_sections: (PROBE_PA - RAM_BASE) / block,
            boot_memmap: l.struct_page(l.pfn(RAM_BASE)),
            new_memmap: l.struct_page(l.pfn(PROBE_PA)),
            lin_ram: l.linear(RAM_BASE),
            lin_new: l.linear(PROBE_PA),
            boot_pfns: [
                l.pfn(RAM_BASE),
                l.pfn(KIMAGE_PA),
                l.pfn(0x6000_0000),
                l.pfn(PROBE_PA) - 1,
                l.pfn(HELD_BACK_PA),
            ],
            new_pfns: [
                l.pfn(PROBE_PA),
                l.pfn(PROBE_PA) + memmap_pages,
                l.pfn(PROBE_PA + block) - 1,
                l.pfn(RAM_BASE),
            ],
        }
    }

    /// Pages of the new block that `stress` makes movable (`post-page-1`, `post-page-2`).
    fn movable_pfns(&self) -> [u64; 2] {
        [self.new_pfns[1], self.new_pfns[2]]
    }

    /// The reserved kernel-image page gdb marks isolated.
    fn isolated_pfn(&self) -> u64 {
        self.boot_pfns[1]
    }
}

/// 1. at reset; 2. the boot populate.
fn script_boot(b: GdbBatch, p: &Plan) -> GdbBatch {
    b.step("config", "hm-config")
        .step("reset-walk", format!("hm-walk {:#x}", p.lin_ram))
        .step("reset-blocks", "hm-blocks")
        .step("reset-flags", "hm-flags")
        .step("usage-walk", "hm-walk")
        .step("usage-page", "hm-page 1 2")
        .step("bad-expr", "hm-walk no_such_symbol_here")
        .step("selftest", "hm-selftest")
        .step("hbreak-boot", "hm-hbreak populate")
        .step("continue-boot", "continue")
        .step("boot-vmemmap-before", format!("hm-walk {:#x}", p.boot_memmap))
        .step("boot-linear", format!("hm-walk {:#x}", p.lin_ram))
        .step("boot-ttbr0", format!("hm-walk {KIMAGE_PA:#x}"))
        .step("return-boot", "thbreak *$x30")
        .command("continue")
        .step("boot-vmemmap-after", format!("hm-walk {:#x}", p.boot_memmap))
}

/// 3. at the shell's probe; 4. the hot-add populate.
fn script_probe(mut b: GdbBatch, p: &Plan) -> GdbBatch {
    b = b
        .command("delete")
        .step("hbreak-probe", "hm-hbreak cmd:probe")
        .step("continue-probe", "continue")
        .step("pre-sections", "hm-sections")
        .step("pre-blocks", "hm-blocks")
        .step("pre-freelists", "hm-freelists --check")
        .step("pre-ttbr0", format!("hm-walk {KIMAGE_PA:#x}"))
        .step("pre-ptdump", "hm-ptdump");
    for (i, pfn) in p.boot_pfns.iter().enumerate() {
        b = b.step(&format!("pre-page-{i}"), format!("hm-page {pfn:#x}"));
    }
    b.command("delete")
        .step("hbreak-plug", "hm-hbreak populate")
        .step("continue-plug", "continue")
        .step("plug-vmemmap-before", format!("hm-walk {:#x}", p.new_memmap))
        .step("plug-linear", format!("hm-walk {:#x}", p.lin_new))
        .step("return-plug", "thbreak *$x30")
        .command("continue")
        .step("plug-vmemmap-after", format!("hm-walk {:#x}", p.new_memmap))
}

/// 5. at the shell's `blocks`, after `online` and `stress`.
fn script_blocks(mut b: GdbBatch, p: &Plan) -> GdbBatch {
    b = b
        .command("delete")
        .step("hbreak-blocks", "hm-hbreak cmd:blocks")
        .step("continue-blocks", "continue")
        .step("post-blocks", "hm-blocks")
        .step("post-sections", "hm-sections")
        .step("post-freelists", "hm-freelists --check")
        .step("post-walk-new-memmap", format!("hm-walk {:#x}", p.new_memmap))
        .step("post-walk-new-linear", format!("hm-walk {:#x}", p.lin_new))
        .step("post-walk-boot-memmap", format!("hm-walk {:#x}", p.boot_memmap))
        .step("post-walk-boot-linear", format!("hm-walk {:#x}", p.lin_ram))
        .step("post-ptdump", "hm-ptdump")
        .step(
            "printer-page",
            format!("print *$hm_pfn_to_page({:#x})", p.l.pfn(PROBE_PA)),
        )
        .step(
            "printer-desc",
            format!(
                "python import struct; print(gdb.Value(struct.pack('<Q', {BLOCK_DESC:#x}), \
                 gdb.lookup_type('arch::descriptor::Descriptor')))"
            ),
        )
        .step("desc", format!("hm-desc {BLOCK_DESC:#x} 2"));
    for (i, pfn) in p.new_pfns.iter().enumerate() {
        b = b.step(&format!("post-page-{i}"), format!("hm-page {pfn:#x}"));
    }
    script_isolated(script_functions(b, p), p)
        .command("delete")
        .step("detach", "detach")
}

/// The flag table and the convenience functions.
fn script_functions(b: GdbBatch, p: &Plan) -> GdbBatch {
    let new_pfn = p.l.pfn(PROBE_PA);
    let [movable, _] = p.movable_pfns();
    let held_back = p.l.pfn(HELD_BACK_PA);
    let mut b = b.step("flags", "hm-flags");
    for (bit, _) in kernel_flags() {
        b = b.step(&format!("flags-{bit:#x}"), format!("hm-flags {bit:#x}"));
    }
    b.step("fn-pfn-to-virt", format!("print/x $hm_pfn_to_virt({new_pfn:#x})"))
        .step(
            "fn-virt-to-phys-linear",
            format!("print/x $hm_virt_to_phys({:#x})", p.lin_new),
        )
        .step(
            "fn-virt-to-phys-memmap",
            format!("print/x $hm_virt_to_phys({:#x})", p.new_memmap),
        )
        .step("fn-pfn-to-page", format!("print/x $hm_pfn_to_page({new_pfn:#x})"))
        .step("fn-page", format!("print $hm_page({movable:#x})"))
        .step("fn-page-flags-value", format!("print/x $hm_page({movable:#x}).flags"))
        .step(
            "fn-page-flags",
            format!("with language c -- print $hm_page_flags({movable:#x})"),
        )
        .step("fn-page-unmapped", format!("print $hm_page({held_back:#x})"))
}

/// The isolated page. The kernel never leaves a page isolated while its shell runs (isolation
/// lasts inside one `offline`, and `debug_vm` checks after every command that no page is left
/// isolated), so gdb stops in the shell's `page` handler, sets the isolated bit of that
/// (reserved, kernel-image) page, reads it, lets the handler print it, and clears the bit again
/// when the handler returns.
fn script_isolated(b: GdbBatch, p: &Plan) -> GdbBatch {
    let iso = p.isolated_pfn();
    let bit = kernel_flag("isolated");
    b.command("delete")
        .step("hbreak-page", "hm-hbreak cmd:page")
        .step("continue-page", "continue")
        .step(
            "mark-isolated",
            format!("set var $hm_page({iso:#x}).flags = $hm_page({iso:#x}).flags | {bit:#x}"),
        )
        .step("isolated-page", format!("hm-page {iso:#x}"))
        .step(
            "fn-page-flags-isolated",
            format!("with language c -- print $hm_page_flags({iso:#x})"),
        )
        .step("return-page", "thbreak *$x30")
        .command("continue")
        .step(
            "unmark-isolated",
            format!(
                "set var $hm_page({iso:#x}).flags = $hm_page({iso:#x}).flags & {:#x}",
                !bit
            ),
        )
}

/// The console side: every command's output, by a name.
struct Shell<'a> {
    con: &'a mut Console,
    got: Vec<(String, String)>,
}

impl Shell<'_> {
    fn run(&mut self, name: &str, cmd: &str) -> Result<String, String> {
        let out = self.con.command(cmd).map_err(|e| format!("console `{cmd}`: {e}"))?;
        self.got.push((name.to_string(), out.clone()));
        Ok(out)
    }

    /// Runs `cmd` and requires `needle` in its output.
    fn expect(&mut self, name: &str, cmd: &str, needle: &str) -> Result<(), String> {
        let out = self.run(name, cmd)?;
        if out.contains(needle) {
            Ok(())
        } else {
            Err(format!("`{cmd}` failed: {out:?}"))
        }
    }
}

/// What the test types while gdb stops the guest where its script says.
fn drive_shell(con: &mut Console, p: &Plan) -> Result<Vec<(String, String)>, String> {
    con.wait_for_prompt()
        .map_err(|e| format!("no prompt after boot: {e}"))?;
    let mut sh = Shell { con, got: Vec::new() };
    sh.run("pre-sections", "sections")?;
    sh.run("pre-blocks", "blocks")?;
    // Settled: idle CPUs may still be initialising deferred struct pages, which would
    // change the free counts between this line and gdb's view at the probe.
    sh.run("pre-meminfo", "meminfo settle")?;
    for (i, pfn) in p.boot_pfns.iter().enumerate() {
        sh.run(&format!("pre-page-{i}"), &format!("page {pfn:#x}"))?;
    }
    sh.expect("probe", &format!("probe {PROBE_PA:#x} {:#x}", p.block), "probe: added=")?;
    sh.expect("online", &format!("online {} movable", p.block_id), "online: block=")?;
    sh.expect("stress", &format!("stress {:#x}", p.block), "result=ok")?;
    sh.run("vmem", "vmem")?;
    sh.run("post-blocks", "blocks")?;
    // The first `page` after `blocks`: gdb marks this page isolated while the shell prints it.
    sh.run("isolated-page", &format!("page {:#x}", p.isolated_pfn()))?;
    sh.run("post-sections", "sections")?;
    sh.run("post-meminfo", "meminfo")?;
    for (i, pfn) in p.new_pfns.iter().enumerate() {
        sh.run(&format!("post-page-{i}"), &format!("page {pfn:#x}"))?;
    }
    sh.run("pt-new-memmap", &format!("pt {:#x}", p.new_memmap))?;
    sh.run("pt-new-linear", &format!("pt {:#x}", p.lin_new))?;
    sh.run("pt-boot-memmap", &format!("pt {:#x}", p.boot_memmap))?;
    sh.run("pt-boot-linear", &format!("pt {:#x}", p.lin_ram))?;
    Ok(sh.got)
}

/// Both sides of a finished session.
struct Seen {
    gdb: GdbOutcome,
    shell: Vec<(String, String)>,
}

impl Seen {
    fn step(&self, n: &str) -> Result<&str, String> {
        self.gdb.step(n).ok_or_else(|| format!("gdb never ran step `{n}`"))
    }

    fn shell(&self, name: &str) -> &str {
        self.shell.iter().find(|(n, _)| n == name).map_or("", |(_, t)| t)
    }

    fn walk(&self, n: &str) -> Result<Walk, String> {
        Ok(parse_walk(self.step(n)?, "walk:"))
    }

    fn want(&self, n: &str, needle: &str) -> Result<(), String> {
        let t = self.step(n)?;
        if t.contains(needle) {
            Ok(())
        } else {
            Err(format!("step `{n}` lacks `{needle}`:\n{t}"))
        }
    }

    /// The value gdb's `print/x` printed in step `n` (`$1 = 0x...`).
    fn printed_hex(&self, n: &str) -> Result<u64, String> {
        let t = self.step(n)?;
        t.lines()
            .find_map(|l| l.trim().strip_prefix('$')?.split_once(" = ").map(|(_, v)| v))
            .and_then(hex)
            .ok_or_else(|| format!("step `{n}` printed no hex value:\n{t}"))
    }

    /// Step `n` printed the string `text` (`$N = "text"`).
    fn printed(&self, n: &str, text: &str) -> Result<(), String> {
        let t = self.step(n)?;
        if t.trim().ends_with(&format!(" = \"{text}\"")) {
            Ok(())
        } else {
            Err(format!("step `{n}` printed {t:?}, want {text:?}"))
        }
    }

    /// A gdb step and a shell command that print the same struct page.
    fn same_page(&self, gdb_step: &str, shell_name: &str) -> Result<(), String> {
        compare_page(self.step(gdb_step)?, self.shell(shell_name)).map_err(|e| format!("{gdb_step}: {e}"))
    }
}

/// 1. at reset.
fn check_reset(s: &Seen, p: &Plan) -> Result<(), String> {
    let c = s.step("config")?;
    let line = lines_with(c, &["config: granule="]).into_iter().next().unwrap_or("");
    for (k, v) in [
        ("granule", p.cfg.granule.to_string()),
        ("va_bits", p.va.to_string()),
        ("levels", p.l.levels.to_string()),
        ("start_level", p.l.start_level().to_string()),
    ] {
        if kv(line, k) != Some(v.as_str()) {
            return Err(format!("hm-config: want {k}={v}: {c}"));
        }
    }
    if !s.walk("reset-walk")?.not_walked {
        return Err(format!(
            "hm-walk at reset should walk nothing: {}",
            s.step("reset-walk")?
        ));
    }
    s.want("reset-walk", "TTBR1_EL1 is 0")?;
    s.want("reset-blocks", "cannot read hotmem::")?;
    s.want("reset-blocks", "::HOTPLUG")?;
    check_flag_table(s.step("reset-flags")?)?;
    s.want("usage-walk", "usage: hm-walk VA")?;
    s.want("usage-page", "usage: hm-page PFN")?;
    s.want("bad-expr", "is not a number or expression")?;
    s.want("selftest", "selftest: summary passed=8 failed=0")
}

/// 2. the boot populate.
fn check_boot_populate(s: &Seen, p: &Plan) -> Result<(), String> {
    let l = &p.l;
    s.want("hbreak-boot", "hm-hbreak: breakpoint")?;
    s.want("continue-boot", "populate")?;
    let w = s.walk("boot-vmemmap-before")?;
    let fl = w.fault_level.unwrap_or(99);
    if !(w.not_mapped && (l.start_level()..=3).contains(&fl) && w.levels == Some(l.levels)) {
        return Err(format!(
            "first boot section's memmap must be unmapped on entry (fault level in L{}..L3): {}",
            l.start_level(),
            s.step("boot-vmemmap-before")?
        ));
    }
    let w = s.walk("boot-linear")?;
    if w.leaf.map(|x| x.0) != Some(RAM_BASE) || w.levels != Some(l.levels) {
        return Err(format!("boot linear walk: {}", s.step("boot-linear")?));
    }
    compare_walks(&w, &parse_walk(s.shell("pt-boot-linear"), "pt:"))
        .map_err(|e| format!("linear map during boot vs the shell's pt: {e}"))?;
    let w = s.walk("boot-ttbr0")?;
    if w.ttbr != Some(0) || w.leaf.map(|x| x.0) != Some(KIMAGE_PA) {
        return Err(format!("TTBR0 identity map during boot: {}", s.step("boot-ttbr0")?));
    }
    compare_walks(
        &s.walk("boot-vmemmap-after")?,
        &parse_walk(s.shell("pt-boot-memmap"), "pt:"),
    )
    .map_err(|e| format!("boot memmap after populate vs the shell's pt: {e}"))
}

/// The `PREFIX node=N zone=Z ...` lines of a view, without the prefix.
fn node_zone_lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    lines_with(text, &[prefix])
        .into_iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::trim_start)
        .filter(|l| l.starts_with("node=") && l.contains(" zone="))
        .collect()
}

/// gdb's `lines` (of `prefixes`) in `g_step` equal the shell's in `k_name`.
fn same_lines(s: &Seen, g_step: &str, k_name: &str, prefixes: &[&str]) -> Result<(), String> {
    let (g, k) = (s.step(g_step)?, s.shell(k_name));
    if lines_with(g, prefixes) != lines_with(k, prefixes) {
        return Err(format!("{g_step}: gdb and shell differ:\n--- gdb\n{g}\n--- shell\n{k}"));
    }
    Ok(())
}

/// 3. at the shell's probe (and the later snapshot of the same views), against the shell.
fn check_probe_stop(s: &Seen, p: &Plan) -> Result<(), String> {
    s.want("continue-probe", "cmd_probe")?;
    for when in ["pre", "post"] {
        same_lines(
            s,
            &format!("{when}-sections"),
            &format!("{when}-sections"),
            &["sections:", "section:"],
        )?;
        same_lines(
            s,
            &format!("{when}-blocks"),
            &format!("{when}-blocks"),
            &["blocks:", "block:"],
        )?;
        let g_step = format!("{when}-freelists");
        let (gz, kz) = (
            zone_lines(s.step(&g_step)?, "freelists:"),
            zone_lines(s.shell(&format!("{when}-meminfo")), "meminfo:"),
        );
        if gz.is_empty() || gz != kz {
            return Err(format!("{g_step} vs meminfo zones:\n  gdb   {gz:?}\n  shell {kz:?}"));
        }
        let (gn, kn) = (
            node_zone_lines(s.step(&g_step)?, "freelists:"),
            node_zone_lines(s.shell(&format!("{when}-meminfo")), "meminfo:"),
        );
        if gn.is_empty() || gn != kn {
            return Err(format!("{g_step} vs meminfo per node:\n  gdb   {gn:?}\n  shell {kn:?}"));
        }
        s.want(&g_step, "freelists: check ok")?;
    }
    for i in 0..p.boot_pfns.len() {
        let n = format!("pre-page-{i}");
        s.same_page(&n, &n)?;
    }
    for i in 0..p.new_pfns.len() {
        let n = format!("post-page-{i}");
        s.same_page(&n, &n)?;
    }
    if !s.walk("pre-ttbr0")?.not_walked {
        return Err(format!("after boot TTBR0 is off: {}", s.step("pre-ttbr0")?));
    }
    s.want("pre-ttbr0", "EPD0=1")?;
    let t = s.step("pre-ptdump")?;
    let memmap = p.boot_sections * p.l.memmap_per_section();
    if ptdump_mapped(t, "linear") != Some(PROBE_PA - RAM_BASE) || ptdump_mapped(t, "vmemmap") != Some(memmap) {
        return Err(format!(
            "ptdump after boot: want linear={:#x} vmemmap={memmap:#x}:\n{t}",
            PROBE_PA - RAM_BASE
        ));
    }
    Ok(())
}

/// 4. the hot-add populate.
fn check_hot_add(s: &Seen, p: &Plan) -> Result<(), String> {
    s.want("continue-plug", "populate")?;
    if !s.walk("plug-vmemmap-before")?.not_mapped {
        return Err(format!(
            "new memmap mapped before populate: {}",
            s.step("plug-vmemmap-before")?
        ));
    }
    if s.walk("plug-linear")?.leaf.map(|x| x.0) != Some(PROBE_PA) {
        return Err(format!("new block's linear map: {}", s.step("plug-linear")?));
    }
    match s.walk("plug-vmemmap-after")?.leaf {
        Some((pa, _)) if (PROBE_PA..PROBE_PA + p.block).contains(&pa) => Ok(()),
        _ => Err(format!(
            "the new memmap must live on the new block (memmap on memory): {}",
            s.step("plug-vmemmap-after")?
        )),
    }
}

/// 5. at the shell's `blocks`: walks, ptdump, printers, against the shell.
fn check_blocks_stop(s: &Seen, p: &Plan) -> Result<(), String> {
    s.want("continue-blocks", "cmd_blocks")?;
    s.want("post-blocks", &format!("block: id={} range={PROBE_PA:#x}-", p.block_id))?;
    s.want("post-blocks", &format!("altmap: block={} ", p.block_id))?;
    check_groups(s)?;
    for (g_step, k_name) in [
        ("plug-vmemmap-after", "pt-new-memmap"),
        ("post-walk-new-memmap", "pt-new-memmap"),
        ("post-walk-new-linear", "pt-new-linear"),
        ("post-walk-boot-memmap", "pt-boot-memmap"),
        ("post-walk-boot-linear", "pt-boot-linear"),
    ] {
        let (gw, kw) = (s.walk(g_step)?, parse_walk(s.shell(k_name), "pt:"));
        if kw.leaf.is_none() {
            return Err(format!("the shell's {k_name} found no mapping: {}", s.shell(k_name)));
        }
        compare_walks(&gw, &kw).map_err(|e| format!("{g_step} vs the shell's pt: {e}"))?;
    }
    let t = s.step("post-ptdump")?;
    if ptdump_mapped(t, "linear") != Some(PROBE_PA - RAM_BASE + p.block)
        || ptdump_mapped(t, "vmemmap") != Some((p.boot_sections + 1) * p.l.memmap_per_section())
    {
        return Err(format!("ptdump after probe:\n{t}"));
    }
    s.want("printer-page", &format!("struct page pfn={:#x} ", p.l.pfn(PROBE_PA)))?;
    s.want("printer-desc", "Descriptor(0x0060000040000705 ")?;
    if p.l.page_shift == 12 {
        s.want("desc", "BLOCK oa=0x40000000 size=2 MiB Normal RW XN AF SH=inner")?;
    }
    s.want("detach", "etached")
}

/// `hm-blocks` lists the virtio-mem device's memory group (the one `vmem` names) as key=value:
/// dynamic, nothing plugged.
fn check_groups(s: &Seen) -> Result<(), String> {
    let vmem = s.shell("vmem");
    let group = lines_with(vmem, &["vmem: dev=0 "])
        .into_iter()
        .find_map(|l| kv(l, "group"))
        .ok_or_else(|| format!("`vmem` names no group: {vmem}"))?;
    let blocks = s.step("post-blocks")?;
    let line = lines_with(blocks, &["group: "])
        .into_iter()
        .find(|l| kv(l, "id") == Some(group))
        .ok_or_else(|| format!("hm-blocks lists no group {group}:\n{blocks}"))?;
    for (k, v) in [
        ("kind", Some("dynamic")),
        ("unit_pages", None),
        ("present_kernel_pages", Some("0")),
        ("present_movable_pages", Some("0")),
        ("nr_blocks", Some("0")),
    ] {
        let got = kv(line, k);
        if got.is_none() || v.is_some_and(|v| got != Some(v)) {
            return Err(format!("hm-blocks group line: want {k}={}: {line}", v.unwrap_or("N")));
        }
    }
    Ok(())
}

/// `hm-flags` lists exactly the kernel's flag table: every bit and name, in order.
fn check_flag_table(text: &str) -> Result<(), String> {
    let got: Vec<(u32, String)> = lines_with(text, &["page_flag:"])
        .into_iter()
        .filter_map(|l| {
            let bit = u32::try_from(hex(kv(l, "bit")?)?).ok()?;
            Some((bit, kv(l, "name")?.to_string()))
        })
        .collect();
    if got != kernel_flags() {
        return Err(format!(
            "hm-flags differs from mm::page::flags::NAMES:\n  gdb    {got:?}\n  kernel {:?}",
            kernel_flags()
        ));
    }
    Ok(())
}

/// The words in parentheses after `flags=` of a `page:` line: `(movable|head)` → `movable|head`.
fn page_flag_words(text: &str) -> Option<&str> {
    let l = lines_with(text, &["page:"]).into_iter().next()?;
    let rest = &l[l.find(" (")? + 2..];
    Some(&rest[..rest.find(')')?])
}

/// The flag table, a movable page and the isolated one against the shell, and each flag's
/// decoding.
fn check_flags(s: &Seen, p: &Plan) -> Result<(), String> {
    check_flag_table(s.step("flags")?)?;
    for (bit, name) in kernel_flags() {
        s.want(
            &format!("flags-{bit:#x}"),
            &format!("flags: value={bit:#x} names={name}"),
        )?;
    }
    for (i, pfn) in [(1, p.movable_pfns()[0]), (2, p.movable_pfns()[1])] {
        let k = s.shell(&format!("post-page-{i}"));
        if !page_flag_words(k).is_some_and(|w| w.split('|').any(|f| f == "movable")) {
            return Err(format!("pfn {pfn:#x} should be movable after `stress`: {k}"));
        }
    }
    s.want("continue-page", "cmd_page")?;
    for n in ["mark-isolated", "unmark-isolated"] {
        let t = s.step(n)?;
        if !t.trim().is_empty() {
            return Err(format!("step `{n}` (set var) failed: {t}"));
        }
    }
    let k = s.shell("isolated-page");
    match page_flag_words(k) {
        Some(w) if w.split('|').any(|f| f == "isolated") && !w.contains("movable") => {}
        _ => {
            return Err(format!(
                "the shell should show pfn {:#x} isolated: {k}",
                p.isolated_pfn()
            ))
        }
    }
    s.same_page("isolated-page", "isolated-page")
}

/// The `$hm_*()` convenience functions against the layout and the shell.
fn check_functions(s: &Seen, p: &Plan) -> Result<(), String> {
    let eq = |n: &str, want: u64| -> Result<(), String> {
        let got = s.printed_hex(n)?;
        if got == want {
            Ok(())
        } else {
            Err(format!("{n}: got {got:#x}, want {want:#x}"))
        }
    };
    eq("fn-pfn-to-virt", p.lin_new)?;
    eq("fn-virt-to-phys-linear", PROBE_PA)?;
    let memmap_pa = s.walk("post-walk-new-memmap")?.leaf.map_or(0, |(pa, _)| pa);
    eq("fn-virt-to-phys-memmap", memmap_pa)?;
    eq("fn-pfn-to-page", p.new_memmap)?;
    let movable = s.shell("post-page-1");
    let flags = lines_with(movable, &["page:"])
        .into_iter()
        .next()
        .and_then(|l| kv(l, "flags"))
        .and_then(hex);
    eq(
        "fn-page-flags-value",
        flags.ok_or_else(|| format!("no flags= in {movable}"))?,
    )?;
    s.printed("fn-page-flags", page_flag_words(movable).unwrap_or("?"))?;
    s.want("fn-page", &format!("struct page pfn={:#x} ", p.movable_pfns()[0]))?;
    s.want("fn-page-unmapped", "is not mapped")?;
    s.printed(
        "fn-page-flags-isolated",
        page_flag_words(s.shell("isolated-page")).unwrap_or("?"),
    )
}

/// QEMU powered off, gdb exited cleanly without python errors.
fn check_exits(qemu_exit: &Result<ExitStatus, ConsoleError>, gdb: &GdbOutcome) -> Result<(), String> {
    match qemu_exit {
        Ok(st) if st.success() => {}
        other => return Err(format!("QEMU did not power off cleanly: {other:?}")),
    }
    if !gdb.success() {
        return Err(format!("gdb exited with {:?}", gdb.status));
    }
    let py = gdb.python_errors();
    if !py.is_empty() {
        return Err(format!("python errors in gdb:\n  {}", py.join("\n  ")));
    }
    Ok(())
}

/// Panics with the tails of gdb, the console and QEMU's stderr.
fn session_failed(what: &str, s: &GdbSession, why: &str) -> ! {
    panic!(
        "\n[{what} + gdb] {why}\n--- gdb output (tail) ---\n{}\n--- console tail ---\n{}\n--- qemu stderr ---\n{}\n",
        tail_lines(&s.gdb.output(), 80),
        tail_lines(&s.qemu.output(), TAIL_LINES),
        s.qemu.stderr_output()
    )
}

fn gdb_session(g: Granule, va: u32) {
    let p = Plan::new(g, va);
    let run = boot_case(g, va).qemu_run();
    let b = GdbBatch::new(gdb_binary(), run.kernel.elf.clone(), 0).timeout(run_timeout());
    let b = script_blocks(script_probe(script_boot(b, &p), &p), &p);

    kernel(p.cfg); // build before taking a QEMU slot
    let _slot = QemuSlot::acquire();
    let what = format!("{}{}", run.describe(), hotmem_tests::logs_line(&run));
    let mut s = start_session(run, b).unwrap_or_else(|e| panic!("[{what}] cannot start QEMU + gdb: {e}"));
    // Console side (gdb runs concurrently and stops the guest where its script says).
    let shell = drive_shell(&mut s.qemu, &p).unwrap_or_else(|why| session_failed(&what, &s, &why));
    // gdb detached after `blocks`; it must be gone well before its deadline.
    let until = Instant::now() + Duration::from_secs(30);
    while !s.gdb.exited() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !s.gdb.exited() {
        session_failed(&what, &s, "gdb did not finish after detaching");
    }
    let _ = s.qemu.send_line("poweroff");
    let qemu_exit = s.qemu.wait_exit();
    let gdb = GdbOutcome {
        status: s.gdb.status(),
        output: s.gdb.output(),
        ..GdbOutcome::default()
    };
    if std::env::var_os("HOTMEM_GDB_SHOW").is_some() {
        eprintln!("--- [{what}] gdb session ---\n{}", gdb.output);
    }
    let seen = Seen { gdb, shell };
    let checks = [
        check_reset,
        check_boot_populate,
        check_probe_stop,
        check_hot_add,
        check_blocks_stop,
        check_flags,
        check_functions,
    ];
    let result = check_exits(&qemu_exit, &seen.gdb).and_then(|()| checks.iter().try_for_each(|c| c(&seen, &p)));
    if let Err(why) = result {
        panic!(
            "\n[{what} + gdb] {why}\n--- gdb output (tail) ---\n{}\n--- console tail ---\n{}\n",
            tail_lines(&seen.gdb.output, 60),
            tail_lines(&s.qemu.output(), TAIL_LINES)
        );
    }
}

// The defaults of each granule, both 2-level configurations, and the other two (a session
// takes about a second once the kernels are built).
cases! { gdb_session =>
    gdb_4k_48: K4, 48;
    gdb_16k_47: K16, 47;
    gdb_64k_48: K64, 48;
    gdb_16k_36: K16, 36;
    gdb_64k_42: K64, 42;
    gdb_4k_39: K4, 39;
    gdb_16k_48: K16, 48;
}

/// gdb on the ELF alone (no QEMU): configuration, decoding, the flag table, the offline
/// self-test of the walker for all 7 configurations, and clean errors when not connected.
#[test]
fn gdb_offline_16k_47() {
    let case = BootCase::new(K16, 47, Firmware);
    let k = kernel(case.config);
    let out = GdbBatch::new(gdb_binary(), k.elf.clone(), 0)
        .no_connect()
        .timeout(run_timeout())
        .step("help", "hm-help")
        .step("config", "hm-config")
        .step("selftest", "hm-selftest")
        .step("flags", "hm-flags")
        .step("flags-value", format!("hm-flags {:#x}", decoded_example().0))
        .step("devices", "hm-devices")
        .step("desc", "hm-desc 0x0060000040000705 2")
        .step("desc-guess", "hm-desc 0x0060000040000707")
        .step("desc-bad-level", "hm-desc 0x1 0")
        .step("walk", "hm-walk 0xffff800040000000")
        .step("sections", "hm-sections")
        .step("blocks", "hm-blocks")
        .step("hbreak", "hm-hbreak populate")
        .step("fn-pfn-to-virt", "print/x $hm_pfn_to_virt(0x10000)")
        .step("fn-page", "print $hm_page(0x10000)")
        .step("connect-bad", "hm-connect nonsense")
        .command("echo done\\n")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run gdb: {e}"))
        .wait();
    if let Err(why) = check_offline(&out) {
        panic!("{why}\n--- gdb output ---\n{}", out.output);
    }
}

/// A flags word with three flags (buddy, isolated, movable) and its names in the kernel's
/// print order.
fn decoded_example() -> (u32, String) {
    let set = ["movable", "buddy", "isolated"].map(kernel_flag);
    let value = set.iter().fold(0, |v, b| v | b);
    let names: Vec<String> = kernel_flags()
        .into_iter()
        .filter(|(b, _)| value & b != 0)
        .map(|(_, n)| n)
        .collect();
    (value, names.join("|"))
}

fn check_offline(out: &GdbOutcome) -> Result<(), String> {
    if !out.success() {
        return Err(format!("gdb hung or failed: {:?}", out.status));
    }
    if !out.python_errors().is_empty() {
        return Err(format!("python errors: {:?}", out.python_errors()));
    }
    let step = |n: &str| out.step(n).ok_or_else(|| format!("step {n} missing"));
    check_flag_table(step("flags")?)?;
    let (value, names) = decoded_example();
    for (n, needle) in [
        ("help", "hm-walk VA".to_string()),
        (
            "config",
            "config: granule=16k page_size=16384 va_bits=47 levels=3 start_level=1".into(),
        ),
        ("config", "layout: region=vmemmap  start=0xffffc00000000000".into()),
        ("config", "cpu: not connected".into()),
        ("selftest", "selftest: summary passed=8 failed=0".into()),
        ("flags-value", format!("flags: value={value:#x} names={names}")),
        // The device types the kernel registered: what the generic code calls.
        (
            "devices",
            "memdev: name=dimm online_filter=no check=no views=dimms".into(),
        ),
        (
            "devices",
            "memdev: name=virtio-mem online_filter=yes check=yes views=vmem".into(),
        ),
        (
            "desc",
            "L2 (pmd) BLOCK oa=0x40000000 size=32 MiB Normal RW XN AF SH=inner".into(),
        ),
        ("desc-guess", "PAGE oa=0x40000000 size=16 KiB".into()),
        ("desc-bad-level", "LEVEL must be one of 1, 2, 3 for 16k-47".into()),
        ("walk", "not connected to QEMU".into()),
        ("sections", "not connected to QEMU".into()),
        ("blocks", "not connected to QEMU".into()),
        ("hbreak", "not connected to QEMU".into()),
        ("fn-pfn-to-virt", "= 0xffff800040000000".into()),
        ("fn-page", "not connected to QEMU".into()),
        ("connect-bad", "usage: hm-connect".into()),
    ] {
        let t = step(n)?;
        if !t.contains(&needle) {
            return Err(format!("step {n} lacks `{needle}`:\n{t}"));
        }
    }
    Ok(())
}
