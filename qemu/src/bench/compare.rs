//! `--compare FILE`: this run's records against an earlier `results.jsonl`.
//!
//! Records are matched by [`Key`] (kind, configuration, CPU, memmap mode, size, variant: a
//! migration is matched with the same pass and batching, a virtio-mem record with the same
//! device mode); when a
//! file holds several runs, the last record of each key is the one compared (so an appended file
//! compares against its latest run of each measurement). Each metric gives old, new and
//! `ratio = new / old` (below 1: faster or smaller now; `null` when old is 0 and new is not).

use super::record::{Key, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One metric of one measurement, old and new.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    #[serde(flatten)]
    pub key: Key,
    pub metric: String,
    pub old: f64,
    pub new: f64,
    pub ratio: Option<f64>,
    /// The commit the old figure was measured on.
    pub old_commit: String,
}

/// The comparison, as written to `compare.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The earlier `results.jsonl`.
    pub old_file: String,
    pub rows: Vec<Row>,
    /// Measurements of this run with no earlier record (nothing to compare).
    pub only_new: Vec<Key>,
    /// Measurements of the earlier file this run did not make.
    pub only_old: Vec<Key>,
}

/// `new / old`; equal zeros compare as 1, a new non-zero figure against an old 0 has no ratio.
pub fn ratio(old: f64, new: f64) -> Option<f64> {
    if old == 0.0 {
        (new == 0.0).then_some(1.0)
    } else {
        Some(new / old)
    }
}

fn latest(records: &[Record]) -> BTreeMap<Key, &Record> {
    records.iter().map(|r| (r.key(), r)).collect()
}

