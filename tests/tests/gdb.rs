//! GDB sessions that understand hotmem: QEMU halted at reset with its gdbstub on
//! 127.0.0.1, `gdb-multiarch -batch` with the project's gdbinit, and the console driven at the
//! same time, for every configuration: the default VA size of each granule, both 2-level
//! configurations (16k-36, 64k-42), and 4k-39 / 16k-48.
//!
//! The session (firmware boot, 3 GiB with `mem=1G`, so 2 GiB wait for `probe`):
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
//! 5. `hm-hbreak cmd:blocks`: the test types `blocks`; gdb lists the new block (offline, with
//!    its altmap), walks, pages, free lists and ptdump, then detaches; the shell's `blocks`,
//!    `sections`, `page`, `pt` and `meminfo` must agree with every one of them.
//!
//! The test fails on any "Python Exception" / "Error occurred in Python". gdb and QEMU have
//! deadlines and are SIGKILLed when they pass (or when the test panics).
//! `HOTMEM_GDB_SHOW=1 cargo test -p hotmem-tests --test gdb -- --nocapture` prints each session.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hotmem_qemu::config::BootMode::Firmware;
use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_qemu::console::Console;
use hotmem_qemu::gdb::{start_session, GdbBatch, GdbOutcome};
use hotmem_qemu::util::tail_lines;
use hotmem_tests::gdb::{compare_page, compare_walks, lines_with, parse_walk, ptdump_mapped, zone_lines, Layout, Walk};
use hotmem_tests::{kernel, kv, run_timeout, BootCase, QemuSlot, TAIL_LINES};

const RAM_BASE: u64 = 0x4000_0000;
/// Where firmware boot copies the image (identity-mapped by TTBR0 during boot).
const KIMAGE_PA: u64 = 0x4020_0000;
/// First byte held back by `mem=1G` (RAM is 3 GiB from 0x4000_0000).
const PROBE_PA: u64 = 0x8000_0000;
/// Never probed: has no memmap.
const HELD_BACK_PA: u64 = 0xc000_0000;

/// gdb-multiarch, installed first when missing and we are root with apt-get (as QEMU is).
fn gdb_binary() -> PathBuf {
    hotmem_tests::gdb_path()
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
}

