//! `hotmem`: the runner behind `cargo run`. See `--help` (text in `cli.rs`).

use std::process::ExitCode;

use hotmem_qemu::cli::{self, Action, Options};
use hotmem_qemu::discover::{self, InstallPolicy, QEMU_BINARY};
use hotmem_qemu::gdb;
use hotmem_qemu::kernel::{self, BuildOptions, Kernel};
use hotmem_qemu::run::QemuRun;
use hotmem_qemu::session::{Session, SocketDir};
use hotmem_qemu::util::shell_join;

fn main() -> ExitCode {
    let code = match cli::parse_args(std::env::args().skip(1)) {
        Ok(Action::Help) => {
            print!("{}", cli::help());
            0
        }
        Ok(Action::Run(o)) => run(o),
        Err(e) => {
            eprintln!("hotmem: {e}");
            eprintln!("hotmem: run `cargo run -- --help` for the options");
            2
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(o: Options) -> i32 {
    let ws = kernel::workspace_root();
    let gdb_port = match o.resolve_gdb_port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hotmem: cannot find a free port for the gdbstub: {e}");
            return 1;
        }
    };
    // Also gives firmware boots DIMM slots by default (see `--help`).
    let configure = |qemu: std::path::PathBuf, k: Kernel| o.qemu_run(qemu, k, gdb_port);

    if o.dry_run {
        dry_run(&o, &ws, gdb_port);
        return 0;
    }

    let qemu = match discover::qemu_once(InstallPolicy::IfRoot) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("hotmem: {e}");
            return 1;
        }
    };
    let k = match kernel::build_kernel(o.kernel, &BuildOptions::default()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("hotmem: {e}");
            return 1;
        }
    };
    // Every run serves QMP on a socket under target/qmp/ (removed at the end): the runner's
    // host commands (`:plug`, ...) use it.
    let sock = match SocketDir::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hotmem: cannot create the QMP socket directory: {e}");
            return 1;
        }
    };
    let r = configure(qemu.path, k).qmp_socket(Some(sock.socket()));
    eprintln!("hotmem: booting {}", r.describe());
    eprintln!("hotmem: {}", r.command_line());
    if let Some(p) = gdb_port {
        eprintln!("hotmem: QEMU is halted until gdb attaches to 127.0.0.1:{p}; in another terminal run:");
        eprintln!("    {}", gdb::gdb_command(&r.kernel.elf, p));
        if let Err(e) = discover::find_gdb_or_howto() {
            eprintln!("hotmem: {e}");
        }
    }

    if o.batch() {
        run_batch(&o, r)
    } else {
        run_console(&o, &r)
    }
}

/// `--dry-run`: the build command, the QEMU command and the gdb command, nothing run.
fn dry_run(o: &Options, ws: &std::path::Path, gdb_port: Option<u16>) {
    let qemu = discover::find_qemu()
        .ok()
        .flatten()
        .unwrap_or_else(|| QEMU_BINARY.into());
    let r = o.qemu_run(qemu, Kernel::paths(ws, o.kernel), gdb_port);
    println!("cargo {}", shell_join(&kernel::build_args(ws, o.kernel)));
    println!("{}", r.command_line());
    if let Some(p) = gdb_port {
        println!("{}", gdb::gdb_command(&r.kernel.elf, p));
    }
}

/// `--exec`: drives the console through the script; the exit status of its outcome.
fn run_batch(o: &Options, r: QemuRun) -> i32 {
    let cmds = o.exec.clone().unwrap_or_default();
    if let Some(n) = cli::script_end_note(o) {
        eprintln!("hotmem: {n}");
    }
    if let Some(t) = r.timeout {
        eprintln!(
            "hotmem: driving the console; QEMU is killed after {} s",
            t.as_secs_f64()
        );
    }
    let out = match Session::start(r) {
        Ok(s) => s.run_script(&cmds),
        Err(e) => {
            eprintln!("hotmem: {e}");
            return 1;
        }
    };
    if let Some(f) = &out.failure {
        eprintln!("\nhotmem: {f}");
    }
    if !out.host_failed.is_empty() {
        eprintln!(
            "hotmem: {} host command(s) failed: {} (exit status 1)",
            out.host_failed.len(),
            out.host_failed.join("; ")
        );
    }
    let st = out
        .status
        .map_or_else(|| "no exit status".to_string(), |s| s.to_string());
    eprintln!("hotmem: QEMU ended ({st}) after {:.1} s", out.elapsed.as_secs_f64());
    out.host_exit_code()
}

/// Interactive: the console on this terminal, host commands caught; QEMU's exit status.
fn run_console(o: &Options, r: &QemuRun) -> i32 {
    eprintln!("hotmem: console on this terminal: Ctrl-A x quits QEMU, Ctrl-A c switches to the QEMU monitor and back;");
    let examples = hotmem_qemu::cli::host_command_examples(o.boot);
    eprintln!("hotmem: a line starting with `:` is a host command (`:help`), e.g. {examples}");
    match hotmem_qemu::interactive::run_interactive(r) {
        Ok((st, timed_out)) => {
            if timed_out {
                // (The terminal settings were restored by the runner.)
                eprintln!("\nhotmem: timed out; QEMU killed with SIGKILL");
                return hotmem_qemu::console::TIMEOUT_EXIT_CODE;
            }
            use std::os::unix::process::ExitStatusExt;
            st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
        }
        Err(e) => {
            eprintln!("hotmem: cannot run QEMU: {e}");
            1
        }
    }
}
