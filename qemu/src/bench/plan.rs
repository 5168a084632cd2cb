//! What a `hotmem-bench` run will do, decided and checked before anything is built or booted:
//! CPU models against what QEMU offers and what each granule needs, sizes, `--compare` and
//! `--write-docs`; plus the arithmetic of the measurements (medians), tested with values.

use crate::config::Granule;
use mm::size::Size;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the options cannot run (exit status 2, nothing built or booted).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{option} {cpu}: QEMU has no such CPU model; AArch64 models it offers: {offered}")]
    UnknownCpu {
        option: &'static str,
        cpu: String,
        offered: String,
    },
    #[error(
        "{option} {cpu}: not an AArch64 CPU (the kernel runs at EL1 of AArch64); AArch64 models QEMU offers: {offered}"
    )]
    NotAarch64 {
        option: &'static str,
        cpu: String,
        offered: String,
    },
    #[error("cannot list QEMU's CPU models: {0}")]
    CpuList(String),
    #[error("--cpu {cpu} --granule {granule}: {reason}; use --cpu max,lpa2=off or cortex-a76")]
    GranuleUnsupported {
        cpu: String,
        granule: Granule,
        reason: String,
    },
    #[error("--boot-mem {given}: too small to boot; give at least {min} (whole MiB), or `none`")]
    BootMemTooSmall { given: String, min: String },
    #[error("--boot-mem {given}: not a whole number of MiB (QEMU's -m unit)")]
    BootMemNotMib { given: String },
    #[error("--sizes {given}: not a whole number of {granule} memory blocks ({block})")]
    SizeNotBlocks {
        given: String,
        granule: Granule,
        block: String,
    },
    #[error("--sizes: no size of at least one {granule} memory block ({block}); give one, or another --granule")]
    NoSizes { granule: Granule, block: String },
    #[error("--dimm-sizes {given}: a DIMM must be 2 MiB to {max} (the bench machine's hotplug room), or `none`")]
    DimmSize { given: String, max: String },
    #[error("--vmem-sizes {given}: a virtio-mem size must be whole GiB (the big-block device block) from 1G to {max}, or `none`")]
    VmemSize { given: String, max: String },
    #[error("--dimm-big {given}: the big DIMM must be whole 64K memory blocks (512M) from 512M to {max}")]
    DimmBig { given: String, max: String },
    #[error("--compare {path}: {reason}")]
    Compare { path: PathBuf, reason: String },
    #[error("--write-docs: {path}: {reason}; docs left as they were")]
    DocsNotWritable { path: PathBuf, reason: String },
    #[error("--write-docs: this run covers less than the page's: {0}; the page would lose rows. Add --partial to write it anyway")]
    Partial(String),
    #[error("--out {path}: {reason}")]
    Out { path: PathBuf, reason: String },
}

/// Smallest RAM a boot run takes (the kernel stops on less; [`PlanError::BootMemTooSmall`]).
pub const MIN_BOOT_MEM: u64 = 128 << 20;
/// Room for one DIMM on the DIMM machine (`-m 1G,slots=8,maxmem=9G`).
pub const MAX_DIMM: u64 = 8 << 30;

/// AArch64 CPU models of QEMU's `virt` and the granules each lacks (from their ID_AA64MMFR0
/// TGran fields): the Cortex-A35/A53/A57/A72 and A64FX have no 16K granule.
const AARCH64_CPUS: &[(&str, &[Granule])] = &[
    ("max", &[]),
    ("host", &[]),
    ("cortex-a35", &[Granule::K16]),
    ("cortex-a53", &[Granule::K16]),
    ("cortex-a55", &[]),
    ("cortex-a57", &[Granule::K16]),
    ("cortex-a72", &[Granule::K16]),
    ("cortex-a76", &[]),
    ("cortex-a710", &[]),
    ("a64fx", &[Granule::K16]),
    ("neoverse-n1", &[]),
    ("neoverse-n2", &[]),
    ("neoverse-v1", &[]),
];

/// The model of a `-cpu` value (`max,lpa2=off` → `max`).
pub fn cpu_model(cpu: &str) -> &str {
    cpu.split(',').next().unwrap_or(cpu).trim()
}

