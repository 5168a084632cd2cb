//! The layering of the kernel crate and of the host crate: no import circle among their files.
//!
//! - `platform/src` (docs/platform.md, "Code map"): no circle at file granularity (by its
//!   `crate::` paths) and at top-level-folder granularity; the folders import only what the code map allows, so nothing
//!   imports `shell/` or `ktest/` but `main.rs`, which wires them in.
//! - `qemu/src` (docs/runner.md, "Code map of the host crate"): no circle among the library's
//!   files and its binaries (`main.rs`, `bin/*.rs`, each a node importing the library).
//!
//! Pure source reading, no compiler: every `crate::a::b` path (also inside `use crate::{..}`
//! groups, and `$crate::` in macros), in `qemu/src` every `super::`, `self::` and child-module
//! path (`dimm::` in `host_cmd/mod.rs`), and every use of a `#[macro_export]` macro is an edge from the file to
//! the module that defines the item; a name re-exported with `pub use` leads to the module
//! that defines it. A binary's `hotmem_qemu::` paths are edges into the library. Comments are
//! skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The kernel crate's root (`main.rs`): it may import everything, and nothing may import it.
const ROOT: &str = "main";
/// The host library's root (`qemu/src/lib.rs`).
const QEMU_LIB_ROOT: &str = "lib";

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
/// `kernel::mem`, the crate root (`main.rs`, `lib.rs`) → `root`.
fn module_of(rel: &Path, root: &str) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file");
    let stem = last.strip_suffix(".rs").expect("a .rs file");
    let is_root = parts.is_empty() && (stem == "main" || stem == "lib");
    if stem != "mod" && !is_root {
        parts.push(stem.to_string());
    }
    if parts.is_empty() {
        root.to_string()
    } else {
        parts.join("::")
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// One crate's sources: module → comment-free source, every module (also the root's inline
/// ones), and the root's name.
struct Crate {
    sources: BTreeMap<String, String>,
    modules: BTreeSet<String>,
    root: String,
}

/// The crate whose root is `src_dir/<root_file>`, made of `files` (paths under `src_dir`).
fn read_crate(src_dir: &Path, files: &[PathBuf], root: &str) -> Crate {
    let sources: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            (
                module_of(f.strip_prefix(src_dir).expect("under src"), root),
                strip_comments(&text),
            )
        })
        .collect();
    let mut modules: BTreeSet<String> = sources.keys().cloned().collect();
    // Inline modules of the root (`mod config { include!(..) }`) are nodes of their own.
    for line in sources[root].lines() {
        if let Some(name) = line.trim().strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
            modules.insert(name.to_string());
        }
    }
    Crate {
        sources,
        modules,
        root: root.to_string(),
    }
}

/// The byte ranges of the inline modules (`mod tests { .. }`) of a rustfmt-formatted source:
/// from the `mod` line to the `}` line at its indentation.
fn inline_modules(src: &str) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut at = 0;
    for l in src.split_inclusive('\n') {
        lines.push((at, l));
        at += l.len();
    }
    let mut spans = Vec::new();
    for (i, &(start, l)) in lines.iter().enumerate() {
        let t = l.trim();
        let item = t
            .strip_prefix("pub ")
            .or_else(|| t.strip_prefix("pub(crate) "))
            .unwrap_or(t);
        let is_mod = item
            .strip_prefix("mod ")
            .and_then(|r| r.strip_suffix(" {"))
            .is_some_and(|n| !n.is_empty() && n.chars().all(is_ident));
        if !is_mod {
            continue;
        }
        let close = format!("{}}}", &l[..l.len() - l.trim_start().len()]);
        if let Some(&(end, e)) = lines[i + 1..].iter().find(|(_, e)| e.trim_end() == close) {
            spans.push((start, end + e.len()));
        }
    }
    spans
}

/// Is `src[..at]` the end of a path segment (an identifier or `::` right before `at`)?
fn continues_a_path(src: &str, at: usize) -> bool {
    src[..at].ends_with(is_ident) || src[..at].ends_with("::") || src[..at].ends_with('$')
}

