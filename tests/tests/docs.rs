//! The documentation holds together (pure file reading, no QEMU):
//! - every `docs/*.md` page is linked from the README;
//! - every `docs/<page>.md[#anchor]` cited anywhere in the repository (code comments, scripts,
//!   docs) names a page that exists, and a heading of that page when it has an anchor;
//! - every relative link in the README and `docs/` resolves (file, and heading for anchors);
//! - every repository path quoted in backticks in the README and `docs/` exists;
//! - nothing cites the design documents that are not in the repository (the old `DESIGN`
//!   reference, the research notes): their content lives in `docs/design.md`.
//! - every command of a fenced block in the README and `docs/` works: `cargo run -- ...` is
//!   accepted by the runner's option parsing, `hotmem-bench ...` by the driver's (fenced
//!   blocks and inline spans), `cargo test --test X`
//!   names a test file (a block after `<!-- docs-test: skip (reason) -->` is left out);
//! - every `cargo test` the docs name (fenced or inline) runs test targets cargo has, each name
//!   filter selects a test of the binaries' own `--list`, and what the sentence says it selects
//!   ("only the 16K boots", "every 16K test", "one granule", "a subset") holds;
//! - every `key=` of the stable log lines in `docs/hotplug.md` is printed by the kernel, every
//!   key the kernel prints on a fully listed line is listed, and the listed `mode=` values are
//!   exactly the names `Mode::name` gives.

use hotmem_tests::docs::{code_mentions, documented_commands, words};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every text file of the repository (build output, VCS data and lock files left out), with its
/// path relative to the root.
fn text_files(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && name != ".git" && name != "__pycache__" {
                    stack.push(path);
                }
                continue;
            }
            if name == "Cargo.lock" || fs::metadata(&path).map_or(true, |m| m.len() > 1 << 20) {
                continue;
            }
            if let Ok(text) = fs::read_to_string(&path) {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

/// GitHub's anchors for the headings of a markdown text (outside code fences).
fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fence = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while seen.contains(&unique) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
        seen.insert(unique);
    }
    seen
}

/// Checks that `target` (a path relative to the root, possibly with `#anchor`) exists.
fn check_target(root: &Path, target: &str) -> Result<(), String> {
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let full = root.join(path);
    if !full.exists() {
        return Err(format!("{path} does not exist"));
    }
    if let Some(anchor) = anchor {
        if path.ends_with(".md") {
            let text = fs::read_to_string(&full).unwrap();
            if !anchors(&text).contains(anchor) {
                return Err(format!("{path} has no heading for #{anchor}"));
            }
        }
    }
    Ok(())
}

/// `docs/<page>.md[#anchor]` citations in any text.
fn doc_citations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        // Only `docs/` at the start of a path (not e.g. `rust-docs/`, or a URL's path).
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        rest = &rest[i + 5..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '/' || c == '.') {
            continue;
        }
        let end = tail[5..]
            .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .map_or(tail.len(), |e| e + 5);
        let mut cite = tail[..end].trim_end_matches('.').to_string();
        if !cite.ends_with(".md") {
            continue;
        }
        if let Some(anchor) = tail[end..].strip_prefix('#') {
            let a: String = anchor
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            cite = format!("{cite}#{a}");
        }
        out.push(cite);
    }
    out
}

/// Markdown links `](target)` outside code fences.
fn md_links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

/// Inline code spans that look like repository paths (`mm/src/…`, `.ci/run`, …), outside
/// code fences; placeholders and globs are left out.
fn quoted_paths(md: &str) -> Vec<String> {
    const TOP: [&str; 9] = [
        "arch/",
        "mm/",
        "platform/",
        "qemu/",
        "tests/",
        "linker/",
        "docs/",
        ".ci/",
        ".github/",
    ];
    let mut out = Vec::new();
    let mut fence = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        for (n, span) in line.split('`').enumerate() {
            if n % 2 == 0 || span.contains(' ') || span.contains('<') || span.contains('*') || span.contains("...") {
                continue;
            }
            if TOP.iter().any(|t| span.starts_with(t)) {
                out.push(span.trim_end_matches(':').to_string());
            }
        }
    }
    out
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let root = root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let links: BTreeSet<String> = md_links(&readme)
        .into_iter()
        .map(|l| l.split('#').next().unwrap().to_string())
        .collect();
    let mut unlinked = Vec::new();
    for entry in fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && !links.contains(&format!("docs/{name}")) {
            unlinked.push(format!("docs/{name}"));
        }
    }
    assert!(
        unlinked.is_empty(),
        "docs pages not linked from README.md: {unlinked:?}"
    );
}

