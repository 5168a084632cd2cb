//! Drives the shell of the normal (non-ktest) kernel through the console, `--exec` style:
//! wait for `hotmem> `, type a command, collect its output up to the next prompt.
//! Sequence: `meminfo; pt <linear-map VA>; pt <kernel text VA>; bogus-command; pt notanumber;
//! cpus; poweroff` → QEMU exits 0. Format checks live in `hotmem_tests::shell`.

use hotmem_qemu::config::BootMode::{self, Firmware, Kernel};
use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_qemu::console::ConsoleError;
use hotmem_qemu::util::tail_lines;
use hotmem_tests::parse::kv;
use hotmem_tests::shell::{check_pt_walk, check_rejected, check_usage, kimage_text_va, linear_map_va, RAM_BASE};
use hotmem_tests::{cases, failure_report, BootCase, TAIL_LINES};

fn shell_session(granule: Granule, va_bits: u32, boot: BootMode) {
    let case = BootCase::new(granule, va_bits, boot);
    let cfg = case.config;
    let (r, mut con, _slot) = case.spawn();
    let what = format!("{}{}", r.describe(), hotmem_tests::logs_line(&r));
    // Any failure below kills QEMU (Console's drop) and shows the console tail.
    let fail = |con: &hotmem_qemu::Console, why: String| -> ! {
        panic!(
            "\n[{what}] {why}\n--- console tail ---\n{}\n--- stderr ---\n{}\n",
            tail_lines(&con.output(), TAIL_LINES),
            con.stderr_output()
        )
    };
    let step = |con: &mut hotmem_qemu::Console, cmd: &str| -> String {
        match con.command(cmd) {
            Ok(resp) => resp,
            Err(e @ (ConsoleError::Timeout { .. } | ConsoleError::Exited { .. } | ConsoleError::Io(_))) => {
                fail(con, format!("`{cmd}`: {e}"))
            }
        }
    };

    let boot_log = match con.wait_for_prompt() {
        Ok(t) => t,
        Err(e) => fail(&con, format!("no prompt after boot: {e}")),
    };

    let meminfo = step(&mut con, "meminfo");
    let Some(line) = meminfo.lines().find(|l| l.starts_with("meminfo:")) else {
        fail(&con, format!("no `meminfo:` line in {meminfo:?}"))
    };
    let page_size = 1u64 << granule.page_shift();
    if kv(line, "page_size").and_then(|v| v.parse::<u64>().ok()) != Some(page_size) {
        fail(&con, format!("meminfo should report page_size={page_size}: {line}"));
    }

    let lin = linear_map_va(&cfg, &boot_log);
    let walk = step(&mut con, &format!("pt {lin:#x}"));
    if let Err(e) = check_pt_walk(&cfg, &walk, Some(RAM_BASE)) {
        fail(&con, format!("pt {lin:#x} (linear map of RAM base): {e}\n{walk}"));
    }

    // The kernel image is mapped with pages (W^X per section), so its walk takes every level.
    if let Some(text) = kimage_text_va(&boot_log) {
        let walk = step(&mut con, &format!("pt {text:#x}"));
        match check_pt_walk(&cfg, &walk, None) {
            Ok(n) if n == cfg.levels() as usize => {}
            Ok(n) => fail(
                &con,
                format!(
                    "pt {text:#x} (kernel text) walked {n} levels, expected all {}\n{walk}",
                    cfg.levels()
                ),
            ),
            Err(e) => fail(&con, format!("pt {text:#x} (kernel text): {e}\n{walk}")),
        }
    }

    let bogus = step(&mut con, "bogus-command");
    if let Err(e) = check_rejected(&bogus) {
        fail(&con, format!("bogus-command: {e}"));
    }
    let bad = step(&mut con, "pt notanumber");
    if let Err(e) = check_usage(&bad, "pt") {
        fail(&con, format!("pt notanumber: {e}"));
    }

    let cpus = step(&mut con, "cpus");
    let online = cpus
        .lines()
        .find(|l| l.starts_with("cpus:"))
        .and_then(|l| kv(l, "online"))
        .and_then(|v| v.parse::<u32>().ok());
    if online != Some(case.machine.smp) {
        fail(
            &con,
            format!("cpus should report online={}: {cpus:?}", case.machine.smp),
        );
    }

    if let Err(e) = con.send_line("poweroff") {
        fail(&con, format!("cannot type poweroff: {e}"));
    }
    if let Err(e) = con.wait_exit() {
        fail(&con, format!("poweroff: {e}"));
    }
    let out = con.finish();
    if out.exit_code() != Some(0) {
        panic!(
            "{}",
            failure_report(&r, &out, "poweroff should make QEMU exit with status 0")
        );
    }
}

cases! { shell_session =>
    shell_4k_39: K4, 39, Firmware;
    shell_4k_48: K4, 48, Firmware;
    shell_16k_36: K16, 36, Kernel;
    shell_16k_47: K16, 47, Firmware;
    shell_16k_48: K16, 48, Firmware;
    shell_64k_42: K64, 42, Firmware;
    shell_64k_48: K64, 48, Kernel;
}

