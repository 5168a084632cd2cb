//! Building kernel configurations.
//!
//! Every configuration is built by the same command into the same cargo output path
//! (`target/kernel/aarch64-unknown-none/release/hotmem`), so builds are serialised with a file
//! lock (`target/kernel/build.lock`, shared by every process: the runner, every test binary)
//! and each result is copied to `target/kernel/out/hotmem-<granule>-<va>[-ktest].elf` and
//! `.bin`. Cargo's own fingerprints make a repeated build of an unchanged configuration cheap;
//! [`build_kernel_once`] also remembers results for the life of the process.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::KernelConfig;
use crate::elf::{self, FLASH_SIZE};

/// Rust target of the kernel.
pub const KERNEL_TARGET: &str = "aarch64-unknown-none";
/// Package and binary of the kernel.
pub const KERNEL_PACKAGE: &str = "hotmem-platform";
pub const KERNEL_BIN: &str = "hotmem";

/// The workspace root: `$HOTMEM_WORKSPACE`, else the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    if let Some(p) = std::env::var_os("HOTMEM_WORKSPACE") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `<workspace>/target/kernel`: cargo target dir of kernel builds.
pub fn kernel_target_dir(workspace: &Path) -> PathBuf {
    workspace.join("target").join("kernel")
}

/// A built (or to-be-built) kernel: its configuration and both file forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub config: KernelConfig,
    pub elf: PathBuf,
    pub bin: PathBuf,
}

impl Kernel {
    /// Where the artifacts of `config` live (whether or not they exist yet).
    pub fn paths(workspace: &Path, config: KernelConfig) -> Kernel {
        let out = kernel_target_dir(workspace).join("out");
        let stem = format!("hotmem-{}", config.name());
        Kernel {
            config,
            elf: out.join(format!("{stem}.elf")),
            bin: out.join(format!("{stem}.bin")),
        }
    }

    /// The flash image next to the `.bin`: the same bytes zero-padded to [`FLASH_SIZE`], the
    /// size QEMU's `virt` flash bank 0 has (a `-drive if=pflash` must fill it exactly).
    pub fn pflash(&self) -> PathBuf {
        self.bin.with_extension("pflash")
    }
}

/// A failed build, with what cargo printed (when it was captured).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}{}", if output.is_empty() { String::new() } else { format!("\n--- build output ---\n{}", output.trim_end()) })]
pub struct BuildError {
    pub message: String,
    pub output: String,
}

impl BuildError {
    fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
            output: String::new(),
        }
    }
}

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub workspace: PathBuf,
    /// Capture cargo's output (tests) instead of letting it go to our stderr (the runner).
    pub capture: bool,
    /// Run `rustup target add` when the kernel target is missing.
    pub install_target: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            workspace: workspace_root(),
            capture: false,
            install_target: true,
        }
    }
}

/// The cargo that runs us (`$CARGO`, set by cargo for `cargo run`/`cargo test`), else `cargo`.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Environment variables of an outer cargo/rustc that must not leak into the kernel build
/// (host RUSTFLAGS would replace the kernel's target rustflags, a forced target dir or build
/// target would send it elsewhere).
const SCRUBBED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WORKSPACE_WRAPPER",
];

/// The exact cargo command line for `config` (for messages and `--dry-run`).
pub fn build_args(workspace: &Path, config: KernelConfig) -> Vec<String> {
    vec![
        "build".into(),
        "--release".into(),
        "-p".into(),
        KERNEL_PACKAGE.into(),
        "--bin".into(),
        KERNEL_BIN.into(),
        "--target".into(),
        KERNEL_TARGET.into(),
        "--features".into(),
        config.features(),
        "--target-dir".into(),
        kernel_target_dir(workspace).to_string_lossy().into_owned(),
    ]
}

/// Makes sure the standard library for `aarch64-unknown-none` is installed, running
/// `rustup target add aarch64-unknown-none` once when allowed.
pub fn ensure_kernel_target(workspace: &Path, install: bool) -> Result<(), BuildError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = || -> Option<PathBuf> {
        let out = Command::new(&rustc)
            .args(["--print", "target-libdir", "--target", KERNEL_TARGET])
            .current_dir(workspace)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let has_core = fs::read_dir(&dir)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"));
        has_core.then_some(dir)
    };
    if libdir().is_some() {
        return Ok(());
    }
    let cmd = format!("rustup target add {KERNEL_TARGET}");
    if !install {
        return Err(BuildError::new(format!(
            "the Rust target {KERNEL_TARGET} is not installed; run: {cmd}"
        )));
    }
    eprintln!("hotmem: the Rust target {KERNEL_TARGET} is missing; running `{cmd}`");
    let ok = Command::new("rustup")
        .args(["target", "add", KERNEL_TARGET])
        .current_dir(workspace)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && libdir().is_some() {
        Ok(())
    } else {
        Err(BuildError::new(format!(
            "the Rust target {KERNEL_TARGET} is not installed and `{cmd}` failed; run it by hand"
        )))
    }
}

/// In-process half of the build lock (the file lock covers other processes).
static BUILD_MUTEX: Mutex<()> = Mutex::new(());

