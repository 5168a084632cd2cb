//! The README's and `docs/`' commands, read from the pages: the docs test parses them and
//! `documented_runs` runs the quick ones.

use std::fs;
use std::path::{Path, PathBuf};

/// The README and every `docs/*.md` page, README first.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Shell-like words of a command line: `'...'` and `"..."` quoting, `#` comments, `[...]`
/// optional parts unwrapped.
pub fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '#') if cur.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out.into_iter()
        .map(|w| w.trim_start_matches('[').trim_end_matches(']').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The command lines of the README's and `docs/`' fenced code blocks (a leading `$ ` dropped),
/// with their page and whether they may be run by a test. A block right after
/// `<!-- docs-test: skip (reason) -->` is left out; one right after
/// `<!-- docs-test: no-run (reason) -->` is parsed but not run (it takes too long for a test).
pub fn documented_commands(root: &Path) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for page in pages(root) {
        let text = fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root).unwrap().display().to_string();
        let (mut inside, mut skip, mut no_run, mut prev) = (false, false, false, "");
        // A command continued with a trailing `\`.
        let mut pending = String::new();
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                if !inside {
                    skip = prev.contains("<!-- docs-test: skip");
                    no_run = prev.contains("<!-- docs-test: no-run");
                }
                inside = !inside;
            } else if inside && !skip {
                let l = line.trim().trim_start_matches("$ ");
                if let Some(head) = l.strip_suffix('\\') {
                    if !pending.is_empty() || head.starts_with("cargo ") {
                        pending.push_str(head);
                        pending.push(' ');
                    }
                } else if !pending.is_empty() {
                    pending.push_str(l);
                    out.push((name.clone(), std::mem::take(&mut pending), !no_run));
                } else if l.starts_with("cargo ") {
                    out.push((name.clone(), l.to_string(), !no_run));
                }
            }
            if !line.trim().is_empty() {
                prev = line;
            }
        }
    }
    out
}

/// Every line of a fenced block and every inline code span of the README and `docs/`, with its
/// page, the text that follows it (a fenced line's `# comment`; for a span, the rest of its
/// sentence up to the next code span), which may say what a command does, and whether it is
/// inline. Inline spans with a placeholder (`...`, `[options]`) are left out.
pub fn code_mentions(root: &Path) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    for page in pages(root) {
        let text = fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root).unwrap().display().to_string();
        // Paragraphs outside fences joined into one line each; fenced lines one by one.
        let (mut fence, mut para) = (false, String::new());
        let mut paras = Vec::new();
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fence = !fence;
                paras.push(std::mem::take(&mut para));
                continue;
            }
            if fence {
                let l = line.trim().trim_start_matches("$ ");
                let (cmd, comment) = l.split_once(" #").unwrap_or((l, ""));
                out.push((
                    name.clone(),
                    cmd.trim().to_string(),
                    comment.trim().to_lowercase(),
                    false,
                ));
            } else if line.trim().is_empty() {
                paras.push(std::mem::take(&mut para));
            } else {
                para.push_str(line.trim());
                para.push(' ');
            }
        }
        paras.push(para);
        for p in paras {
            let parts: Vec<&str> = p.split('`').collect();
            for i in (1..parts.len()).step_by(2) {
                let after = parts.get(i + 1).copied().unwrap_or("");
                // The sentence's words about this span, not about a parenthesised next one.
                let after = after.split(". ").next().unwrap().split(['(', ')']).next().unwrap();
                let after = after.to_lowercase();
                // A synopsis (`cargo run -- [options]`, `cargo test ... --no-run`) is not a command.
                if parts[i].contains("...") || parts[i].contains("[options]") {
                    continue;
                }
                out.push((name.clone(), parts[i].trim().to_string(), after, true));
            }
        }
    }
    out
}
