//! No hand-rolled register bits outside the register definitions: ESR,
//! MPIDR/MIDR, PAR, GIC, GED/memory-hotplug, PSCI and PCI configuration values are read and
//! composed through `aarch64-cpu`'s registers or `register_bitfields!`/`register_structs!`, not
//! with shifts and masks written out.
//!
//! Pure source reading over `arch/src` and `platform/src`, comments removed. A *register
//! definition* is the body of a `register_bitfields!` or `register_structs!` invocation; a
//! `#[cfg(test)] mod` is skipped too (expected values are written as numbers on purpose). Outside
//! those, a line is reported when it holds:
//! - **a field written out**: a shift by a literal amount (`>> 26`, `<< 0x4`) or a mask with a
//!   hex or binary literal (`& 0x3f`, `| 0b11`, `& !0x2`), on a line that names a register
//!   value (`esr`, `mpidr`, `midr`, `par`, as a word or a word part: `esr_el1`, `ESR`), in any
//!   file; or anywhere in a *register file* ([`REGISTER_FILES`]: the drivers and the arch code
//!   that talk to these registers), where no field may be written out at all;
//! - **a register value written out in the boot assembly** (`arch/src/boot.rs`): an immediate
//!   shifted by a literal (`#(1 << 31)`) or a hex immediate moved into a register (`mov x0,
//!   #0x33ff`).
//!
//! Shifts by a *variable* amount stay allowed: they index a bitmap (`1 << cpu` in a target
//! list, one bit per interrupt in an enable register), they do not write out a field position.

use std::path::{Path, PathBuf};

/// Files that program or decode the registers in scope: every field in them goes through a
/// register definition.
const REGISTER_FILES: &[&str] = &[
    "arch/src/boot.rs",
    "arch/src/cpu.rs",
    "arch/src/exception.rs",
    "arch/src/mmu.rs",
    "arch/src/sysreg.rs",
    "platform/src/drivers/ged.rs",
    "platform/src/drivers/gic.rs",
    "platform/src/drivers/pci.rs",
    "platform/src/drivers/pl011.rs",
    "platform/src/drivers/psci.rs",
    "platform/src/drivers/timer.rs",
    "platform/src/kernel/trap.rs",
];

