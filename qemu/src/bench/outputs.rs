//! What a bench run leaves once it has measured: the scaling plot, the comparison with an
//! earlier run (`--compare`), the regenerated section of `docs/performance.md`
//! (`--write-docs`), and the closing line naming what was written where.

use std::path::Path;

use super::opts::Opts;
use super::record::{GuestRecord, Record};
use super::sink::{Sink, Tag};
use super::{compare, docs, plot};

/// A finished run's inputs to its outputs.
pub struct Finish<'a> {
    pub opts: &'a Opts,
    /// The workspace (`docs/` lives there).
    pub root: &'a Path,
    /// The output directory (`--out`).
    pub dir: &'a Path,
    /// `qemu-system-aarch64 --version`'s first line.
    pub qemu_version: &'a str,
    pub tag: &'a Tag,
    pub sink: &'a Sink,
    /// `--compare`: the file's name and its records.
    pub old: Option<&'a (String, Vec<Record>)>,
    /// Wall time of the measurements, seconds.
    pub wall: f64,
    /// The run's arguments, for the docs section's run line.
    pub args: &'a [String],
}

/// Writes every output and prints the closing line; returns the exit status (1 when the run
/// or an output failed).
pub fn finish(f: &Finish<'_>, mut failed: bool) -> i32 {
    // What was written where, for the closing line.
    let mut written: Vec<String> = Vec::new();
    let svg = write_plot(f, &mut written);
    failed |= svg.is_none();
    if let Some((name, old)) = f.old {
        failed |= !write_compare(f, name, old, &mut written);
    }
    if f.opts.write_docs {
        match (failed, &svg) {
            (false, Some(svg)) => failed |= !write_docs(f, svg, &mut written),
            _ => eprintln!("hotmem-bench: --write-docs: the run failed, docs left as they were"),
        }
    }
    let results = f.sink.path.display();
    if let Some(e) = &f.sink.error {
        eprintln!("hotmem-bench: {results}: {e}");
        failed = true;
    }
    let lines = match f.sink.appended {
        0 => format!("no JSON line appended to {results}"),
        n => format!("{n} JSON line(s) appended to {results}"),
    };
    written.insert(0, lines);
    println!(
        "\nhotmem-bench: {} in {:.0} s; {}",
        if failed { "failed" } else { "done" },
        f.wall,
        written.join("; ")
    );
    i32::from(failed)
}

/// The scaling plot of the main CPU's in-guest records, written to `<out>/bench-scaling.svg`;
/// `None` (said on stderr) when it could not be drawn or written.
fn write_plot(f: &Finish<'_>, written: &mut Vec<String>) -> Option<String> {
    let o = f.opts;
    let plotted: Vec<GuestRecord> = f
        .sink
        .records
        .iter()
        .filter_map(Record::as_guest)
        .filter(|g| g.cpu == o.cpu)
        .cloned()
        .collect();
    let reps = plotted.first().map_or(o.reps, |g| g.bench.reps);
    let title = format!(
        "hotmem {}: guest time of one hot-add cycle (CNTVCT, median of {reps}, memmap on memory), -cpu {}, {}",
        f.tag.commit,
        o.cpu,
        qemu_name(f.qemu_version)
    );
    let svg_path = f.dir.join("bench-scaling.svg");
    let svg = plot::scaling_svg(&plotted, &title)
        .map_err(|e| eprintln!("hotmem-bench: plot: {e}"))
        .ok()?;
    match std::fs::write(&svg_path, &svg) {
        Ok(()) => {
            written.push(format!("plot {}", svg_path.display()));
            Some(svg)
        }
        Err(e) => {
            eprintln!("hotmem-bench: {}: {e}", svg_path.display());
            None
        }
    }
}

/// `--compare`: the table, and `<out>/compare.json`; false when the file could not be written.
fn write_compare(f: &Finish<'_>, name: &str, old: &[Record], written: &mut Vec<String>) -> bool {
    let c = compare::compare(name, old, &f.sink.records);
    println!("\n## compared with {name} (ratio = new / old)\n{}", compare::table(&c));
    let path = f.dir.join("compare.json");
    let json = serde_json::to_string_pretty(&c).expect("a comparison serialises");
    if let Err(e) = std::fs::write(&path, json + "\n") {
        eprintln!("hotmem-bench: {}: {e}", path.display());
        return false;
    }
    println!("comparison written to {}", path.display());
    written.push(format!("comparison {}", path.display()));
    true
}

/// `--write-docs`: the generated section of `docs/performance.md` and `docs/bench-scaling.svg`;
/// false when they could not be written.
fn write_docs(f: &Finish<'_>, svg: &str, written: &mut Vec<String>) -> bool {
    let info = docs::RunInfo {
        commit: f.tag.commit.clone(),
        date: utc_date(),
        qemu: qemu_name(f.qemu_version),
        options: f.args.join(" "),
        wall_s: f.wall,
        plot: "bench-scaling.svg".into(),
    };
    let page = f.root.join("docs/performance.md");
    let done = std::fs::read_to_string(&page)
        .map_err(|e| e.to_string())
        .and_then(|text| docs::replace_section(&text, &docs::render(&f.sink.records, &info)).map_err(|e| e.to_string()))
        .and_then(|text| std::fs::write(&page, text).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::write(f.root.join("docs/bench-scaling.svg"), svg).map_err(|e| e.to_string()));
    match done {
        Ok(()) => {
            println!("docs/performance.md and docs/bench-scaling.svg regenerated");
            written.push("docs/performance.md and docs/bench-scaling.svg".into());
            true
        }
        Err(e) => {
            eprintln!("hotmem-bench: --write-docs: {}: {e}", page.display());
            false
        }
    }
}

fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)` → `QEMU 10.0.2`.
fn qemu_name(version: &str) -> String {
    let v = version.split(" (").next().unwrap_or(version);
    v.replace("emulator version ", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_names() {
        assert_eq!(
            qemu_name("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)"),
            "QEMU 10.0.2"
        );
        assert_eq!(qemu_name("QEMU emulator version 7.2.22"), "QEMU 7.2.22");
    }
}