pub fn compare(old_file: &str, old: &[Record], new: &[Record]) -> Comparison {
    let (old, new) = (latest(old), latest(new));
    let mut c = Comparison {
        old_file: old_file.into(),
        ..Comparison::default()
    };
    for (key, n) in &new {
        let Some(o) = old.get(key) else {
            c.only_new.push(key.clone());
            continue;
        };
        let om: BTreeMap<_, _> = o.metrics().into_iter().collect();
        for (metric, nv) in n.metrics() {
            if let Some(&ov) = om.get(metric) {
                c.rows.push(Row {
                    key: key.clone(),
                    metric: metric.into(),
                    old: ov,
                    new: nv,
                    ratio: ratio(ov, nv),
                    old_commit: o.commit().into(),
                });
            }
        }
    }
    c.only_old = old.keys().filter(|k| !new.contains_key(k)).cloned().collect();
    c
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The comparison as a text table (one line per metric).
pub fn table(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<56} {:<26} {:>14} {:>14} {:>8}",
        "measurement", "metric", "old", "new", "new/old"
    );
    for r in &c.rows {
        let ratio = r.ratio.map_or("-".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "{:<56} {:<26} {:>14} {:>14} {:>8}",
            r.key.to_string(),
            r.metric,
            num(r.old),
            num(r.new),
            ratio
        );
    }
    if !c.only_new.is_empty() {
        let _ = writeln!(s, "not in {}: {} measurement(s)", c.old_file, c.only_new.len());
    }
    if !c.only_old.is_empty() {
        let _ = writeln!(s, "not measured in this run: {} measurement(s)", c.only_old.len());
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::record::tests::guest;
    use crate::bench::record::{DimmRecord, MemmapInit, MigrateRecord, VmemRecord};

    /// A 4K 128 MiB migration record.
    pub fn migrate(pass: &str, batch: u64, us_per_page: f64) -> MigrateRecord {
        MigrateRecord {
            commit: "old".into(),
            run: 1,
            cpu: "max,lpa2=off".into(),
            mode: MemmapInit::Eager,
            config: "4k-48".into(),
            size: 128 << 20,
            pass: pass.into(),
            batch,
            full_above: 512,
            pages: 32768,
            offline_us: us_per_page * 32768.0,
            us_per_page,
            mib_s: 608.0,
            memset_bytes_per_s: 2662.0 * (1 << 20) as f64,
            mig_lim: 4.4,
            tlbi_va: 0,
            tlbi_range: 12,
            tlbi_all: 0,
        }
    }

    /// A 4K 1 GiB sub-block virtio-mem record.
    pub fn vmem(grow_guest_us: f64) -> VmemRecord {
        VmemRecord {
            commit: "old".into(),
            run: 1,
            cpu: "max,lpa2=off".into(),
            mode: MemmapInit::Deferred,
            config: "4k-48".into(),
            size: 1 << 30,
            block: 2 << 20,
            vmem_mode: "sub-block".into(),
            cycles: 4,
            first_grow_us: 60000.0,
            first_grow_guest_us: 59000.0,
            grow_us: 3000.0,
            grow_guest_us,
            grow_host_ms: 5.0,
            shrink_us: 1300.0,
            shrink_guest_us: 1167.0,
            shrink_host_ms: 3.0,
            loaded_reps: 4,
            loaded_shrink_us: 500000.0,
            loaded_shrink_guest_us: 499900.0,
            loaded_shrink_host_ms: 510.0,
            loaded_migrated_pages: 131072,
        }
    }

    fn dimm(cpu: &str, size: u64, plug: f64) -> Record {
        Record::Dimm(DimmRecord {
            commit: "old".into(),
            run: 1,
            cpu: cpu.into(),
            mode: MemmapInit::Eager,
            config: "16k-47".into(),
            size,
            reps: 5,
            plug_to_ost_ms: plug,
            unplug_to_deleted_ms: 0.0,
            result: "ok".into(),
            guest_add_online_us: None,
            rss_mib_per_gib: None,
        })
    }

    #[test]
    fn ratio_is_new_over_old() {
        assert_eq!(ratio(4.0, 1.0), Some(0.25));
        assert_eq!(ratio(2.0, 6.0), Some(3.0));
        assert_eq!(ratio(0.0, 0.0), Some(1.0));
        assert_eq!(ratio(0.0, 5.0), None);
    }

    #[test]
    fn matches_by_key_and_takes_the_last_old_record() {
        let mut first = guest("4k", 1 << 30, true, 8_000_000);
        first.commit = "first".into();
        let mut second = guest("4k", 1 << 30, true, 10_000_000);
        second.commit = "second".into();
        // Same size and granule, another CPU: not the same measurement.
        let mut a76 = guest("4k", 1 << 30, true, 1_000);
        a76.cpu = "cortex-a76".into();
        // Deferred of the same: not the same measurement either.
        let mut deferred = guest("4k", 1 << 30, true, 1_000);
        deferred.mode = MemmapInit::Deferred;
        let old = vec![
            Record::Guest(first),
            Record::Guest(second),
            Record::Guest(a76),
            dimm("max,lpa2=off", 1 << 30, 20.0),
            dimm("max,lpa2=off", 4 << 30, 80.0),
        ];
        let new = vec![
            Record::Guest(guest("4k", 1 << 30, true, 5_000_000)),
            Record::Guest(deferred),
            Record::Guest(guest("4k", 1 << 30, false, 5_000_000)),
            dimm("max,lpa2=off", 1 << 30, 10.0),
        ];
        let c = compare("old.jsonl", &old, &new);
        let add: Vec<&Row> = c.rows.iter().filter(|r| r.metric == "add_us").collect();
        assert_eq!(add.len(), 1, "{add:?}");
        assert_eq!((add[0].old, add[0].new, add[0].ratio), (10_000.0, 5_000.0, Some(0.5)));
        assert_eq!(add[0].old_commit, "second");
        assert_eq!(add[0].key.cpu, "max,lpa2=off");
        let plug: Vec<&Row> = c.rows.iter().filter(|r| r.metric == "plug_to_ost_ms").collect();
        assert_eq!(plug.len(), 1);
        assert_eq!((plug[0].old, plug[0].new, plug[0].ratio), (20.0, 10.0, Some(0.5)));
        // Unplug 0 → 0 compares as 1.
        let unplug = c.rows.iter().find(|r| r.metric == "unplug_to_deleted_ms").unwrap();
        assert_eq!(unplug.ratio, Some(1.0));
        // 8 guest metrics + 2 DIMM metrics.
        assert_eq!(c.rows.len(), 10);
        let only_new: Vec<String> = c.only_new.iter().map(Key::to_string).collect();
        assert_eq!(
            only_new,
            [
                "guest 4k-48 max,lpa2=off eager 1G no-mom",
                "guest 4k-48 max,lpa2=off deferred 1G mom"
            ]
        );
        let only_old: Vec<String> = c.only_old.iter().map(Key::to_string).collect();
        assert_eq!(
            only_old,
            [
                "dimm 16k-47 max,lpa2=off eager 4G",
                "guest 4k-48 cortex-a76 eager 1G mom"
            ]
        );
        // The JSON form carries old, new and ratio per metric and reads back.
        let j = serde_json::to_string(&c).unwrap();
        assert!(
            j.contains("\"metric\":\"add_us\",\"old\":10000.0,\"new\":5000.0,\"ratio\":0.5"),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Comparison>(&j).unwrap(), c);
        let t = table(&c);
        assert!(t.contains("guest 4k-48 max,lpa2=off eager 1G mom"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("add_us") && l.trim_end().ends_with("0.50")),
            "{t}"
        );
    }

    /// Migration rows are matched by pass and batching: a warm batched run is compared with the
    /// earlier warm batched run only, and a slower µs/page shows as a ratio above 1.
    #[test]
    fn migrate_and_vmem_records_are_compared_by_their_own_keys() {
        let old = vec![
            Record::Migrate(migrate("warm", 4096, 6.0)),
            Record::Migrate(migrate("warm", 1, 20.0)),
            Record::Migrate(migrate("cold", 4096, 28.0)),
            Record::Vmem(vmem(2000.0)),
        ];
        let mut big = vmem(700.0);
        big.vmem_mode = "big-block".into();
        big.block = 1 << 30;
        let mut new_rss = dimm("max,lpa2=off", 1 << 30, 10.0);
        if let Record::Dimm(d) = &mut new_rss {
            d.rss_mib_per_gib = Some(2.5);
        }
        let new = vec![
            Record::Migrate(migrate("warm", 4096, 9.0)),
            Record::Migrate(migrate("warm", 1, 10.0)),
            Record::Vmem(vmem(3000.0)),
            Record::Vmem(big),
            new_rss,
        ];
        let c = compare("old.jsonl", &old, &new);
        let per_page: Vec<(String, f64, f64, Option<f64>)> = c
            .rows
            .iter()
            .filter(|r| r.metric == "us_per_page")
            .map(|r| (r.key.to_string(), r.old, r.new, r.ratio))
            .collect();
        assert_eq!(
            per_page,
            [
                (
                    "migrate 4k-48 max,lpa2=off eager 128M warm batched".to_string(),
                    6.0,
                    9.0,
                    Some(1.5)
                ),
                (
                    "migrate 4k-48 max,lpa2=off eager 128M warm per-page".to_string(),
                    20.0,
                    10.0,
                    Some(0.5)
                ),
            ]
        );
        let grow = c.rows.iter().find(|r| r.metric == "grow_guest_us").unwrap();
        assert_eq!((grow.old, grow.new, grow.ratio), (2000.0, 3000.0, Some(1.5)));
        assert_eq!(grow.key.to_string(), "vmem 4k-48 max,lpa2=off deferred 1G sub-block");
        // 3 metrics per migration, 9 per virtio-mem record.
        assert_eq!(c.rows.len(), 2 * 3 + 9, "{c:?}");
        let only_new: Vec<String> = c.only_new.iter().map(Key::to_string).collect();
        assert_eq!(
            only_new,
            [
                "dimm 16k-47 max,lpa2=off eager 1G",
                "vmem 4k-48 max,lpa2=off deferred 1G big-block"
            ]
        );
        assert_eq!(c.only_old.len(), 1);
        assert_eq!(c.only_old[0].variant, "cold batched");
        // The records round-trip through results.jsonl with their kind.
        for r in &new {
            let line = serde_json::to_string(r).unwrap();
            assert_eq!(&serde_json::from_str::<Record>(&line).unwrap(), r, "{line}");
        }
        assert!(serde_json::to_string(&new[0])
            .unwrap()
            .starts_with("{\"kind\":\"migrate\""));
        assert!(serde_json::to_string(&new[2])
            .unwrap()
            .starts_with("{\"kind\":\"vmem\""));
        assert!(serde_json::to_string(&new[4])
            .unwrap()
            .contains("\"rss_mib_per_gib\":2.5"));
    }
}
