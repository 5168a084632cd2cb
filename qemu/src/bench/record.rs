//! One line of `target/bench/results.jsonl`, built and read with serde.
//!
//! Every record carries the commit, the run (its start, Unix seconds), the CPU model QEMU ran and
//! the memmap initialisation mode (`eager` or `deferred`, the kernel's `memmap_init=`): the
//! fields that, with the configuration and the size, say which earlier measurement a new one is
//! compared with ([`Key`]). Records written before a field existed read with its default.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// How the kernel initialises the `struct page`s of added memory (`memmap_init=`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum MemmapInit {
    /// Every struct page written at add/online time (the only mode of today's kernel).
    #[default]
    Eager,
    /// Struct pages initialised on first use and in the background.
    Deferred,
}

impl MemmapInit {
    pub fn name(self) -> &'static str {
        match self {
            MemmapInit::Eager => "eager",
            MemmapInit::Deferred => "deferred",
        }
    }
}

impl fmt::Display for MemmapInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of `results.jsonl`: `{"kind":"guest",...}`, `{"kind":"dimm",...}`,
/// `{"kind":"boot",...}`, `{"kind":"migrate",...}` or `{"kind":"vmem",...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Guest(GuestRecord),
    Dimm(DimmRecord),
    Boot(BootRecord),
    Migrate(MigrateRecord),
    Vmem(VmemRecord),
}

/// One row of the kernel's `bench migrate` (its `bench-json: {"kind":"migrate",...}` object):
/// the offline of `size` of hot-added memory filled with movable pages, which migrates each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateRecord {
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub run: u64,
    pub cpu: String,
    #[serde(default)]
    pub mode: MemmapInit,
    /// The kernel configuration, e.g. `4k-48`.
    pub config: String,
    /// Used memory migrated (bytes).
    pub size: u64,
    /// `cold` (the target memory never backed by the host) or `warm` (the same memory again).
    pub pass: String,
    /// Pages per migration batch; 1 is block by block (one invalidation per page).
    pub batch: u64,
    /// TLBI instructions above which a batch is one full flush.
    pub full_above: u64,
    pub pages: u64,
    pub offline_us: f64,
    pub us_per_page: f64,
    pub mib_s: f64,
    /// The guest's memset bandwidth of the boot (bytes/s).
    pub memset_bytes_per_s: f64,
    /// Time over the copy at memset bandwidth (`mig/lim`).
    pub mig_lim: f64,
    pub tlbi_va: u64,
    pub tlbi_range: u64,
    pub tlbi_all: u64,
}

impl MigrateRecord {
    /// `batched` or `per-page`.
    pub fn batching(&self) -> &'static str {
        if self.batch == 1 {
            "per-page"
        } else {
            "batched"
        }
    }
}

/// virtio-mem grow 0 → `size` and shrink `size` → 0 of idle memory, and a shrink of memory half
/// filled with stress data, through QMP `requested-size` (medians).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmemRecord {
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub run: u64,
    pub cpu: String,
    #[serde(default)]
    pub mode: MemmapInit,
    /// The kernel configuration, e.g. `4k-48`.
    pub config: String,
    pub size: u64,
    /// The device block (`block-size`): below the memory block is sub-block mode, at or above
    /// it big-block mode.
    pub block: u64,
    /// `sub-block` or `big-block`.
    pub vmem_mode: String,
    /// Idle cycles in the medians (the first grow after boot is not one of them).
    pub cycles: u64,
    /// The first grow after boot (host memory never backed before), guest µs and its own work.
    pub first_grow_us: f64,
    pub first_grow_guest_us: f64,
    /// The guest's whole resize (`us`), its own work (`us - device_us`), host wall time from
    /// `qom-set` to the guest's line (ms); medians of the idle cycles.
    pub grow_us: f64,
    pub grow_guest_us: f64,
    pub grow_host_ms: f64,
    pub shrink_us: f64,
    pub shrink_guest_us: f64,
    pub shrink_host_ms: f64,
    /// The shrink with half of `size` holding `stress` data: the same figures and the pages it
    /// migrated (medians of `loaded_reps`).
    pub loaded_reps: u64,
    pub loaded_shrink_us: f64,
    pub loaded_shrink_guest_us: f64,
    pub loaded_shrink_host_ms: f64,
    pub loaded_migrated_pages: u64,
}