fn gdb_session(g: Granule, va: u32) {
    let case = BootCase::new(g, va, Firmware);
    let cfg = case.config;
    let l = Layout::of(&cfg);
    let block = l.section_size();
    let block_id = PROBE_PA >> l.section_shift;
    let boot_sections = (PROBE_PA - RAM_BASE) / block;
    let boot_memmap = l.struct_page(l.pfn(RAM_BASE));
    let new_memmap = l.struct_page(l.pfn(PROBE_PA));
    let (lin_ram, lin_new) = (l.linear(RAM_BASE), l.linear(PROBE_PA));
    let memmap_pages = l.memmap_per_section() >> l.page_shift;
    let boot_pfns = [
        l.pfn(RAM_BASE),
        l.pfn(KIMAGE_PA),
        l.pfn(0x6000_0000),
        l.pfn(PROBE_PA) - 1,
        l.pfn(HELD_BACK_PA),
    ];
    let new_pfns = [
        l.pfn(PROBE_PA),
        l.pfn(PROBE_PA) + memmap_pages,
        l.pfn(PROBE_PA + block) - 1,
        l.pfn(RAM_BASE),
    ];
    // A linear-map block descriptor of this granule (level of the PMD).
    let block_desc = 0x0060_0000_4000_0705u64;

    let run = case.qemu_run();
    let mut b = GdbBatch::new(gdb_binary(), run.kernel.elf.clone(), 0)
        .timeout(run_timeout())
        // 1. at reset
        .step("config", "hm-config")
        .step("reset-walk", format!("hm-walk {lin_ram:#x}"))
        .step("reset-blocks", "hm-blocks")
        .step("usage-walk", "hm-walk")
        .step("usage-page", "hm-page 1 2")
        .step("bad-expr", "hm-walk no_such_symbol_here")
        .step("selftest", "hm-selftest")
        // 2. boot populate
        .step("hbreak-boot", "hm-hbreak populate")
        .step("continue-boot", "continue")
        .step("boot-vmemmap-before", format!("hm-walk {boot_memmap:#x}"))
        .step("boot-linear", format!("hm-walk {lin_ram:#x}"))
        .step("boot-ttbr0", format!("hm-walk {KIMAGE_PA:#x}"))
        .step("return-boot", "thbreak *$x30")
        .command("continue")
        .step("boot-vmemmap-after", format!("hm-walk {boot_memmap:#x}"))
        // 3. at the shell's probe
        .command("delete")
        .step("hbreak-probe", "hm-hbreak cmd:probe")
        .step("continue-probe", "continue")
        .step("pre-sections", "hm-sections")
        .step("pre-blocks", "hm-blocks")
        .step("pre-freelists", "hm-freelists --check")
        .step("pre-ttbr0", format!("hm-walk {KIMAGE_PA:#x}"))
        .step("pre-ptdump", "hm-ptdump");
    for (i, pfn) in boot_pfns.iter().enumerate() {
        b = b.step(&format!("pre-page-{i}"), format!("hm-page {pfn:#x}"));
    }
    // 4. hot-add populate
    b = b
        .command("delete")
        .step("hbreak-plug", "hm-hbreak populate")
        .step("continue-plug", "continue")
        .step("plug-vmemmap-before", format!("hm-walk {new_memmap:#x}"))
        .step("plug-linear", format!("hm-walk {lin_new:#x}"))
        .step("return-plug", "thbreak *$x30")
        .command("continue")
        .step("plug-vmemmap-after", format!("hm-walk {new_memmap:#x}"))
        // 5. at the shell's blocks
        .command("delete")
        .step("hbreak-blocks", "hm-hbreak cmd:blocks")
        .step("continue-blocks", "continue")
        .step("post-blocks", "hm-blocks")
        .step("post-sections", "hm-sections")
        .step("post-freelists", "hm-freelists --check")
        .step("post-walk-new-memmap", format!("hm-walk {new_memmap:#x}"))
        .step("post-walk-new-linear", format!("hm-walk {lin_new:#x}"))
        .step("post-walk-boot-memmap", format!("hm-walk {boot_memmap:#x}"))
        .step("post-walk-boot-linear", format!("hm-walk {lin_ram:#x}"))
        .step("post-ptdump", "hm-ptdump")
        .step(
            "printer-page",
            format!("print *({new_memmap:#x} as *const mm::page::Page)"),
        )
        .step(
            "printer-desc",
            format!(
                "python import struct; print(gdb.Value(struct.pack('<Q', {block_desc:#x}), \
                 gdb.lookup_type('arch::descriptor::Descriptor')))"
            ),
        )
        .step("desc", format!("hm-desc {block_desc:#x} 2"));
    for (i, pfn) in new_pfns.iter().enumerate() {
        b = b.step(&format!("post-page-{i}"), format!("hm-page {pfn:#x}"));
    }
    b = b.command("delete").step("detach", "detach");

    kernel(cfg); // build before taking a QEMU slot
    let _slot = QemuSlot::acquire();
    let what = format!("{}{}", run.describe(), hotmem_tests::logs_line(&run));
    let mut s = start_session(run, b).unwrap_or_else(|e| panic!("[{what}] cannot start QEMU + gdb: {e}"));
    let fail = |s: &hotmem_qemu::gdb::GdbSession, why: String| -> ! {
        panic!(
            "\n[{what} + gdb] {why}\n--- gdb output (tail) ---\n{}\n--- console tail ---\n{}\n--- qemu stderr ---\n{}\n",
            tail_lines(&s.gdb.output(), 80),
            tail_lines(&s.qemu.output(), TAIL_LINES),
            s.qemu.stderr_output()
        )
    };

    // Console side (gdb runs concurrently and stops the guest where its script says).
    let shell_result = (|| -> Result<Vec<(String, String)>, String> {
        s.qemu
            .wait_for_prompt()
            .map_err(|e| format!("no prompt after boot: {e}"))?;
        let mut sh = Shell {
            con: &mut s.qemu,
            got: Vec::new(),
        };
        sh.run("pre-sections", "sections")?;
        sh.run("pre-blocks", "blocks")?;
        // Settled: idle CPUs may still be initialising deferred struct pages, which would
        // change the free counts between this line and gdb's view at the probe.
        sh.run("pre-meminfo", "meminfo settle")?;
        for (i, pfn) in boot_pfns.iter().enumerate() {
            sh.run(&format!("pre-page-{i}"), &format!("page {pfn:#x}"))?;
        }
        let probe = sh.run("probe", &format!("probe {PROBE_PA:#x} {block:#x}"))?;
        if !probe.contains("probe: added=") {
            return Err(format!("probe failed: {probe:?}"));
        }
        sh.run("post-blocks", "blocks")?;
        sh.run("post-sections", "sections")?;
        sh.run("post-meminfo", "meminfo")?;
        for (i, pfn) in new_pfns.iter().enumerate() {
            sh.run(&format!("post-page-{i}"), &format!("page {pfn:#x}"))?;
        }
        sh.run("pt-new-memmap", &format!("pt {new_memmap:#x}"))?;
        sh.run("pt-new-linear", &format!("pt {lin_new:#x}"))?;
        sh.run("pt-boot-memmap", &format!("pt {boot_memmap:#x}"))?;
        sh.run("pt-boot-linear", &format!("pt {lin_ram:#x}"))?;
        Ok(sh.got)
    })();
    let got = match shell_result {
        Ok(g) => g,
        Err(why) => fail(&s, why),
    };
    // gdb detached after `blocks`; it must be gone well before its deadline.
    let until = Instant::now() + Duration::from_secs(30);
    while !s.gdb.exited() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !s.gdb.exited() {
        fail(&s, "gdb did not finish after detaching".into());
    }
    let _ = s.qemu.send_line("poweroff");
    let qemu_exit = s.qemu.wait_exit();
    let gdb_out = GdbOutcome {
        status: s.gdb.status(),
        output: s.gdb.output(),
        ..GdbOutcome::default()
    };
    let shell = |name: &str| -> String {
        got.iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, t)| t.clone())
    };
    let check = || -> Result<(), String> {
        match &qemu_exit {
            Ok(st) if st.success() => {}
            other => return Err(format!("QEMU did not power off cleanly: {other:?}")),
        }
        if !gdb_out.success() {
            return Err(format!("gdb exited with {:?}", gdb_out.status));
        }
        let py = gdb_out.python_errors();
        if !py.is_empty() {
            return Err(format!("python errors in gdb:\n  {}", py.join("\n  ")));
        }
        let step =
            |n: &str| -> Result<&str, String> { gdb_out.step(n).ok_or_else(|| format!("gdb never ran step `{n}`")) };
        let walk = |n: &str| -> Result<Walk, String> { Ok(parse_walk(step(n)?, "walk:")) };
        let want = |n: &str, needle: &str| -> Result<(), String> {
            let t = step(n)?;
            if t.contains(needle) {
                Ok(())
            } else {
                Err(format!("step `{n}` lacks `{needle}`:\n{t}"))
            }
        };

        // 1. at reset
        let c = step("config")?;
        let line = lines_with(c, &["config: granule="]).into_iter().next().unwrap_or("");
        for (k, v) in [
            ("granule", cfg.granule.to_string()),
            ("va_bits", va.to_string()),
            ("levels", l.levels.to_string()),
            ("start_level", l.start_level().to_string()),
        ] {
            if kv(line, k) != Some(v.as_str()) {
                return Err(format!("hm-config: want {k}={v}: {c}"));
            }
        }
        let w = walk("reset-walk")?;
        if !w.not_walked {
            return Err(format!("hm-walk at reset should walk nothing: {}", step("reset-walk")?));
        }
        want("reset-walk", "TTBR1_EL1 is 0")?;
        want("reset-blocks", "cannot read hotmem::kernel::mem::hotplug::HOTPLUG")?;
        want("usage-walk", "usage: hm-walk VA")?;
        want("usage-page", "usage: hm-page PFN")?;
        want("bad-expr", "is not a number or expression")?;
        want("selftest", "selftest: summary passed=8 failed=0")?;

        // 2. boot populate
        want("hbreak-boot", "hm-hbreak: breakpoint")?;
        want("continue-boot", "populate")?;
        let w = walk("boot-vmemmap-before")?;
        let fl = w.fault_level.unwrap_or(99);
        if !(w.not_mapped && (l.start_level()..=3).contains(&fl) && w.levels == Some(l.levels)) {
            return Err(format!(
                "first boot section's memmap must be unmapped on entry (fault level in L{}..L3): {}",
                l.start_level(),
                step("boot-vmemmap-before")?
            ));
        }
        let w = walk("boot-linear")?;
        if w.leaf.map(|x| x.0) != Some(RAM_BASE) || w.levels != Some(l.levels) {
            return Err(format!("boot linear walk: {}", step("boot-linear")?));
        }
        compare_walks(&w, &parse_walk(&shell("pt-boot-linear"), "pt:"))
            .map_err(|e| format!("linear map during boot vs the shell's pt: {e}"))?;
        let w = walk("boot-ttbr0")?;
        if w.ttbr != Some(0) || w.leaf.map(|x| x.0) != Some(KIMAGE_PA) {
            return Err(format!("TTBR0 identity map during boot: {}", step("boot-ttbr0")?));
        }
        let w = walk("boot-vmemmap-after")?;
        compare_walks(&w, &parse_walk(&shell("pt-boot-memmap"), "pt:"))
            .map_err(|e| format!("boot memmap after populate vs the shell's pt: {e}"))?;

        // 3. at the shell's probe, against what the shell printed just before
        want("continue-probe", "cmd_probe")?;
        let sections = |t: &str| lines_with(t, &["sections:", "section:"]).join("\n");
        let blocks = |t: &str| lines_with(t, &["blocks:", "block:"]).join("\n");
        for (g_step, k_name) in [("pre-sections", "pre-sections"), ("post-sections", "post-sections")] {
            if sections(step(g_step)?) != sections(&shell(k_name)) {
                return Err(format!(
                    "{g_step}: gdb and shell differ:\n--- gdb\n{}\n--- shell\n{}",
                    step(g_step)?,
                    shell(k_name)
                ));
            }
        }
        for (g_step, k_name) in [("pre-blocks", "pre-blocks"), ("post-blocks", "post-blocks")] {
            if blocks(step(g_step)?) != blocks(&shell(k_name)) {
                return Err(format!(
                    "{g_step}: gdb and shell differ:\n--- gdb\n{}\n--- shell\n{}",
                    step(g_step)?,
                    shell(k_name)
                ));
            }
        }
        for (g_step, k_name) in [("pre-freelists", "pre-meminfo"), ("post-freelists", "post-meminfo")] {
            let (gz, kz) = (
                zone_lines(step(g_step)?, "freelists:"),
                zone_lines(&shell(k_name), "meminfo:"),
            );
            if gz.is_empty() || gz != kz {
                return Err(format!("{g_step} vs meminfo zones:\n  gdb   {gz:?}\n  shell {kz:?}"));
            }
            want(g_step, "freelists: check ok")?;
        }
        for i in 0..boot_pfns.len() {
            let n = format!("pre-page-{i}");
            compare_page(step(&n)?, &shell(&n)).map_err(|e| format!("{n}: {e}"))?;
        }
        for i in 0..new_pfns.len() {
            let n = format!("post-page-{i}");
            compare_page(step(&n)?, &shell(&n)).map_err(|e| format!("{n}: {e}"))?;
        }
        if !walk("pre-ttbr0")?.not_walked {
            return Err(format!("after boot TTBR0 is off: {}", step("pre-ttbr0")?));
        }
        want("pre-ttbr0", "EPD0=1")?;
        let p = step("pre-ptdump")?;
        if ptdump_mapped(p, "linear") != Some(PROBE_PA - RAM_BASE)
            || ptdump_mapped(p, "vmemmap") != Some(boot_sections * l.memmap_per_section())
        {
            return Err(format!(
                "ptdump after boot: want linear={:#x} vmemmap={:#x}:\n{p}",
                PROBE_PA - RAM_BASE,
                boot_sections * l.memmap_per_section()
            ));
        }

        // 4. hot-add populate
        want("continue-plug", "populate")?;
        if !walk("plug-vmemmap-before")?.not_mapped {
            return Err(format!(
                "new memmap mapped before populate: {}",
                step("plug-vmemmap-before")?
            ));
        }
        if walk("plug-linear")?.leaf.map(|x| x.0) != Some(PROBE_PA) {
            return Err(format!("new block's linear map: {}", step("plug-linear")?));
        }
        let w = walk("plug-vmemmap-after")?;
        match w.leaf {
            Some((pa, _)) if (PROBE_PA..PROBE_PA + block).contains(&pa) => {}
            _ => {
                return Err(format!(
                    "the new memmap must live on the new block (memmap on memory): {}",
                    step("plug-vmemmap-after")?
                ))
            }
        }

        // 5. after the probe, against the shell
        want("continue-blocks", "cmd_blocks")?;
        want("post-blocks", &format!("block: id={block_id} range={PROBE_PA:#x}-"))?;
        want("post-blocks", &format!("altmap: block={block_id} "))?;
        for (g_step, k_name) in [
            ("plug-vmemmap-after", "pt-new-memmap"),
            ("post-walk-new-memmap", "pt-new-memmap"),
            ("post-walk-new-linear", "pt-new-linear"),
            ("post-walk-boot-memmap", "pt-boot-memmap"),
            ("post-walk-boot-linear", "pt-boot-linear"),
        ] {
            let (gw, kw) = (walk(g_step)?, parse_walk(&shell(k_name), "pt:"));
            if kw.leaf.is_none() {
                return Err(format!("the shell's {k_name} found no mapping: {}", shell(k_name)));
            }
            compare_walks(&gw, &kw).map_err(|e| format!("{g_step} vs the shell's pt: {e}"))?;
        }
        let p = step("post-ptdump")?;
        if ptdump_mapped(p, "linear") != Some(PROBE_PA - RAM_BASE + block)
            || ptdump_mapped(p, "vmemmap") != Some((boot_sections + 1) * l.memmap_per_section())
        {
            return Err(format!("ptdump after probe:\n{p}"));
        }
        want("printer-page", &format!("struct page pfn={:#x} ", l.pfn(PROBE_PA)))?;
        want("printer-desc", "Descriptor(0x0060000040000705 ")?;
        if l.page_shift == 12 {
            want("desc", "BLOCK oa=0x40000000 size=2 MiB Normal RW XN AF SH=inner")?;
        }
        want("detach", "etached")?;
        Ok(())
    };
    if std::env::var_os("HOTMEM_GDB_SHOW").is_some() {
        eprintln!("--- [{what}] gdb session ---\n{}", gdb_out.output);
    }
    if let Err(why) = check() {
        panic!(
            "\n[{what} + gdb] {why}\n--- gdb output (tail) ---\n{}\n--- console tail ---\n{}\n",
            tail_lines(&gdb_out.output, 60),
            tail_lines(&s.qemu.output(), TAIL_LINES)
        );
    }
}

