//! The generic timer: EL1 virtual timer (PPI 27) ticking at `HZ` on every CPU, and the
//! CNTVCT-based clock used for boot time and benchmarks.

use aarch64_cpu::registers::{CNTV_CTL_EL0, CNTV_TVAL_EL0};
use core::sync::atomic::{AtomicU64, Ordering};
use tock_registers::interfaces::Writeable;

pub const INTID_VTIMER: u32 = 27;
pub const HZ: u64 = 100;

const MAX_CPUS: usize = 8;
static TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn reload() {
    CNTV_TVAL_EL0.set(arch::cpu::counter_freq() / HZ);
}

/// Start this CPU's tick.
pub fn init_cpu() {
    reload();
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

pub fn handle_irq(cpu: usize) {
    if arch::mutant::on(arch::mutant::Mutant::IrqAllocates) {
        // Planted: interrupt handlers must not allocate (the heap's lock is not IRQ-safe).
        drop(core::hint::black_box(alloc::boxed::Box::new(cpu)));
    }
    reload();
    if let Some(t) = TICKS.get(cpu) {
        t.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn ticks(cpu: usize) -> u64 {
    TICKS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed))
}

/// Microseconds represented by a CNTVCT delta.
pub fn cycles_to_us(cycles: u64) -> u64 {
    (cycles as u128 * 1_000_000 / arch::cpu::counter_freq().max(1) as u128) as u64
}

/// Sleep this CPU for at least `ms` milliseconds (WFI between ticks).
#[cfg_attr(not(feature = "ktest"), allow(dead_code))]
pub fn sleep_ms(ms: u64) {
    let end = arch::cpu::counter() + arch::cpu::counter_freq() * ms / 1000;
    while arch::cpu::counter() < end {
        arch::cpu::wfi();
    }
}