/// Boot to the prompt with `mem` of RAM (the kernel's `boot: time_to_prompt_us=`, median).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub run: u64,
    pub cpu: String,
    pub mode: MemmapInit,
    /// The kernel configuration, e.g. `16k-47`.
    pub config: String,
    /// RAM (bytes).
    pub mem: u64,
    pub reps: u64,
    pub time_to_prompt_us: f64,
    /// Median guest µs of each boot stage (the kernel's `stages_us`), in boot order; empty in
    /// records from before the stages were recorded.
    #[serde(default)]
    pub stages_us: Vec<(String, f64)>,
}

/// One `bench-json:` object of the kernel's `bench`, tagged by the driver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestRecord {
    #[serde(default)]
    pub commit: String,
    /// Start of the driver run (Unix seconds): the records of one run share it.
    #[serde(default)]
    pub run: u64,
    pub cpu: String,
    #[serde(default)]
    pub mode: MemmapInit,
    #[serde(flatten)]
    pub bench: GuestBench,
}

/// The fields of the kernel's `bench-json:` line (`platform/src/shell/bench.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestBench {
    pub granule: String,
    pub va_bits: u32,
    pub size: u64,
    pub memmap_on_memory: bool,
    pub reps: u64,
    pub add_cycles: u64,
    pub online_cycles: u64,
    pub offline_cycles: u64,
    pub remove_cycles: u64,
    pub cntfrq: u64,
    pub memmap_bytes: u64,
    pub memset_bytes_per_s: f64,
    pub add_ratio_to_limit: f64,
    pub online_ratio_to_limit: f64,
    pub tlbi_va: u64,
    pub tlbi_range_ops: u64,
    pub tlbi_all: u64,
    pub feat_tlbirange: bool,
    pub preexisting_bytes_per_gib: f64,
    /// Fields a newer kernel adds (kept, written back, not interpreted).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// DIMM plug/unplug over QMP, host wall time (medians).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DimmRecord {
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub run: u64,
    #[serde(default)]
    pub cpu: String,
    #[serde(default)]
    pub mode: MemmapInit,
    /// The kernel configuration, e.g. `16k-47`.
    pub config: String,
    pub size: u64,
    pub reps: u64,
    pub plug_to_ost_ms: f64,
    pub unplug_to_deleted_ms: f64,
    /// `ok`, or why the guest refused the DIMM.
    pub result: String,
    /// Of `plug_to_ost_ms`, the guest's own add + online (its `dimm:` line's `cycles=`), µs,
    /// median (absent in records from before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_add_online_us: Option<f64>,
    /// QEMU's resident memory growth (`VmRSS`) from before `device_add` to after the guest's
    /// add + online, MiB per GiB added, median (absent in records from before it was
    /// measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_mib_per_gib: Option<f64>,
}

impl GuestBench {
    /// Guest cycles (CNTVCT) as microseconds.
    pub fn us(&self, cycles: u64) -> f64 {
        cycles as f64 * 1e6 / self.cntfrq.max(1) as f64
    }
    pub fn add_us(&self) -> f64 {
        self.us(self.add_cycles)
    }
    pub fn online_us(&self) -> f64 {
        self.us(self.online_cycles)
    }
    pub fn offline_us(&self) -> f64 {
        self.us(self.offline_cycles)
    }
    pub fn remove_us(&self) -> f64 {
        self.us(self.remove_cycles)
    }
    /// A kernel field in cycles (`first_alloc_cycles`, `complete_cycles`: kernels with deferred
    /// struct page init) as microseconds, if the kernel printed it.
    fn extra_us(&self, name: &str) -> Option<f64> {
        self.extra.get(name).and_then(Value::as_u64).map(|c| self.us(c))
    }
    /// One page from the new memory right after online.
    pub fn first_alloc_us(&self) -> Option<f64> {
        self.extra_us("first_alloc_cycles")
    }
    /// From the first allocation until every struct page of the new memory is initialised.
    pub fn complete_us(&self) -> Option<f64> {
        self.extra_us("complete_cycles")
    }
    /// TLB invalidation instructions of one removal.
    pub fn tlbi(&self) -> u64 {
        self.tlbi_va + self.tlbi_range_ops + self.tlbi_all
    }
    /// `4k-48`.
    pub fn config(&self) -> String {
        format!("{}-{}", self.granule, self.va_bits)
    }
}

