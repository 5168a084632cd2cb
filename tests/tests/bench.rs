//! The benchmark driver (`hotmem-bench`) end to end on its smallest run: one granule (64K, one
//! 512 MiB block), one repetition, one DIMM size (with QEMU's RSS growth), 128 MiB of
//! migration, virtio-mem 0 → 1 GiB → 0 in both device modes, and `--compare` against a planted
//! earlier record. Checks the records parse back, the plot is written and the comparison found
//! the planted measurement. Times are not checked (no test asserts a time).

use hotmem_qemu::bench::compare::Comparison;
use hotmem_qemu::bench::record::{parse_jsonl, GuestRecord, MemmapInit, Record};
use hotmem_qemu::{Granule, KernelConfig};
use std::path::Path;
use std::process::Command;

#[test]
fn bench_smoke_64k() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = root.join("target/test-logs/bench_smoke_64k");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let va_bits = KernelConfig::default_for(Granule::K64).va_bits;
    let old = plant_earlier_run(&dir, va_bits);
    let stdout = run_smoke_bench(root, &dir, &old);
    let (records, bad) = parse_jsonl(&std::fs::read_to_string(dir.join("results.jsonl")).unwrap());
    assert_eq!(bad, 0, "every line of results.jsonl is a record");
    check_guest_records(&records);
    check_host_records(&records);
    check_plot(&dir, va_bits);
    check_comparison(&dir, &stdout);
    check_closing_line(&dir, &stdout, records.len());
}

/// An earlier run of the smoke run's measurement, to compare with; returns its file.
fn plant_earlier_run(dir: &Path, va_bits: u32) -> std::path::PathBuf {
    // An earlier run of the same measurement (64K, 512 MiB, memmap on memory, default CPU,
    // deferred init): add took 1 ms. And one line of junk, which the comparison skips.
    let old = dir.join("old.jsonl");
    let planted = format!(
        "{{\"kind\":\"guest\",\"commit\":\"planted\",\"run\":1,\"cpu\":\"max,lpa2=off\",\"mode\":\"deferred\",\
         \"granule\":\"64k\",\"va_bits\":{va_bits},\"size\":536870912,\"memmap_on_memory\":true,\"reps\":1,\
         \"add_cycles\":1000000,\"online_cycles\":1000000,\"offline_cycles\":1000000,\"remove_cycles\":1000000,\
         \"cntfrq\":1000000000,\"memmap_bytes\":524288,\"memset_bytes_per_s\":1000000000,\
         \"add_ratio_to_limit\":1.0,\"online_ratio_to_limit\":1.0,\"tlbi_va\":0,\"tlbi_range_ops\":2,\
         \"tlbi_all\":0,\"feat_tlbirange\":true,\"preexisting_bytes_per_gib\":0}}\nnot a record\n"
    );
    std::fs::write(&old, planted).unwrap();
    old
}

