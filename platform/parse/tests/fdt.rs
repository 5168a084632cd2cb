//! `parse::fdt`: a blob built here (header, `/memreserve/`, structure and strings blocks) walks
//! to its nodes and properties in order; `reg` and string lists decode by the parent's cells;
//! every malformed blob is a typed error naming where, and random, truncated or corrupted blobs
//! never panic.

use parse::dtb::Range;
use parse::fdt::{reg, str_value, strings, take_cells, Event, Fdt, FdtError, MAGIC, MAX_DEPTH};
use proptest::prelude::*;

/// One item of the structure block to build.
enum Item<'a> {
    Begin(&'a str),
    Prop(&'a str, &'a [u8]),
    End,
    Nop,
}

/// A DTB with `rsv` reservations and `items` (`FDT_END` appended), blocks in the usual order.
fn build(rsv: &[(u64, u64)], items: &[Item]) -> Vec<u8> {
    let mut strs: Vec<u8> = Vec::new();
    let mut st: Vec<u8> = Vec::new();
    let word = |v: &mut Vec<u8>, w: u32| v.extend_from_slice(&w.to_be_bytes());
    let pad = |v: &mut Vec<u8>| {
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
    };
    for it in items {
        match it {
            Item::Begin(name) => {
                word(&mut st, 1);
                st.extend_from_slice(name.as_bytes());
                st.push(0);
                pad(&mut st);
            }
            Item::Prop(name, value) => {
                let off = strs.len() as u32;
                strs.extend_from_slice(name.as_bytes());
                strs.push(0);
                word(&mut st, 3);
                word(&mut st, value.len() as u32);
                word(&mut st, off);
                st.extend_from_slice(value);
                pad(&mut st);
            }
            Item::End => word(&mut st, 2),
            Item::Nop => word(&mut st, 4),
        }
    }
    word(&mut st, 9);
    let rsv_off = 40u32;
    let mut rsvb: Vec<u8> = Vec::new();
    for &(a, s) in rsv.iter().chain(&[(0, 0)]) {
        rsvb.extend_from_slice(&a.to_be_bytes());
        rsvb.extend_from_slice(&s.to_be_bytes());
    }
    let st_off = rsv_off + rsvb.len() as u32;
    let strs_off = st_off + st.len() as u32;
    let total = strs_off + strs.len() as u32;
    let mut b = Vec::new();
    for w in [
        MAGIC,
        total,
        st_off,
        strs_off,
        rsv_off,
        17,
        16,
        0,
        strs.len() as u32,
        st.len() as u32,
    ] {
        word(&mut b, w);
    }
    b.extend(rsvb);
    b.extend(st);
    b.extend(strs);
    b
}