/// What a measurement is of: records with equal keys are the same measurement on different
/// runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// `guest`, `dimm`, `boot`, `migrate` or `vmem`.
    pub kind: String,
    /// `4k-48`.
    pub config: String,
    pub cpu: String,
    pub mode: MemmapInit,
    pub size: u64,
    /// Guest: `mom` (memmap on memory) or `no-mom`; migrate: the pass and the batching
    /// (`warm batched`, `cold per-page`); vmem: `sub-block` or `big-block`; others: empty.
    pub variant: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.kind,
            self.config,
            self.cpu,
            self.mode,
            mm::size::Size(self.size)
        )?;
        if !self.variant.is_empty() {
            write!(f, " {}", self.variant)?;
        }
        Ok(())
    }
}

impl Record {
    pub fn key(&self) -> Key {
        match self {
            Record::Guest(g) => Key {
                kind: "guest".into(),
                config: g.bench.config(),
                cpu: g.cpu.clone(),
                mode: g.mode,
                size: g.bench.size,
                variant: if g.bench.memmap_on_memory { "mom" } else { "no-mom" }.into(),
            },
            Record::Dimm(d) => Key {
                kind: "dimm".into(),
                config: d.config.clone(),
                cpu: d.cpu.clone(),
                mode: d.mode,
                size: d.size,
                variant: String::new(),
            },
            Record::Boot(b) => Key {
                kind: "boot".into(),
                config: b.config.clone(),
                cpu: b.cpu.clone(),
                mode: b.mode,
                size: b.mem,
                variant: String::new(),
            },
            Record::Migrate(m) => Key {
                kind: "migrate".into(),
                config: m.config.clone(),
                cpu: m.cpu.clone(),
                mode: m.mode,
                size: m.size,
                variant: format!("{} {}", m.pass, m.batching()),
            },
            Record::Vmem(v) => Key {
                kind: "vmem".into(),
                config: v.config.clone(),
                cpu: v.cpu.clone(),
                mode: v.mode,
                size: v.size,
                variant: v.vmem_mode.clone(),
            },
        }
    }

