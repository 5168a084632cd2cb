//! Migration of used memory (`--migrate-sizes`): the kernel's `bench migrate` per granule, with
//! batches (the default) and block by block (`batch=1`, one invalidation per page), printed
//! and recorded (`{"kind":"migrate",...}`): `offline` of memory filled with movable pages is
//! the path DIMM unplug and virtio-mem shrink take too.

use super::record::{MigrateRecord, Record};
use super::sink::{Sink, Tag};
use super::target::Target;
use crate::config::{BootMode, KernelConfig};
use crate::kernel::build_kernel_once;
use mm::size::Size;
use serde::Deserialize;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

/// One `bench-json: {"kind":"migrate",...}` object of the kernel (`bench_migrate.rs`), printed
/// after each `bench-migrate:` row with the row's figures.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MigrateLine {
    pub granule: String,
    pub size: u64,
    /// `cold` or `warm`.
    pub run: String,
    pub pages: u64,
    pub batch: u64,
    pub full_above: u64,
    pub offline_us: f64,
    pub mib_s: f64,
    pub us_per_page: f64,
    pub mig_lim: f64,
    pub memset_bytes_per_s: f64,
    pub tlbi_va: u64,
    pub tlbi_range: u64,
    pub tlbi_all: u64,
}

/// Why a console holds no usable migration figures.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MigrateParseError {
    #[error("the kernel said `{0}`")]
    Kernel(String),
    #[error("malformed migrate line `{line}`: {reason}")]
    Malformed { line: String, reason: String },
    #[error("{rows} `bench-migrate:` row(s) but {objects} migrate bench-json object(s)")]
    Mismatch { rows: usize, objects: usize },
    #[error("no `bench-migrate:` figures")]
    NoFigures,
}

/// The migrate objects of a console: every `bench-json:` line of kind `migrate`, checked
/// against the `bench-migrate:` rows (one object per `cold`/`warm` row). A kernel error, a
/// skipped size or a partial migration is an error, not a short list.
pub fn parse_migrate(console: &str) -> Result<Vec<MigrateLine>, MigrateParseError> {
    let mut rows = 0;
    let mut out = Vec::new();
    for l in console.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("bench-migrate: ") {
            if rest.starts_with("error") || rest.contains("skipped") || rest.starts_with("warning") {
                return Err(MigrateParseError::Kernel(l.to_string()));
            }
            // A row: `128 MiB cold 32768 ...` (the size is one or two words).
            if rest.split_whitespace().take(3).any(|w| w == "cold" || w == "warm") {
                rows += 1;
            }
        } else if let Some(j) = l.strip_prefix("bench-json: ") {
            let v: serde_json::Value = serde_json::from_str(j).map_err(|e| MigrateParseError::Malformed {
                line: l.to_string(),
                reason: e.to_string(),
            })?;
            if v.get("kind").and_then(|k| k.as_str()) != Some("migrate") {
                continue;
            }
            let m: MigrateLine = serde_json::from_value(v).map_err(|e| MigrateParseError::Malformed {
                line: l.to_string(),
                reason: e.to_string(),
            })?;
            if m.run != "cold" && m.run != "warm" {
                return Err(MigrateParseError::Malformed {
                    line: l.to_string(),
                    reason: format!("run `{}` is neither cold nor warm", m.run),
                });
            }
            out.push(m);
        }
    }
    if rows != out.len() {
        return Err(MigrateParseError::Mismatch {
            rows,
            objects: out.len(),
        });
    }
    if out.is_empty() {
        return Err(MigrateParseError::NoFigures);
    }
    Ok(out)
}

/// The record of one kernel object.
pub fn record(m: MigrateLine, cfg: KernelConfig, t: &Target<'_>, tag: &Tag) -> MigrateRecord {
    MigrateRecord {
        commit: tag.commit.clone(),
        run: tag.run,
        cpu: t.cpu.into(),
        mode: t.mode,
        config: cfg.to_string(),
        size: m.size,
        pass: m.run,
        batch: m.batch,
        full_above: m.full_above,
        pages: m.pages,
        offline_us: m.offline_us,
        us_per_page: m.us_per_page,
        mib_s: m.mib_s,
        memset_bytes_per_s: m.memset_bytes_per_s,
        mig_lim: m.mig_lim,
        tlbi_va: m.tlbi_va,
        tlbi_range: m.tlbi_range,
        tlbi_all: m.tlbi_all,
    }
}

