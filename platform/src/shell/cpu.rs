//! CPU and power commands: `touch`, `cpus`, `poweroff`, `reboot`.

use super::*;
use parse::shell::one_number;

fn read_on_cpu(va: u64) -> u64 {
    match arch::exception::probe_read(va) {
        arch::exception::Probe::Value(_) => 0,
        arch::exception::Probe::Fault { esr } => esr,
    }
}

pub(super) fn cmd_touch(args: &[&str]) -> Result<(), ShellError> {
    let va = one_number(args)?;
    if va == 0 || va % 8 != 0 {
        println!("touch: error: the address must be non-zero and 8-byte aligned");
        return Ok(());
    }
    if (layout::IOREMAP_START..layout::IOREMAP_START + layout::IOREMAP_SIZE).contains(&va) {
        println!("touch: error: {va:#x} is in the ioremap window (device registers: a read can have side effects)");
        return Ok(());
    }
    for (cpu, r) in smp::run_on_all(read_on_cpu, va) {
        match r {
            Some(0) => println!("touch: cpu={cpu} va={va:#x} result=mapped"),
            Some(esr) => println!(
                "touch: cpu={cpu} va={va:#x} result=fault esr={esr:#x} ({})",
                arch::exception::Esr::new(esr).fault_status_name()
            ),
            None => println!("touch: cpu={cpu} va={va:#x} result=no-answer"),
        }
    }
    Ok(())
}

pub(super) fn cmd_cpus(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("cpus: online={} mask={:#x}", smp::online_count(), smp::online_mask());
    for cpu in 0..smp::MAX_CPUS {
        if smp::online_mask() & (1 << cpu) != 0 {
            println!(
                "cpu: id={} mpidr={:#x} ticks={}",
                cpu,
                smp::mpidr_of(cpu).unwrap_or(0),
                timer::ticks(cpu)
            );
        }
    }
    Ok(())
}

pub(super) fn cmd_poweroff(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("poweroff: PSCI SYSTEM_OFF");
    psci::system_off()
}

pub(super) fn cmd_reboot(args: &[&str]) -> Result<(), ShellError> {
    no_args(args)?;
    println!("reboot: PSCI SYSTEM_RESET");
    psci::system_reset()
}