/// How much of a source names its crate's items.
#[derive(Clone, Copy, PartialEq)]
enum Paths {
    /// `crate::` paths and exported macros only (the kernel crate's reading).
    CrateOnly,
    /// Also `super::`, `self::` and child-module paths.
    Relative,
}

/// Every path in module `m`'s source that names an item of its crate, made absolute:
/// `crate::` paths, and with [`Paths::Relative`] `super::` and `self::` paths and paths
/// through `m`'s child modules.
fn local_paths(c: &Crate, m: &str, src: &str, reading: Paths) -> Vec<Vec<String>> {
    let mut out = crate_paths(src);
    if reading == Paths::CrateOnly {
        return out;
    }
    let here: Vec<String> = if m == c.root {
        Vec::new()
    } else {
        m.split("::").map(String::from).collect()
    };
    let inline = inline_modules(src);
    let depth = |at: usize| inline.iter().filter(|(a, b)| (*a..*b).contains(&at)).count();
    for (at, _) in src.match_indices("super::") {
        if continues_a_path(src, at) {
            continue;
        }
        let mut rest = &src[at..];
        let mut up: usize = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        // Inside an inline module the first `super`s stay in this file.
        let up = up.saturating_sub(depth(at));
        if up == 0 || up > here.len() {
            continue;
        }
        paths_after(rest, &here[..here.len() - up], &mut out);
    }
    for (at, _) in src.match_indices("self::") {
        if !continues_a_path(src, at) && depth(at) == 0 {
            paths_after(&src[at + "self::".len()..], &here, &mut out);
        }
    }
    let prefix = if m == c.root { String::new() } else { format!("{m}::") };
    let children: Vec<&str> = c
        .modules
        .iter()
        .filter_map(|x| x.strip_prefix(prefix.as_str()))
        .filter(|x| !x.is_empty() && !x.contains("::") && *x != c.root)
        .collect();
    for child in children {
        for (at, _) in src.match_indices(&format!("{child}::")) {
            if !continues_a_path(src, at) && depth(at) == 0 {
                paths_after(&src[at..], &here, &mut out);
            }
        }
    }
    out
}

