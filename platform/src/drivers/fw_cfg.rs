//! QEMU fw_cfg over MMIO: read a named file (used for the kernel command line in firmware
//! mode, where QEMU does not accept `-append`). Registers: data at +0 (reads of 1 to 8 bytes
//! take that many bytes of the item, in string order), selector at +8 (16-bit, big-endian).

use alloc::{string::String, vec::Vec};
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_structs,
    registers::{ReadOnly, WriteOnly},
};

register_structs! {
    FwCfgRegs {
        (0x00 => data: ReadOnly<u64>),
        (0x08 => selector: WriteOnly<u16>),
        (0x0a => @END),
    }
}

/// The file directory key.
const FW_CFG_FILE_DIR: u16 = 0x19;

/// Name of the command-line file the host runner passes with `-fw_cfg`.
pub const CMDLINE_FILE: &str = "opt/org.hotmem/cmdline";

register_structs! {
    /// The same registers with the data register read a byte at a time (the tail of an item).
    FwCfgByte {
        (0x00 => data: ReadOnly<u8>),
        (0x01 => _r0),
        (0x08 => _selector: WriteOnly<u16>),
        (0x0a => @END),
    }
}

pub struct FwCfg {
    regs: &'static FwCfgRegs,
    byte: &'static FwCfgByte,
}

impl FwCfg {
    /// # Safety
    /// `va` must be a permanent device mapping of the fw_cfg MMIO registers.
    pub unsafe fn new(va: u64) -> Self {
        // SAFETY: per the caller's contract, `va` maps the registers for good (tock-registers
        // cells: shared references are fine).
        let regs = unsafe { &*(va as *const FwCfgRegs) };
        // SAFETY: as above; the same MMIO registers, seen byte-wide.
        let byte = unsafe { &*(va as *const FwCfgByte) };
        FwCfg { regs, byte }
    }

    fn select(&self, key: u16) {
        self.regs.selector.set(key.to_be());
    }

    /// The next `buf.len()` bytes of the selected item: 8 per access (each an exit to QEMU
    /// under TCG: the 2 KiB file directory costs ~10 ms read a byte at a time), then bytes.
    fn read(&self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            // The device is big-endian: the little-endian CPU sees the item's bytes in order.
            w.copy_from_slice(&self.regs.data.get().to_le_bytes());
        }
        for b in words.into_remainder() {
            *b = self.byte.data.get();
        }
    }

    fn read_be32(&self) -> u32 {
        let mut b = [0; 4];
        self.read(&mut b);
        u32::from_be_bytes(b)
    }

    /// Contents of the fw_cfg file `name`, if QEMU has it.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        self.select(FW_CFG_FILE_DIR);
        let count = self.read_be32().min(4096);
        for _ in 0..count {
            let mut e = [0u8; 64];
            self.read(&mut e);
            let size = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize;
            let key = u16::from_be_bytes([e[4], e[5]]);
            let n = e[8..].iter().position(|&c| c == 0).unwrap_or(56);
            if &e[8..8 + n] == name.as_bytes() {
                self.select(key);
                let mut data = alloc::vec![0; size.min(64 << 10)];
                self.read(&mut data);
                return Some(data);
            }
        }
        None
    }
}

/// The command line from fw_cfg (trailing NULs and whitespace trimmed).
pub fn cmdline(f: &FwCfg) -> Option<String> {
    let data = f.read_file(CMDLINE_FILE)?;
    Some(
        String::from_utf8_lossy(&data)
            .trim_end_matches(['\0', ' ', '\n'])
            .into(),
    )
}