/// The models of `qemu-system-aarch64 -M virt -cpu help` (indented names after the heading).
pub fn parse_cpu_help(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Checks `cpu` against QEMU's models (`offered`, from [`parse_cpu_help`]); returns the granules
/// it lacks.
pub fn check_cpu(option: &'static str, cpu: &str, offered: &[String]) -> Result<&'static [Granule], PlanError> {
    let model = cpu_model(cpu);
    let aarch64: Vec<&str> = offered
        .iter()
        .map(String::as_str)
        .filter(|m| AARCH64_CPUS.iter().any(|(n, _)| n == m))
        .collect();
    let list = aarch64.join(", ");
    if !offered.iter().any(|m| m == model) {
        return Err(PlanError::UnknownCpu {
            option,
            cpu: cpu.into(),
            offered: list,
        });
    }
    match AARCH64_CPUS.iter().find(|(n, _)| *n == model) {
        Some((_, lacks)) => Ok(lacks),
        None => Err(PlanError::NotAarch64 {
            option,
            cpu: cpu.into(),
            offered: list,
        }),
    }
}

/// The granules to run on `cpu`: a granule the CPU lacks is skipped with the reason (`notes`),
/// unless it was the one asked for, which is an error.
pub fn granules_for(
    asked: Option<Granule>,
    cpu: &str,
    lacks: &[Granule],
    notes: &mut Vec<String>,
) -> Result<Vec<Granule>, PlanError> {
    let reason = |g: Granule| format!("{} has no {g} granule (ID_AA64MMFR0 TGran)", cpu_model(cpu));
    match asked {
        Some(g) if lacks.contains(&g) => Err(PlanError::GranuleUnsupported {
            cpu: cpu.into(),
            granule: g,
            reason: reason(g),
        }),
        Some(g) => Ok(vec![g]),
        None => Ok(Granule::ALL
            .into_iter()
            .filter(|g| {
                let skip = lacks.contains(g);
                if skip {
                    notes.push(format!("{g}: skipped: {}", reason(*g)));
                }
                !skip
            })
            .collect()),
    }
}

/// Checks `--boot-mem` sizes.
pub fn check_boot_mem(mems: &[u64]) -> Result<(), PlanError> {
    for &m in mems {
        if m < MIN_BOOT_MEM {
            return Err(PlanError::BootMemTooSmall {
                given: Size(m).to_string(),
                min: Size(MIN_BOOT_MEM).to_string(),
            });
        }
        if m % (1 << 20) != 0 {
            return Err(PlanError::BootMemNotMib {
                given: Size(m).to_string(),
            });
        }
    }
    Ok(())
}

/// Checks `--dimm-sizes`.
pub fn check_dimm_sizes(sizes: &[u64]) -> Result<(), PlanError> {
    for &s in sizes {
        if !(2 << 20..=MAX_DIMM).contains(&s) || s % (2 << 20) != 0 {
            return Err(PlanError::DimmSize {
                given: Size(s).to_string(),
                max: Size(MAX_DIMM).to_string(),
            });
        }
    }
    Ok(())
}

/// The memory block of granule `g` (the smallest size hot-added).
pub fn memory_block(g: Granule) -> u64 {
    if g == Granule::K64 {
        512 << 20
    } else {
        128 << 20
    }
}

/// Largest `--vmem-sizes` size: the loaded shrink fills half of it with host-backed data.
pub const MAX_VMEM: u64 = 8 << 30;

/// Checks `--vmem-sizes`: whole GiB (a multiple of the big-block device block and of every
/// granule's memory block), 1G to [`MAX_VMEM`].
pub fn check_vmem_sizes(sizes: &[u64]) -> Result<(), PlanError> {
    for &s in sizes {
        if !(1 << 30..=MAX_VMEM).contains(&s) || s % (1 << 30) != 0 {
            return Err(PlanError::VmemSize {
                given: Size(s).to_string(),
                max: Size(MAX_VMEM).to_string(),
            });
        }
    }
    Ok(())
}

/// Largest `--dimm-big`: the machine's device memory room, far below the 64K kernel's 48-bit
/// linear map.
pub const MAX_DIMM_BIG: u64 = 4 << 40;

/// Checks `--dimm-big`: whole 64K memory blocks, up to [`MAX_DIMM_BIG`].
pub fn check_dimm_big(size: Option<u64>) -> Result<(), PlanError> {
    match size {
        Some(s) if s == 0 || s > MAX_DIMM_BIG || s % (512 << 20) != 0 => Err(PlanError::DimmBig {
            given: Size(s).to_string(),
            max: Size(MAX_DIMM_BIG).to_string(),
        }),
        _ => Ok(()),
    }
}

/// In-guest sizes of one granule: sizes below its memory block `block` are skipped with a note,
/// a size that is not whole blocks is an error, and so is having none left.
pub fn check_sizes(g: Granule, block: u64, sizes: &[u64], notes: &mut Vec<String>) -> Result<Vec<u64>, PlanError> {
    let mut out = Vec::new();
    for &s in sizes {
        if s < block {
            notes.push(format!(
                "{g}: size {} skipped: below one memory block ({})",
                Size(s),
                Size(block)
            ));
        } else if s % block != 0 {
            return Err(PlanError::SizeNotBlocks {
                given: Size(s).to_string(),
                granule: g,
                block: Size(block).to_string(),
            });
        } else {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err(PlanError::NoSizes {
            granule: g,
            block: Size(block).to_string(),
        });
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `--compare FILE` must hold bench records; returns them and the count of lines that are not.
pub fn read_compare(path: &Path) -> Result<(Vec<crate::bench::Record>, usize), PlanError> {
    let err = |reason: String| PlanError::Compare {
        path: path.into(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let (recs, bad) = crate::bench::record::parse_jsonl(&text);
    if recs.is_empty() {
        return Err(err(format!(
            "holds no bench records ({bad} line(s), none a results.jsonl record); give a results.jsonl of an earlier run"
        )));
    }
    Ok((recs, bad))
}

/// A file the run will write must be writable now (opened for appending, not changed), or, when
/// it does not exist, its folder must take a new file.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let probe = dir.join(format!(".hotmem-bench-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// What a run covers, to compare with the run that made the docs page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub granules: Vec<Granule>,
    /// In-guest sizes per granule, in `granules` order.
    pub sizes: Vec<Vec<u64>>,
    pub reps: u64,
    pub modes: Vec<String>,
    pub boot_mems: Vec<u64>,
    pub dimm_sizes: Vec<u64>,
}

impl Coverage {
    /// What `self` lacks of `page`, one `(this run's, the page's)` pair per difference (empty:
    /// `self` covers it).
    pub fn lacks(&self, page: &Coverage) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let names = |v: &[Granule]| v.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        let sizes = |v: &[u64]| v.iter().map(|&s| Size(s).to_string()).collect::<Vec<_>>().join(",");
        if page.granules.iter().any(|g| !self.granules.contains(g)) {
            out.push((format!("granules {}", names(&self.granules)), names(&page.granules)));
        }
        for (g, want) in page.granules.iter().zip(&page.sizes) {
            if let Some(have) = self.granules.iter().position(|x| x == g).map(|i| &self.sizes[i]) {
                if want.iter().any(|s| !have.contains(s)) {
                    out.push((format!("{g} sizes {}", sizes(have)), sizes(want)));
                }
            }
        }
        if self.reps < page.reps {
            out.push((format!("{} repetitions", self.reps), page.reps.to_string()));
        }
        if page.modes.iter().any(|m| !self.modes.contains(m)) {
            out.push((format!("modes {}", self.modes.join(",")), page.modes.join(",")));
        }
        if page.boot_mems.iter().any(|m| !self.boot_mems.contains(m)) {
            out.push((format!("boot sizes {}", sizes(&self.boot_mems)), sizes(&page.boot_mems)));
        }
        if page.dimm_sizes.iter().any(|m| !self.dimm_sizes.contains(m)) {
            out.push((
                format!("DIMM sizes {}", sizes(&self.dimm_sizes)),
                sizes(&page.dimm_sizes),
            ));
        }
        out
    }
}

/// Differences from [`Coverage::lacks`] as one phrase: `granules 64k (the page's: 4k,16k,64k), ...`.
pub fn describe_lacks(lacks: &[(String, String)]) -> String {
    lacks
        .iter()
        .map(|(r, p)| format!("{r} (the page's: {p})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The options of the run that generated the page (`Generated by \`hotmem-bench ARGS\``).
pub fn page_options(page: &str) -> Option<Vec<String>> {
    let rest = page.split("Generated by `hotmem-bench").nth(1)?;
    let args = rest.split('`').next()?;
    Some(args.split_whitespace().map(str::to_string).collect())
}

/// The median of `v` (the middle value; for an even count the upper of the two middle ones).
/// `None` when `v` is empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

/// One DIMM size's samples, one per repetition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DimmSamples {
    /// `device_add` → the guest's `_OST`, ms.
    pub plug_ms: Vec<f64>,
    /// `device_del` → `DEVICE_DELETED`, ms.
    pub unplug_ms: Vec<f64>,
    /// The guest's add + online, µs (from its `dimm:` line; missing on refusals).
    pub guest_us: Vec<f64>,
    /// QEMU's RSS growth over the plug, MiB per GiB added (accepted plugs only).
    pub rss_mib_per_gib: Vec<f64>,
}

/// Medians of one DIMM size: (plug ms, unplug ms, guest µs), each from its own samples.
pub fn dimm_medians(s: &DimmSamples) -> (f64, f64, Option<f64>) {
    (
        median(&s.plug_ms).unwrap_or(0.0),
        median(&s.unplug_ms).unwrap_or(0.0),
        median(&s.guest_us),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> Vec<String> {
        parse_cpu_help("Available CPUs:\n  cortex-a15\n  cortex-a57\n  cortex-a76\n  max\n")
    }

    #[test]
    fn cpus_are_checked_against_qemu_and_the_granule() {
        assert_eq!(offered(), ["cortex-a15", "cortex-a57", "cortex-a76", "max"]);
        assert_eq!(check_cpu("--cpu", "max,lpa2=off", &offered()), Ok(&[][..]));
        assert_eq!(check_cpu("--cpu", "cortex-a57", &offered()), Ok(&[Granule::K16][..]));
        let e = check_cpu("--cpu", "bogus", &offered()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--cpu bogus: QEMU has no such CPU model; AArch64 models it offers: cortex-a57, cortex-a76, max"
        );
        assert!(matches!(
            check_cpu("--cpu", "cortex-a15", &offered()),
            Err(PlanError::NotAarch64 { .. })
        ));
        let mut notes = Vec::new();
        let g = granules_for(None, "cortex-a57", &[Granule::K16], &mut notes).unwrap();
        assert_eq!(g, [Granule::K4, Granule::K64]);
        assert_eq!(
            notes,
            ["16k: skipped: cortex-a57 has no 16k granule (ID_AA64MMFR0 TGran)"]
        );
        let e = granules_for(Some(Granule::K16), "cortex-a57", &[Granule::K16], &mut notes).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--cpu cortex-a57 --granule 16k: cortex-a57 has no 16k granule"),
            "{e}"
        );
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_boot_mem(&[1 << 30, 16 << 30]).is_ok());
        assert_eq!(
            check_boot_mem(&[0]).unwrap_err().to_string(),
            "--boot-mem 0: too small to boot; give at least 128M (whole MiB), or `none`"
        );
        assert!(matches!(check_boot_mem(&[1]), Err(PlanError::BootMemTooSmall { .. })));
        assert!(matches!(
            check_boot_mem(&[(1 << 30) + 4096]),
            Err(PlanError::BootMemNotMib { .. })
        ));
        assert!(check_dimm_sizes(&[128 << 20, 4 << 30]).is_ok());
        assert!(check_dimm_sizes(&[0]).is_err() && check_dimm_sizes(&[16 << 30]).is_err());
        assert!(check_vmem_sizes(&[1 << 30, 8 << 30]).is_ok());
        assert!(check_dimm_big(None).is_ok() && check_dimm_big(Some(1 << 40)).is_ok());
        assert_eq!(
            check_dimm_big(Some(3 << 30 | 1 << 20)).unwrap_err().to_string(),
            "--dimm-big 3073M: the big DIMM must be whole 64K memory blocks (512M) from 512M to 4T"
        );
        assert!(check_dimm_big(Some(8 << 40)).is_err() && check_dimm_big(Some(0)).is_err());
        assert_eq!(
            check_vmem_sizes(&[512 << 20]).unwrap_err().to_string(),
            "--vmem-sizes 512M: a virtio-mem size must be whole GiB (the big-block device block) from 1G to 8G, or `none`"
        );
        assert!(check_vmem_sizes(&[(1 << 30) + (2 << 20)]).is_err() && check_vmem_sizes(&[16 << 30]).is_err());
        let mut notes = Vec::new();
        let bs = 512 << 20;
        assert_eq!(
            check_sizes(Granule::K64, bs, &[128 << 20, 1 << 30], &mut notes),
            Ok(vec![1 << 30])
        );
        assert_eq!(notes, ["64k: size 128M skipped: below one memory block (512M)"]);
        assert!(matches!(
            check_sizes(Granule::K64, bs, &[768 << 20], &mut notes),
            Err(PlanError::SizeNotBlocks { .. })
        ));
        assert!(matches!(
            check_sizes(Granule::K64, bs, &[128 << 20], &mut notes),
            Err(PlanError::NoSizes { .. })
        ));
    }

    #[test]
    fn compare_needs_records() {
        let dir = std::env::temp_dir().join(format!("hotmem-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("passwd");
        std::fs::write(&f, "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1::/:\n").unwrap();
        let e = read_compare(&f).unwrap_err().to_string();
        assert!(e.ends_with("holds no bench records (2 line(s), none a results.jsonl record); give a results.jsonl of an earlier run"), "{e}");
        assert!(read_compare(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partial_runs_are_named() {
        let page = Coverage {
            granules: Granule::ALL.to_vec(),
            sizes: vec![vec![128 << 20, 1 << 30]; 3],
            reps: 5,
            modes: vec!["deferred".into(), "eager".into()],
            boot_mems: vec![1 << 30],
            dimm_sizes: vec![128 << 20],
        };
        assert!(page.lacks(&page).is_empty());
        let run = Coverage {
            granules: vec![Granule::K64],
            sizes: vec![vec![1 << 30]],
            reps: 1,
            ..page.clone()
        };
        let l = run.lacks(&page);
        assert_eq!(l[0], ("granules 64k".to_string(), "4k,16k,64k".to_string()));
        assert_eq!(l[1], ("64k sizes 1G".to_string(), "128M,1G".to_string()));
        assert_eq!(l[2], ("1 repetitions".to_string(), "5".to_string()));
        assert!(
            describe_lacks(&l).starts_with("granules 64k (the page's: 4k,16k,64k), 64k sizes 1G (the page's: 128M,1G)")
        );
        assert_eq!(
            page_options("Generated by `hotmem-bench --sizes 128M,1G --reps 5 --write-docs` on commit"),
            Some(vec![
                "--sizes".into(),
                "128M,1G".into(),
                "--reps".into(),
                "5".into(),
                "--write-docs".into()
            ])
        );
    }

    /// The medians of a DIMM size come from their own samples: the unplug median from the
    /// unplug times, not the plug times.
    #[test]
    fn dimm_medians_take_each_metric_from_its_own_samples() {
        let s = DimmSamples {
            plug_ms: vec![30.0, 10.0, 20.0],
            unplug_ms: vec![5.0, 7.0, 6.0],
            guest_us: vec![400.0, 100.0, 300.0, 200.0],
            rss_mib_per_gib: vec![],
        };
        assert_eq!(dimm_medians(&s), (20.0, 6.0, Some(300.0)));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0, 1.0]), Some(2.0));
        assert_eq!(dimm_medians(&DimmSamples::default()).2, None);
    }
}