#[test]
fn cited_docs_pages_and_sections_exist() {
    let root = root();
    let mut broken = Vec::new();
    for (file, text) in text_files(&root) {
        for cite in doc_citations(&text) {
            if let Err(e) = check_target(&root, &cite) {
                broken.push(format!("{file}: cites {cite}: {e}"));
            }
        }
    }
    assert!(broken.is_empty(), "citations of missing docs:\n{}", broken.join("\n"));
}

#[test]
fn markdown_links_and_quoted_paths_resolve() {
    let root = root();
    let mut pages: Vec<PathBuf> = vec![root.join("README.md")];
    for entry in fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in pages {
        let rel = page.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap().strip_prefix(&root).unwrap().to_path_buf();
        for link in md_links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let target = if let Some(anchor) = link.strip_prefix('#') {
                format!("{rel}#{anchor}")
            } else {
                dir.join(&link).to_string_lossy().into_owned()
            };
            if let Err(e) = check_target(&root, &target) {
                broken.push(format!("{rel}: link ({link}): {e}"));
            }
        }
        for path in quoted_paths(&text) {
            if !root.join(&path).exists() {
                broken.push(format!("{rel}: `{path}` does not exist"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links or paths:\n{}", broken.join("\n"));
}

#[test]
fn nothing_cites_documents_outside_the_repository() {
    // Spelled in pieces so this file does not cite them itself.
    let gone = [
        ["DESIGN", " §"].concat(),
        ["DESIGN", ".md"].concat(),
        ["research", "/"].concat(),
        ["digest", " §"].concat(),
        ["digest", " invariant"].concat(),
    ];
    let mut found = Vec::new();
    for (file, text) in text_files(&root()) {
        for (n, line) in text.lines().enumerate() {
            if let Some(g) = gone.iter().find(|g| line.contains(g.as_str())) {
                found.push(format!("{file}:{}: cites `{g}`: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "citations of documents not in the repository (use docs/design.md):\n{}",
        found.join("\n")
    );
}

/// Every `cargo run -- ...` of the docs is a command line the runner accepts, every
/// `hotmem-bench` option one the driver has, and every `cargo test` names test files that exist
/// and filters that select a test.
#[test]
fn documented_commands_parse() {
    let root = root();
    let mut errors = Vec::new();
    let mut cmds = documented_commands(&root);
    assert!(cmds.len() > 10, "found only {} commands", cmds.len());
    // Inline spans too: `cargo run -- ...` and `hotmem-bench ...` in the text.
    cmds.extend(
        code_mentions(&root)
            .into_iter()
            .filter(|m| m.3 && (m.1.starts_with("cargo ") || m.1.starts_with("hotmem-bench ")))
            .map(|(page, line, _, _)| (page, line, false)),
    );
    let mut bench = 0;
    for (page, line, _) in &cmds {
        let w = words(line);
        let after: Vec<String> = w.iter().skip_while(|a| *a != "--").skip(1).cloned().collect();
        let bench_args = if line.contains("--bin hotmem-bench") {
            Some(after.clone())
        } else if w[0] == "hotmem-bench" {
            Some(w[1..].to_vec())
        } else {
            None
        };
        if let Some(args) = bench_args {
            bench += 1;
            if let Err(e) = hotmem_qemu::bench::opts::Opts::try_parse_args(args) {
                let e = e.to_string();
                let e = e.lines().next().unwrap_or("");
                errors.push(format!("{page}: `{line}`: hotmem-bench refuses it: {e}"));
            }
        } else if w.get(1).map(String::as_str) == Some("run") && !line.contains(" -p ") {
            if let Err(e) = hotmem_qemu::cli::parse_args(after.clone()) {
                errors.push(format!("{page}: `{line}`: the runner refuses it: {e}"));
            }
        } else if w.get(1).map(String::as_str) == Some("test") {
            if let Some(i) = w.iter().position(|a| a == "--test") {
                let file = &w[i + 1];
                let found = ["tests/tests", "mm/tests", "qemu/tests"]
                    .iter()
                    .any(|d| root.join(d).join(format!("{file}.rs")).exists());
                if !found {
                    errors.push(format!("{page}: `{line}`: no test file {file}.rs"));
                }
            }
        }
    }
    assert!(bench >= 4, "found only {bench} hotmem-bench commands");
    assert!(
        errors.is_empty(),
        "documented commands that do not work:\n{}",
        errors.join("\n")
    );
}

/// The strings `Mode::name` of `mm/src/vmem.rs` returns: the `mode=` values of the
/// `virtio-mem:` line.
fn vmem_mode_names(root: &Path) -> BTreeSet<String> {
    let src = fs::read_to_string(root.join("mm/src/vmem.rs")).unwrap();
    let body = src
        .split("impl Mode {")
        .nth(1)
        .and_then(|s| s.split("fn name(self)").nth(1))
        .expect("mm/src/vmem.rs has Mode::name");
    let body = &body[..body.find("\n    }\n").expect("end of Mode::name")];
    body.split("=> \"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

/// Every `key=` that the stable-lines section of hotplug.md lists is printed by the kernel, and
/// every key the kernel prints on a documented line (`remove: ...`) is listed.
#[test]
fn stable_line_keys_are_printed() {
    let root = root();
    let page = fs::read_to_string(root.join("docs/hotplug.md")).unwrap();
    let section = page
        .split("## Stable log lines")
        .nth(1)
        .expect("hotplug.md has a Stable log lines section");
    let section = section.split("\n## ").next().unwrap();
    // The kernel's lines, and the values `mm` names for it (e.g. virtio-mem's modes).
    let mut src = String::new();
    let mut stack = vec![root.join("platform/src"), root.join("mm/src")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                src.push_str(&fs::read_to_string(p).unwrap());
            }
        }
    }
    let key = |w: &str| -> Option<String> {
        let k = w.split('=').next()?;
        (w.contains('=')
            && !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .then(|| k.to_string())
    };
    let mut errors = Vec::new();
    // Each backticked span of the section: a line's prefix and its keys (and listed values).
    let spans: Vec<&str> = section.split('`').skip(1).step_by(2).collect();
    for span in &spans {
        for w in span.split_whitespace() {
            let Some(k) = key(w) else { continue };
            if !src.contains(&format!("{k}=")) {
                errors.push(format!(
                    "hotplug.md lists `{k}=` (in `{span}`), which the kernel never prints"
                ));
            }
        }
    }
    // The other way: the kernel's format strings for the documented `<prefix>: ` lines.
    for span in &spans {
        let Some((prefix, rest)) = span.split_once(": ") else {
            continue;
        };
        let Some(first) = rest.split_whitespace().next().and_then(key) else {
            continue;
        };
        // A line the page abbreviates (`...`) lists some of its keys only.
        if spans
            .iter()
            .any(|s| s.starts_with(&format!("{prefix}: ")) && s.contains(".."))
        {
            continue;
        }
        let start = format!("\"{prefix}: {first}=");
        for (i, _) in src.match_indices(&start) {
            let lit = &src[i + 1..];
            let lit = &lit[..lit.find('"').unwrap_or(lit.len())];
            let listed: Vec<String> = spans
                .iter()
                .filter(|s| s.starts_with(&format!("{prefix}: ")))
                .flat_map(|s| s.split_whitespace().filter_map(key))
                .collect();
            for w in lit.split_whitespace().filter_map(key) {
                if !listed.contains(&w) {
                    errors.push(format!(
                        "the kernel prints `{w}=` on `{prefix}: {first}=...` lines; hotplug.md does not list it"
                    ));
                }
            }
        }
    }
    // `mode=a|b|c`: exactly the names `Mode::name` gives, each way (a mode the page leaves out is
    // a line a reader cannot decode).
    let names = vmem_mode_names(&root);
    assert!(!names.is_empty(), "no names found in Mode::name of mm/src/vmem.rs");
    let mut listed = BTreeSet::new();
    for span in &spans {
        for w in span.split_whitespace() {
            if let Some(vals) = w.strip_prefix("mode=") {
                listed.extend(vals.split('|').map(str::to_string));
            }
        }
    }
    for v in listed.difference(&names) {
        errors.push(format!("hotplug.md lists mode={v}, which Mode::name never gives"));
    }
    for v in names.difference(&listed) {
        errors.push(format!("Mode::name gives mode={v}, which hotplug.md does not list"));
    }
    errors.sort();
    errors.dedup();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Comments and docs state rules and reasons, not history: no issue or item numbers (a reader
/// has no issue tracker; the rule must stand on its own).
#[test]
fn no_issue_or_item_numbers_in_sources_or_docs() {
    let root = root();
    let mut found = Vec::new();
    for (path, text) in text_files(&root) {
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            let numbered = ["issue ", "issues ", "item "].iter().any(|w| {
                lower.match_indices(w).any(|(i, _)| {
                    let before = lower[..i].chars().next_back();
                    let after = lower[i + w.len()..].chars().next();
                    !before.is_some_and(|c| c.is_ascii_alphanumeric()) && after.is_some_and(|c| c.is_ascii_digit())
                })
            });
            if numbered || line.contains(concat!("the ", "brief")) {
                found.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "history instead of rules:\n{}", found.join("\n"));
}

/// What a `cargo test` command line selects: cargo's part (packages, targets, features) and
/// the test harness's (name filters, `--skip`, `--exact`, `--ignored`).
#[derive(Debug, Default)]
struct TestCmd {
    cargo: Vec<String>,
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
}

fn parse_test_cmd(line: &str) -> TestCmd {
    let w: Vec<String> = words(line)
        .into_iter()
        .skip_while(|w| w.contains('=') && !w.starts_with('-'))
        .skip(2)
        .collect();
    let mut cmd = TestCmd::default();
    let split = w.iter().position(|a| a == "--").unwrap_or(w.len());
    let mut it = w[..split].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" | "--package" | "--test" | "--features" => {
                cmd.cargo.push(a.clone());
                cmd.cargo.push(it.next().cloned().unwrap_or_default());
            }
            // Names do not depend on the profile: list from the debug build `cargo test` makes.
            // `--no-run` is what the listing adds itself.
            "--release" | "--no-run" => {}
            a if a.starts_with('-') => cmd.cargo.push(a.to_string()),
            f => cmd.filters.push(f.to_string()),
        }
    }
    let mut it = w.iter().skip(split + 1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--skip" => cmd.skips.push(it.next().cloned().unwrap_or_default()),
            "--exact" => cmd.exact = true,
            a if a.starts_with('-') => {}
            f => cmd.filters.push(f.to_string()),
        }
    }
    cmd
}

/// The tests (`target::path`) the test binaries of `cargo test <args>` hold, from the binaries
/// themselves: `cargo test <args> --no-run` (built already when `cargo test` runs) and each
/// binary's `--list`. Err: what cargo said (e.g. no such test target).
fn list_tests(root: &Path, args: &[String]) -> Result<Vec<String>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["test", "--no-run", "--message-format=json", "-q"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or(&err)
            .trim()
            .to_string());
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        if msg["profile"]["test"] != true {
            continue;
        }
        let target = msg["target"]["name"].as_str().unwrap_or("?");
        let list = std::process::Command::new(exe)
            .arg("--list")
            .output()
            .map_err(|e| format!("{exe}: {e}"))?;
        for l in String::from_utf8_lossy(&list.stdout).lines() {
            if let Some(name) = l.strip_suffix(": test") {
                tests.push(format!("{target}::{name}"));
            }
        }
    }
    Ok(tests)
}

/// The granules (`4k`, `16k`, `64k`) a test's name carries: its configuration suffix or its
/// `cfg_<granule>_<va>` module.
fn granules(test: &str) -> BTreeSet<&str> {
    test.split(['_', ':'])
        .filter(|t| ["4k", "16k", "64k"].contains(t))
        .collect()
}

/// Every `cargo test` the docs name runs test targets that exist, each name filter selects a
/// test, and what the text says it selects holds: "only the 16K ..." (every selected test is a
/// 16K one; "... boots": a `boot_*` test), "every 16K ..." (every 16K test of what it runs is
/// selected), "one granule", "a subset".
#[test]
fn documented_test_filters_select_what_the_docs_say() {
    let root = root();
    let mentions = documented_test_commands(&root);
    assert!(
        mentions.iter().filter(|m| m.1.contains(" -- ")).count() >= 3,
        "found only these cargo test commands: {mentions:#?}"
    );
    let mut cache: std::collections::HashMap<Vec<String>, Result<Vec<String>, String>> = Default::default();
    let mut errors = Vec::new();
    for (page, line, after) in &mentions {
        let cmd = parse_test_cmd(line);
        if cmd.cargo.is_empty() && cmd.filters.is_empty() && cmd.skips.is_empty() {
            continue;
        }
        let all = match cache
            .entry(cmd.cargo.clone())
            .or_insert_with(|| list_tests(&root, &cmd.cargo))
        {
            Ok(all) => all.clone(),
            Err(e) => {
                errors.push(format!("{page}: `{line}`: cargo refuses it: {e}"));
                continue;
            }
        };
        let selected = select_tests(&all, &cmd);
        let fail = |what: String| format!("{page}: `{line}` ({} selected): {what}", selected.len());
        if selected.is_empty() {
            errors.push(fail("selects no test".into()));
            continue;
        }
        errors.extend(claim_errors(after, &all, &selected).into_iter().map(fail));
    }
    assert!(
        errors.is_empty(),
        "documented test commands that do not select what the docs say:\n{}",
        errors.join("\n")
    );
}

/// `(page, line, text after it)` of every `cargo test` command the docs name.
fn documented_test_commands(root: &Path) -> Vec<(String, String, String)> {
    let is_test = |s: &str| {
        let w = words(s);
        let w: Vec<&String> = w
            .iter()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .collect();
        w.len() >= 2 && w[0] == "cargo" && w[1] == "test"
    };
    code_mentions(root)
        .into_iter()
        .filter(|m| is_test(&m.1))
        .map(|(page, line, after, _)| (page, line, after))
        .collect()
}

/// The path of a listed test inside its binary (`binary::path`): what the harness matches a
/// filter against.
fn test_path(t: &str) -> &str {
    t.split_once("::").unwrap().1
}

/// The tests of `all` that `cmd`'s filters and skips select.
fn select_tests<'a>(all: &'a [String], cmd: &TestCmd) -> Vec<&'a String> {
    all.iter()
        .filter(|t| {
            let p = test_path(t);
            (cmd.filters.is_empty()
                || cmd
                    .filters
                    .iter()
                    .any(|f| if cmd.exact { p == f } else { p.contains(f.as_str()) }))
                && !cmd.skips.iter().any(|s| p.contains(s.as_str()))
        })
        .collect()
}

/// What the text after a command says it selects, checked: "only the 16K ..." (and "... boots"),
/// "every 16K ...", "one granule", "a subset". Returns what does not hold.
fn claim_errors(after: &str, all: &[String], selected: &[&String]) -> Vec<String> {
    let mut errors = Vec::new();
    let granule_claim = |word: &str| {
        let at = after.find(word)? + word.len();
        let g = after[at..].split_whitespace().next()?;
        g.strip_suffix('k')
            .filter(|n| n.parse::<u32>().is_ok())
            .map(|_| g.to_string())
    };
    if let Some(g) = granule_claim("only the ") {
        for t in selected {
            if granules(t) != BTreeSet::from([g.as_str()]) {
                errors.push(format!("the docs say only {g}, but it selects {t}"));
            }
        }
        let noun = after[after.find(&format!("only the {g} ")).unwrap() + 10 + g.len()..]
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("");
        if noun == "boots" {
            for t in selected.iter().filter(|t| !test_path(t).starts_with("boot_")) {
                errors.push(format!("the docs say only boots, but it selects {t}"));
            }
        }
    }
    if let Some(g) = granule_claim("every ") {
        for t in all.iter().filter(|t| granules(t).contains(g.as_str())) {
            if !selected.contains(&t) {
                errors.push(format!("the docs say every {g} test, but it leaves out {t}"));
            }
        }
        for t in selected.iter().filter(|t| !granules(t).contains(g.as_str())) {
            errors.push(format!("the docs say {g} tests, but it selects {t}"));
        }
    }
    if after.contains("one granule") {
        let gs: BTreeSet<&str> = selected.iter().flat_map(|t| granules(t)).collect();
        if gs.len() != 1 || selected.iter().any(|t| granules(t).len() != 1) {
            errors.push(format!("the docs say one granule; it selects granules {gs:?}"));
        }
    }
    if after.contains("a subset") && selected.len() == all.len() {
        errors.push("the docs say a subset; it selects every test it builds".into());
    }
    errors
}

/// Whether `text` holds `word` as a whole identifier.
fn has_ident(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word)
        .any(|(i, _)| !text[..i].ends_with(is_ident) && !text[i + word.len()..].starts_with(is_ident))
}

/// A Rust path of the kernel's crates (`hotmem::kernel::mem::kernel_pt::KernelTables`,
/// `mm::vmemmap::Vmemmap::populate`, with `{impl#0}`/`{closure#0}` segments) resolves in the
/// source: the crate's directory, one file per module, the items declared in the last one.
fn resolve_rust_path(root: &Path, path: &str) -> Result<(), String> {
    let mut segs = path.split("::").filter(|s| !s.is_empty() && !s.starts_with('{'));
    let (mut dir, mut file) = match segs.next() {
        Some("hotmem") => (root.join("platform/src"), root.join("platform/src/main.rs")),
        Some(c @ ("mm" | "arch")) => (root.join(c).join("src"), root.join(c).join("src/lib.rs")),
        _ => return Ok(()),
    };
    let mut in_items = false;
    for seg in segs {
        if !in_items && dir.join(format!("{seg}.rs")).exists() {
            file = dir.join(format!("{seg}.rs"));
            dir = dir.join(seg);
        } else if !in_items && dir.join(seg).join("mod.rs").exists() {
            file = dir.join(seg).join("mod.rs");
            dir = dir.join(seg);
        } else if has_ident(&fs::read_to_string(&file).unwrap(), seg) {
            in_items = true;
        } else {
            let rel = file.strip_prefix(root).unwrap().display();
            return Err(format!("`{seg}` is neither a module nor an item of {rel}"));
        }
    }
    Ok(())
}

/// docs/gdb.md's commands and worked session name things that exist: every `hm-*` command
/// typed at `(gdb)` is one the extension defines; every `file.rs:N` it cites is a line inside
/// the function the same line names (the nearest `fn` at or above line N); every Rust path
/// of the kernel's crates resolves to a module and item in the source. Addresses are not
/// checked: they change with every build.
#[test]
fn gdb_page_matches_the_code() {
    let root = root();
    let page = fs::read_to_string(root.join("docs/gdb.md")).unwrap();
    let mut py = String::new();
    for e in fs::read_dir(root.join("qemu/gdb/hotmem_gdb")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "py") {
            py.push_str(&fs::read_to_string(p).unwrap());
        }
    }
    let mut errors = Vec::new();
    let (mut typed, mut cited, mut paths) = (0, 0, 0);
    for (n, line) in page.lines().enumerate() {
        let at = format!("docs/gdb.md:{}", n + 1);
        if let Some(cmd) = line.strip_prefix("(gdb) ") {
            let name = cmd.split_whitespace().next().unwrap_or("");
            if name.starts_with("hm-") {
                typed += 1;
                if !py.contains(&format!("name = \"{name}\"")) {
                    errors.push(format!("{at}: `{name}` is not a command of qemu/gdb/hotmem_gdb"));
                }
            }
        }
        // `dir/file.rs:N` citations.
        for (i, _) in line.match_indices(".rs:") {
            let start = line[..i]
                .rfind(|c: char| !(c.is_alphanumeric() || "/_-.".contains(c)))
                .map_or(0, |s| s + 1);
            let file = &line[start..i + 3];
            let num: String = line[i + 4..].chars().take_while(char::is_ascii_digit).collect();
            let Ok(num) = num.parse::<usize>() else { continue };
            if file.starts_with('/') || !file.contains('/') {
                continue;
            }
            cited += 1;
            let Ok(src) = fs::read_to_string(root.join(file)) else {
                errors.push(format!("{at}: cites {file}:{num}, which does not exist"));
                continue;
            };
            let above: Vec<&str> = src.lines().take(num).collect();
            if above.len() < num {
                errors.push(format!("{at}: cites {file}:{num}, past its end"));
                continue;
            }
            let func = above.iter().rev().find_map(|l| {
                let rest = l.split_once("fn ")?.1;
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                (!name.is_empty() && !l.trim_start().starts_with("//")).then_some(name)
            });
            match func {
                Some(f) if has_ident(&line[..start], &f) => {}
                f => errors.push(format!(
                    "{at}: cites {file}:{num} for {}, but that line is in fn {}",
                    line[..start].trim(),
                    f.unwrap_or_default()
                )),
            }
        }
        // Rust paths of the kernel's crates.
        for krate in ["hotmem::", "mm::", "arch::"] {
            for (i, _) in line.match_indices(krate) {
                if line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let path: String = line[i..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || "_:{}#".contains(*c))
                    .collect();
                paths += 1;
                if let Err(e) = resolve_rust_path(&root, &path) {
                    errors.push(format!("{at}: {path}: {e}"));
                }
            }
        }
    }
    assert!(
        typed >= 10 && cited >= 3 && paths >= 10,
        "found {typed} commands, {cited} citations, {paths} paths"
    );
    assert!(
        errors.is_empty(),
        "docs/gdb.md does not match the code:\n{}",
        errors.join("\n")
    );
}
