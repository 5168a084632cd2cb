//! Memory hotplug commands: `probe`, `remove`, `online`, `offline`, `policy`, `dimms`.

use super::*;
use parse::shell::{addr_size, one_number, online_args, policy_args, PolicyChange};

fn report<T>(what: &str, r: Result<T, mm::hotplug::HotplugError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            println!("{what}: error: {e}");
            None
        }
    }
}

pub(super) fn cmd_probe(args: &[&str]) -> Result<(), ShellError> {
    let (addr, size) = addr_size(args)?;
    if !crate::kernel::mem::hotplug::probe_allowed(addr, size) {
        println!("probe: error: {addr:#x}+{size:#x} is not RAM held back by mem= (see the boot: held_back lines)");
        return Ok(());
    }
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| {
        hp.add_memory(
            ops,
            0,
            None,
            addr,
            size,
            mm::hotplug::AddFlags { memmap_on_memory: true },
        )
    });
    let cycles = arch::cpu::counter() - t0;
    if let Some(ids) = report("probe", r) {
        println!(
            "probe: added={:#x}+{:#x} blocks={:?} cycles={}",
            addr, size, ids, cycles
        );
    }
    Ok(())
}

pub(super) fn cmd_remove(args: &[&str]) -> Result<(), ShellError> {
    let (addr, size) = addr_size(args)?;
    let (tlbi0, range0, all0) = (
        arch::tlb::stats::va(),
        arch::tlb::stats::range(),
        arch::tlb::stats::all(),
    );
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| hp.remove_unowned_memory(ops, addr, size));
    let cycles = arch::cpu::counter() - t0;
    if report("remove", r).is_some() {
        println!(
            "remove: removed={:#x}+{:#x} cycles={} tlbi_va={} tlbi_range={} tlbi_all={}",
            addr,
            size,
            cycles,
            arch::tlb::stats::va() - tlbi0,
            arch::tlb::stats::range() - range0,
            arch::tlb::stats::all() - all0
        );
    }
    Ok(())
}

pub(super) fn cmd_online(args: &[&str]) -> Result<(), ShellError> {
    let (id, t) = online_args(args)?;
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| hp.online_block(ops, id, t));
    let cycles = arch::cpu::counter() - t0;
    if let Some(z) = report("online", r) {
        println!("online: block={} zone={} cycles={}", id, z.name(), cycles);
    }
    Ok(())
}

pub(super) fn cmd_offline(args: &[&str]) -> Result<(), ShellError> {
    let id = one_number(args)?;
    let migrated0 = crate::kernel::mem::movable::migrated_pages();
    let t0 = arch::cpu::counter();
    let r = crate::kernel::mem::hotplug::with_hotplug(|hp, ops| hp.offline_block(ops, id));
    let cycles = arch::cpu::counter() - t0;
    if report("offline", r).is_some() {
        let migrated = crate::kernel::mem::movable::migrated_pages() - migrated0;
        println!("offline: block={} migrated_pages={} cycles={}", id, migrated, cycles);
    }
    Ok(())
}

pub(super) fn cmd_policy(args: &[&str]) -> Result<(), ShellError> {
    use mm::hotplug::OnlinePolicy;
    let change = policy_args(args)?;
    crate::kernel::mem::hotplug::with_hotplug(|hp, _| {
        match change {
            PolicyChange::Show => {}
            PolicyChange::Default(d) => hp.default_online = d,
            PolicyChange::Policy(p) => hp.policy = p,
            PolicyChange::Ratio(r) => hp.ratio = r,
        }
        let default = match hp.default_online {
            None => "offline",
            Some(mm::hotplug::OnlineType::Auto) => "online",
            Some(mm::hotplug::OnlineType::Kernel) => "online_kernel",
            Some(mm::hotplug::OnlineType::Movable) => "online_movable",
        };
        let policy = match hp.policy {
            OnlinePolicy::ContigZones => "contig-zones",
            OnlinePolicy::AutoMovable => "auto-movable",
        };
        println!(
            "policy: default={} online_policy={} auto_movable_ratio={} present_normal={} present_movable={} kernel_early={}",
            default, policy, hp.ratio, hp.present().normal, hp.present().movable, hp.present().kernel_early
        );
        Ok(())
    })
}
