//! Exception entry from the vectors: interrupts are dispatched ([`irq`]), expected faults are skipped,
//! anything else is reported (ESR decoded, FAR, ELR) and the machine stops with a status.

use crate::kernel::{
    console,
    exit::{self, ExitStatus},
    irq,
};
use aarch64_cpu::registers::{ESR_EL1, FAR_EL1};
use arch::exception::{esr_class_name, fault_level, fault_status_name, TrapFrame, TrapKind};
use tock_registers::interfaces::Readable;

#[no_mangle]
extern "C" fn __hotmem_trap(kind: u64, frame: &mut TrapFrame) {
    let cpu = arch::cpu::cpu_index();
    let kind = TrapKind::from_raw(kind);
    match kind {
        TrapKind::Irq => irq::dispatch(cpu),
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
    console::_print_panic(format_args!(
        "hotmem: stopping (exit status {})\n",
        ExitStatus::Fatal as u32
    ));
    exit::exit(ExitStatus::Fatal)
}
