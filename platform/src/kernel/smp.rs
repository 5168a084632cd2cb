//! Secondary CPUs: started with PSCI CPU_ON, each switches to the kernel page tables through
//! the identity map, drops TTBR0, sets up its GIC interface and timer, reports in and idles.
//!
//! Bring-up overlaps the boot CPU's work: [`boot_secondaries`] waits for each CPU only until it
//! runs on its own stack in the kernel (the entry code takes its stack from one shared slot,
//! so the next CPU_ON waits for that), and [`wait_online`] waits once, later, for all of them to
//! finish their set-up and report in.

use crate::{
    boot::layout, drivers::gic, drivers::psci, drivers::timer, kernel::mem::page_alloc, kernel::sync, println,
};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// Most CPUs the kernel handles (per-CPU arrays are sized by it).
pub const MAX_CPUS: usize = 8;
// The lock checker sits below this file and keeps its own count of per-CPU held stacks.
const _: () = assert!(crate::kernel::lockdep::CPUS == MAX_CPUS);
const STACK_ORDER_BYTES: u64 = 64 << 10;

/// Bit i set = CPU i is online.
static ONLINE: AtomicU64 = AtomicU64::new(1);
/// Bit i set = CPU i runs kernel code on its own stack (its entry no longer needs the stack
/// slot or the identity map).
static ENTERED: AtomicU64 = AtomicU64::new(1);
/// How long a CPU may take to enter the kernel, and then to report in.
const BRINGUP_TIMEOUT_MS: u64 = 1000;
static MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

pub fn online_count() -> u32 {
    online_mask().count_ones()
}

pub fn mpidr_of(cpu: usize) -> Option<u64> {
    MPIDR
        .get(cpu)
        .map(|m| m.load(Ordering::Relaxed))
        .filter(|&m| m != u64::MAX)
}

/// Disable TTBR0 walks on this CPU: the identity map was only needed for the MMU switch.
pub fn drop_identity_map() {
    use aarch64_cpu::registers::TCR_EL1;
    use tock_registers::interfaces::{Readable, Writeable};
    TCR_EL1.set(arch::mmu::tcr_without_ttbr0(TCR_EL1.get()));
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    // SAFETY: local TLB invalidation of all EL1 entries (drops identity-map entries); barriers.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
}

/// Outcome of starting one CPU.
pub struct Started {
    pub cpu: usize,
    pub mpidr: u64,
    pub result: Result<(), &'static str>,
}

/// Start every CPU listed in the DTB (`cpus` = MPIDR affinities; the boot CPU is among them),
/// each waited for until it enters the kernel; [`wait_online`] waits for them to report in.
pub fn boot_secondaries(cpus: &[u64]) -> Vec<Started> {
    let me = arch::cpu::mpidr_affinity();
    MPIDR[0].store(me, Ordering::Relaxed);
    // The boot CPU is index 0; the others keep their DT order.
    let others: Vec<u64> = cpus.iter().copied().filter(|&m| m != me).take(MAX_CPUS - 1).collect();
    let entry = arch::boot::secondary_entry_pa(layout::kimage_voffset());
    // Secondaries read the boot MMU registers with their MMU (and caches) off.
    arch::cache::clean_to_poc(core::ptr::addr_of!(arch::boot::BOOT_MMU_PA_SLOT) as u64, 8);
    let mmu_va = arch::boot::BOOT_MMU_PA_SLOT
        .load(Ordering::Relaxed)
        .wrapping_add(layout::kimage_voffset());
    arch::cache::clean_to_poc(mmu_va, core::mem::size_of::<arch::boot::BootMmu>() as u64);

    let mut out = Vec::new();
    for (i, mpidr) in others.into_iter().enumerate() {
        let cpu = i + 1;
        MPIDR[cpu].store(mpidr, Ordering::Relaxed);
        crate::kernel::numa::cpu_up(cpu, mpidr);
        let order = (STACK_ORDER_BYTES >> layout::PAGE_SHIFT).max(1).trailing_zeros();
        // The CPU's stack on its own node.
        let Some(stack) = page_alloc::alloc_pages_node(order, crate::kernel::numa::cpu_node(cpu)) else {
            out.push(Started {
                cpu,
                mpidr,
                result: Err("no memory for its stack"),
            });
            continue;
        };
        let top = layout::phys_to_virt(stack) + (layout::PAGE_SIZE << order);
        arch::boot::SECONDARY_STACK_TOP.store(top, Ordering::SeqCst);
        let result = match psci::cpu_on(mpidr, entry, cpu as u64) {
            Err(_) => Err("PSCI CPU_ON failed"),
            Ok(()) if wait_for(&ENTERED, 1 << cpu, BRINGUP_TIMEOUT_MS) => Ok(()),
            Ok(()) => Err("did not enter the kernel within 1 s"),
        };
        out.push(Started { cpu, mpidr, result });
    }
    out
}

