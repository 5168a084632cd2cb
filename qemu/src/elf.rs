//! ELF64 → flat binary, like `objcopy -O binary`: every `PT_LOAD` segment's file bytes at
//! `p_paddr - lowest p_paddr`, gaps zero-filled. The result starts with the arm64 `Image`
//! header and is used both as `-kernel hotmem.bin` and as `-bios hotmem.bin`.

use object::elf::{FileHeader64, EM_AARCH64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian;

/// Refuse absurd outputs (a stray segment far away would make a huge file). Flash is 64 MiB.
pub const MAX_FLAT_SIZE: u64 = 256 << 20;
/// Size of pflash0 on `virt`: the largest `-bios` image QEMU accepts.
pub const FLASH_SIZE: u64 = 64 << 20;
/// Offset and value of the arm64 `Image` header magic (`ARM\x64`).
pub const IMAGE_MAGIC_OFFSET: usize = 0x38;
pub const IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ELF: {0}")]
pub struct ElfError(pub String);

/// The flat image and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    /// Lowest `p_paddr` of a segment with file bytes: the physical address of byte 0.
    pub load_base: u64,
    /// `e_entry` of the ELF.
    pub entry: u64,
    pub bytes: Vec<u8>,
}

impl FlatImage {
    /// True when the image starts with an arm64 `Image` header.
    pub fn has_image_header(&self) -> bool {
        has_image_header(&self.bytes)
    }
}

pub fn has_image_header(bytes: &[u8]) -> bool {
    bytes.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) == Some(&IMAGE_MAGIC[..])
}

/// Converts an ELF into the flat binary. Segments without file bytes (`.bss`) are left out,
/// as `objcopy -O binary` does: the image clears its own `.bss`.
pub fn elf_to_flat(elf: &[u8]) -> Result<FlatImage, ElfError> {
    let bad = |e: object::Error| ElfError(e.to_string());
    let header = FileHeader64::<LittleEndian>::parse(elf).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let machine = header.e_machine(endian);
    if machine != EM_AARCH64 {
        return Err(ElfError(format!("e_machine is {machine}, not AArch64 ({EM_AARCH64})")));
    }
    // (physical address, file bytes) of every PT_LOAD segment that has file bytes.
    let mut segs = Vec::new();
    for (i, ph) in header.program_headers(endian, elf).map_err(bad)?.iter().enumerate() {
        if ph.p_type(endian) != PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let data = ph
            .data(endian, elf)
            .map_err(|()| ElfError(format!("segment {i} file bytes lie outside the file")))?;
        segs.push((ph.p_paddr(endian), data));
    }
    let base = segs
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or_else(|| ElfError("no PT_LOAD segment with file bytes".into()))?;
    let mut end = base;
    for (paddr, data) in &segs {
        let e = paddr
            .checked_add(data.len() as u64)
            .ok_or_else(|| ElfError("segment wraps the address space".into()))?;
        end = end.max(e);
    }
    let size = end - base;
    if size > MAX_FLAT_SIZE {
        return Err(ElfError(format!(
            "flat image would be {size:#x} bytes (segments from {base:#x} to {end:#x}); limit is {MAX_FLAT_SIZE:#x}"
        )));
    }
    let mut bytes = vec![0u8; size as usize];
    let mut placed: Vec<(u64, u64)> = Vec::new();
    for (paddr, data) in &segs {
        let (a, b) = (paddr - base, paddr - base + data.len() as u64);
        if let Some(&(c, d)) = placed.iter().find(|&&(c, d)| a < d && c < b) {
            return Err(ElfError(format!(
                "segments overlap in the flat image ({:#x}..{:#x} and {:#x}..{:#x})",
                a + base,
                b + base,
                c + base,
                d + base
            )));
        }
        placed.push((a, b));
        bytes[a as usize..b as usize].copy_from_slice(data);
    }
    Ok(FlatImage {
        load_base: base,
        entry: header.e_entry(endian),
        bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal ELF64 AArch64 file with the given `(paddr, vaddr, data, memsz)` segments.
    pub(crate) fn make_elf(entry: u64, segs: &[(u64, u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let mut data_off = phoff + 56 * segs.len() as u64;
        let mut out = vec![0u8; data_off as usize];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // version
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&EM_AARCH64.0.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, (paddr, vaddr, data, memsz)) in segs.iter().enumerate() {
            let ph = (phoff + 56 * i as u64) as usize;
            out[ph..ph + 4].copy_from_slice(&PT_LOAD.0.to_le_bytes());
            out[ph + 8..ph + 16].copy_from_slice(&data_off.to_le_bytes());
            out[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            out[ph + 32..ph + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            out[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
            data_off += data.len() as u64;
        }
        for (_, _, data, _) in segs {
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn places_segments_by_paddr_and_zero_fills_gaps() {
        let mut text = vec![0xaau8; 0x40];
        text[IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4].copy_from_slice(&IMAGE_MAGIC);
        // Segments out of order; vaddr differs from paddr (high-half kernel); bss-only segment
        // below everything must not move the base.
        let elf = make_elf(
            0x4020_0000,
            &[
                (0x4020_1000, 0xffff_0000_0020_1000, &[1, 2, 3, 4], 0x10),
                (0x4020_0000, 0xffff_0000_0020_0000, &text, 0x40),
                (0x4000_0000, 0xffff_0000_0000_0000, &[], 0x1000),
            ],
        );
        let img = elf_to_flat(&elf).unwrap();
        assert_eq!(img.load_base, 0x4020_0000);
        assert_eq!(img.entry, 0x4020_0000);
        assert_eq!(img.bytes.len(), 0x1004);
        assert_eq!(&img.bytes[..0x38], &[0xaa; 0x38][..]);
        assert!(img.has_image_header());
        assert!(img.bytes[0x40..0x1000].iter().all(|&b| b == 0));
        assert_eq!(&img.bytes[0x1000..], &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(elf_to_flat(b"not an elf at all, but long enough to have a header......................").is_err());
        let mut elf = make_elf(0, &[(0, 0, &[1], 1)]);
        elf[18] = 62; // x86-64
        assert!(elf_to_flat(&elf).unwrap_err().0.contains("AArch64"));
        let elf = make_elf(0, &[(0, 0, &[], 0x100)]);
        assert!(elf_to_flat(&elf).unwrap_err().0.contains("no PT_LOAD"));
        let elf = make_elf(0, &[(0, 0, &[1; 8], 8), (4, 4, &[2; 8], 8)]);
        assert!(elf_to_flat(&elf).unwrap_err().0.contains("overlap"));
        let elf = make_elf(0, &[(0, 0, &[1], 1), (1 << 40, 0, &[2], 1)]);
        assert!(elf_to_flat(&elf).unwrap_err().0.contains("limit"));
        let mut elf = make_elf(0, &[(0, 0, &[1; 8], 8)]);
        elf.truncate(elf.len() - 1);
        assert!(elf_to_flat(&elf).unwrap_err().0.contains("outside the file"));
    }
}
