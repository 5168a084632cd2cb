//! The kernel's locks, each of a named class ([`lockdep`]): [`Mutex`], a plain spin lock
//! (interrupts stay as they are: never for data an interrupt handler touches), and
//! [`IrqSafeLock`], whose guard masks IRQs on this CPU for as long as it is held (otherwise an
//! interrupt handler taking the same lock would deadlock). Test builds check the order classes
//! are taken in; other builds compile both to `spin::Mutex`.

use crate::kernel::lockdep::{self, Class, Held, Kind};
use aarch64_cpu::registers::DAIF;
use core::ops::{Deref, DerefMut};
use tock_registers::interfaces::{Readable, Writeable};

/// A spin lock of a named class, for data no interrupt handler touches.
pub struct Mutex<T> {
    inner: spin::Mutex<T>,
    class: Class,
}

pub struct MutexGuard<'a, T> {
    guard: spin::MutexGuard<'a, T>,
    _held: Held,
}

impl<T> Mutex<T> {
    pub const fn new(class: &'static str, v: T) -> Self {
        Mutex {
            inner: spin::Mutex::new(v),
            class: Class::new(class),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        let held = lockdep::acquire(&self.class, Kind::Plain);
        MutexGuard {
            guard: self.inner.lock(),
            _held: held,
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A spin lock of a named class that masks IRQs on this CPU while held.
pub struct IrqSafeLock<T> {
    inner: spin::Mutex<T>,
    class: Class,
}

pub struct IrqSafeGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    daif: u64,
    _held: Held,
}

impl<T> IrqSafeLock<T> {
    pub const fn new(class: &'static str, v: T) -> Self {
        IrqSafeLock {
            inner: spin::Mutex::new(v),
            class: Class::new(class),
        }
    }

    pub fn lock(&self) -> IrqSafeGuard<'_, T> {
        let daif = DAIF.get();
        DAIF.write(DAIF::I::Masked + DAIF::F::Masked);
        let held = lockdep::acquire(&self.class, Kind::IrqSafe);
        IrqSafeGuard {
            guard: Some(self.inner.lock()),
            daif,
            _held: held,
        }
    }

    /// For the fault path only: take the lock if it is free.
    pub fn try_lock(&self) -> Option<IrqSafeGuard<'_, T>> {
        let daif = DAIF.get();
        DAIF.write(DAIF::I::Masked + DAIF::F::Masked);
        match self.inner.try_lock() {
            Some(g) => Some(IrqSafeGuard {
                guard: Some(g),
                daif,
                _held: lockdep::acquire(&self.class, Kind::Try),
            }),
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
