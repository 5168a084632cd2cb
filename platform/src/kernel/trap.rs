//! Exception entry from the vectors: interrupts are dispatched, expected faults are skipped,
//! anything else is reported (ESR decoded, FAR, ELR) and the machine stops with a status.

use crate::{drivers::gic, drivers::timer, kernel::console, println};
use aarch64_cpu::registers::{ESR_EL1, FAR_EL1};
use arch::exception::{esr_class_name, fault_level, fault_status_name, TrapFrame, TrapKind};
use tock_registers::interfaces::Readable;

/// Exit status when the kernel stops on an unexpected exception or panic.
pub const FATAL_STATUS: u32 = 2;

#[no_mangle]
extern "C" fn __hotmem_trap(kind: u64, frame: &mut TrapFrame) {
    let cpu = arch::cpu::cpu_index();
    let kind = TrapKind::from_raw(kind);
    match kind {
        TrapKind::Irq => handle_irq(cpu),
        TrapKind::Sync => {
            let (esr, far) = (ESR_EL1.get(), FAR_EL1.get());
            if arch::exception::take_expected_fault(cpu, esr, far, frame) {
                return;
            }
            fatal(cpu, kind, esr, far, frame)
        }
        _ => fatal(cpu, kind, ESR_EL1.get(), FAR_EL1.get(), frame),
    }
}

fn handle_irq(cpu: usize) {
    while let Some(irq) = gic::ack() {
        match irq.intid {
            timer::INTID_VTIMER => timer::handle_irq(cpu),
            gic::SGI_WAKE => {}
            crate::drivers::ged::INTID => crate::drivers::ged::handle_irq(),
            id if crate::kernel::mem::virtio_mem::owns_intid(id) => crate::kernel::mem::virtio_mem::handle_irq(id),
            id if id == crate::kernel::console::UART_INTID.load(core::sync::atomic::Ordering::Relaxed) => {
                console::handle_rx_irq()
            }
            id => println!("irq: unhandled intid={id} cpu={cpu}"),
        }
        gic::eoi(irq);
    }
}

fn fatal(cpu: usize, kind: TrapKind, esr: u64, far: u64, frame: &TrapFrame) -> ! {
    let ec = esr >> 26;
    console::_print_panic(format_args!(
        "\nhotmem: FATAL exception kind={:?} cpu={} class={:#x} ({}) esr={:#x} far={:#x} elr={:#x}\n",
        kind,
        cpu,
        ec,
        esr_class_name(ec),
        esr,
        far,
        frame.elr
    ));
    if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
        let fsc = esr & 0x3f;
        let write = ec >= 0x24 && esr & (1 << 6) != 0;
        console::_print_panic(format_args!(
            "hotmem: fault: {} at level {} ({})\n",
            fault_status_name(fsc),
            fault_level(fsc),
            if ec < 0x24 {
                "instruction fetch"
            } else if write {
                "write"
            } else {
                "read"
            }
        ));
    }
    console::_print_panic(format_args!("hotmem: stopping (exit status {FATAL_STATUS})\n"));
    arch::cpu::semihosting_exit(FATAL_STATUS)
}

/// Stop the machine on a broken kernel invariant: `hotmem: FATAL <what>`, exit status
/// [`FATAL_STATUS`] (the checkers' `VM_BUG_ON`).
pub fn fatal_stop(what: core::fmt::Arguments) -> ! {
    console::_print_panic(format_args!("\nhotmem: FATAL {what}\n"));
    arch::cpu::semihosting_exit(FATAL_STATUS)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::_print_panic(format_args!(
        "\nhotmem: PANIC cpu={}: {}\n",
        arch::cpu::cpu_index(),
        info
    ));
    arch::cpu::semihosting_exit(FATAL_STATUS)
}
