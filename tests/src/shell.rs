//! Parsing and checking shell command output. The assertions on the kernel's output formats
//! live here, in one place, so a format change is a one-line fix.

use hotmem_qemu::config::KernelConfig;

use crate::parse::{hex, kv, parse_pt};

/// Guest-physical base of RAM on `virt`.
pub const RAM_BASE: u64 = 0x4000_0000;

/// Linear-map VA of the RAM base: `layout: region=linear start=` plus `boot: memory base=` from
/// the boot log, else the layout rule `PAGE_OFFSET (= -2^VA) + PA`.
pub fn linear_map_va(config: &KernelConfig, boot_log: &str) -> u64 {
    let line_kv = |prefix: &str, key: &str| -> Option<u64> {
        boot_log
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| kv(l, key))
            .and_then(hex)
    };
    let start = line_kv("layout: region=linear", "start").unwrap_or_else(|| config.ttbr1_base());
    let base = line_kv("boot: memory base", "base").unwrap_or(RAM_BASE);
    start + base
}

/// Start of the kernel image text (`layout: kimage text=<start>-<end>`), if printed.
pub fn kimage_text_va(boot_log: &str) -> Option<u64> {
    let l = boot_log
        .lines()
        .find(|l| l.trim_start().starts_with("layout: kimage"))?;
    hex(kv(l, "text")?.split('-').next()?)
}

/// Checks a walk of a mapped VA: the header reports the configuration's number of levels, the
/// walk starts at the configuration's first level and visits consecutive levels down to the
/// leaf (a block stops early; a page leaf means every level was walked), and the leaf maps
/// `expect_pa` when given. Returns the number of levels walked.
pub fn check_pt_walk(config: &KernelConfig, text: &str, expect_pa: Option<u64>) -> Result<usize, String> {
    let w = parse_pt(text);
    let levels = config.levels();
    let first = 4 - levels;
    if w.levels != Some(levels) {
        return Err(format!(
            "expected a {levels}-level walk for {config}, header says {:?}",
            w.levels
        ));
    }
    let Some((pa, leaf_level)) = w.leaf else {
        return Err("the walk found no mapping".into());
    };
    let want: Vec<u32> = (first..=leaf_level).collect();
    if w.steps != want {
        return Err(format!(
            "expected walk levels {want:?} (first level {first}, leaf at {leaf_level}), got {:?}",
            w.steps
        ));
    }
    if leaf_level == 3 && w.steps.len() != levels as usize {
        return Err(format!(
            "a page leaf must take all {levels} levels, took {}",
            w.steps.len()
        ));
    }
    if let Some(want_pa) = expect_pa {
        if pa != want_pa {
            return Err(format!("leaf maps pa={pa:#x}, expected {want_pa:#x}"));
        }
    }
    Ok(w.steps.len())
}

/// A rejected command: an `unknown command` error or a `usage:` line.
pub fn check_rejected(response: &str) -> Result<(), String> {
    let has = |s: &str| response.lines().any(|l| l.to_ascii_lowercase().contains(s));
    if has("usage:") || has("unknown command") {
        Ok(())
    } else {
        Err(format!("expected a usage line, got {response:?}"))
    }
}

/// A usage line for `cmd` (`usage: cmd ...`).
pub fn check_usage(response: &str, cmd: &str) -> Result<(), String> {
    let want = format!("usage: {cmd}");
    if response.lines().any(|l| l.trim_start().starts_with(&want)) {
        Ok(())
    } else {
        Err(format!("expected `{want} ...`, got {response:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::PtWalk;
    use hotmem_qemu::config::Granule;

    const WALK: &str = "pt 0xffff000040000000\n\
        pt: va=0xffff000040000000 ttbr=1 root=0x40a3f000 granule=4k va_bits=48 levels=4\n\
        pt: L0 (pgd) idx=0 table=0x40a3f000 desc=0x40a40003\n\
        pt: L1 (pud) idx=1 table=0x40a40000 desc=0x40000701\n\
        pt: -> pa=0x40000000 level=1 size=1 GiB contiguous=false\n";

    #[test]
    fn parses_and_checks_walks() {
        let c = KernelConfig::new(Granule::K4, 48).unwrap();
        let w = parse_pt(WALK);
        assert_eq!(
            w,
            PtWalk {
                levels: Some(4),
                steps: vec![0, 1],
                leaf: Some((0x4000_0000, 1))
            }
        );
        assert_eq!(check_pt_walk(&c, WALK, Some(0x4000_0000)), Ok(2));
        assert!(check_pt_walk(&c, WALK, Some(0x5000_0000)).is_err());
        let c39 = KernelConfig::new(Granule::K4, 39).unwrap();
        assert!(check_pt_walk(&c39, WALK, None).unwrap_err().contains("3-level"));
        let page =
            "pt: va=0x1 levels=2\npt: L2 (pmd) idx=0 table=0x1 desc=0x3\npt: L3 (pte) idx=0 table=0x2 desc=0x3\n\
                    pt: -> pa=0x40200000 level=3 size=64 KiB contiguous=true\n";
        let c42 = KernelConfig::new(Granule::K64, 42).unwrap();
        assert_eq!(check_pt_walk(&c42, page, None), Ok(2));
        assert!(check_pt_walk(&c42, "pt: va=0x1 levels=2\npt: L2 (pmd)\npt: -> not mapped\n", None).is_err());
    }

    #[test]
    fn boot_log_addresses() {
        let log = "boot: memory base=0x40000000 size=0x40000000 (1 GiB)\n\
                   layout: region=linear   start=0xffff800000000000 end=0xffffc00000000000 size=64 TiB\n\
                   layout: kimage text=0xffffffffc0000000-0xffffffffc0020000 (RX) rodata=0x1-0x2 (R)\n";
        let c = KernelConfig::new(Granule::K16, 47).unwrap();
        assert_eq!(linear_map_va(&c, log), 0xffff_8000_4000_0000);
        assert_eq!(linear_map_va(&c, ""), 0xffff_8000_4000_0000);
        assert_eq!(kimage_text_va(log), Some(0xffff_ffff_c000_0000));
    }

    #[test]
    fn rejections() {
        assert!(check_rejected("error: unknown command 'x' (type 'help' for the list)\n").is_ok());
        assert!(check_usage("error: 'q' is not a number\nusage: pt <va>\n", "pt").is_ok());
        assert!(check_usage("pt: -> not mapped\n", "pt").is_err());
        assert!(check_rejected("ok\n").is_err());
    }
}
