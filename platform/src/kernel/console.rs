//! The console: `print!`/`println!` to the PL011 and a receive ring filled by its interrupt.

use crate::{drivers::pl011::Pl011, kernel::sync::IrqSafeLock};
use core::fmt::Write;
use core::sync::atomic::AtomicU32;

/// INTID of the console UART (from the DTB).
pub static UART_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

struct Console {
    uart: Option<Pl011>,
}

static CONSOLE: IrqSafeLock<Console> = IrqSafeLock::new("console", Console { uart: None });

const RX_SIZE: usize = 256;
struct RxRing {
    buf: [u8; RX_SIZE],
    head: usize,
    tail: usize,
}
impl RxRing {
    fn is_empty(&self) -> bool {
        self.head == self.tail
    }
    fn is_full(&self) -> bool {
        (self.head + 1) % RX_SIZE == self.tail
    }
}

static RX: IrqSafeLock<RxRing> = IrqSafeLock::new(
    "console rx",
    RxRing {
        buf: [0; RX_SIZE],
        head: 0,
        tail: 0,
    },
);

impl Console {
    /// Bytes as they are (UTF-8 or not), `\n` as CR LF.
    fn write_bytes(&self, bytes: &[u8]) {
        if let Some(u) = &self.uart {
            for &b in bytes {
                if b == b'\n' {
                    u.putc(b'\r');
                }
                u.putc(b);
            }
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Echo of input bytes, which need not be whole UTF-8 characters.
#[cfg_attr(feature = "ktest", allow(dead_code))]
pub fn write_bytes(bytes: &[u8]) {
    CONSOLE.lock().write_bytes(bytes);
}

/// Install the UART (mapped at `va`) as the console, and as the panic path's second handle.
///
/// # Safety
/// `va` maps the PL011 registers as device memory for the life of the kernel.
pub unsafe fn init(va: u64) {
    // SAFETY: the caller's contract.
    let uart = unsafe { Pl011::new(va) };
    uart.init(push_rx);
    CONSOLE.lock().uart = Some(uart);
    CONSOLE_RAW_VA.store(va, core::sync::atomic::Ordering::Relaxed);
}

pub fn _print(args: core::fmt::Arguments) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Print even if the console lock is held (fault path: the holder may be the faulting code).
pub fn _print_panic(args: core::fmt::Arguments) {
    if let Some(mut c) = CONSOLE.try_lock() {
        let _ = c.write_fmt(args);
    } else {
        // The lock holder may be the code that faulted: write through a second handle to the
        // same UART rather than deadlock (output may interleave with the holder's).
        let c = CONSOLE_RAW_VA.load(core::sync::atomic::Ordering::Relaxed);
        if c != 0 {
            // SAFETY: the UART stays mapped at this VA for the life of the kernel.
            let uart = unsafe { Pl011::new(c) };
            let mut raw = Console { uart: Some(uart) };
            let _ = raw.write_fmt(args);
        }
    }
}

/// Whether the UART is installed (output before that is lost unless sent another way).
pub fn is_ready() -> bool {
    CONSOLE_RAW_VA.load(core::sync::atomic::Ordering::Relaxed) != 0
}

/// Report a failure that happens before the console exists: through semihosting (QEMU's
/// stderr), which needs no page table. Truncated to 255 bytes.
pub fn early_report(args: core::fmt::Arguments) {
    struct Buf {
        b: [u8; 256],
        n: usize,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for &c in s.as_bytes() {
                if self.n < self.b.len() - 1 {
                    self.b[self.n] = c;
                    self.n += 1;
                }
            }
            Ok(())
        }
    }
    let mut buf = Buf { b: [0; 256], n: 0 };
    let _ = buf.write_fmt(args);
    buf.b[buf.n] = 0;
    arch::cpu::semihosting_write0(&buf.b[..=buf.n]);
}

static CONSOLE_RAW_VA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::kernel::console::_print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::kernel::console::_print(format_args!("{}\n", format_args!($($arg)*))));
}

/// Stores `b` unless the ring is full (then it is lost: only boot-time bytes come this way,
/// through [`Pl011::init`]).
fn push_rx(b: u8) {
    let mut rx = RX.lock();
    if !rx.is_full() {
        let h = rx.head;
        rx.buf[h] = b;
        rx.head = (h + 1) % RX_SIZE;
    }
}

/// Moves received bytes from the UART's FIFO into the ring while the ring has room. What does
/// not fit stays in the FIFO, and a full FIFO makes QEMU hold further input back: input is
/// never dropped, however fast it comes. [`pop_rx`] calls this again as it makes room, since
/// bytes left in the FIFO raise no new interrupt.
fn drain_uart(u: &Pl011) {
    loop {
        let mut rx = RX.lock();
        if rx.is_full() {
            return;
        }
        let Some(b) = u.getc() else { return };
        let h = rx.head;
        rx.buf[h] = b;
        rx.head = (h + 1) % RX_SIZE;
    }
}

/// UART interrupt: move received bytes into the ring.
pub fn handle_rx_irq() {
    let console = CONSOLE.lock();
    let Some(u) = &console.uart else { return };
    // Clear first, then drain: a byte arriving after the clear raises a new interrupt, while
    // one arriving after a drain-then-clear would sit in the FIFO with no interrupt pending.
    u.clear_rx_interrupt();
    drain_uart(u);
}

/// Next input byte; sleeps (WFI) until one arrives.
#[cfg_attr(feature = "ktest", allow(dead_code))]
pub fn getc_blocking() -> u8 {
    use crate::kernel::{deferred, sync};
    loop {
        // Check and sleep with IRQs masked so the wake-up cannot slip between them; WFI wakes
        // on a pending interrupt even while masked, and unmasking then takes it.
        sync::irq_disable();
        if let Some(b) = pop_rx() {
            sync::irq_enable();
            return b;
        }
        sync::irq_enable();
        // Idle: background work while there is some (one step, then look at the input
        // again), else sleep until an interrupt.
        if !deferred::idle_step() {
            sync::irq_disable();
            if RX.lock().is_empty() {
                arch::cpu::wfi();
            }
            sync::irq_enable();
        }
        // Deferred work from interrupt handlers runs here, in thread context.
        deferred::run();
    }
}

/// The next received byte, if any; refills the ring from the UART's FIFO.
fn pop_rx() -> Option<u8> {
    let b = {
        let mut rx = RX.lock();
        if rx.is_empty() {
            None
        } else {
            let b = rx.buf[rx.tail];
            rx.tail = (rx.tail + 1) % RX_SIZE;
            Some(b)
        }
    };
    // Lock order as in the interrupt handler: the console, then the ring.
    if let Some(u) = &CONSOLE.lock().uart {
        drain_uart(u);
    }
    b
}
