//! What the kernel reads from QEMU's ACPI tables (the fw_cfg file `etc/acpi/tables`) without an
//! AML interpreter: the number of DIMM slots, from the memory hotplug device's
//! `Name (MDNR, n)` (QEMU `build_memory_hotplug_aml`), so the GED's slot scan covers exactly the
//! slots QEMU has. On `virt` the DSDT, which holds it, is the first table of the file (the file
//! itself is padded to 128 KiB), so only the DSDT is read: [`dsdt_len`] from its header.

/// Bytes of an ACPI table header.
pub const HEADER_LEN: usize = 36;

/// The length of the DSDT whose header starts `header` (`None`: not a DSDT header, or a length
/// shorter than a header).
pub fn dsdt_len(header: &[u8]) -> Option<usize> {
    if header.get(..4)? != b"DSDT" {
        return None;
    }
    let len = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?) as usize;
    (len >= HEADER_LEN).then_some(len)
}

/// The memory hotplug device's slot count: the first `Name (MDNR, n)` in `tables` (AML
/// `NameOp` 0x08, the name `MDNR`, then an integer: `ZeroOp`, `OneOp`, `BytePrefix`,
/// `WordPrefix` or `DWordPrefix`), if it is there and `1..=max`. `None` otherwise (no memory
/// hotplug, or tables this parser does not understand: the caller scans every possible slot).
pub fn memory_slots(tables: &[u8], max: u32) -> Option<u32> {
    const DECL: &[u8] = b"\x08MDNR";
    let at = tables.windows(DECL.len()).position(|w| w == DECL)? + DECL.len();
    let rest = &tables[at..];
    let n = match *rest.first()? {
        0x00 => 0,
        0x01 => 1,
        0x0a => u32::from(*rest.get(1)?),
        0x0b => u32::from(u16::from_le_bytes(rest.get(1..3)?.try_into().ok()?)),
        0x0c => u32::from_le_bytes(rest.get(1..5)?.try_into().ok()?),
        _ => return None,
    };
    (1..=max).contains(&n).then_some(n)
}