/// Wait (WFE) until every bit of `mask` is set in `bits`, at most `timeout_ms`.
fn wait_for(bits: &AtomicU64, mask: u64, timeout_ms: u64) -> bool {
    let deadline = arch::cpu::counter() + arch::cpu::counter_freq() * timeout_ms / 1000;
    while bits.load(Ordering::Acquire) & mask != mask && arch::cpu::counter() < deadline {
        aarch64_cpu::asm::wfe();
    }
    bits.load(Ordering::Acquire) & mask == mask
}

/// Wait once for every CPU [`boot_secondaries`] started to report in (at most 1 s in all); one
/// that does not gets its error.
pub fn wait_online(started: &mut [Started]) {
    let mask = started
        .iter()
        .filter(|s| s.result.is_ok())
        .fold(0, |m, s| m | 1 << s.cpu);
    if wait_for(&ONLINE, mask, BRINGUP_TIMEOUT_MS) {
        return;
    }
    for s in started.iter_mut().filter(|s| s.result.is_ok()) {
        if online_mask() & (1 << s.cpu) == 0 {
            s.result = Err("did not report in within 1 s");
        }
    }
}

/// A function a CPU can be asked to run ([`post`], [`run_on`]).
pub type RemoteFn = fn(u64) -> u64;

/// A function call posted to a CPU: (function, argument, result, state).
struct Mailbox {
    /// Written before `state` goes to 1 (Release) and read after it is seen (Acquire); the
    /// lock makes the function pointer itself a plain value rather than an integer to cast.
    func: sync::Mutex<Option<RemoteFn>>,
    arg: AtomicU64,
    result: AtomicU64,
    /// 0 = empty, 1 = posted, 2 = done.
    state: AtomicU64,
}

static MAILBOX: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        func: sync::Mutex::new("smp mailbox", None),
        arg: AtomicU64::new(0),
        result: AtomicU64::new(0),
        state: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Post `f(arg)` to `cpu` (online, not this one) without waiting; [`collect`] gets the result.
pub fn post(cpu: usize, f: fn(u64) -> u64, arg: u64) -> bool {
    let Some(mpidr) = mpidr_of(cpu) else { return false };
    if cpu == arch::cpu::cpu_index() || online_mask() & (1 << cpu) == 0 {
        return false;
    }
    let mb = &MAILBOX[cpu];
    *mb.func.lock() = Some(f);
    mb.arg.store(arg, Ordering::Relaxed);
    mb.state.store(1, Ordering::Release);
    gic::send_sgi(gic::SGI_WAKE, cpu, mpidr);
    true
}

/// Wait (WFE, at most `timeout_ms`) for the call posted to `cpu` and return its result.
pub fn collect(cpu: usize, timeout_ms: u64) -> Option<u64> {
    let mb = &MAILBOX[cpu];
    let deadline = arch::cpu::counter() + arch::cpu::counter_freq() * timeout_ms / 1000;
    while mb.state.load(Ordering::Acquire) != 2 {
        if arch::cpu::counter() > deadline {
            return None;
        }
        aarch64_cpu::asm::wfe();
    }
    mb.state.store(0, Ordering::Relaxed);
    Some(mb.result.load(Ordering::Relaxed))
}

/// Run `f(arg)` on `cpu` (which must be online) and return its result (at most one second).
/// On the calling CPU itself the function runs directly.
pub fn run_on(cpu: usize, f: fn(u64) -> u64, arg: u64) -> Option<u64> {
    if cpu == arch::cpu::cpu_index() {
        return Some(f(arg));
    }
    if !post(cpu, f, arg) {
        return None;
    }
    collect(cpu, 1000)
}

/// Run `f(arg)` on every online CPU; results by CPU index (`None` = did not answer).
pub fn run_on_all(f: fn(u64) -> u64, arg: u64) -> Vec<(usize, Option<u64>)> {
    (0..MAX_CPUS)
        .filter(|&c| online_mask() & (1 << c) != 0)
        .map(|c| (c, run_on(c, f, arg)))
        .collect()
}

fn serve_mailbox(cpu: usize) {
    let mb = &MAILBOX[cpu];
    if mb.state.load(Ordering::Acquire) == 1 {
        let f = *mb.func.lock();
        let r = f.map_or(0, |f| f(mb.arg.load(Ordering::Relaxed)));
        mb.result.store(r, Ordering::Relaxed);
        mb.state.store(2, Ordering::Release);
        aarch64_cpu::asm::sev();
    }
}

#[no_mangle]
extern "C" fn __hotmem_secondary_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    ENTERED.fetch_or(1 << cpu, Ordering::Release);
    aarch64_cpu::asm::sev();
    drop_identity_map();
    crate::kernel::mem::teardown::init_secondary();
    gic::init_cpu(&[timer::INTID_VTIMER]);
    timer::init_cpu();
    ONLINE.fetch_or(1 << cpu, Ordering::Release);
    aarch64_cpu::asm::sev();
    println!(
        "smp: cpu={} mpidr={:#x} el={} online",
        cpu,
        arch::cpu::mpidr_affinity(),
        arch::cpu::current_el()
    );
    sync::irq_enable();
    loop {
        // Idle: background work while there is some, else sleep.
        if !crate::kernel::deferred::idle_step() {
            arch::cpu::wfi();
        }
        serve_mailbox(cpu);
    }
}