/// `hotmem-bench` on 64K, one 512 MiB block, one repetition, compared with `old`: its stdout.
fn run_smoke_bench(root: &Path, dir: &Path, old: &Path) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["run", "-q", "-p", "hotmem-qemu", "--bin", "hotmem-bench", "--"])
        .args([
            "--granule",
            "64k",
            "--reps",
            "1",
            "--sizes",
            "512M",
            "--dimm-sizes",
            "512M",
            "--memmap-init",
            "deferred",
            "--boot-mem",
            "1G",
            "--migrate-sizes",
            "128M",
            "--vmem-sizes",
            "1G",
        ])
        .arg("--out")
        .arg(dir)
        .arg("--compare")
        .arg(old)
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::write(dir.join("stdout"), stdout.as_bytes()).unwrap();
    assert!(out.status.success(), "hotmem-bench failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// The guest records: the shape of the run on both CPUs, deferred-init figures.
fn check_guest_records(records: &[Record]) {
    let guest: Vec<&GuestRecord> = records.iter().filter_map(Record::as_guest).collect();
    // max: 512 MiB with and without memmap on memory; then the same on cortex-a76 (TLBI
    // comparison, since max has FEAT_TLBIRANGE).
    let shape: Vec<(&str, bool, bool)> = guest
        .iter()
        .map(|g| (g.cpu.as_str(), g.bench.memmap_on_memory, g.bench.feat_tlbirange))
        .collect();
    assert_eq!(
        shape,
        [
            ("max,lpa2=off", true, true),
            ("max,lpa2=off", false, true),
            ("cortex-a76", true, false),
            ("cortex-a76", false, false)
        ]
    );
    for g in &guest {
        assert_eq!(
            (g.bench.granule.as_str(), g.bench.size, g.mode),
            ("64k", 512 << 20, MemmapInit::Deferred)
        );
        assert!(g.bench.add_cycles > 0 && g.bench.cntfrq > 0, "{g:?}");
        assert!(
            g.bench.first_alloc_us().is_some() && g.bench.complete_us().is_some(),
            "deferred init figures missing: {g:?}"
        );
        assert!(!g.commit.is_empty() && g.run > 0, "{g:?}");
    }
}

/// One DIMM record (with QEMU's RSS growth), one boot record, the migration rows (batched cold
/// and warm, block by block cold and warm) and a virtio-mem record per device mode.
fn check_host_records(records: &[Record]) {
    let migrations: Vec<(&str, &str, u64)> = records
        .iter()
        .filter_map(Record::as_migrate)
        .map(|m| (m.pass.as_str(), m.batching(), m.size))
        .collect();
    assert_eq!(
        migrations,
        [
            ("cold", "batched", 128 << 20),
            ("warm", "batched", 128 << 20),
            ("cold", "per-page", 128 << 20),
            ("warm", "per-page", 128 << 20)
        ]
    );
    assert!(
        records
            .iter()
            .filter_map(Record::as_migrate)
            .all(|m| m.pages == 2048 && m.us_per_page > 0.0 && m.config.starts_with("64k-")),
        "{records:?}"
    );
    let vmems: Vec<_> = records.iter().filter_map(Record::as_vmem).collect();
    let modes: Vec<(&str, u64, u64)> = vmems
        .iter()
        .map(|v| (v.vmem_mode.as_str(), v.block, v.cycles))
        .collect();
    assert_eq!(modes, [("sub-block", 2 << 20, 1), ("big-block", 1 << 30, 1)]);
    for v in &vmems {
        // Half of 1 GiB under stress moves once: 8192 pages of 64 KiB.
        assert_eq!((v.size, v.loaded_migrated_pages), (1 << 30, 8192), "{v:?}");
        assert!(v.grow_us >= v.grow_guest_us && v.grow_host_ms > 0.0, "{v:?}");
    }
    let dimms: Vec<_> = records.iter().filter_map(Record::as_dimm).collect();
    assert!(dimms[0].rss_mib_per_gib.is_some(), "no RSS growth: {:?}", dimms[0]);
    assert_eq!(dimms.len(), 1);
    let boots: Vec<_> = records.iter().filter_map(Record::as_boot).collect();
    assert!(
        boots.len() == 1 && boots[0].mem == 1 << 30 && boots[0].time_to_prompt_us > 0.0,
        "one boot record of 1 GiB: {boots:?}"
    );
    assert_eq!(
        (dimms[0].size, dimms[0].result.as_str(), dimms[0].cpu.as_str()),
        (512 << 20, "ok", "max,lpa2=off")
    );
}

/// The plot is written and names every phase and the configuration.
fn check_plot(dir: &Path, va_bits: u32) {
    let svg = std::fs::read_to_string(dir.join("bench-scaling.svg")).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for text in ["add", "online", "offline", "remove", &format!("64k-{va_bits}")] {
        assert!(svg.contains(text), "plot without `{text}`");
    }
}

/// The comparison found the planted measurement.
fn check_comparison(dir: &Path, stdout: &str) {
    let c: Comparison = serde_json::from_str(&std::fs::read_to_string(dir.join("compare.json")).unwrap()).unwrap();
    let add = c
        .rows
        .iter()
        .find(|r| r.metric == "add_us")
        .unwrap_or_else(|| panic!("no add_us row: {c:?}"));
    assert_eq!((add.old, add.old_commit.as_str()), (1000.0, "planted"));
    assert_eq!(add.key.cpu, "max,lpa2=off");
    assert!((add.ratio.unwrap() - add.new / 1000.0).abs() < 1e-9, "{add:?}");
    assert_eq!(
        c.rows.len(),
        8,
        "the eight metrics of the one planted measurement (the new ones have no old value)"
    );
    assert!(stdout.contains("compared with"), "{stdout}");
}

/// The closing line says what was written where.
fn check_closing_line(dir: &Path, stdout: &str, nr_records: usize) {
    let closing = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("hotmem-bench: "))
        .unwrap_or("");
    let want = format!(
        "hotmem-bench: done in {{}} s; {} JSON line(s) appended to {}; plot {}; comparison {}",
        nr_records,
        dir.join("results.jsonl").display(),
        dir.join("bench-scaling.svg").display(),
        dir.join("compare.json").display()
    );
    let (head, tail) = want.split_once(" in {} s").unwrap();
    assert!(
        closing.starts_with(head) && closing.ends_with(tail.trim_start_matches(';').trim_start()),
        "closing line {closing:?}, expected {want:?}"
    );
}

