//! `parse::acpi::memory_slots`: the DIMM slot count from QEMU's memory hotplug AML, every
//! integer encoding QEMU's `aml_int` emits, and hostile tables.

use parse::acpi::{dsdt_len, memory_slots};
use proptest::prelude::*;

/// `Device (MHPC) { Name (_HID, "PNP0A06") ... Name (MDNR, <int>) ... }` as QEMU lays it out,
/// with a reference to `MDNR` in a method before it could appear (`LLess (Local0, MDNR)`).
fn dsdt(int: &[u8]) -> Vec<u8> {
    let mut t = b"DSDT\x00\x10\x00\x00\x02\x00BOCHS BXPC    ".to_vec();
    t.extend_from_slice(b"\x5b\x82\x2aMHPC\x08_HID\x0dPNP0A06\x00");
    t.extend_from_slice(b"\x08MDNR");
    t.extend_from_slice(int);
    t.extend_from_slice(b"\x14\x0cMSCN\x00\xa2\x08\x95\x60MDNR");
    t
}

#[test]
fn every_integer_encoding() {
    assert_eq!(memory_slots(&dsdt(b"\x0a\x08"), 256), Some(8), "BytePrefix");
    assert_eq!(memory_slots(&dsdt(b"\x01"), 256), Some(1), "OneOp");
    assert_eq!(memory_slots(&dsdt(b"\x0b\x00\x01"), 256), Some(256), "WordPrefix");
    assert_eq!(
        memory_slots(&dsdt(b"\x0c\x20\x00\x00\x00"), 256),
        Some(32),
        "DWordPrefix"
    );
}

#[test]
fn no_slots_or_out_of_range_is_none() {
    assert_eq!(memory_slots(&dsdt(b"\x00"), 256), None, "ZeroOp: no slots");
    assert_eq!(memory_slots(&dsdt(b"\x0b\x01\x01"), 256), None, "257 slots");
    assert_eq!(memory_slots(&dsdt(b"\xff"), 256), None, "OnesOp");
    assert_eq!(memory_slots(b"\x08MDNR\x0a", 256), None, "truncated");
    assert_eq!(memory_slots(b"\x08MDNR\x0b\x08", 256), None, "truncated word");
    assert_eq!(memory_slots(b"", 256), None);
    // Only the reference, no declaration.
    assert_eq!(memory_slots(b"\xa2\x08\x95\x60MDNR\x0a\x08", 256), None);
}

#[test]
fn dsdt_header() {
    assert_eq!(dsdt_len(&dsdt(b"\x0a\x08")), Some(0x1000));
    assert_eq!(dsdt_len(b"FACP\x00\x10\x00\x00"), None, "another table first");
    assert_eq!(dsdt_len(b"DSDT\x10\x00\x00\x00"), None, "shorter than a header");
    assert_eq!(dsdt_len(b"DSDT\x00"), None, "truncated");
}

#[test]
fn the_declaration_wins_over_a_later_reference() {
    // `\x08` before a reference is a PkgLength here, and comes after the declaration.
    let t = dsdt(b"\x0a\x04");
    assert_eq!(memory_slots(&t, 256), Some(4));
}

proptest! {
    #[test]
    fn hostile_tables_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0u32..300) {
        if let Some(n) = memory_slots(&bytes, max) {
            prop_assert!((1..=max).contains(&n));
        }
        if let Some(n) = dsdt_len(&bytes) {
            prop_assert!(n >= 36);
        }
    }
}