/// Names of register values: a line naming one may not write out a field, in any file.
const REGISTER_NAMES: &[&str] = &["esr", "mpidr", "midr", "par"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Blank out `src[from..to]`, keeping the newlines (so line numbers stay right).
fn blank(src: &mut [u8], from: usize, to: usize) {
    for b in &mut src[from..to] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

/// The source with comments, register definitions and test modules blanked out. Block comments
/// go first (the boot assembly uses them too), then line comments: a `//` that is not inside a
/// `"…"` string on its line.
fn code_only(src: &str) -> String {
    let mut b = src.as_bytes().to_vec();
    let mut i = 0;
    while let Some(n) = find(&b, i, b"/*") {
        let end = find(&b, n, b"*/").map_or(b.len(), |e| e + 2);
        blank(&mut b, n, end);
        i = end;
    }
    let mut start = 0;
    while start < b.len() {
        let end = b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |n| start + n);
        let mut in_str = false;
        let mut j = start;
        while j < end {
            match b[j] {
                b'\\' if in_str => j += 1,
                b'"' => in_str = !in_str,
                b'/' if !in_str && b.get(j + 1) == Some(&b'/') => {
                    blank(&mut b, j, end);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        start = end + 1;
    }
    for pat in [&b"register_bitfields!"[..], b"register_structs!", b"#[cfg(test)]"] {
        let mut i = 0;
        while let Some(n) = find(&b, i, pat) {
            let Some(open) = b[n..].iter().position(|&c| c == b'{').map(|o| n + o) else {
                break;
            };
            // `#[cfg(test)]` counts only on a module.
            if pat.starts_with(b"#")
                && !String::from_utf8_lossy(&b[n + pat.len()..open])
                    .trim_start()
                    .starts_with("mod ")
            {
                i = n + pat.len();
                continue;
            }
            let mut depth = 0;
            let mut end = b.len();
            for (k, &c) in b.iter().enumerate().skip(open) {
                match c {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            blank(&mut b, n, end);
            i = end;
        }
    }
    String::from_utf8(b).expect("blanking keeps UTF-8 (only ASCII bytes are replaced)")
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// A shift by a literal amount: `<<`/`>>` followed by a (possibly parenthesised) number.
fn literal_shift(line: &str) -> bool {
    ["<<", ">>"].iter().any(|op| {
        line.match_indices(op).any(|(i, _)| {
            let rest = line[i + 2..].trim_start_matches([' ', '(', '=']);
            // `<<=`/`>>=` compound assignments are shifts too; `>>` closing generics is not
            // followed by a digit.
            rest.starts_with(|c: char| c.is_ascii_digit())
        })
    })
}

/// A mask with a hex or binary literal: `&`/`|` followed by (`!`, `(`) `0x…`/`0b…`.
fn literal_mask(line: &str) -> bool {
    let b = line.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        if c != b'&' && c != b'|' {
            return false;
        }
        let rest = line[i + 1..].trim_start_matches([' ', '!', '(', '=']);
        rest.starts_with("0x") || rest.starts_with("0b") || rest.starts_with("0X") || rest.starts_with("0B")
    })
}

/// Whether the line names a register value: a word (identifier) that is one of
/// [`REGISTER_NAMES`] or has one as an `_`-separated part, any case.
fn names_register(line: &str) -> bool {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| {
            let w = word.to_ascii_lowercase();
            w.split('_').any(|part| REGISTER_NAMES.contains(&part))
        })
}

/// A register value written out in assembly: `#(… << n …)` or `mov xN, #0x…`.
fn asm_literal(line: &str) -> bool {
    let t = line.trim_start();
    let mov_hex = (t.starts_with("mov ") || t.starts_with("movz ") || t.starts_with("movk "))
        && t.split_once('#')
            .is_some_and(|(_, imm)| imm.trim_start().starts_with("0x"));
    let shifted_imm = t.split_once("#(").is_some_and(|(_, e)| literal_shift(e));
    mov_hex || shifted_imm
}

/// Every finding in one file's source: `(line number, rule, line)`.
fn findings(rel: &str, src: &str) -> Vec<(usize, &'static str, String)> {
    let register_file = REGISTER_FILES.contains(&rel);
    let code = code_only(src);
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let field = literal_shift(line) || literal_mask(line);
        let rule = if field && register_file {
            Some("field written out in a register file")
        } else if field && names_register(line) {
            Some("field of a named register value written out")
        } else if rel == "arch/src/boot.rs" && asm_literal(line) {
            Some("register value written out in the boot assembly")
        } else {
            None
        };
        if let Some(rule) = rule {
            out.push((n + 1, rule, src.lines().nth(n).unwrap_or("").trim().to_string()));
        }
    }
    out
}

#[test]
fn no_hand_rolled_register_bits() {
    let root = workspace();
    let mut files = Vec::new();
    rs_files(&root.join("arch/src"), &mut files);
    rs_files(&root.join("platform/src"), &mut files);
    assert!(files.len() > 40, "found only {} source files: wrong root?", files.len());
    for f in REGISTER_FILES {
        assert!(
            root.join(f).is_file(),
            "{f} is listed as a register file but does not exist"
        );
    }
    let mut report = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for (line, rule, text) in findings(&rel, &src) {
            report.push(format!("{rel}:{line}: {rule}: {text}"));
        }
    }
    assert!(
        report.is_empty(),
        "hand-rolled register bits (use the register's fields: aarch64-cpu, or register_bitfields! \
         next to the register block):\n{}",
        report.join("\n")
    );
}

/// The rules themselves, on the shapes they must catch and the ones they must let through.
#[test]
fn rules_catch_hand_rolled_bits() {
    let hits = |rel: &str, src: &str| findings(rel, src).len();
    // ESR decoded by hand, anywhere.
    assert_eq!(hits("platform/src/shell/x.rs", "let ec = esr >> 26;"), 1);
    assert_eq!(hits("platform/src/shell/x.rs", "let fsc = ESR_EL1.get() & 0x3f;"), 1);
    assert_eq!(hits("platform/src/ktest/x.rs", "if (esr & 0x3f) >> 2 == 1 {}"), 1);
    assert_eq!(hits("platform/src/kernel/x.rs", "let aff1 = (mpidr >> 8) & 0xff;"), 1);
    assert_eq!(
        hits("arch/src/x.rs", "Ok((par & 0x0000_ffff_ffff_f000) | (va & 0xfff))"),
        1
    );
    // Flags and fields by hand in a register file.
    assert_eq!(hits("platform/src/drivers/ged.rs", "pub const INSERT: u8 = 1 << 1;"), 1);
    assert_eq!(
        hits("platform/src/drivers/gic.rs", "d.ctlr.set((1 << 4) | (1 << 1) | 1);"),
        1
    );
    assert_eq!(
        hits(
            "platform/src/drivers/gic.rs",
            "let lines = ((d.typer.get() & 0x1f) + 1) * 32;"
        ),
        1
    );
    assert_eq!(
        hits("platform/src/drivers/gic.rs", "r.waker.set(r.waker.get() & !(1 << 1));"),
        1
    );
    // Boot assembly immediates.
    assert_eq!(
        hits("arch/src/boot.rs", "    mov     x0, #(1 << 31)          // HCR_EL2.RW"),
        1
    );
    assert_eq!(hits("arch/src/boot.rs", "    mov     x0, #0x3c5"), 1);
    // Let through: register definitions, comments, tests, bitmaps, sizes outside register files.
    let ok = [
        (
            "platform/src/drivers/gic.rs",
            "register_bitfields! {u32,\n  X [ A OFFSET(4) NUMBITS(1) [] ]\n}",
        ),
        ("platform/src/drivers/gic.rs", "// GICD_CTLR = (1 << 4) | 1\nlet x = 1;"),
        (
            "platform/src/drivers/gic.rs",
            "let t = 1u64 << (m.aff0() % 16); d.isenabler[i].write(bit.val(1));",
        ),
        (
            "platform/src/drivers/gic.rs",
            "#[cfg(test)]\nmod tests {\n    let x = esr >> 26;\n}",
        ),
        ("platform/src/kernel/smp.rs", "const STACK: u64 = 64 << 10;"),
        (
            "platform/src/shell/x.rs",
            "println!(\"esr={esr:#x}\");\nlet w = v >> 1;",
        ),
        (
            "platform/src/drivers/gic.rs",
            "#[cfg(test)]\nuse x;\nfn f() { let x = 1; }",
        ),
        ("platform/src/shell/x.rs", "let parse = v >> 4; // comparator, not PAR"),
        (
            "arch/src/boot.rs",
            "    mov     x0, #{ram_base}\n    ldr     x0, ={hcr_el2}",
        ),
        ("arch/src/boot.rs", "fn f() -> Vec<Vec<u8>> { x >>= y; }"),
    ];
    for (rel, src) in ok {
        assert_eq!(findings(rel, src), vec![], "{rel}: {src:?}");
    }
}
