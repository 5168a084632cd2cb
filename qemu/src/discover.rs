//! Finding `qemu-system-aarch64`, and installing it on Debian when we are root.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const QEMU_BINARY: &str = "qemu-system-aarch64";
/// Environment variable naming the QEMU binary to use instead of the one on `PATH`. It means
/// only that: the choice of apt source for installing QEMU is `.ci/install`'s
/// [`QEMU_APT_ENV`], so one variable never carries two meanings.
pub const QEMU_ENV: &str = "HOTMEM_QEMU";
/// `.ci/install`'s variable choosing where QEMU is installed from (`backports` or `bookworm`).
/// The runner never reads it; it is named here for the hint when its values land in
/// [`QEMU_ENV`].
pub const QEMU_APT_ENV: &str = "HOTMEM_QEMU_APT";
/// deb822 source for bookworm-backports (QEMU 10 there; bookworm itself has 7.2).
pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
pub const BACKPORTS_SOURCE: &str = "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// A QEMU binary and the first line of its `--version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    pub path: PathBuf,
    pub version: String,
}

/// What to do when QEMU is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallPolicy {
    /// Only report the commands that would install it.
    Never,
    /// Install with apt-get when running as root on a system that has it.
    IfRoot,
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Looks `name` up on `PATH` (or returns it when it contains a `/`).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// True when the effective user is root (`/proc/self` is owned by the effective uid).
pub fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `$HOTMEM_QEMU` if set (it must name an executable), else `qemu-system-aarch64` on `PATH`.
pub fn find_qemu() -> Result<Option<PathBuf>, String> {
    if let Some(v) = std::env::var_os(QEMU_ENV).filter(|v| !v.is_empty()) {
        let name = v.to_string_lossy().into_owned();
        return match which(&name) {
            Some(p) => Ok(Some(p)),
            None => Err(qemu_env_refused(&name)),
        };
    }
    Ok(which(QEMU_BINARY))
}

/// The one-line refusal of a `$HOTMEM_QEMU` that names no executable: the variable, its value,
/// what it accepts, and, for the apt-source names, the variable those belong in.
pub fn qemu_env_refused(value: &str) -> String {
    let mut msg = format!(
        "${QEMU_ENV} is `{value}`, which is not an executable file; ${QEMU_ENV} must be a path to \
         an executable {QEMU_BINARY} (or a command name on PATH), or unset to use {QEMU_BINARY} from PATH"
    );
    if matches!(value, "backports" | "bookworm") {
        msg.push_str(&format!(
            " (`{value}` is an apt source: that choice is ${QEMU_APT_ENV}, read by .ci/install)"
        ));
    }
    msg
}

