//! How the kernel stops: the exit statuses QEMU reports (through semihosting) and the fatal
//! path. Every status the kernel can exit with is an [`ExitStatus`]; the host runner and the
//! test suites read them.

use crate::kernel::console;

/// The exit statuses of the kernel (QEMU's exit status through semihosting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitStatus {
    /// The `ktest` build: every selected case passed.
    #[cfg_attr(not(feature = "ktest"), allow(dead_code))]
    TestsPassed = 0,
    /// The `ktest` build: a case failed, or none ran.
    #[cfg_attr(not(feature = "ktest"), allow(dead_code))]
    TestsFailed = 1,
    /// An unexpected exception, a panic, or a broken kernel invariant ([`fatal_stop`]).
    Fatal = 2,
    /// MMU off, before any console: the CPU lacks the configured granule
    /// ([`crate::boot::early::UNSUPPORTED_GRANULE_STATUS`]).
    UnsupportedGranule = 3,
    /// The boot cannot continue: a bad device tree, no memory for the essentials (`main.rs`:
    /// `boot_failed`).
    BootFailed = 4,
}

// The early boot code runs below the kernel (no console, no imports upward): it keeps its one
// status as a constant, checked here.
const _: () = assert!(ExitStatus::UnsupportedGranule as u32 == crate::boot::early::UNSUPPORTED_GRANULE_STATUS);

/// Stop QEMU with `status`.
pub fn exit(status: ExitStatus) -> ! {
    arch::cpu::semihosting_exit(status as u32)
}

/// Stop the machine on a broken kernel invariant: `hotmem: FATAL <what>`, exit status
/// [`ExitStatus::Fatal`] (the checkers' `VM_BUG_ON`).
pub fn fatal_stop(what: core::fmt::Arguments) -> ! {
    console::_print_panic(format_args!("\nhotmem: FATAL {what}\n"));
    exit(ExitStatus::Fatal)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::_print_panic(format_args!(
        "\nhotmem: PANIC cpu={}: {}\n",
        arch::cpu::cpu_index(),
        info
    ));
    exit(ExitStatus::Fatal)
}
