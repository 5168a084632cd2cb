//! Where a bench run's records go: each is printed as a JSON line, appended to
//! `results.jsonl`, and kept for the plot, the docs section and the comparison.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::plan::PlanError;
use super::record::Record;

/// What every record of this run carries.
pub struct Tag {
    /// `git describe --always --dirty --abbrev=7` of the workspace (empty outside git).
    pub commit: String,
    /// The run's start, seconds since the epoch.
    pub run: u64,
}

impl Tag {
    /// The tag of a run starting now in the workspace `root`.
    pub fn now(root: &Path) -> Tag {
        Tag {
            commit: git(root, &["describe", "--always", "--dirty", "--abbrev=7"]),
            run: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

fn git(root: &Path, args: &[&str]) -> String {
    std::process::Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The run's records: printed, appended to results.jsonl, kept for the plot, docs and comparison.
pub struct Sink {
    /// `results.jsonl`.
    pub path: PathBuf,
    file: std::fs::File,
    pub records: Vec<Record>,
    /// Lines appended to results.jsonl, and the first write error.
    pub appended: usize,
    pub error: Option<String>,
}

impl Sink {
    /// Opens `path` for appending (made when missing).
    pub fn open(path: &Path) -> Result<Sink, PlanError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PlanError::Out {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Sink {
            path: path.to_path_buf(),
            file,
            records: Vec::new(),
            appended: 0,
            error: None,
        })
    }

    pub fn push(&mut self, r: Record) {
        let line = serde_json::to_string(&r).expect("a bench record serialises");
        println!("{line}");
        match writeln!(self.file, "{line}") {
            Ok(()) => self.appended += 1,
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
            }
        }
        self.records.push(r);
    }
}
