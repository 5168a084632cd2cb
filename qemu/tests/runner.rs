//! The `hotmem` runner binary as a user runs it (`cargo run -- ...`).

use std::process::{Command, Output};

fn hotmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hotmem"))
        .args(args)
        .output()
        .expect("run hotmem")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_lists_the_options() {
    let o = hotmem(&["--help"]);
    assert!(o.status.success());
    let t = text(&o);
    assert!(
        t.contains("--granule <4k|16k|64k>") && t.contains("--exec") && t.contains("Ctrl-A x"),
        "{t}"
    );
}

#[test]
fn invalid_pair_is_a_usage_error() {
    let o = hotmem(&["--granule", "64k", "--va-bits", "47"]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("valid pairs are 4k: 39, 48 (default 48); 16k: 36, 47, 48 (default 47); 64k: 42, 48 (default 48)"),
        "{t}"
    );
}

#[test]
fn dry_run_prints_build_and_qemu_commands() {
    let o = hotmem(&[
        "--dry-run",
        "--granule",
        "16k",
        "--va",
        "36",
        "--boot",
        "kernel",
        "--gic",
        "3",
        "--el2",
        "--smp",
        "4",
        "--gdb-port",
        "4444",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("cargo build --release -p hotmem-platform --bin hotmem --target aarch64-unknown-none --features 'granule-16k va-36' --target-dir "), "{out}");
    assert!(lines[1].contains(" -M virt,gic-version=3,virtualization=on -cpu max,lpa2=off -smp 4 -m 1G -semihosting -nic none -display none -monitor none -serial mon:stdio -kernel "), "{out}");
    assert!(
        lines[1].ends_with("/target/kernel/out/hotmem-16k-36.elf -gdb tcp:127.0.0.1:4444 -S"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("gdb-multiarch ")
            && lines[2].contains("/qemu/gdb/gdbinit -ex 'hm-connect 4444' ")
            && lines[2].ends_with("hotmem-16k-36.elf"),
        "{out}"
    );
    // Driven runs use a plain serial on stdio.
    let o = hotmem(&["--dry-run", "--exec", "poweroff"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("-serial stdio -bios "));
}

/// Builds the 64K/42 kernel and boots it for real: the `cargo run -- --exec` contract.
#[test]
fn exec_boots_and_exits_with_the_guest_status() {
    let o = hotmem(&[
        "--granule",
        "64k",
        "--va",
        "42",
        "--exec",
        "meminfo; :dimms; :qmp query-memory-devices; poweroff",
        "--timeout",
        "120",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("hotmem> ") && stdout.contains("meminfo: "), "{t}");
    // Host commands run in the same script.
    assert!(t.contains("qmp: {\"return\":[]}"), "{t}");
    assert!(t.contains("dimms: none"), "{t}");
    // An unknown one is refused before anything is built or booted.
    let o = hotmem(&["--exec", "meminfo; :query-memory-devices; poweroff"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--exec `:query-memory-devices`: unknown host command `:query-memory-devices`"),
        "{}",
        text(&o)
    );
}

/// `--gdb-port 0` picks a free port and prints it in both commands.
#[test]
fn gdb_port_zero_prints_the_chosen_port() {
    let o = hotmem(&["--dry-run", "--gdb-port", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let port = out
        .split("-gdb tcp:127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no -gdb port in {out}"));
    assert_ne!(port, 0, "{out}");
    assert!(out.contains(&format!("-ex 'hm-connect {port}'")), "{out}");
}

/// A host command this boot mode cannot carry out is refused before building.
#[test]
fn ged_commands_without_firmware_are_usage_errors() {
    let o = hotmem(&["--boot", "kernel", "--exec", ":powerdown"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("hotmem: --exec `:powerdown`: :powerdown needs --boot firmware"),
        "{}",
        text(&o)
    );
}

/// Interactive (stdin piped): a DIMM left plugged when the guest powers off
/// is reported on stderr when the run ends.
#[test]
fn interactive_run_reports_what_is_left() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_hotmem"))
        .args(["--timeout", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hotmem");
    let out = Arc::new(Mutex::new(String::new()));
    let (o, mut stdout) = (out.clone(), child.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |what: &str| {
        let t = Instant::now();
        while !out.lock().unwrap().contains(what) {
            assert!(
                t.elapsed() < Duration::from_secs(100),
                "no {what:?} in:\n{}",
                out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_for("hotmem> ");
    stdin.write_all(b":plug 128M\n").unwrap();
    wait_for("plug: id=dimm0 ost_status=0x0 ok");
    stdin.write_all(b"poweroff\n").unwrap();
    let st = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(st.success(), "{st}\n{err}\n{}", out.lock().unwrap());
    assert!(
        err.contains("hotmem: exit: DIMM dimm0 (backend mem-dimm0) was still plugged when QEMU exited"),
        "{err}"
    );
}
