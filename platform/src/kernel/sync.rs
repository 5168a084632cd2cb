//! An interrupt-safe spin lock: `spin::Mutex` is not, so the guard masks IRQs on this CPU for
//! as long as it is held (otherwise an interrupt handler taking the same lock would deadlock).

use aarch64_cpu::registers::DAIF;
use core::ops::{Deref, DerefMut};
use tock_registers::interfaces::{Readable, Writeable};

pub struct IrqSafeLock<T> {
    inner: spin::Mutex<T>,
}

pub struct IrqSafeGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    daif: u64,
}

impl<T> IrqSafeLock<T> {
    pub const fn new(v: T) -> Self {
        IrqSafeLock {
            inner: spin::Mutex::new(v),
        }
    }

    pub fn lock(&self) -> IrqSafeGuard<'_, T> {
        let daif = DAIF.get();
        DAIF.write(DAIF::I::Masked + DAIF::F::Masked);
        IrqSafeGuard {
            guard: Some(self.inner.lock()),
            daif,
        }
    }

    /// For the fault path only: take the lock if it is free.
    pub fn try_lock(&self) -> Option<IrqSafeGuard<'_, T>> {
        let daif = DAIF.get();
        DAIF.write(DAIF::I::Masked + DAIF::F::Masked);
        match self.inner.try_lock() {
            Some(g) => Some(IrqSafeGuard { guard: Some(g), daif }),
            None => {
                DAIF.set(daif);
                None
            }
        }
    }
}

impl<T> Deref for IrqSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard present until drop")
    }
}

impl<T> DerefMut for IrqSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard present until drop")
    }
}

impl<T> Drop for IrqSafeGuard<'_, T> {
    fn drop(&mut self) {
        self.guard.take();
        DAIF.set(self.daif);
    }
}

/// Unmask IRQs on this CPU.
pub fn irq_enable() {
    use tock_registers::interfaces::ReadWriteable;
    DAIF.modify(DAIF::I::Unmasked + DAIF::F::Unmasked);
}

/// Mask IRQs on this CPU.
#[cfg_attr(feature = "ktest", allow(dead_code))]
pub fn irq_disable() {
    use tock_registers::interfaces::ReadWriteable;
    DAIF.modify(DAIF::I::Masked + DAIF::F::Masked);
}
