//! The documentation holds together (pure file reading, no QEMU):
//! - every `docs/*.md` page is linked from the README;
//! - every `docs/<page>.md[#anchor]` cited anywhere in the repository (code comments, scripts,
//!   docs) names a page that exists, and a heading of that page when it has an anchor;
//! - every relative link in the README and `docs/` resolves (file, and heading for anchors);
//! - every repository path quoted in backticks in the README and `docs/` exists;
//! - nothing cites the design documents that are not in the repository (the old `DESIGN`
//!   reference, the research notes): their content lives in `docs/design.md`.

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
