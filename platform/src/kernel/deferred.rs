//! Deferred work (bottom halves): interrupt top halves only latch what happened; the work runs
//! here, in thread context, from the idle loop (the console's blocking read, between
//! interrupts). A subsystem registers its bottom half once at init; [`run`] calls every
//! registered one in registration order, and each one finds out for itself whether it has
//! anything to do (its top half's latched bits).
//!
//! Modelled on Linux's softirq/tasklet split and Asterinas's bottom halves, reduced to what a
//! single-threaded kernel needs: no priorities, no per-CPU queues.

use crate::kernel::sync::IrqSafeLock;

/// Most bottom halves that can be registered (DIMM hotplug, virtio-mem, with room to spare).
pub const MAX_WORK: usize = 8;

/// A bottom half.
pub type Work = fn();

/// The registered bottom halves, in registration order.
static WORK: IrqSafeLock<[Option<Work>; MAX_WORK]> = IrqSafeLock::new([None; MAX_WORK]);

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

/// Run every registered bottom half (thread context, interrupts enabled).
pub fn run() {
    // Copy the table out: the work itself takes locks and may run for long (hotplug).
    let work = *WORK.lock();
    for f in work.iter().flatten() {
        f();
    }
}