/// First line of `qemu --version`, e.g. `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn qemu_version(path: &Path) -> Result<String, String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Parses `QEMU emulator version X.Y.Z ...` into `(X, Y)`.
pub fn parse_version(line: &str) -> Option<(u32, u32)> {
    let rest = line.split("version").nth(1)?.trim_start();
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn os_codename() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The commands that install QEMU here, as shell lines (for display and for running).
pub fn install_commands() -> Vec<String> {
    let mut cmds = Vec::new();
    if os_codename().as_deref() == Some("bookworm") {
        cmds.push(format!(
            "printf '{}' > {BACKPORTS_FILE}",
            BACKPORTS_SOURCE.replace('\n', "\\n")
        ));
        cmds.push("apt-get update".into());
        cmds.push("apt-get install -y -t bookworm-backports qemu-system-arm   # QEMU 10".into());
        cmds.push("apt-get install -y qemu-system-arm   # fallback: bookworm's QEMU 7.2".into());
    } else {
        cmds.push("apt-get update".into());
        cmds.push("apt-get install -y qemu-system-arm".into());
    }
    cmds
}

fn apt(args: &[&str]) -> bool {
    eprintln!("hotmem: running apt-get {}", args.join(" "));
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs `qemu-system-arm` (which provides `qemu-system-aarch64`) with apt-get. On bookworm
/// it prefers QEMU 10 from bookworm-backports and falls back to bookworm's 7.2.
pub fn install_qemu() -> Result<(), String> {
    if os_codename().as_deref() == Some("bookworm") {
        if !Path::new(BACKPORTS_FILE).exists() {
            fs::write(BACKPORTS_FILE, BACKPORTS_SOURCE).map_err(|e| format!("cannot write {BACKPORTS_FILE}: {e}"))?;
        }
        if apt(&["update"]) && apt(&["install", "-y", "-t", "bookworm-backports", "qemu-system-arm"]) {
            return Ok(());
        }
        eprintln!("hotmem: QEMU from bookworm-backports did not install; trying bookworm's own (7.2)");
    } else {
        apt(&["update"]);
    }
    if apt(&["install", "-y", "qemu-system-arm"]) {
        Ok(())
    } else {
        Err("apt-get install -y qemu-system-arm failed".into())
    }
}

/// Finds QEMU, installing it first when it is missing and `policy` allows. The error text
/// gives the exact commands to run.
pub fn ensure_qemu(policy: InstallPolicy) -> Result<Qemu, String> {
    let found = find_qemu()?;
    let path = match found {
        Some(p) => p,
        None => {
            let can_install = policy == InstallPolicy::IfRoot && is_root() && which("apt-get").is_some();
            let howto = || format!("install it (as root):\n  {}", install_commands().join("\n  "));
            if !can_install {
                return Err(format!(
                    "{QEMU_BINARY} not found on PATH (or set ${QEMU_ENV}); {}",
                    howto()
                ));
            }
            eprintln!("hotmem: {QEMU_BINARY} not found; installing it");
            install_qemu().map_err(|e| format!("{e}; {}", howto()))?;
            find_qemu()?.ok_or_else(|| format!("{QEMU_BINARY} still not found after installing; {}", howto()))?
        }
    };
    let version = qemu_version(&path)?;
    Ok(Qemu { path, version })
}

/// [`ensure_qemu`] once per process; prints `qemu: <path> (<version>)` to stderr the first time.
pub fn qemu_once(policy: InstallPolicy) -> Result<Qemu, String> {
    static QEMU: OnceLock<Result<Qemu, String>> = OnceLock::new();
    QEMU.get_or_init(|| {
        let q = ensure_qemu(policy);
        if let Ok(q) = &q {
            eprintln!("hotmem: qemu {} ({})", q.path.display(), q.version);
        }
        q
    })
    .clone()
}

/// The debugger: any gdb with aarch64 support; Debian's is `gdb-multiarch`.
pub const GDB_BINARY: &str = "gdb-multiarch";

/// Environment variable naming another gdb binary.
pub const GDB_ENV: &str = "HOTMEM_GDB";

/// The debugger to use: `$HOTMEM_GDB` (it must be an executable), else `gdb-multiarch` from
/// `PATH`; `Ok(None)` when there is none. Installing it: [`ensure_gdb`].
pub fn find_gdb() -> Result<Option<PathBuf>, String> {
    if let Some(v) = std::env::var_os(GDB_ENV).filter(|v| !v.is_empty()) {
        let name = v.to_string_lossy().into_owned();
        return match which(&name) {
            Some(p) => Ok(Some(p)),
            None => Err(format!("${GDB_ENV} is `{name}`, which is not an executable file")),
        };
    }
    Ok(which(GDB_BINARY))
}

/// The commands that install `gdb-multiarch` (Debian's gdb with aarch64 support).
pub fn gdb_install_commands() -> Vec<String> {
    vec!["apt-get update".into(), "apt-get install -y gdb-multiarch".into()]
}

fn gdb_missing(howto_only: bool) -> String {
    let env = GDB_ENV;
    let gdb = GDB_BINARY;
    let how = format!("install it (as root):\n  {}", gdb_install_commands().join("\n  "));
    if howto_only {
        format!("{gdb} not found on PATH (or set ${env}); {how}")
    } else {
        format!(
            "{gdb} not found on PATH (or set ${env}) and it cannot be installed here (needs root and apt-get); {how}"
        )
    }
}

/// The debugger (see [`find_gdb`]), or an error giving the exact commands that
/// install it. Installs nothing.
pub fn find_gdb_or_howto() -> Result<PathBuf, String> {
    find_gdb()?.ok_or_else(|| gdb_missing(true))
}

/// Finds the debugger, installing `gdb-multiarch` with apt-get first when it is missing and
/// `policy` allows (root with apt-get), as [`ensure_qemu`] does for QEMU. The error text gives
/// the exact commands to run.
pub fn ensure_gdb(policy: InstallPolicy) -> Result<PathBuf, String> {
    if let Some(p) = find_gdb()? {
        return Ok(p);
    }
    let gdb = GDB_BINARY;
    if !(policy == InstallPolicy::IfRoot && is_root() && which("apt-get").is_some()) {
        return Err(gdb_missing(policy == InstallPolicy::Never));
    }
    eprintln!("hotmem: {gdb} not found; installing it");
    apt(&["update"]);
    if !apt(&["install", "-y", gdb]) {
        return Err(format!("apt-get install -y {gdb} failed; {}", gdb_missing(true)));
    }
    find_gdb()?.ok_or_else(|| format!("{gdb} still not found after installing; {}", gdb_missing(true)))
}

/// [`ensure_gdb`] once per process; prints `gdb: <path>` to stderr the first time.
pub fn gdb_once(policy: InstallPolicy) -> Result<PathBuf, String> {
    static GDB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    GDB.get_or_init(|| {
        let g = ensure_gdb(policy);
        if let Ok(p) = &g {
            eprintln!("hotmem: gdb {}", p.display());
        }
        g
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)"),
            Some((10, 0))
        );
        assert_eq!(parse_version("QEMU emulator version 7.2.22"), Some((7, 2)));
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("/bin/sh").is_some());
        assert!(which("definitely-not-a-command-hotmem").is_none());
    }

    #[test]
    fn refusal_is_one_line_naming_variable_value_and_remedy() {
        let m = qemu_env_refused("/nope/qemu");
        assert!(!m.contains('\n'), "{m}");
        assert!(
            m.starts_with("$HOTMEM_QEMU is `/nope/qemu`, which is not an executable file; "),
            "{m}"
        );
        assert!(m.contains("a path to an executable qemu-system-aarch64"), "{m}");
        assert!(!m.contains("HOTMEM_QEMU_APT"), "{m}");
        for apt in ["backports", "bookworm"] {
            let m = qemu_env_refused(apt);
            assert!(!m.contains('\n'), "{m}");
            assert!(m.contains(&format!("$HOTMEM_QEMU is `{apt}`")), "{m}");
            assert!(m.contains("$HOTMEM_QEMU_APT, read by .ci/install"), "{m}");
        }
    }

    #[test]
    fn install_commands_mention_the_package() {
        assert!(install_commands()
            .iter()
            .any(|c| c.contains("apt-get install -y qemu-system-arm")));
    }
}