/// Options that cannot run are refused before anything is built or booted: one line naming the
/// option and what would be accepted, exit status 2, nothing written (no results.jsonl, the docs
/// page unchanged).
#[test]
fn bench_options_are_checked_before_running() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = root.join("target/test-logs/bench_options_are_checked_before_running");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let page = root.join("docs/performance.md");
    let page_before = std::fs::read(&page).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cases: &[(&[&str], &str)] = &[
        (
            &["--boot-mem", "0"],
            "--boot-mem 0: too small to boot; give at least 128M",
        ),
        (
            &["--boot-mem", "1"],
            "--boot-mem 0x1: too small to boot; give at least 128M",
        ),
        (
            &["--cpu", "bogus"],
            "--cpu bogus: QEMU has no such CPU model; AArch64 models it offers: ",
        ),
        (&["--cpu", "cortex-a15"], "--cpu cortex-a15: not an AArch64 CPU"),
        (&["--tlbi-cpu", "bogus"], "--tlbi-cpu bogus: QEMU has no such CPU model"),
        (
            &["--granule", "16k", "--cpu", "cortex-a57"],
            "--cpu cortex-a57 --granule 16k: cortex-a57 has no 16k granule",
        ),
        (
            &["--compare", "/etc/passwd"],
            "--compare /etc/passwd: holds no bench records",
        ),
        (
            &["--compare", "/nonexistent.jsonl"],
            "--compare /nonexistent.jsonl: No such file",
        ),
        (
            &["--granule", "4k", "--sizes", "192M"],
            "--sizes 192M: not a whole number of 4k memory blocks (128M)",
        ),
        (
            &["--granule", "64k", "--sizes", "128M"],
            "--sizes: no size of at least one 64k memory block (512M)",
        ),
        (&["--dimm-sizes", "16G"], "--dimm-sizes 16G: a DIMM must be 2 MiB to 8G"),
        (
            &["--vmem-sizes", "512M"],
            "--vmem-sizes 512M: a virtio-mem size must be whole GiB",
        ),
        (
            &["--dimm-big", "3073M"],
            "--dimm-big 3073M: the big DIMM must be whole 64K memory blocks (512M)",
        ),
        (
            &["--granule", "64k", "--reps", "1", "--write-docs"],
            "--write-docs: this run covers less than the page's: granules 64k (the page's: 4k,16k,64k)",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(&cargo)
            .current_dir(root)
            .args(["run", "-q", "-p", "hotmem-qemu", "--bin", "hotmem-bench", "--"])
            .args(*args)
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("run cargo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("");
        assert_eq!(out.status.code(), Some(2), "{args:?}: exit status\n{stderr}");
        assert!(
            last.starts_with(&format!("hotmem-bench: {want}")),
            "{args:?}: expected `hotmem-bench: {want}...`, got:\n{stderr}"
        );
        assert!(!dir.join("results.jsonl").exists(), "{args:?}: wrote results.jsonl");
        assert!(
            !stderr.contains("Compiling hotmem-platform"),
            "{args:?}: built a kernel"
        );
    }
    assert_eq!(
        std::fs::read(&page).unwrap(),
        page_before,
        "docs/performance.md changed"
    );
}