macro_rules! gdb_tests {
    ($($name:ident: $g:ident $va:literal;)*) => {$(
        #[test]
        fn $name() {
            gdb_session($g, $va);
        }
    )*};
}

// The defaults of each granule, both 2-level configurations, and the other two (a session
// takes about a second once the kernels are built).
gdb_tests! {
    gdb_4k_48: K4 48;
    gdb_16k_47: K16 47;
    gdb_64k_48: K64 48;
    gdb_16k_36: K16 36;
    gdb_64k_42: K64 42;
    gdb_4k_39: K4 39;
    gdb_16k_48: K16 48;
}

/// gdb on the ELF alone (no QEMU): configuration, decoding, the offline self-test of the
/// walker for all 7 configurations, and clean errors when not connected.
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
        .step("desc", "hm-desc 0x0060000040000705 2")
        .step("desc-guess", "hm-desc 0x0060000040000707")
        .step("desc-bad-level", "hm-desc 0x1 0")
        .step("walk", "hm-walk 0xffff800040000000")
        .step("sections", "hm-sections")
        .step("blocks", "hm-blocks")
        .step("hbreak", "hm-hbreak populate")
        .step("connect-bad", "hm-connect nonsense")
        .command("echo done\\n")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run gdb: {e}"))
        .wait();
    let check = || -> Result<(), String> {
        if !out.success() {
            return Err(format!("gdb hung or failed: {:?}", out.status));
        }
        if !out.python_errors().is_empty() {
            return Err(format!("python errors: {:?}", out.python_errors()));
        }
        for (n, needle) in [
            ("help", "hm-walk VA"),
            (
                "config",
                "config: granule=16k page_size=16384 va_bits=47 levels=3 start_level=1",
            ),
            ("config", "layout: region=vmemmap  start=0xffffc00000000000"),
            ("config", "cpu: not connected"),
            ("selftest", "selftest: summary passed=8 failed=0"),
            (
                "desc",
                "L2 (pmd) BLOCK oa=0x40000000 size=32 MiB Normal RW XN AF SH=inner",
            ),
            ("desc-guess", "PAGE oa=0x40000000 size=16 KiB"),
            ("desc-bad-level", "LEVEL must be one of 1, 2, 3 for 16k-47"),
            ("walk", "not connected to QEMU"),
            ("sections", "not connected to QEMU"),
            ("blocks", "not connected to QEMU"),
            ("hbreak", "not connected to QEMU"),
            ("connect-bad", "usage: hm-connect"),
        ] {
            let t = out.step(n).ok_or_else(|| format!("step {n} missing"))?;
            if !t.contains(needle) {
                return Err(format!("step {n} lacks `{needle}`:\n{t}"));
            }
        }
        Ok(())
    };
    if let Err(why) = check() {
        panic!("{why}\n--- gdb output ---\n{}", out.output);
    }
}
