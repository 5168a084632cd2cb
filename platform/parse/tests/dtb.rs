//! `parse::dtb`: property values as QEMU virt writes them (cells, the ECAM host bridge's
//! `bus-range` and `ranges`, GIC interrupt specifiers), and properties over random and
//! truncated values: nothing panics, and a value cut short decodes to a prefix of the whole
//! one (docs/platform.md).

use parse::dtb::{bus_range, cells, gic_interrupts, pci_host, pci_windows, PciHostProps, PciSpace, PciWindow, Range};
use proptest::prelude::*;

fn be(cells: &[u32]) -> Vec<u8> {
    cells.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// QEMU virt's `ranges` for its PCIe host bridge: I/O, 32-bit memory, prefetchable 64-bit memory.
fn virt_ranges() -> Vec<u8> {
    be(&[
        0x0100_0000,
        0,
        0,
        0,
        0x3eff_0000,
        0,
        0x1_0000, //
        0x0200_0000,
        0,
        0x1000_0000,
        0,
        0x1000_0000,
        0,
        0x2eff_0000, //
        0x4300_0000,
        0x80,
        0,
        0x80,
        0,
        0x80,
        0,
    ])
}

const ECAM: Range = Range {
    base: 0x40_1000_0000,
    size: 0x1000_0000,
};

#[test]
fn cells_are_big_endian_and_a_partial_cell_is_dropped() {
    assert_eq!(cells(&[]), Vec::<u32>::new());
    assert_eq!(cells(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1]), [0x1234_5678, 1]);
    assert_eq!(cells(&[0x12, 0x34, 0x56, 0x78, 0xff, 0xff, 0xff]), [0x1234_5678]);
}

#[test]
fn qemu_virt_ranges_decode_to_its_three_windows() {
    let w = pci_windows(&virt_ranges());
    assert_eq!(
        w,
        [
            PciWindow {
                space: PciSpace::Io,
                prefetchable: false,
                pci: 0,
                cpu: 0x3eff_0000,
                size: 0x1_0000
            },
            PciWindow {
                space: PciSpace::Mem32,
                prefetchable: false,
                pci: 0x1000_0000,
                cpu: 0x1000_0000,
                size: 0x2eff_0000
            },
            PciWindow {
                space: PciSpace::Mem64,
                prefetchable: true,
                pci: 0x80_0000_0000,
                cpu: 0x80_0000_0000,
                size: 0x80_0000_0000
            },
        ]
    );
    assert_eq!(pci_windows(&be(&[0; 7]))[0].space, PciSpace::Config);
}

#[test]
fn bus_range_takes_two_cells_or_follows_the_ecam_size() {
    assert_eq!(bus_range(Some(&be(&[0, 0xff])), ECAM), (0, 255));
    assert_eq!(bus_range(Some(&be(&[3, 0x1000])), ECAM), (3, 255));
    assert_eq!(bus_range(None, ECAM), (0, 255));
    assert_eq!(
        bus_range(
            None,
            Range {
                base: 0,
                size: 16 << 20
            }
        ),
        (0, 15)
    );
    assert_eq!(bus_range(None, Range { base: 0, size: 0 }), (0, 0));
    assert_eq!(bus_range(None, Range { base: 0, size: 1 << 40 }), (0, 255));
    // Not two cells: the ECAM size decides.
    assert_eq!(bus_range(Some(&be(&[1])), Range { base: 0, size: 2 << 20 }), (0, 1));
    assert_eq!(
        bus_range(Some(&be(&[1, 2, 3])), Range { base: 0, size: 2 << 20 }),
        (0, 1)
    );
}

#[test]
fn host_bridge_keeps_its_interrupt_map_as_cells() {
    let map = be(&[0x800, 0, 0, 1, 0x8000, 0, 0, 0, 3, 4]);
    let h = pci_host(
        ECAM,
        PciHostProps {
            bus_range: Some(&be(&[0, 0xff])),
            ranges: &virt_ranges(),
            interrupt_map: Some(&map),
            interrupt_map_mask: Some(&be(&[0x1800, 0, 0, 7])),
        },
    );
    assert_eq!((h.ecam, h.bus_start, h.bus_end, h.windows.len()), (ECAM, 0, 255, 3));
    assert_eq!(h.interrupt_map, cells(&map));
    assert_eq!(h.interrupt_map_mask, [0x1800, 0, 0, 7]);
    let bare = pci_host(ECAM, PciHostProps::default());
    assert!(bare.windows.is_empty() && bare.interrupt_map.is_empty() && bare.interrupt_map_mask.is_empty());
}

