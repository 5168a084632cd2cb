//! The kernel crate's layering (docs/platform.md, "Code map"): no import circle among
//! `platform/src`'s modules, at file granularity and at top-level-folder granularity; the
//! folders import only what the code map allows, so nothing imports `shell/` or `ktest/` but
//! `main.rs`, which wires them in.
//!
//! Pure source reading, no compiler: every `crate::a::b` path (also inside `use crate::{..}`
//! groups, and `$crate::` in macros) and every use of a `#[macro_export]` macro is an edge from
//! the file to the module that defines it. Comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The crate root (`main.rs`): it may import everything, and nothing may import it.
const ROOT: &str = "main";

/// Top-level folder → the top-level folders it may import (besides itself). `config` is the
/// generated configuration module (`main.rs` includes it); everyone may use it.
const ALLOWED: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("boot", &["config"]),
    ("drivers", &["boot", "config"]),
    ("kernel", &["boot", "drivers", "config"]),
    ("workload", &["boot", "drivers", "kernel", "config"]),
    ("shell", &["boot", "drivers", "kernel", "workload", "config"]),
    ("ktest", &["boot", "drivers", "kernel", "workload", "config"]),
];

/// A cycle in `g` (its nodes in order, the first repeated at the end), if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    fn visit(g: &Graph, n: &str, marks: &mut BTreeMap<String, Mark>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::OnStack);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match marks.get(m.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnStack => {
                    let at = stack.iter().position(|s| s == m).expect("on the stack");
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(g, m, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if marks.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(g, n, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Source without comments (line, block and doc comments); string literals are kept as they
/// are (no `crate::` paths sit in them).
fn strip_comments(src: &str) -> String {
    let (b, mut out, mut i) = (src.as_bytes(), String::with_capacity(src.len()), 0);
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' {
                out.push_str(&src[i..i + 2]);
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
            }
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            in_str = true;
        } else if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        } else if src[i..].starts_with("/*") {
            i = src[i..].find("*/").map_or(b.len(), |n| i + n + 2);
            continue;
        }
        let ch = src[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths named after `crate::` at the start of `s`: `a::b::c`, or a `{..}` group of them.
fn paths_after(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    let mut i = 0;
    loop {
        let rest = &s[i..];
        let trimmed = rest.trim_start();
        i += rest.len() - trimmed.len();
        if trimmed.starts_with('{') {
            i += 1;
            loop {
                let rest = &s[i..];
                let t = rest.trim_start();
                i += rest.len() - t.len();
                if t.starts_with('}') {
                    return i + 1;
                }
                if t.starts_with(',') {
                    i += 1;
                    continue;
                }
                if t.is_empty() {
                    return i;
                }
                i += paths_after(&s[i..], &path, out);
            }
        }
        let n = trimmed.find(|c: char| !is_ident(c)).unwrap_or(trimmed.len());
        if n == 0 {
            out.push(path);
            return i;
        }
        path.push(trimmed[..n].to_string());
        i += n;
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// Every `crate::…` path in a (comment-free) source file.
fn crate_paths(src: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = src[from..].find("crate::") {
        let start = from + at;
        let before = src[..start].chars().next_back();
        from = start + "crate::".len();
        if before.is_some_and(is_ident) {
            continue;
        }
        from += paths_after(&src[from..], &[], &mut out);
    }
    out
}

/// The module a source file defines: `boot/early.rs` → `boot::early`, `kernel/mem/mod.rs` →
/// `kernel::mem`, `main.rs` → [`ROOT`].
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file");
    let stem = last.strip_suffix(".rs").expect("a .rs file");
    if stem != "mod" && stem != "main" {
        parts.push(stem.to_string());
    }
    if parts.is_empty() {
        ROOT.to_string()
    } else {
        parts.join("::")
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read platform/src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module graph of `platform/src` at file granularity: module → modules it imports.
fn file_graph(src_dir: &Path) -> Graph {
    let mut files = Vec::new();
    rs_files(src_dir, &mut files);
    let sources: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            (
                module_of(f.strip_prefix(src_dir).expect("under src")),
                strip_comments(&text),
            )
        })
        .collect();
    let mut modules: BTreeSet<String> = sources.keys().cloned().collect();
    // Inline modules of the root (`mod config { include!(..) }`) are nodes of their own.
    for line in sources[ROOT].lines() {
        if let Some(name) = line.trim().strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
            modules.insert(name.to_string());
        }
    }
    // `#[macro_export]` macros live at the crate root by path; their edge goes to the file that
    // defines them.
    let mut macros = BTreeMap::new();
    for (m, s) in &sources {
        let mut rest = s.as_str();
        while let Some(at) = rest.find("#[macro_export]") {
            rest = &rest[at..];
            if let Some(def) = rest.find("macro_rules!") {
                let name: String = rest[def + "macro_rules!".len()..]
                    .trim_start()
                    .chars()
                    .take_while(|&c| is_ident(c))
                    .collect();
                macros.insert(name, m.clone());
            }
            rest = &rest["#[macro_export]".len()..];
        }
    }
    let resolve = |path: &[String]| -> String {
        if let [name] = path {
            if let Some(m) = macros.get(name) {
                return m.clone();
            }
        }
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|p| modules.contains(p))
            .unwrap_or_else(|| ROOT.to_string())
    };
    let mut g = Graph::new();
    for (m, s) in &sources {
        let mut to: BTreeSet<String> = crate_paths(s).iter().map(|p| resolve(p)).collect();
        for (name, def) in &macros {
            let used = s
                .match_indices(&format!("{name}!"))
                .any(|(at, _)| !s[..at].ends_with(is_ident) && !s[..at].ends_with("macro_rules! "));
            if used {
                to.insert(def.clone());
            }
        }
        to.remove(m);
        g.insert(m.clone(), to);
    }
    for m in &modules {
        g.entry(m.clone()).or_default();
    }
    g
}