fn be(cells: &[u32]) -> Vec<u8> {
    cells.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// A small virt-like tree: root cells 2/2, two memory nodes, a UART, `/cpus` with cells 1/0.
fn virt_like() -> Vec<u8> {
    let two = be(&[2]);
    let mem0 = be(&[0, 0x4000_0000, 0, 0x4000_0000]);
    let mem1 = be(&[1, 0, 0, 0x1000_0000]);
    let one = be(&[1]);
    let zero = be(&[0]);
    let cpu1 = be(&[1]);
    use Item::*;
    build(
        &[(0x4800_0000, 0x1000)],
        &[
            Begin(""),
            Prop("#address-cells", &two),
            Prop("#size-cells", &two),
            Prop("model", b"linux,dummy-virt\0"),
            Begin("memory@40000000"),
            Prop("reg", &mem0),
            End,
            Nop,
            Begin("memory@100000000"),
            Prop("reg", &mem1),
            End,
            Begin("pl011@9000000"),
            Prop("compatible", b"arm,pl011\0arm,primecell\0"),
            End,
            Begin("cpus"),
            Prop("#address-cells", &one),
            Prop("#size-cells", &zero),
            Begin("cpu@1"),
            Prop("reg", &cpu1),
            End,
            End,
            End,
        ],
    )
}

fn events(blob: &[u8]) -> Result<Vec<String>, FdtError> {
    let fdt = Fdt::new(blob)?;
    let mut out = Vec::new();
    fdt.walk(|e| {
        out.push(match e {
            Event::Begin { name, depth } => format!("begin {depth} {name}"),
            Event::Prop { name, value } => format!("prop {name} {}", value.len()),
            Event::End { depth } => format!("end {depth}"),
        })
    })?;
    Ok(out)
}

#[test]
fn walk_reports_nodes_and_properties_in_blob_order() {
    let blob = virt_like();
    let ev = events(&blob).unwrap();
    assert_eq!(
        ev,
        [
            "begin 0 ",
            "prop #address-cells 4",
            "prop #size-cells 4",
            "prop model 17",
            "begin 1 memory@40000000",
            "prop reg 16",
            "end 1",
            "begin 1 memory@100000000",
            "prop reg 16",
            "end 1",
            "begin 1 pl011@9000000",
            "prop compatible 24",
            "end 1",
            "begin 1 cpus",
            "prop #address-cells 4",
            "prop #size-cells 4",
            "begin 2 cpu@1",
            "prop reg 4",
            "end 2",
            "end 1",
            "end 0",
        ]
    );
    let fdt = Fdt::new(&blob).unwrap();
    assert_eq!(fdt.total_size(), blob.len());
    assert_eq!(
        fdt.reservations().collect::<Vec<_>>(),
        [Range {
            base: 0x4800_0000,
            size: 0x1000
        }]
    );
}

#[test]
fn a_longer_buffer_is_bounded_by_totalsize() {
    let mut blob = virt_like();
    let total = blob.len();
    blob.extend(std::iter::repeat_n(0xff, 4096));
    assert_eq!(Fdt::new(&blob).unwrap().total_size(), total);
    assert_eq!(events(&blob).unwrap().len(), 21);
}

#[test]
fn reg_decodes_by_the_parents_cells() {
    let v = be(&[0, 0x4000_0000, 0, 0x4000_0000, 1, 0, 0, 0x1000]);
    let r: Vec<Range> = reg(&v, 2, 2).collect();
    assert_eq!(
        r,
        [
            Range {
                base: 0x4000_0000,
                size: 0x4000_0000
            },
            Range {
                base: 1 << 32,
                size: 0x1000
            }
        ]
    );
    let r: Vec<Range> = reg(&v, 1, 1).collect();
    assert_eq!(r.len(), 4);
    assert_eq!(
        r[1],
        Range {
            base: 0,
            size: 0x4000_0000
        }
    );
    // Size cells 0 (CPUs): every word is an address.
    let r: Vec<u64> = reg(&be(&[0, 1, 0x100]), 1, 0).map(|r| r.base).collect();
    assert_eq!(r, [0, 1, 0x100]);
    // A cut-short last entry is dropped; 0/0 cells decode nothing; more than 2 cells is refused.
    assert_eq!(reg(&v[..30], 2, 2).count(), 1);
    assert_eq!(reg(&v, 0, 0).count(), 0);
    assert_eq!(reg(&v, 3, 1).count(), 0);
    assert_eq!(take_cells(&be(&[1, 2]), 2), Some(((1 << 32) | 2, &[][..])));
}

#[test]
fn strings_and_string_lists() {
    assert_eq!(str_value(b"hvc\0"), Some("hvc"));
    assert_eq!(str_value(b"no-nul"), Some("no-nul"));
    assert_eq!(str_value(b"\xff\0"), None);
    let v: Vec<&str> = strings(b"arm,pl011\0arm,primecell\0").collect();
    assert_eq!(v, ["arm,pl011", "arm,primecell"]);
    let v: Vec<&str> = strings(b"a\0\xff\0b").collect();
    assert_eq!(v, ["a", "b"]);
}

/// Patch the big-endian word at `at`.
fn patch(blob: &mut [u8], at: usize, w: u32) {
    blob[at..at + 4].copy_from_slice(&w.to_be_bytes());
}

fn st_off(blob: &[u8]) -> usize {
    u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize
}

#[test]
fn malformed_blobs_are_typed_errors() {
    let good = virt_like();
    assert_eq!(
        Fdt::new(&good[..20]).unwrap_err(),
        FdtError::Truncated {
            need: good.len(),
            have: 20
        }
    );
    assert_eq!(
        Fdt::new(&good[..6]).unwrap_err(),
        FdtError::Truncated { need: 40, have: 6 }
    );
    assert_eq!(
        Fdt::new(&good[..good.len() - 1]).unwrap_err(),
        FdtError::Truncated {
            need: good.len(),
            have: good.len() - 1
        }
    );
    let mut b = good.clone();
    patch(&mut b, 0, 0xdead_beef);
    assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadMagic(0xdead_beef));
    let mut b = good.clone();
    patch(&mut b, 36, 0x10_0000); // size_dt_struct beyond the blob
    assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadBlock("struct"));
    let mut b = good.clone();
    patch(&mut b, 12, u32::MAX); // strings offset
    assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadBlock("strings"));

    // An unknown token where the first node begins.
    let mut b = good.clone();
    let s = st_off(&b);
    patch(&mut b, s, 7);
    assert_eq!(events(&b).unwrap_err(), FdtError::BadToken { offset: 0, token: 7 });
    // A property name outside the strings block.
    let mut b = good.clone();
    patch(&mut b, s + 4 + 4 + 8, 0xffff);
    assert_eq!(events(&b).unwrap_err(), FdtError::BadName { offset: 8 });
    // A property longer than the structure block.
    let mut b = good.clone();
    patch(&mut b, s + 8 + 4, 0x7fff_ffff);
    assert_eq!(events(&b).unwrap_err(), FdtError::StructEnd { offset: 8 });

    use Item::*;
    let open = build(&[], &[Begin(""), Begin("a"), End]);
    assert!(matches!(events(&open), Err(FdtError::BadNesting { .. })));
    let extra_end = build(&[], &[Begin(""), End, End]);
    assert!(matches!(events(&extra_end), Err(FdtError::BadNesting { .. })));
    let root_prop = build(&[], &[Prop("x", b"")]);
    assert!(matches!(events(&root_prop), Err(FdtError::BadNesting { offset: 0 })));
    let nest = |n: usize| -> Vec<Item> { (0..n).map(|_| Begin("n")).chain((0..n).map(|_| End)).collect() };
    assert!(events(&build(&[], &nest(MAX_DEPTH))).is_ok());
    assert!(matches!(
        events(&build(&[], &nest(MAX_DEPTH + 1))),
        Err(FdtError::BadNesting { .. })
    ));
    // Every error names what is wrong.
    let e = FdtError::BadToken { offset: 0x10, token: 7 };
    assert_eq!(e.to_string(), "unknown token 0x7 at structure offset 0x10");
}

#[test]
fn events_before_an_error_are_reported() {
    use Item::*;
    let b = build(&[], &[Begin(""), Begin("a"), Prop("p", b"x"), End]);
    let fdt = Fdt::new(&b).unwrap();
    let mut n = 0;
    assert!(fdt.walk(|_| n += 1).is_err());
    assert_eq!(n, 4);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if bytes.len() >= 8 {
            bytes[..4].copy_from_slice(&MAGIC.to_be_bytes());
            let len = bytes.len() as u32;
            bytes[4..8].copy_from_slice(&len.to_be_bytes());
        }
        if let Ok(f) = Fdt::new(&bytes) {
            let _ = f.reservations().count();
            let _ = f.walk(|_| {});
        }
    }

    #[test]
    fn corrupted_or_truncated_blobs_never_panic(at in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut b = virt_like();
        let at = at % b.len();
        b[at] = byte;
        b.truncate(cut.max(1).min(b.len()));
        if let Ok(f) = Fdt::new(&b) {
            let _ = f.reservations().count();
            let _ = f.walk(|e| {
                if let Event::Prop { value, .. } = e {
                    let _ = reg(value, 2, 2).count();
                    let _ = strings(value).count();
                }
            });
        }
    }
}
