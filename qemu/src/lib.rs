//! Host side of hotmem: everything between `cargo run`/`cargo test` and a guest in QEMU.
//!
//! - [`config`]: the build matrix (granule × VA size), boot modes, GIC versions, sizes.
//! - [`kernel`]: building a kernel configuration (serialised, cached) and its flat `.bin`.
//! - [`elf`]: ELF64 → flat binary (`-kernel` Image form and `-bios` firmware form).
//! - [`discover`]: finding, or installing, `qemu-system-aarch64`.
//! - [`run`]: [`QemuRun`], a configuration turned into a QEMU command line and run; [`numa`]:
//!   the NUMA nodes of `--numa` and their QEMU arguments.
//! - [`console`]: driving the guest console non-interactively with a deadline and SIGKILL.
//! - [`gdb`]: the gdb-multiarch command line with the project's gdbinit, batch gdb for tests.
//! - [`qmp`]: the QMP transport (unix socket): commands, replies, events and their observers.
//! - [`host_cmd`]: the runner's host commands (`:plug`, `:unplug`, `:dimms`, `:vmem`, `:qmp`,
//!   ...), a file per device type; [`dimm_protocol`]: the DIMM protocol check.
//! - [`session`]: QEMU + console + QMP in one ([`Session`]): `--exec` with host commands, the
//!   DIMM scenario tests; [`interactive`]: the terminal runner with host commands.
//! - [`cli`]: the options of the `hotmem` runner binary; [`bench`]: the benchmark driver's records,
//!   comparison, plot and docs section.
//!
//! Arrows point down, from the binaries to [`run`] and the base (docs/runner.md, "Code map of
//! the host crate"); no two files import each other.
//!
//! A typical driven run:
//! ```text
//! let kernel = build_kernel_once(KernelConfig::default_for(Granule::K16).with_ktest(true))?;
//! let out = QemuRun::new(kernel).boot(BootMode::Kernel).gic(GicVersion::V3).run(&[] as &[&str])?;
//! assert!(out.success(), "{}", out.tail(40));
//! ```

pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod dimm_protocol;
pub mod discover;
pub mod elf;
pub mod gdb;
pub mod host_cmd;
pub mod interactive;
pub mod kernel;
pub mod numa;
pub mod qmp;
pub mod run;
pub mod session;
pub mod util;

pub use config::{BootMode, GicVersion, Granule, KernelConfig};
pub use console::{Console, ConsoleError, ConsoleOptions, RunOutcome, PROMPT};
pub use discover::{ensure_qemu, qemu_once, InstallPolicy, Qemu};
pub use kernel::{build_kernel, build_kernel_once, workspace_root, BuildError, BuildOptions, Kernel};
pub use run::{Machine, QemuRun, Serial, VirtioMem};
pub use session::Session;
