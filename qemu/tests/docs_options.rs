//! The runner's option table in `docs/runner.md` stays in step with the runner: every long
//! option `hotmem --help` prints has a row, every row names an option the runner has, and the
//! same for the host commands (`:plug`, ...) the help lists.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hotmem"))
        .arg("--help")
        .output()
        .expect("run hotmem --help");
    assert!(out.status.success(), "hotmem --help failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--name` tokens (and `:name` tokens when `prefix` is ':') of `text`.
fn tokens(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        let tail = &rest[i + prefix.len()..];
        rest = tail;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == ':') {
            continue;
        }
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            out.insert(format!("{prefix}{name}"));
        }
    }
    out
}

/// The names in the first column of the help's entries: lines that start (after indentation)
/// with `prefix` or `-x, prefix`, up to the first run of two spaces.
fn help_entries(help: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in help.lines() {
        // Visible aliases, as clap prints them: `[aliases: --va]`.
        if let Some(i) = line.find("[alias") {
            out.extend(tokens(&line[i..], prefix));
        }
        let t = line.trim_start();
        // A short form first (`-h, --help`, as clap prints it).
        let t = match t.as_bytes() {
            [b'-', c, b',', b' ', ..] if c.is_ascii_alphanumeric() => &t[4..],
            _ => t,
        };
        if !t.starts_with(prefix) || t.starts_with("---") {
            continue;
        }
        let head = t.split("  ").next().unwrap();
        out.extend(tokens(head, prefix));
    }
    out
}

/// The first column of the markdown table that follows `heading` in `md`.
fn table_first_column(md: &str, heading: &str) -> String {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("docs/runner.md has no heading {heading:?}"));
    let mut col = String::new();
    let mut in_table = false;
    for line in md[start..].lines().skip(1) {
        if line.starts_with('|') {
            in_table = true;
            col.push_str(line.split('|').nth(1).unwrap_or(""));
            col.push('\n');
        } else if in_table {
            break;
        }
    }
    col
}

#[test]
fn runner_md_tables_match_the_help() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let md = std::fs::read_to_string(root.join("docs/runner.md")).expect("read docs/runner.md");
    let help = help();

    let mut in_help = help_entries(&help, "--");
    in_help.remove("--help");
    let in_doc = tokens(&table_first_column(&md, "## Options"), "--");
    assert!(
        in_help.len() > 10,
        "too few options found in --help: {in_help:?}\n{help}"
    );
    let undocumented: Vec<_> = in_help.difference(&in_doc).collect();
    let unknown: Vec<_> = in_doc.difference(&in_help).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/runner.md's option table and `hotmem --help` disagree: options without a row: \
         {undocumented:?}; rows for options the runner does not have: {unknown:?}"
    );

    let cmds_help = help_entries(&help, ":");
    if !cmds_help.is_empty() {
        let cmds_doc = tokens(&table_first_column(&md, "## Host commands"), ":");
        let undocumented: Vec<_> = cmds_help.difference(&cmds_doc).collect();
        let unknown: Vec<_> = cmds_doc.difference(&cmds_help).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "docs/runner.md's host-command table and `hotmem --help` disagree: commands without \
             a row: {undocumented:?}; rows for commands the help does not list: {unknown:?}"
        );
    }
}
