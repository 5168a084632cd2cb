//! The CI matrix runs the QEMU suite in slices (`.ci/slices`, run by `.ci/cell`): every test of
//! this package must fall in exactly one slice, so running all cells covers exactly what
//! `cargo test` covers and no test falls between cells.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `cargo test -p hotmem-tests -- --list <filter>` → test names (ignored ones included).
fn list(root: &Path, filter: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["test", "-q", "-p", "hotmem-tests", "--", "--list"])
        .args(filter)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo test --list {filter:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(String::from)
        .collect()
}

/// `.ci/slices`: `(name, filter arguments)`.
fn slices(root: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root.join(".ci/slices")).expect("read .ci/slices");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace().map(String::from);
            (w.next().unwrap(), w.collect())
        })
        .collect()
}

#[test]
fn every_test_is_in_exactly_one_slice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let all = list(root, &[]);
    assert!(all.len() > 50, "suspiciously few tests listed: {all:?}");
    let mut owner: BTreeMap<String, Vec<String>> = all.iter().map(|t| (t.clone(), Vec::new())).collect();
    for (name, filter) in slices(root) {
        let filter: Vec<&str> = filter.iter().map(String::as_str).collect();
        let got = list(root, &filter);
        assert!(!got.is_empty(), "slice {name} selects no test");
        for t in got {
            owner
                .get_mut(&t)
                .unwrap_or_else(|| panic!("slice {name} lists unknown test {t}"))
                .push(name.clone());
        }
    }
    let wrong: Vec<String> = owner
        .iter()
        .filter(|(_, s)| s.len() != 1)
        .map(|(t, s)| format!("{t}: in {s:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "tests not in exactly one slice:\n{}",
        wrong.join("\n")
    );
}
