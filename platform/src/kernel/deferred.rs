//! Deferred work (bottom halves): interrupt top halves only latch what happened; the work runs
//! here, in thread context, from the idle loop (the console's blocking read, between
//! interrupts). A subsystem registers its bottom half once at init; [`run`] calls every
//! registered one in registration order, and each one finds out for itself whether it has
//! anything to do (its top half's latched bits).
//!
//! Modelled on Linux's softirq/tasklet split and Asterinas's bottom halves, reduced to what a
//! single-threaded kernel needs: no priorities, no per-CPU queues.
//!
//! Idle work is the other kind: background work any CPU may do when it has nothing else to do
//! (deferred `struct page` initialisation). Every CPU's idle loop calls [`idle_step`] before it
//! sleeps; a registered step does one bounded piece and says whether there was work, and the
//! loop then polls again instead of sleeping.

use crate::kernel::sync::IrqSafeLock;
use core::sync::atomic::{AtomicBool, Ordering};

/// Most bottom halves that can be registered (DIMM hotplug, virtio-mem, with room to spare).
pub const MAX_WORK: usize = 8;

/// A bottom half.
pub type Work = fn();

/// The registered bottom halves, in registration order.
static WORK: IrqSafeLock<[Option<Work>; MAX_WORK]> = IrqSafeLock::new("deferred work", [None; MAX_WORK]);

/// Why a bottom half was not registered.
#[derive(Debug, PartialEq, Eq)]
pub enum DeferredError {
    /// All [`MAX_WORK`] slots are taken.
    Full,
}

/// Register `work` to run from [`run`] (once, at the subsystem's init).
pub fn register(work: Work) -> Result<(), DeferredError> {
    let mut w = WORK.lock();
    let slot = w.iter_mut().find(|s| s.is_none()).ok_or(DeferredError::Full)?;
    *slot = Some(work);
    Ok(())
}

/// A step of idle work: one bounded piece; `true` if there was work (call again soon).
pub type IdleWork = fn() -> bool;

/// Most idle works that can be registered.
pub const MAX_IDLE: usize = 4;

static IDLE: IrqSafeLock<[Option<IdleWork>; MAX_IDLE]> = IrqSafeLock::new("idle work", [None; MAX_IDLE]);

/// Register `work` to run from every CPU's idle loop (once, at the subsystem's init).
pub fn register_idle(work: IdleWork) -> Result<(), DeferredError> {
    let mut w = IDLE.lock();
    if w.contains(&Some(work)) {
        return Ok(());
    }
    let slot = w.iter_mut().find(|s| s.is_none()).ok_or(DeferredError::Full)?;
    *slot = Some(work);
    Ok(())
}

/// Whether idle work runs yet: not before the boot reaches its prompt ([`start_idle_work`]).
static IDLE_STARTED: AtomicBool = AtomicBool::new(false);

/// The boot is done: from now on idle CPUs do idle work (and are woken to look for it).
///
/// Until then a secondary CPU's idle loop only sleeps, so background work does not compete
/// with the boot for the host's CPUs (TCG vCPUs are host threads) and the allocator lock; what
/// the boot allocates it initialises on demand. Linux likewise starts its deferred init
/// threads only after SMP bring-up (`page_alloc_init_late`).
pub fn start_idle_work() {
    IDLE_STARTED.store(true, Ordering::Release);
    crate::drivers::gic::send_sgi_to_others(crate::drivers::gic::SGI_WAKE);
}

/// One step of every registered idle work (thread context, interrupts enabled, any CPU);
/// whether any had work.
pub fn idle_step() -> bool {
    if !IDLE_STARTED.load(Ordering::Acquire) {
        return false;
    }
    let work = *IDLE.lock();
    work.iter().flatten().fold(false, |busy, f| f() | busy)
}

/// Run every registered bottom half (thread context, interrupts enabled).
pub fn run() {
    // Copy the table out: the work itself takes locks and may run for long (hotplug).
    let work = *WORK.lock();
    for f in work.iter().flatten() {
        f();
    }
}
