//! Exception entry from the vectors: interrupts are dispatched ([`irq`]), expected faults are skipped,
//! anything else is reported (ESR decoded, FAR, ELR) and the machine stops with a status.

use crate::kernel::{
    console,
    exit::{self, ExitStatus},
    irq, lockdep,
    mem::movable,
};
use aarch64_cpu::registers::{ESR_EL1, FAR_EL1};
use arch::exception::{Esr, TrapFrame, TrapKind};
use tock_registers::interfaces::Readable;

#[no_mangle]
extern "C" fn __hotmem_trap(kind: u64, frame: &mut TrapFrame) {
    let cpu = arch::cpu::cpu_index();
    let kind = TrapKind::from_raw(kind);
    match kind {
        TrapKind::Irq => {
            // Interrupt context for the lock checker while the handlers run.
            let _irq = lockdep::IrqContext::enter();
            irq::dispatch(cpu)
        }
        TrapKind::Sync => {
            let (esr, far) = (ESR_EL1.get(), FAR_EL1.get());
            if arch::exception::take_expected_fault(cpu, esr, far, frame) {
                return;
            }
            // A movable-window access that met a migration: waited for it, retry the access.
            if Esr::new(esr).is_data_abort() && movable::fault(far) {
                return;
            }
            fatal(cpu, kind, esr, far, frame)
        }
        _ => fatal(cpu, kind, ESR_EL1.get(), FAR_EL1.get(), frame),
    }
}

fn fatal(cpu: usize, kind: TrapKind, esr: u64, far: u64, frame: &TrapFrame) -> ! {
    let e = Esr::new(esr);
    console::_print_panic(format_args!(
        "\nhotmem: FATAL exception kind={:?} cpu={} class={:#x} ({}) esr={:#x} far={:#x} elr={:#x}\n",
        kind,
        cpu,
        e.class_raw(),
        e.class_name(),
        esr,
        far,
        frame.elr
    ));
    if e.is_abort() {
        console::_print_panic(format_args!(
            "hotmem: fault: {} at level {} ({})\n",
            e.fault_status_name(),
            e.fault_level(),
            if !e.is_data_abort() {
                "instruction fetch"
            } else if e.is_write() {
                "write"
            } else {
                "read"
            }
        ));
    }
    console::_print_panic(format_args!(
        "hotmem: stopping (exit status {})\n",
        ExitStatus::Fatal as u32
    ));
    exit::exit(ExitStatus::Fatal)
}