/// Holds the build lock for the life of the value.
struct BuildLock {
    _file: File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

fn lock_builds(workspace: &Path) -> io::Result<BuildLock> {
    let guard = BUILD_MUTEX.lock().unwrap_or_else(|e| e.into_inner());
    let dir = kernel_target_dir(workspace);
    fs::create_dir_all(&dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("build.lock"))?;
    file.lock()?;
    Ok(BuildLock {
        _file: file,
        _guard: guard,
    })
}

/// Writes `bytes` to `dst` through a temporary file and a rename, so a QEMU that already opened
/// an older copy (another test process) keeps reading a complete file.
fn write_atomic(dst: &Path, bytes: &[u8]) -> io::Result<()> {
    let ext = dst
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dst.with_extension(format!("{ext}.tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, dst)
}

/// `bytes` zero-padded to [`FLASH_SIZE`] (the padding is a hole in the file: no 64 MiB written),
/// as [`write_atomic`].
fn write_flash_atomic(dst: &Path, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() as u64 > FLASH_SIZE {
        // The build warned already; no flash image is better than a truncated one.
        return match fs::remove_file(dst) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = dst.with_extension(format!("pflash.tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    io::Write::write_all(&mut f, bytes)?;
    f.set_len(FLASH_SIZE)?;
    drop(f);
    fs::rename(&tmp, dst)
}

/// Builds `config` (serialised against every other build), copies the ELF to
/// `target/kernel/out/` and writes the flat `.bin` next to it.
pub fn build_kernel(config: KernelConfig, opts: &BuildOptions) -> Result<Kernel, BuildError> {
    let ws = &opts.workspace;
    ensure_kernel_target(ws, opts.install_target)?;
    let _lock = lock_builds(ws).map_err(|e| BuildError::new(format!("cannot take the kernel build lock: {e}")))?;

    let args = build_args(ws, config);
    let shown = format!("cargo {}", crate::util::shell_join(&args));
    let mut cmd = Command::new(cargo());
    cmd.args(&args).current_dir(ws).stdin(Stdio::null());
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    let (ok, output) = if opts.capture {
        let out = cmd
            .output()
            .map_err(|e| BuildError::new(format!("cannot run `{shown}`: {e}")))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    } else {
        eprintln!("hotmem: building kernel {config}: {shown}");
        let st = cmd
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| BuildError::new(format!("cannot run `{shown}`: {e}")))?;
        (st.success(), String::new())
    };
    if !ok {
        return Err(BuildError {
            message: format!("kernel build {config} failed: {shown}"),
            output,
        });
    }

    let built = kernel_target_dir(ws)
        .join(KERNEL_TARGET)
        .join("release")
        .join(KERNEL_BIN);
    let elf_bytes = fs::read(&built).map_err(|e| BuildError {
        message: format!(
            "kernel build {config} succeeded but {} is unreadable: {e}",
            built.display()
        ),
        output: output.clone(),
    })?;
    let flat = elf::elf_to_flat(&elf_bytes).map_err(|e| BuildError {
        message: format!(
            "kernel {config}: cannot make the flat binary from {}: {e}",
            built.display()
        ),
        output: output.clone(),
    })?;
    if !flat.has_image_header() {
        eprintln!(
            "hotmem: warning: kernel {config}: the flat binary has no arm64 Image header (magic `ARM\\x64` at 0x38)"
        );
    }
    if flat.bytes.len() as u64 > FLASH_SIZE {
        eprintln!(
            "hotmem: warning: kernel {config}: flat binary is {} bytes, larger than the 64 MiB flash (firmware boot will fail)",
            flat.bytes.len()
        );
    }
    let k = Kernel::paths(ws, config);
    let io_err = |e: io::Error| BuildError::new(format!("cannot write {}: {e}", k.elf.display()));
    fs::create_dir_all(k.elf.parent().expect("out dir")).map_err(io_err)?;
    write_atomic(&k.elf, &elf_bytes).map_err(io_err)?;
    write_atomic(&k.bin, &flat.bytes).map_err(io_err)?;
    write_flash_atomic(&k.pflash(), &flat.bytes).map_err(io_err)?;
    Ok(k)
}

type BuildCell = Arc<OnceLock<Result<Kernel, BuildError>>>;

/// [`build_kernel`] at most once per configuration per process (failures are remembered too,
/// so thirty tests of a broken build do not rebuild thirty times). Output is captured.
pub fn build_kernel_once(config: KernelConfig) -> Result<Kernel, BuildError> {
    static CELLS: OnceLock<Mutex<HashMap<KernelConfig, BuildCell>>> = OnceLock::new();
    let cell = {
        let mut map = CELLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(config).or_default().clone()
    };
    cell.get_or_init(|| {
        build_kernel(
            config,
            &BuildOptions {
                capture: true,
                ..BuildOptions::default()
            },
        )
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Granule, KernelConfig};

    #[test]
    fn artifact_paths_and_build_command() {
        let ws = Path::new("/ws");
        let c = KernelConfig::new(Granule::K16, 36).unwrap().with_ktest(true);
        let k = Kernel::paths(ws, c);
        assert_eq!(k.elf, Path::new("/ws/target/kernel/out/hotmem-16k-36-ktest.elf"));
        assert_eq!(k.bin, Path::new("/ws/target/kernel/out/hotmem-16k-36-ktest.bin"));
        assert_eq!(
            crate::util::shell_join(&build_args(ws, c)),
            "build --release -p hotmem-platform --bin hotmem --target aarch64-unknown-none \
             --features 'granule-16k va-36 ktest' --target-dir /ws/target/kernel"
        );
    }

    #[test]
    fn workspace_root_holds_this_crate() {
        assert!(workspace_root().join("qemu").join("Cargo.toml").is_file());
    }
}
