//! Interrupt dispatch: drivers' top halves are registered here by INTID (at init, by the
//! subsystem that enables the interrupt), and the trap handler dispatches every acknowledged
//! interrupt through this table instead of naming drivers (the Rust Raspberry Pi OS
//! tutorials' `register_handler` model).

use crate::{drivers::gic, kernel::sync::IrqSafeLock, println};

/// A top half: `(intid, cpu)`. Runs with interrupts masked; it latches and returns.
pub type Handler = fn(u32, usize);

/// Most handlers (timer, wake-up SGI, UART, GED, a few virtio-mem INTx lines).
pub const MAX_HANDLERS: usize = 16;

/// One registered handler: its INTID and top half.
type Entry = (u32, Handler);

static HANDLERS: IrqSafeLock<[Option<Entry>; MAX_HANDLERS]> = IrqSafeLock::new("irq handlers", [None; MAX_HANDLERS]);

/// Why a handler was not registered.
#[derive(Debug, PartialEq, Eq)]
pub enum IrqError {
    /// All [`MAX_HANDLERS`] slots are taken.
    Full,
    /// Another handler already owns the INTID.
    Taken(u32),
}

/// Register `handler` for `intid` (one handler per INTID).
pub fn register(intid: u32, handler: Handler) -> Result<(), IrqError> {
    let mut h = HANDLERS.lock();
    if h.iter().flatten().any(|(id, _)| *id == intid) {
        return Err(IrqError::Taken(intid));
    }
    let slot = h.iter_mut().find(|s| s.is_none()).ok_or(IrqError::Full)?;
    *slot = Some((intid, handler));
    Ok(())
}

fn handler_of(intid: u32) -> Option<Handler> {
    HANDLERS
        .lock()
        .iter()
        .flatten()
        .find(|(id, _)| *id == intid)
        .map(|&(_, f)| f)
}

/// Acknowledge and dispatch every pending interrupt on `cpu` (from the IRQ vector).
pub fn dispatch(cpu: usize) {
    while let Some(irq) = gic::ack() {
        match handler_of(irq.intid) {
            Some(f) => f(irq.intid, cpu),
            None => println!("irq: unhandled intid={} cpu={cpu}", irq.intid),
        }
        gic::eoi(irq);
    }
}