    /// The compared figures, by name (times in the unit the name says).
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        match self {
            Record::Guest(g) => {
                let b = &g.bench;
                let mut m = vec![
                    ("add_us", b.add_us()),
                    ("online_us", b.online_us()),
                    ("offline_us", b.offline_us()),
                    ("remove_us", b.remove_us()),
                    ("add_ratio_to_limit", b.add_ratio_to_limit),
                    ("online_ratio_to_limit", b.online_ratio_to_limit),
                    ("tlbi", b.tlbi() as f64),
                    ("preexisting_bytes_per_gib", b.preexisting_bytes_per_gib),
                ];
                m.extend(b.first_alloc_us().map(|v| ("first_alloc_us", v)));
                m.extend(b.complete_us().map(|v| ("complete_us", v)));
                m
            }
            Record::Dimm(d) => {
                let mut m = vec![
                    ("plug_to_ost_ms", d.plug_to_ost_ms),
                    ("unplug_to_deleted_ms", d.unplug_to_deleted_ms),
                ];
                m.extend(d.guest_add_online_us.map(|v| ("guest_add_online_us", v)));
                m.extend(d.rss_mib_per_gib.map(|v| ("rss_mib_per_gib", v)));
                m
            }
            Record::Boot(b) => vec![("time_to_prompt_us", b.time_to_prompt_us)],
            Record::Migrate(m) => vec![
                ("us_per_page", m.us_per_page),
                ("offline_us", m.offline_us),
                ("mig_lim", m.mig_lim),
            ],
            Record::Vmem(v) => vec![
                ("grow_guest_us", v.grow_guest_us),
                ("grow_us", v.grow_us),
                ("grow_host_ms", v.grow_host_ms),
                ("shrink_guest_us", v.shrink_guest_us),
                ("shrink_us", v.shrink_us),
                ("shrink_host_ms", v.shrink_host_ms),
                ("loaded_shrink_guest_us", v.loaded_shrink_guest_us),
                ("loaded_shrink_us", v.loaded_shrink_us),
                ("loaded_migrated_pages", v.loaded_migrated_pages as f64),
            ],
        }
    }

    pub fn as_guest(&self) -> Option<&GuestRecord> {
        match self {
            Record::Guest(g) => Some(g),
            _ => None,
        }
    }

    pub fn as_dimm(&self) -> Option<&DimmRecord> {
        match self {
            Record::Dimm(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_boot(&self) -> Option<&BootRecord> {
        match self {
            Record::Boot(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_migrate(&self) -> Option<&MigrateRecord> {
        match self {
            Record::Migrate(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_vmem(&self) -> Option<&VmemRecord> {
        match self {
            Record::Vmem(v) => Some(v),
            _ => None,
        }
    }

    pub fn commit(&self) -> &str {
        match self {
            Record::Guest(g) => &g.commit,
            Record::Dimm(d) => &d.commit,
            Record::Boot(b) => &b.commit,
            Record::Migrate(m) => &m.commit,
            Record::Vmem(v) => &v.commit,
        }
    }
}

/// The records of a `results.jsonl` text, and how many lines were not records (older formats,
/// truncated lines).
pub fn parse_jsonl(text: &str) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A kernel `bench-json:` object as `platform/src/shell/bench.rs` prints it.
    pub fn guest_json(granule: &str, size: u64, mom: bool, add_cycles: u64) -> String {
        format!(
            "{{\"granule\":\"{granule}\",\"va_bits\":48,\"size\":{size},\"memmap_on_memory\":{mom},\"reps\":5,\
             \"add_cycles\":{add_cycles},\"online_cycles\":2000,\"offline_cycles\":500,\"remove_cycles\":200,\
             \"cntfrq\":1000000000,\"memmap_bytes\":2097152,\"memset_bytes_per_s\":1317000000,\
             \"add_ratio_to_limit\":0.60,\"online_ratio_to_limit\":1.70,\"tlbi_va\":0,\"tlbi_range_ops\":3,\
             \"tlbi_all\":0,\"feat_tlbirange\":true,\"preexisting_bytes_per_gib\":32768}}"
        )
    }

    pub fn guest(granule: &str, size: u64, mom: bool, add_cycles: u64) -> GuestRecord {
        GuestRecord {
            commit: "abc1234".into(),
            run: 1,
            cpu: "max,lpa2=off".into(),
            mode: MemmapInit::Eager,
            bench: serde_json::from_str(&guest_json(granule, size, mom, add_cycles)).unwrap(),
        }
    }

    #[test]
    fn guest_line_round_trips_and_keeps_unknown_fields() {
        let mut j = guest_json("16k", 1 << 30, true, 7_000_000);
        j.insert_str(j.len() - 1, ",\"first_alloc_cycles\":42");
        let b: GuestBench = serde_json::from_str(&j).unwrap();
        assert_eq!(b.extra.get("first_alloc_cycles"), Some(&Value::from(42)));
        assert_eq!(b.add_us(), 7000.0);
        let r = Record::Guest(GuestRecord {
            commit: "c".into(),
            run: 9,
            cpu: "cortex-a57".into(),
            mode: MemmapInit::Deferred,
            bench: b,
        });
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with("{\"kind\":\"guest\""), "{line}");
        assert!(line.contains("\"mode\":\"deferred\""), "{line}");
        assert!(line.contains("\"cpu\":\"cortex-a57\""), "{line}");
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.key().to_string(), "guest 16k-48 cortex-a57 deferred 1G mom");
    }

    #[test]
    fn old_lines_read_with_defaults_and_junk_is_counted() {
        // A DIMM line of the driver before `cpu`, `mode`, `commit` and `run` existed.
        let text = "{\"kind\":\"dimm\",\"config\":\"4k-48\",\"size\":134217728,\"reps\":5,\
                    \"plug_to_ost_ms\":3.8,\"unplug_to_deleted_ms\":1.4,\"result\":\"ok\"}\n\
                    not json\n\n{\"kind\":\"other\"}\n";
        let (recs, bad) = parse_jsonl(text);
        assert_eq!(bad, 2);
        let [Record::Dimm(d)] = recs.as_slice() else {
            panic!("{recs:?}")
        };
        assert_eq!(d.mode, MemmapInit::Eager);
        assert_eq!(d.cpu, "");
        assert_eq!(
            recs[0].metrics(),
            vec![("plug_to_ost_ms", 3.8), ("unplug_to_deleted_ms", 1.4)]
        );
    }
}