/// Boot `granule` on `cpu` with twice the largest size held back (the filled range and the
/// target), run `bench migrate` over `sizes` batched and block by block; print the rows and
/// record each.
pub fn migrate_bench(t: &Target<'_>, sizes: &[u64], tag: &Tag, sink: &mut Sink) -> Result<(), String> {
    let cfg = KernelConfig::default_for(t.granule);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let max = sizes.iter().copied().max().unwrap_or(GIB);
    // Whole GiBs per range: each range is rounded up to memory blocks (512 MiB on 64K).
    let run = super::machines::lazy_ram_run(t.qemu, kernel, t.cpu, GIB + 2 * max.next_multiple_of(GIB))
        .boot(BootMode::Firmware)
        .append(Some(format!("mem=1G memmap_init={}", t.mode)))
        .timeout(Some(Duration::from_secs(900)));
    let list: Vec<String> = sizes.iter().map(|&s| Size(s).to_string()).collect();
    let batched = format!("bench migrate {}", list.join(" "));
    let smallest = sizes.iter().copied().min().unwrap_or(GIB);
    let per_page = format!("bench migrate batch=1 {}", Size(smallest));
    let t0 = Instant::now();
    let out = run
        .run(&[batched.as_str(), per_page.as_str(), "poweroff"])
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("migrate bench failed: {}\n{}", out.describe(), out.tail(20)));
    }
    super::target::check_mode(&out.console, t.mode)?;
    println!(
        "\n## {} {} memmap_init={} migration of used memory (offline; cycles from CNTVCT; host wall {:.1} s)",
        cfg,
        t.cpu,
        t.mode,
        t0.elapsed().as_secs_f64()
    );
    let lines = parse_migrate(&out.console).map_err(|e| format!("bench migrate: {e}\n{}", out.tail(20)))?;
    for l in out.console.lines().filter(|l| l.starts_with("bench-migrate: ")) {
        println!("{}", l.trim_end());
    }
    for m in lines {
        sink.push(Record::Migrate(record(m, cfg, t, tag)));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `bench-json:` migrate object as the kernel prints it.
    pub fn migrate_json(size: u64, run: &str, batch: u64, us_per_page: f64) -> String {
        format!(
            "bench-json: {{\"kind\":\"migrate\",\"granule\":\"4k\",\"size\":{size},\"run\":\"{run}\",\"pages\":32768,\
             \"batch\":{batch},\"full_above\":512,\"offline_us\":210000,\"mib_s\":608.5,\"us_per_page\":{us_per_page:.3},\
             \"mig_lim\":4.40,\"memset_bytes_per_s\":2791728742,\"tlbi_va\":0,\"tlbi_range\":12,\"tlbi_all\":0}}"
        )
    }

    fn console(objects: &[String]) -> String {
        let mut s = String::from(
            "bench-migrate: granule=4k batch=4096 full_above=512 memset_bandwidth_mib_s=2662 tlbi_range=true\n\
             bench-migrate:      size  run    pages offline_us     MiB/s  us/page  mig/lim tlbi_va  range    all\n",
        );
        for o in objects {
            let v: serde_json::Value = serde_json::from_str(o.strip_prefix("bench-json: ").unwrap()).unwrap();
            s += &format!(
                "bench-migrate: {:>9} {:>4}    32768     210000     608.5     6.41      4.4       0     12      0\r\n{o}\r\n",
                format!("{:#}", Size(v["size"].as_u64().unwrap())),
                v["run"].as_str().unwrap()
            );
        }
        s + "hotmem> "
    }

    #[test]
    fn objects_are_read_with_their_rows() {
        let c = console(&[
            migrate_json(128 << 20, "cold", 4096, 28.4),
            migrate_json(128 << 20, "warm", 4096, 6.41),
            migrate_json(128 << 20, "cold", 1, 20.5),
        ]);
        let m = parse_migrate(&c).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[1].run.as_str(), m[1].batch, m[1].us_per_page), ("warm", 4096, 6.41));
        assert_eq!((m[1].pages, m[1].mig_lim, m[1].tlbi_range), (32768, 4.4, 12));
        assert_eq!(m[2].batch, 1);
        // A guest bench object in the same console is not a migrate object.
        let other = format!("{c}\nbench-json: {{\"granule\":\"4k\",\"size\":1}}\n");
        assert_eq!(parse_migrate(&other).unwrap().len(), 3);
    }

    #[test]
    fn malformed_and_missing_figures_are_errors() {
        let good = migrate_json(128 << 20, "warm", 4096, 6.41);
        let bad = good.replace("\"pages\":32768,", "\"pages\":\"many\",");
        let e = parse_migrate(&console(&[bad])).unwrap_err();
        assert!(
            matches!(&e, MigrateParseError::Malformed { reason, .. } if reason.contains("invalid type")),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("malformed migrate line `bench-json: {\"kind\":\"migrate\""),
            "{e}"
        );
        let cut = &good[..good.len() - 10];
        assert!(matches!(
            parse_migrate(&console(std::slice::from_ref(&good)).replace(&good, cut)),
            Err(MigrateParseError::Malformed { .. })
        ));
        let hot = good.replace("\"run\":\"warm\"", "\"run\":\"hot\"");
        assert!(matches!(
            parse_migrate(&console(&[hot])),
            Err(MigrateParseError::Malformed { .. })
        ));
        // A row without its object.
        let rowless = console(std::slice::from_ref(&good)).replace(&good, "");
        assert_eq!(
            parse_migrate(&rowless),
            Err(MigrateParseError::Mismatch { rows: 1, objects: 0 })
        );
        assert_eq!(parse_migrate("hotmem> "), Err(MigrateParseError::NoFigures));
        let skipped = "bench-migrate: size=4 GiB skipped: needs 8 GiB held back, 2 GiB are\n";
        assert_eq!(
            parse_migrate(skipped).unwrap_err().to_string(),
            "the kernel said `bench-migrate: size=4 GiB skipped: needs 8 GiB held back, 2 GiB are`"
        );
        assert!(matches!(
            parse_migrate("bench-migrate: error: no RAM held back (boot with mem=)\n"),
            Err(MigrateParseError::Kernel(_))
        ));
    }
}