/// The `pub use` items of a source: (name it is known by here, the path it names).
fn reexports(src: &str) -> Vec<(String, Vec<String>)> {
    fn tree(s: &str, prefix: &[String], out: &mut Vec<(String, Vec<String>)>) {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            let mut level = 0;
            let mut from = 0;
            for (i, ch) in inner.char_indices().chain([(inner.len(), ',')]) {
                match ch {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        tree(&inner[from..i], prefix, out);
                        from = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        if s.is_empty() {
            return;
        }
        if let Some((head, rest)) = s.split_once("::") {
            if !head.contains(char::is_whitespace) {
                let mut p = prefix.to_vec();
                p.push(head.to_string());
                return tree(rest, &p, out);
            }
        }
        let (name, alias) = match s.split_once(" as ") {
            Some((n, a)) => (n.trim(), a.trim()),
            None => (s, s),
        };
        let mut p = prefix.to_vec();
        if name != "self" {
            p.push(name.to_string());
        }
        let alias = if alias == "self" {
            prefix.last().map_or("", String::as_str)
        } else {
            alias
        };
        if !alias.is_empty() && alias != "*" {
            out.push((alias.to_string(), p));
        }
    }
    let mut out = Vec::new();
    for stmt in src.split(';') {
        let t = stmt.trim();
        let Some(body) = t.strip_prefix("pub use ").or_else(|| t.strip_prefix("pub(crate) use ")) else {
            continue;
        };
        tree(body, &[], &mut out);
    }
    out
}

/// Resolves absolute paths of crate `c` to the module that defines their item.
struct Resolver<'a> {
    c: &'a Crate,
    /// (module, name) → the path a `pub use` there names, made absolute.
    reexports: BTreeMap<(String, String), Vec<String>>,
    /// `#[macro_export]` macro → the module that defines it.
    macros: BTreeMap<String, String>,
}

impl<'a> Resolver<'a> {
    fn new(c: &'a Crate) -> Self {
        let mut r = Resolver {
            c,
            reexports: BTreeMap::new(),
            macros: BTreeMap::new(),
        };
        for (m, s) in &c.sources {
            let here: Vec<String> = if *m == c.root {
                Vec::new()
            } else {
                m.split("::").map(String::from).collect()
            };
            for (name, path) in reexports(s) {
                let abs = match path.first().map(String::as_str) {
                    Some("crate") => path[1..].to_vec(),
                    Some("self") => here.iter().cloned().chain(path[1..].iter().cloned()).collect(),
                    Some("super") if !here.is_empty() => here[..here.len() - 1]
                        .iter()
                        .cloned()
                        .chain(path[1..].iter().cloned())
                        .collect(),
                    // A child module's path, or another crate's (left unresolved).
                    Some(first)
                        if c.modules.contains(
                            &here
                                .iter()
                                .cloned()
                                .chain([first.to_string()])
                                .collect::<Vec<_>>()
                                .join("::"),
                        ) =>
                    {
                        here.iter().cloned().chain(path.iter().cloned()).collect()
                    }
                    _ => continue,
                };
                r.reexports.insert((m.clone(), name), abs);
            }
        }
        // `#[macro_export]` macros live at the crate root by path; their edge goes to the file
        // that defines them.
        for (m, s) in &c.sources {
            let mut rest = s.as_str();
            while let Some(at) = rest.find("#[macro_export]") {
                rest = &rest[at..];
                if let Some(def) = rest.find("macro_rules!") {
                    let name: String = rest[def + "macro_rules!".len()..]
                        .trim_start()
                        .chars()
                        .take_while(|&c| is_ident(c))
                        .collect();
                    r.macros.insert(name, m.clone());
                }
                rest = &rest["#[macro_export]".len()..];
            }
        }
        r
    }

    /// The module defining the item at `path` (absolute in the crate); the root when no
    /// module matches.
    fn resolve(&self, path: &[String]) -> String {
        self.resolve_in(path, 0)
    }

    fn resolve_in(&self, path: &[String], hops: usize) -> String {
        if let [name] = path {
            if let Some(m) = self.macros.get(name) {
                return m.clone();
            }
        }
        let n = (1..=path.len())
            .rev()
            .find(|&n| self.c.modules.contains(&path[..n].join("::")))
            .unwrap_or(0);
        let module = if n == 0 {
            self.c.root.clone()
        } else {
            path[..n].join("::")
        };
        if let Some(name) = path.get(n) {
            if let Some(target) = self.reexports.get(&(module.clone(), name.clone())) {
                if hops < 8 {
                    let rest: Vec<String> = target.iter().chain(&path[n + 1..]).cloned().collect();
                    return self.resolve_in(&rest, hops + 1);
                }
            }
        }
        module
    }
}

/// The module graph of a crate at file granularity: module → modules it imports.
fn crate_graph(c: &Crate, reading: Paths) -> Graph {
    let r = Resolver::new(c);
    let mut g = Graph::new();
    for (m, s) in &c.sources {
        let mut to: BTreeSet<String> = local_paths(c, m, s, reading).iter().map(|p| r.resolve(p)).collect();
        for (name, def) in &r.macros {
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
    for m in &c.modules {
        g.entry(m.clone()).or_default();
    }
    g
}

/// The module graph of `platform/src` at file granularity: module → modules it imports, by
/// its `crate::` paths (the kernel's files reach their folder's `mod.rs` through `super::`,
/// as a shell command reaches the shell's parser: those edges are not read here).
fn file_graph(src_dir: &Path) -> Graph {
    let mut files = Vec::new();
    rs_files(src_dir, &mut files);
    crate_graph(&read_crate(src_dir, &files, ROOT), Paths::CrateOnly)
}

/// `qemu/src`'s graph at file granularity: the library's modules, and each binary as a node
/// (`bin hotmem`, `bin hotmem-bench`) with an edge to every library module it names.
fn qemu_graph(src_dir: &Path) -> Graph {
    let mut files = Vec::new();
    rs_files(src_dir, &mut files);
    let is_bin = |f: &Path| f == src_dir.join("main.rs") || f.starts_with(src_dir.join("bin"));
    let (bins, lib): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| is_bin(f));
    let lib = read_crate(src_dir, &lib, QEMU_LIB_ROOT);
    let mut g = crate_graph(&lib, Paths::Relative);
    let r = Resolver::new(&lib);
    for b in bins {
        let src = strip_comments(&std::fs::read_to_string(&b).expect("read source"));
        assert!(
            !src.lines()
                .any(|l| l.trim().starts_with("mod ") && l.trim().ends_with(';')),
            "{}: a binary with modules of its own (this reader takes a binary as one file)",
            b.display()
        );
        let name = format!("bin {}", b.file_stem().expect("a file name").to_string_lossy());
        let name = if name == "bin main" {
            "bin hotmem".to_string()
        } else {
            name
        };
        let mut paths = Vec::new();
        let mut from = 0;
        while let Some(at) = src[from..].find("hotmem_qemu::") {
            let start = from + at;
            from = start + "hotmem_qemu::".len();
            if !continues_a_path(&src, start) {
                from += paths_after(&src[from..], &[], &mut paths);
            }
        }
        g.insert(name, paths.iter().map(|p| r.resolve(p)).collect());
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

fn qemu_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qemu/src")
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

#[test]
fn qemu_has_no_import_cycle_between_files() {
    let g = qemu_graph(&qemu_src());
    assert!(g.len() > 20, "found only {} modules in qemu/src", g.len());
    for bin in ["bin hotmem", "bin hotmem-bench"] {
        assert!(g.get(bin).is_some_and(|to| to.len() > 3), "{bin}: {:?}", g.get(bin));
    }
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle among qemu's files: {}", show(&c));
    }
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
    assert_eq!(module_of(Path::new("kernel/mem/mod.rs"), ROOT), "kernel::mem");
    assert_eq!(module_of(Path::new("boot/early.rs"), ROOT), "boot::early");
    assert_eq!(module_of(Path::new("main.rs"), ROOT), ROOT);
    assert_eq!(module_of(Path::new("lib.rs"), QEMU_LIB_ROOT), QEMU_LIB_ROOT);
}

/// A crate of `(file, source)` pairs, read as the tests read `qemu/src`.
fn synthetic_crate(files: &[(&str, &str)]) -> Graph {
    let sources: BTreeMap<String, String> = files
        .iter()
        .map(|(f, s)| (module_of(Path::new(f), QEMU_LIB_ROOT), strip_comments(s)))
        .collect();
    let modules = sources.keys().cloned().collect();
    crate_graph(
        &Crate {
            sources,
            modules,
            root: QEMU_LIB_ROOT.into(),
        },
        Paths::Relative,
    )
}

#[test]
fn relative_paths_and_reexports_on_synthetic_sources() {
    let g = synthetic_crate(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub use b::Thing;\n"),
        (
            "a/mod.rs",
            "pub mod x;\npub mod y;\npub use self::x::{X, Y as Why};\nfn f() { y::g(); }\n",
        ),
        ("a/x.rs", "use super::Why;\nfn f() -> crate::Thing {}\n"),
        (
            "a/y.rs",
            "#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::x;\n}\n",
        ),
        ("b.rs", "pub struct Thing;\n"),
    ]);
    let to = |m: &str| g[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(to("lib"), ["b"]);
    assert_eq!(to("a"), ["a::x", "a::y"]);
    // `Why` is `x::Y`, re-exported by `a`: the edge goes to where it is defined (here, none).
    assert_eq!(to("a::x"), ["b"]);
    // Inside `mod tests`, `super` is the file itself and `super::super` its parent.
    assert_eq!(to("a::y"), ["a::x"]);
    assert_eq!(find_cycle(&g), None);
    let g = synthetic_crate(&[
        ("lib.rs", "pub mod a;\n"),
        ("a/mod.rs", "pub mod d;\npub use d::D;\npub struct R;\n"),
        ("a/d.rs", "use super::R;\n"),
    ]);
    assert_eq!(show(&find_cycle(&g).expect("a cycle")), "a -> a::d -> a");
}
