//! QEMU fw_cfg over MMIO: read a named file (the kernel command line in firmware mode, where
//! QEMU does not accept `-append`; QEMU's ACPI tables). Registers: data at +0 (reads of 1 to 8
//! bytes take that many bytes of the item, in string order), selector at +8 (16-bit,
//! big-endian), and, where the device offers it, the DMA address at +0x10 (64-bit, big-endian):
//! one write has QEMU copy a whole item into memory, where the data register costs one exit
//! per 8 bytes.

use crate::boot::layout;
use alloc::{boxed::Box, string::String, vec::Vec};
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_structs,
    registers::{ReadOnly, WriteOnly},
};

register_structs! {
    FwCfgRegs {
        (0x00 => data: ReadOnly<u64>),
        (0x08 => selector: WriteOnly<u16>),
        (0x0a => _r0),
        (0x10 => dma: WriteOnly<u64>),
        (0x18 => @END),
    }
}

/// Bytes of the register block with the DMA register.
const DMA_REGION: u64 = 0x18;
/// The signature and feature-bits keys.
const FW_CFG_ID: u16 = 0x01;
/// `FW_CFG_ID` bit: the DMA interface is there.
const ID_DMA: u32 = 1 << 1;
/// The file directory key.
const FW_CFG_FILE_DIR: u16 = 0x19;

/// Name of the command-line file the host runner passes with `-fw_cfg`.
pub const CMDLINE_FILE: &str = "opt/org.hotmem/cmdline";
/// QEMU's ACPI tables (firmware mode).
pub const ACPI_TABLES_FILE: &str = "etc/acpi/tables";

register_structs! {
    /// The same registers with the data register read a byte at a time (the tail of an item).
    FwCfgByte {
        (0x00 => data: ReadOnly<u8>),
        (0x01 => _r0),
        (0x08 => _selector: WriteOnly<u16>),
        (0x0a => @END),
    }
}

/// A DMA request (`FWCfgDmaAccess`), every field big-endian; QEMU clears `control` when done,
/// or leaves [`DMA_ERROR`] in it.
#[repr(C, align(16))]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}
const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SELECT: u32 = 1 << 3;

pub struct FwCfg {
    regs: &'static FwCfgRegs,
    byte: &'static FwCfgByte,
    dma: bool,
    /// A DMA read failed (and was done through the data register instead).
    dma_failed: core::cell::Cell<bool>,
}

impl FwCfg {
    /// # Safety
    /// `va` must be a permanent device mapping of the fw_cfg MMIO registers, `size` bytes of
    /// them as the DTB gives (at least the data and selector registers), in a mapping of whole
    /// pages.
    pub unsafe fn new(va: u64, size: u64) -> Self {
        // SAFETY: per the caller's contract, `va` maps the registers for good in whole pages, so
        // the struct's span is mapped (tock-registers cells: shared references are fine); the
        // DMA register is only written when `size` says it is there.
        let regs = unsafe { &*(va as *const FwCfgRegs) };
        // SAFETY: as above; the same MMIO registers, seen byte-wide.
        let byte = unsafe { &*(va as *const FwCfgByte) };
        let mut f = FwCfg {
            regs,
            byte,
            dma: false,
            dma_failed: core::cell::Cell::new(false),
        };
        f.dma = size >= DMA_REGION
            && u32::from_le_bytes(f.read_mmio(FW_CFG_ID, 4).try_into().unwrap_or_default()) & ID_DMA != 0;
        f
    }

    /// Whether whole items come by DMA (cheap), not 8 bytes per register read.
    pub fn has_dma(&self) -> bool {
        self.dma
    }

    /// How the items came, for the boot line: `ok` (DMA), `failed` (a DMA read failed and the
    /// data register served it), `none` (no DMA interface).
    pub fn dma_state(&self) -> &'static str {
        match (self.dma, self.dma_failed.get()) {
            (false, _) => "none",
            (true, false) => "ok",
            (true, true) => "failed",
        }
    }

    /// The first `len` bytes of item `key`.
    fn read_item(&self, key: u16, len: usize) -> Vec<u8> {
        if self.dma {
            match self.read_dma(key, len) {
                Some(v) => return v,
                None => self.dma_failed.set(true),
            }
        }
        self.read_mmio(key, len)
    }

    fn read_mmio(&self, key: u16, len: usize) -> Vec<u8> {
        self.regs.selector.set(key.to_be());
        let mut buf = alloc::vec![0; len];
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            // The device is big-endian: the little-endian CPU sees the item's bytes in order.
            w.copy_from_slice(&self.regs.data.get().to_le_bytes());
        }
        for b in words.into_remainder() {
            *b = self.byte.data.get();
        }
        buf
    }

    /// One DMA read of `len` bytes from the start of item `key` (`None`: the device refused).
    fn read_dma(&self, key: u16, len: usize) -> Option<Vec<u8>> {
        use aarch64_cpu::asm::barrier;
        let mut buf = alloc::vec![0u8; len];
        let req = Box::new(DmaAccess {
            control: ((u32::from(key) << 16) | DMA_SELECT | DMA_READ).to_be(),
            length: u32::try_from(len).ok()?.to_be(),
            address: layout::virt_to_phys(buf.as_mut_ptr() as u64).to_be(),
        });
        // The request reaches memory before the register write that starts the device on it.
        barrier::dsb(barrier::SY);
        self.regs
            .dma
            .set(layout::virt_to_phys(&*req as *const DmaAccess as u64).to_be());
        // QEMU completes the transfer within the register write; a device that has not after
        // 100 ms is given up on (the caller falls back to the data register).
        let deadline = arch::cpu::counter() + arch::cpu::counter_freq() / 10;
        let control = loop {
            // SAFETY: `req` is ours and alive; the device writes `control` behind the
            // compiler's back, so it is read volatile.
            let c = u32::from_be(unsafe { core::ptr::read_volatile(&req.control) });
            if c & !DMA_ERROR == 0 {
                break c;
            }
            if arch::cpu::counter() > deadline {
                // The device may still write `buf` and `req`: leave them to it.
                core::mem::forget(buf);
                core::mem::forget(req);
                return None;
            }
            core::hint::spin_loop();
        };
        // The device's writes to `buf` are seen after its completion.
        barrier::dsb(barrier::SY);
        (control & DMA_ERROR == 0).then_some(buf)
    }

    /// Contents of the fw_cfg file `name` (at most `max` bytes), if QEMU has it.
    pub fn read_file(&self, name: &str, max: usize) -> Option<Vec<u8>> {
        let head = self.read_item(FW_CFG_FILE_DIR, 4);
        let count = u32::from_be_bytes(head.try_into().ok()?).min(4096) as usize;
        let dir = self.read_item(FW_CFG_FILE_DIR, 4 + 64 * count);
        for e in dir[4..].chunks_exact(64) {
            let size = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize;
            let key = u16::from_be_bytes([e[4], e[5]]);
            let n = e[8..].iter().position(|&c| c == 0).unwrap_or(56);
            if &e[8..8 + n] == name.as_bytes() {
                return Some(self.read_item(key, size.min(max)));
            }
        }
        None
    }
}

/// The command line from fw_cfg (trailing NULs and whitespace trimmed).
pub fn cmdline(f: &FwCfg) -> Option<String> {
    let data = f.read_file(CMDLINE_FILE, 64 << 10)?;
    Some(
        String::from_utf8_lossy(&data)
            .trim_end_matches(['\0', ' ', '\n'])
            .into(),
    )
}