#[test]
fn gic_specifiers_give_spi_and_ppi_intids() {
    // The PL011 (SPI 1) and the timer's PPIs 13, 14 as QEMU virt writes them.
    assert_eq!(gic_interrupts(&be(&[0, 1, 4])), [33]);
    assert_eq!(gic_interrupts(&be(&[1, 13, 0xf04, 1, 14, 0xf04])), [29, 30]);
    assert_eq!(
        gic_interrupts(&be(&[0, 1, 4, 1, 13])),
        [33],
        "a truncated specifier is dropped"
    );
    assert_eq!(gic_interrupts(&be(&[0, u32::MAX, 4])), [31], "the sum wraps, no panic");
    assert_eq!(gic_interrupts(&[]), Vec::<u32>::new());
}

proptest! {
    #[test]
    fn random_values_decode_whole_cells_and_drop_the_rest(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let c = cells(&bytes);
        prop_assert_eq!(c.len(), bytes.len() / 4);
        prop_assert_eq!(be(&c), &bytes[..bytes.len() / 4 * 4]);
        prop_assert_eq!(pci_windows(&bytes).len(), bytes.len() / 28);
        prop_assert_eq!(gic_interrupts(&bytes).len(), bytes.len() / 12);
    }

    #[test]
    fn a_truncated_value_decodes_to_a_prefix(bytes in prop::collection::vec(any::<u8>(), 0..200), cut in 0usize..200) {
        let short = &bytes[..cut.min(bytes.len())];
        prop_assert!(cells(&bytes).starts_with(&cells(short)));
        prop_assert!(pci_windows(&bytes).starts_with(&pci_windows(short)));
        prop_assert!(gic_interrupts(&bytes).starts_with(&gic_interrupts(short)));
    }

    #[test]
    fn windows_round_trip_through_their_cells(
        spec in prop::collection::vec((0u32..4, any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()), 0..5),
    ) {
        let spaces = [PciSpace::Config, PciSpace::Io, PciSpace::Mem32, PciSpace::Mem64];
        let mut raw = Vec::new();
        for &(space, pf, pci, cpu, size) in &spec {
            let hi = (space << 24) | (u32::from(pf) << 30);
            let split = |v: u64| [(v >> 32) as u32, v as u32];
            raw.push(hi);
            raw.extend(split(pci).into_iter().chain(split(cpu)).chain(split(size)));
        }
        let want: Vec<PciWindow> = spec
            .iter()
            .map(|&(space, prefetchable, pci, cpu, size)| PciWindow {
                space: spaces[space as usize],
                prefetchable,
                pci,
                cpu,
                size,
            })
            .collect();
        prop_assert_eq!(pci_windows(&be(&raw)), want);
    }

    #[test]
    fn specifiers_decode_any_type_and_number(
        spec in prop::collection::vec((0u32..3, prop_oneof![any::<u32>(), u32::MAX - 40..=u32::MAX], any::<u32>()), 0..6),
    ) {
        let raw: Vec<u32> = spec.iter().flat_map(|&(kind, num, flags)| [kind, num, flags]).collect();
        let want: Vec<u32> = spec
            .iter()
            .map(|&(kind, num, _)| num.wrapping_add(if kind == 1 { 16 } else { 32 }))
            .collect();
        prop_assert_eq!(gic_interrupts(&be(&raw)), want);
    }

    #[test]
    fn any_host_bridge_properties_decode(
        ecam_size in any::<u64>(),
        bus in prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        ranges in prop::collection::vec(any::<u8>(), 0..80),
        map in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let ecam = Range { base: 0, size: ecam_size };
        let h = pci_host(
            ecam,
            PciHostProps { bus_range: bus.as_deref(), ranges: &ranges, interrupt_map: map.as_deref(), interrupt_map_mask: None },
        );
        prop_assert_eq!(h.windows.len(), ranges.len() / 28);
        if bus.as_ref().is_none_or(|b| b.len() / 4 != 2) {
            prop_assert_eq!(h.bus_start, 0);
            prop_assert_eq!(u64::from(h.bus_end) + 1, (ecam_size >> 20).clamp(1, 256));
        }
    }
}
