//! libvirt as a real client of hotmem: a private `libvirtd` + `virtlogd` pair started by hand
//! (pid files, no systemd), `virsh` to drive a domain, and the domain's serial console (a unix
//! socket) to watch and question the guest.
//!
//! The daemons run the QEMU driver in *session* mode (`qemu:///session`) as an unprivileged
//! user (`nobody` when we are root; ourselves otherwise) with every XDG directory in a fresh
//! private directory: run as root, libvirt's QEMU driver is the system driver, whose
//! configuration, state and sockets are compiled-in system paths (`/etc/libvirt`,
//! `/var/lib/libvirt`, `/run/libvirt`) that a system libvirt owns. A session daemon keeps all of
//! it under `$XDG_CONFIG_HOME`, `$XDG_CACHE_HOME` and `$XDG_RUNTIME_DIR`, needs no privilege
//! (TCG, no network, no cgroups), and is stopped by its pid like any process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotmem_qemu::console::PROMPT;
use hotmem_qemu::discover::{is_root, libvirt_once, InstallPolicy, Libvirt};

/// The unprivileged user the daemons run as when we are root (Debian's `nobody:nogroup`).
const NOBODY: u32 = 65534;
/// The connection URI: the session driver of the private daemon.
pub const URI: &str = "qemu:///session";
/// One `virsh` call's limit (the first one after a daemon start probes QEMU's capabilities:
/// about 10 s).
const VIRSH_TIMEOUT: Duration = Duration::from_secs(120);

/// The libvirt programs (installed first when missing and we are root); panics with the
/// commands to run otherwise.
pub fn libvirt() -> Libvirt {
    match libvirt_once(InstallPolicy::IfRoot) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

/// A private `virtlogd` + `libvirtd` pair; dropping it destroys the domains it runs and stops
/// both daemons (and any QEMU they left) by their pids.
pub struct Daemons {
    pub dir: PathBuf,
    bin: Libvirt,
    /// `setpriv` arguments that drop to [`NOBODY`] (empty when we are not root).
    drop_privileges: Vec<String>,
    pids: Vec<(String, PathBuf)>,
}

impl Daemons {
    /// Starts the pair in `dir` (created empty and owned by the daemons' user).
    pub fn start(dir: &Path) -> Result<Daemons, String> {
        let bin = libvirt();
        let _ = std::fs::remove_dir_all(dir);
        for sub in ["config", "cache", "runtime", "data"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let drop_privileges = if is_root() {
            let st = Command::new("chown")
                .args(["-R", &format!("{NOBODY}:{NOBODY}")])
                .arg(dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err(format!("chown -R {NOBODY} {} failed", dir.display()));
            }
            [
                "setpriv",
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
            ]
            .map(String::from)
            .to_vec()
        } else {
            Vec::new()
        };
        let mut d = Daemons {
            dir: dir.to_path_buf(),
            bin,
            drop_privileges,
            pids: Vec::new(),
        };
        for (name, prog) in [
            ("virtlogd", d.bin.virtlogd.clone()),
            ("libvirtd", d.bin.libvirtd.clone()),
        ] {
            let pid_file = dir.join(format!("{name}.pid"));
            let out = d
                .command(&prog)
                .args(["--daemon", "--pid-file"])
                .arg(&pid_file)
                .output()
                .map_err(|e| format!("{name}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{name} --daemon failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            d.pids.push((name.to_string(), pid_file));
        }
        // Up once the client socket exists.
        let sock = dir.join("runtime/libvirt/libvirt-sock");
        let t0 = Instant::now();
        while !sock.exists() {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("libvirtd made no socket {} in 30 s", sock.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    /// `prog` as the daemons' user, with the private directories and nothing else inherited.
    fn command(&self, prog: &Path) -> Command {
        let mut c = match self.drop_privileges.split_first() {
            Some((setpriv, args)) => {
                let mut c = Command::new(setpriv);
                c.args(args).arg(prog);
                c
            }
            None => Command::new(prog),
        };
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.dir)
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("XDG_RUNTIME_DIR", self.dir.join("runtime"))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    /// `virsh -c qemu:///session ARGS`: its stdout, or an error with its status and stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String, String> {
        let mut child = self
            .command(&self.bin.virsh)
            .args(["-c", URI])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("virsh: {e}"))?;
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| format!("virsh: {e}"))? {
                break st;
            }
            if t0.elapsed() > VIRSH_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("virsh {}: no answer in {VIRSH_TIMEOUT:?}", args.join(" ")));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if status.success() {
            Ok(out)
        } else {
            Err(format!("virsh {}: {status}: {}", args.join(" "), err.trim()))
        }
    }

    /// A file the daemons' user can read, written from `text`.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let p = self.dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }

    /// The pids of the daemons (from their pid files).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.pids
            .iter()
            .filter_map(|(n, f)| Some((n.clone(), read_pid(f)?)))
            .collect()
    }

    /// Destroys every running domain, then stops QEMU (if libvirt left it) and both daemons by
    /// pid: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Ok(names) = self.virsh(&["list", "--name"]) {
            for n in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
                let _ = self.virsh(&["destroy", n]);
            }
        }
        let qemu_pids = std::fs::read_dir(self.dir.join("runtime/libvirt/qemu/run"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| read_pid(&e.path()));
        let mut pids: Vec<u32> = qemu_pids.collect();
        pids.extend(self.pids.iter().rev().filter_map(|(_, f)| read_pid(f)));
        for pid in pids {
            stop_pid(pid);
        }
        self.pids.clear();
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_pid(f: &Path) -> Option<u32> {
    std::fs::read_to_string(f).ok()?.trim().parse().ok()
}

/// True while a process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn stop_pid(pid: u32) {
    if !alive(pid) {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

/// The guest's console on the domain's serial unix socket: everything it printed since the
/// connection, and commands typed at its prompt.
pub struct SerialConsole {
    stream: UnixStream,
    out: Arc<Mutex<Vec<u8>>>,
}

impl SerialConsole {
    pub fn connect(path: &Path) -> Result<SerialConsole, String> {
        let stream = UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut reader = stream.try_clone().map_err(|e| format!("console: {e}"))?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("console buffer").extend_from_slice(&buf[..n]);
            }
        });
        Ok(SerialConsole { stream, out })
    }

    pub fn len(&self) -> usize {
        self.out.lock().expect("console buffer").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything from byte `from` on.
    pub fn since(&self, from: usize) -> String {
        let o = self.out.lock().expect("console buffer");
        String::from_utf8_lossy(&o[from.min(o.len())..]).into_owned()
    }

    /// Waits until the output after `from` holds `needle`; returns that output.
    pub fn wait_for(&self, from: usize, needle: &str, limit: Duration) -> Result<String, String> {
        let t0 = Instant::now();
        loop {
            let s = self.since(from);
            if s.contains(needle) {
                return Ok(s);
            }
            if t0.elapsed() > limit {
                return Err(format!("no {needle:?} on the console in {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `cmd` and returns what the guest printed up to its next prompt.
    pub fn command(&mut self, cmd: &str) -> Result<String, String> {
        let from = self.len();
        self.stream
            .write_all(format!("{cmd}\r").as_bytes())
            .map_err(|e| format!("console: {e}"))?;
        let s = self.wait_for(from, &format!("\n{PROMPT}"), Duration::from_secs(30))?;
        let s = s.split_once(&format!("\n{PROMPT}")).map_or(s.as_str(), |(a, _)| a);
        Ok(s.split_once('\n').map_or("", |(_, rest)| rest).to_string())
    }
}