/// The libvirt packages a QEMU domain needs, and no more: the daemon (`libvirtd`, `virtlogd`),
/// its QEMU driver and `virsh`.
pub const LIBVIRT_PACKAGES: [&str; 3] = ["libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients"];

/// The libvirt programs, found on `PATH` or in the sbin directories (a user's `PATH` often
/// lacks them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Libvirt {
    pub libvirtd: PathBuf,
    pub virtlogd: PathBuf,
    pub virsh: PathBuf,
}

/// Where the libvirt programs are, if all three are installed.
pub fn find_libvirt() -> Option<Libvirt> {
    let find = |name: &str| {
        which(name).or_else(|| {
            ["/usr/sbin", "/sbin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| is_executable(p))
        })
    };
    Some(Libvirt {
        libvirtd: find("libvirtd")?,
        virtlogd: find("virtlogd")?,
        virsh: find("virsh")?,
    })
}

/// The commands that install libvirt here: from bookworm-backports on bookworm (libvirt 11.3,
/// the one that goes with QEMU 10), as QEMU is.
pub fn libvirt_install_commands() -> Vec<String> {
    let pkgs = LIBVIRT_PACKAGES.join(" ");
    if os_codename().as_deref() == Some("bookworm") {
        vec![
            format!("printf '{}' > {BACKPORTS_FILE}", BACKPORTS_SOURCE.replace('\n', "\\n")),
            "apt-get update".into(),
            format!("apt-get install -y --no-install-recommends -t bookworm-backports {pkgs}"),
        ]
    } else {
        vec![
            "apt-get update".into(),
            format!("apt-get install -y --no-install-recommends {pkgs}"),
        ]
    }
}

fn install_libvirt() -> Result<(), String> {
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    if os_codename().as_deref() == Some("bookworm") {
        if !Path::new(BACKPORTS_FILE).exists() {
            fs::write(BACKPORTS_FILE, BACKPORTS_SOURCE).map_err(|e| format!("cannot write {BACKPORTS_FILE}: {e}"))?;
        }
        args.extend(["-t", "bookworm-backports"]);
    }
    args.extend(LIBVIRT_PACKAGES);
    if apt(&["update"]) && apt(&args) {
        Ok(())
    } else {
        Err(format!("apt-get {} failed", args.join(" ")))
    }
}

/// Finds libvirt, installing it first (once per process) when it is missing and `policy`
/// allows (root with apt-get), as [`ensure_qemu`] does for QEMU. The error text gives the exact
/// commands to run.
pub fn libvirt_once(policy: InstallPolicy) -> Result<Libvirt, String> {
    static LIBVIRT: OnceLock<Result<Libvirt, String>> = OnceLock::new();
    LIBVIRT
        .get_or_init(|| {
            if let Some(l) = find_libvirt() {
                return Ok(l);
            }
            let howto = || format!("install it (as root):\n  {}", libvirt_install_commands().join("\n  "));
            if !(policy == InstallPolicy::IfRoot && is_root() && which("apt-get").is_some()) {
                return Err(format!(
                    "libvirt (libvirtd, virtlogd, virsh) is not installed; {}",
                    howto()
                ));
            }
            eprintln!("hotmem: libvirt not found; installing it");
            install_libvirt().map_err(|e| format!("{e}; {}", howto()))?;
            find_libvirt().ok_or_else(|| format!("libvirt still not found after installing; {}", howto()))
        })
        .clone()
}