/// The plain `--exec` path ([`hotmem_qemu::Console::run_script`]): the whole sequence typed
/// blind, one command per prompt, then QEMU must exit 0 by itself after `poweroff`.
#[test]
fn exec_script_16k_47() {
    let case = BootCase::new(K16, 47, Firmware);
    let lin = case.config.ttbr1_base() + RAM_BASE;
    let pt = format!("pt {lin:#x}");
    let script = [
        "meminfo",
        pt.as_str(),
        "bogus-command",
        "pt notanumber",
        "cpus",
        "poweroff",
    ];
    let (r, out) = case.run(&script);
    let check = || -> Result<(), String> {
        if !out.success() {
            return Err(format!("expected exit status 0 after poweroff, got {}", out.describe()));
        }
        if out.commands_sent != script.len() {
            return Err(format!("typed {} of {} commands", out.commands_sent, script.len()));
        }
        check_usage(&out.console, "pt")?;
        check_pt_walk(&case.config, &out.console, Some(RAM_BASE)).map(|_| ())
    };
    if let Err(why) = check() {
        panic!("{}", failure_report(&r, &out, &why));
    }
}

/// The console's line discipline, each input typed in one write as a paste would arrive: a line
/// over the limit is refused with its length and the next line runs (no byte lost, however much
/// comes at once); Backspace (also over a UTF-8 character and back under the limit) and Ctrl-U
/// edit; UTF-8 is passed through and reported as typed; a line that is not UTF-8 is refused.
/// Each step is (bytes typed, lines of the answers in order, prompts that end them).
#[test]
fn line_discipline_64k_42() {
    let case = BootCase::new(K64, 42, Firmware);
    let (r, mut con, _slot) = case.spawn();
    let what = format!("{}{}", r.describe(), hotmem_tests::logs_line(&r));
    let fail = |con: &hotmem_qemu::Console, why: String| -> ! {
        panic!(
            "\n[{what}] {why}\n--- console tail ---\n{}\n--- stderr ---\n{}\n",
            tail_lines(&con.output(), TAIL_LINES),
            con.stderr_output()
        )
    };
    if let Err(e) = con.wait_for_prompt() {
        fail(&con, format!("no prompt after boot: {e}"));
    }
    let long = format!("page{}0x40000", " ".repeat(248));
    let flood = "x".repeat(3000);
    let at_limit_plus_one = format!("cpus{}x\x7f\r", " ".repeat(252));
    let steps: Vec<(Vec<u8>, Vec<&str>, usize)> = vec![
        (
            format!("{long}\rcpus\r").into_bytes(),
            vec![
                "error: line too long (259 bytes; a line holds at most 256): not run",
                "cpus: online=",
            ],
            2,
        ),
        (
            format!("{flood}\rcpus\r").into_bytes(),
            vec![
                "error: line too long (3000 bytes; a line holds at most 256): not run",
                "cpus: online=",
            ],
            2,
        ),
        (
            b"m\xc3\xa9minfo\r".to_vec(),
            vec!["error: unknown command 'm\u{e9}minfo'"],
            1,
        ),
        (b":v\xc3\xa9m\r".to_vec(), vec!["error: unknown command ':v\u{e9}m'"], 1),
        (
            b"pt 0x4\xc3\xa9\r".to_vec(),
            vec!["error: '0x4\u{e9}' is not a number", "usage: pt <va>"],
            1,
        ),
        (
            b"ab\xffcd\r".to_vec(),
            vec!["error: byte 0xff at offset 2 of the line is not UTF-8: not run"],
            1,
        ),
        (b"cpuz\x7fs\r".to_vec(), vec!["cpus: online="], 1),
        (b"cpus\xc3\xa9\x7f\r".to_vec(), vec!["cpus: online="], 1),
        (b"bogus\x15cpus\r".to_vec(), vec!["cpus: online="], 1),
        (at_limit_plus_one.into_bytes(), vec!["cpus: online="], 1),
    ];
    for (bytes, want, prompts) in steps {
        let typed = String::from_utf8_lossy(&bytes).escape_debug().to_string();
        let typed = if typed.len() > 60 {
            format!("{}... ({} bytes)", &typed[..40], bytes.len())
        } else {
            typed
        };
        if let Err(e) = con.send_bytes(&bytes) {
            fail(&con, format!("cannot type {typed}: {e}"));
        }
        let mut out = String::new();
        for _ in 0..prompts {
            match con.wait_for_prompt() {
                Ok(t) => out.push_str(&t),
                Err(e) => fail(&con, format!("typed {typed}: {e}")),
            }
        }
        // The answers in order, each at the start of a line.
        let mut lines = out.lines().map(str::trim_start);
        for w in &want {
            if !lines.any(|l| l.starts_with(w)) {
                fail(
                    &con,
                    format!("typed {typed}: expected a line starting with {w:?} (after the previous), got:\n{out}"),
                );
            }
        }
        if out.contains("unknown command 'cpu") || out.contains("usage: page") {
            fail(
                &con,
                format!("typed {typed}: a command ran with bytes of another line:\n{out}"),
            );
        }
    }
    if let Err(e) = con.send_line("poweroff") {
        fail(&con, format!("cannot type poweroff: {e}"));
    }
    if let Err(e) = con.wait_exit() {
        fail(&con, format!("poweroff: {e}"));
    }
}
