//! PL011 UART: polled transmit, interrupt-driven receive into a ring the shell reads.

use tock_registers::{
    interfaces::{Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite, WriteOnly},
};

register_bitfields! {u32,
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    LCR_H [
        WLEN OFFSET(5) NUMBITS(2) [EightBit = 0b11],
        FEN OFFSET(4) NUMBITS(1) []
    ],
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    INT [
        /// Receive timeout.
        RT OFFSET(6) NUMBITS(1) [],
        /// Receive.
        RX OFFSET(4) NUMBITS(1) []
    ]
}

register_structs! {
    pub Pl011Regs {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _r0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _r1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => _ifls),
        (0x38 => imsc: ReadWrite<u32, INT::Register>),
        (0x3c => _ris),
        (0x40 => _mis),
        (0x44 => icr: WriteOnly<u32, INT::Register>),
        (0x48 => @END),
    }
}

/// A PL011 at a fixed VA (kept as an address so the driver can sit in a `static`).
pub struct Pl011 {
    base: u64,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the VA of a device mapping of a PL011's registers, valid forever.
    pub unsafe fn new(base: u64) -> Self {
        Pl011 { base }
    }

    fn regs(&self) -> &Pl011Regs {
        // SAFETY: `new`'s contract: a permanent device mapping of the registers.
        unsafe { &*(self.base as *const Pl011Regs) }
    }

    /// Enable 8-bit FIFO mode, TX, RX and the receive interrupts. Rewriting LCR_H flushes the
    /// FIFOs, so bytes already received (typed during boot) are handed to `keep` first.
    pub fn init(&self, mut keep: impl FnMut(u8)) {
        let lcr = LCR_H::WLEN::EightBit + LCR_H::FEN::SET;
        if self.regs().lcr_h.get() != lcr.value {
            while let Some(b) = self.getc() {
                keep(b);
            }
            self.regs().cr.set(0);
            self.regs().lcr_h.write(lcr);
        }
        self.regs().cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
        self.regs().imsc.write(INT::RX::SET + INT::RT::SET);
    }

    pub fn putc(&self, c: u8) {
        while self.regs().fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs().dr.set(c as u32);
    }

    /// Next received byte, if any.
    pub fn getc(&self) -> Option<u8> {
        if self.regs().fr.is_set(FR::RXFE) {
            None
        } else {
            Some(self.regs().dr.get() as u8)
        }
    }

    pub fn clear_rx_interrupt(&self) {
        self.regs().icr.write(INT::RX::SET + INT::RT::SET);
    }
}