/// Top-level folder of a module (`kernel::mem::memory` → `kernel`).
fn folder(m: &str) -> &str {
    m.split("::").next().expect("non-empty")
}

/// The graph between top-level folders (the root left out: it wires everything in).
fn folder_graph(files: &Graph) -> Graph {
    let mut g = Graph::new();
    for (m, to) in files.iter().filter(|(m, _)| m.as_str() != ROOT) {
        let e = g.entry(folder(m).to_string()).or_default();
        e.extend(to.iter().map(|t| folder(t).to_string()).filter(|t| t != folder(m)));
    }
    g
}

fn platform_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../platform/src")
}

fn show(cycle: &[String]) -> String {
    cycle.join(" -> ")
}

#[test]
fn platform_has_no_import_cycle_between_files() {
    let g = file_graph(&platform_src());
    assert!(g.len() > 20, "found only {} modules in platform/src", g.len());
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle among platform's modules: {}", show(&c));
    }
}

#[test]
fn platform_has_no_import_cycle_between_folders() {
    let g = folder_graph(&file_graph(&platform_src()));
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle among platform's folders: {}", show(&c));
    }
}

#[test]
fn platform_folders_import_only_what_the_code_map_allows() {
    let files = file_graph(&platform_src());
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (m, to) in files.iter().filter(|(m, _)| m.as_str() != ROOT) {
        let Some(ok) = allowed.get(folder(m)) else {
            bad.push(format!("{m}: in no folder of the code map"));
            continue;
        };
        for t in to.iter().filter(|t| folder(t) != folder(m) && !ok.contains(&folder(t))) {
            bad.push(format!("{m} imports {t}"));
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the code map (docs/platform.md):\n{}",
        bad.join("\n")
    );
}

fn graph(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry(a.to_string()).or_default().insert(b.to_string());
        g.entry(b.to_string()).or_default();
    }
    g
}

#[test]
fn cycle_finder_on_synthetic_graphs() {
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    let c = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")])).expect("a cycle");
    assert_eq!(show(&c), "b -> c -> d -> b");
    let c = find_cycle(&graph(&[("x", "x")])).expect("a self-loop");
    assert_eq!(show(&c), "x -> x");
}

#[test]
fn path_reader_on_synthetic_sources() {
    let src = strip_comments(
        "use crate::{boot::dtb::Range, kernel::{console, mem::memory::{self, VMEMMAP}}, println};\n\
         // crate::shell::nothing\n\
         fn f() { crate::drivers::gic::enable_spi(1); $crate::kernel::console::_print(x); }\n\
         /* crate::ktest */ let s = \"a // b\"; crate::config::Cfg;",
    );
    let got: Vec<String> = crate_paths(&src).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        got,
        [
            "boot::dtb::Range",
            "kernel::console",
            "kernel::mem::memory::self",
            "kernel::mem::memory::VMEMMAP",
            "println",
            "drivers::gic::enable_spi",
            "kernel::console::_print",
            "config::Cfg",
        ]
    );
    assert_eq!(module_of(Path::new("kernel/mem/mod.rs")), "kernel::mem");
    assert_eq!(module_of(Path::new("boot/early.rs")), "boot::early");
    assert_eq!(module_of(Path::new("main.rs")), ROOT);
}
