//! Helpers of the GDB session tests (`tests/tests/gdb.rs`): the layout a configuration implies,
//! and parsers that put the extension's output (`walk:`, `page:`, `section:`, `block:`,
//! `freelists: zone=`) next to the kernel's own (`pt:`, `page:`, `section:`, `block:`,
//! `meminfo: zone=`).

use hotmem_qemu::config::{Granule, KernelConfig};

use crate::kv;

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().strip_prefix("0x")?, 16).ok()
}

/// The virtual layout of a configuration (platform/src/boot/layout.rs).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub page_shift: u32,
    pub va_bits: u32,
    pub levels: u32,
    pub page_offset: u64,
    pub vmemmap_start: u64,
    pub section_shift: u32,
}

impl Layout {
    pub fn of(cfg: &KernelConfig) -> Layout {
        let page_offset = cfg.ttbr1_base();
        Layout {
            page_shift: cfg.granule.page_shift(),
            va_bits: cfg.va_bits,
            levels: cfg.levels(),
            page_offset,
            vmemmap_start: page_offset + (1u64 << (cfg.va_bits - 1)),
            section_shift: if cfg.granule == Granule::K64 { 29 } else { 27 },
        }
    }
    pub fn start_level(&self) -> u32 {
        4 - self.levels
    }
    pub fn linear(&self, pa: u64) -> u64 {
        self.page_offset + pa
    }
    pub fn pfn(&self, pa: u64) -> u64 {
        pa >> self.page_shift
    }
    pub fn struct_page(&self, pfn: u64) -> u64 {
        self.vmemmap_start + 64 * pfn
    }
    pub fn section_size(&self) -> u64 {
        1 << self.section_shift
    }
    /// Bytes of memmap one section needs (64 bytes per page).
    pub fn memmap_per_section(&self) -> u64 {
        (self.section_size() >> self.page_shift) * 64
    }
}

/// One level of a walk: `pt: L<n> (..) idx= table= desc=` or `walk: L<n> (..) idx= table= entry= desc=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub level: u32,
    pub index: u64,
    pub table: u64,
    pub desc: u64,
}

/// A walk as printed by the kernel (`prefix` = `pt:`) or by `hm-walk` (`walk:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub levels: Option<u32>,
    pub ttbr: Option<u32>,
    pub steps: Vec<Step>,
    /// `(pa, level)` of the leaf.
    pub leaf: Option<(u64, u32)>,
    pub not_mapped: bool,
    /// `hm-walk` only: `translation fault at level N`.
    pub fault_level: Option<u32>,
    /// `hm-walk` only: nothing was walked (TTBR0 disabled, no tables yet, ...).
    pub not_walked: bool,
}

pub fn parse_walk(text: &str, prefix: &str) -> Walk {
    let mut w = Walk::default();
    for l in text.lines().map(str::trim) {
        let Some(rest) = l.strip_prefix(prefix).map(str::trim_start) else {
            continue;
        };
        if let Some(lv) = rest.strip_prefix('L') {
            let level = lv
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok());
            let num = |k: &str| kv(rest, k).and_then(|v| hex(v).or_else(|| v.parse().ok()));
            if let (Some(level), Some(index), Some(table), Some(desc)) = (
                level,
                kv(rest, "idx").and_then(|v| v.parse().ok()),
                num("table"),
                kv(rest, "desc").and_then(hex),
            ) {
                w.steps.push(Step {
                    level,
                    index,
                    table,
                    desc,
                });
            }
        } else if let Some(leaf) = rest.strip_prefix("-> ") {
            if leaf.starts_with("not mapped") {
                w.not_mapped = true;
                w.fault_level = leaf
                    .split("at level ")
                    .nth(1)
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|d| d.parse().ok());
            } else if leaf.starts_with("not walked") {
                w.not_walked = true;
            } else if let (Some(pa), Some(level)) = (
                kv(leaf, "pa").and_then(hex),
                kv(leaf, "level").and_then(|v| v.parse().ok()),
            ) {
                w.leaf = Some((pa, level));
            }
        } else if rest.starts_with("va=") {
            if let Some(n) = kv(rest, "levels").and_then(|v| v.parse().ok()) {
                w.levels = Some(n);
            }
            if let Some(n) = kv(rest, "ttbr").and_then(|v| v.parse().ok()) {
                w.ttbr = Some(n);
            }
        }
    }
    w
}

/// `hm-walk`'s walk and the kernel's `pt` of the same VA agree level by level: indices, table
/// addresses, raw descriptors, and the leaf.
pub fn compare_walks(gdb: &Walk, kernel: &Walk) -> Result<(), String> {
    if gdb.levels != kernel.levels {
        return Err(format!("levels: gdb {:?}, kernel {:?}", gdb.levels, kernel.levels));
    }
    if gdb.steps != kernel.steps {
        return Err(format!(
            "steps differ:\n  gdb    {:x?}\n  kernel {:x?}",
            gdb.steps, kernel.steps
        ));
    }
    if gdb.leaf != kernel.leaf || gdb.not_mapped != kernel.not_mapped {
        return Err(format!(
            "leaf: gdb {:x?} (not mapped: {}), kernel {:x?} (not mapped: {})",
            gdb.leaf, gdb.not_mapped, kernel.leaf, kernel.not_mapped
        ));
    }
    Ok(())
}

/// Trimmed lines of `text` starting with one of `prefixes`.
pub fn lines_with<'a>(text: &'a str, prefixes: &[&str]) -> Vec<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .collect()
}

/// The kernel's `page:` line and `hm-page`'s agree: every word of the kernel's line is in
/// the extension's (which adds `private=` and `struct_page_pa=`).
pub fn compare_page(gdb: &str, kernel: &str) -> Result<(), String> {
    let (Some(g), Some(k)) = (
        lines_with(gdb, &["page:"]).into_iter().next(),
        lines_with(kernel, &["page:"]).into_iter().next(),
    ) else {
        return Err(format!("no `page:` line: gdb {gdb:?}, kernel {kernel:?}"));
    };
    if k.contains("has no memmap") {
        return if g.contains("has no memmap") {
            Ok(())
        } else {
            Err(format!("kernel: {k}\n  gdb:    {g}"))
        };
    }
    let gw: Vec<&str> = g.split_whitespace().collect();
    match k.split_whitespace().find(|w| !gw.contains(w)) {
        None => Ok(()),
        Some(w) => Err(format!(
            "`{w}` of the kernel's line is not in gdb's:\n  kernel: {k}\n  gdb:    {g}"
        )),
    }
}

/// `zone -> "managed_pages=.. free_pages=.. isolated_pages=.. free_blocks_by_order=[..]"` from
/// lines `<prefix> zone=NAME ...` (`meminfo:` of the kernel, `freelists:` of hm-freelists).
pub fn zone_lines(text: &str, prefix: &str) -> Vec<(String, String)> {
    lines_with(text, &[prefix])
        .into_iter()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?.trim_start().strip_prefix("zone=")?;
            let (zone, tail) = rest.split_once(' ')?;
            Some((zone.to_string(), tail.trim().to_string()))
        })
        .collect()
}

/// `mapped_bytes=` of `ptdump: region=<region>`.
pub fn ptdump_mapped(text: &str, region: &str) -> Option<u64> {
    lines_with(text, &["ptdump:"])
        .into_iter()
        .find(|l| kv(l, "region") == Some(region))
        .and_then(|l| kv(l, "mapped_bytes"))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "pt 0xffff000040000000\n\
        pt: va=0xffff000040000000 ttbr=1 root=0x402e0000 granule=4k va_bits=48 levels=4\n\
        pt: L0 (pgd) idx=0 table=0x402e0000 desc=0x10000000402ed003  TABLE pa=0x402ed000 UXNTable\n\
        pt: L1 (pud) idx=1 table=0x402ed000 desc=0x0060000040000705  BLOCK pa=0x40000000 Normal RW XN AF SH=inner\n\
        pt: -> pa=0x40000000 level=1 size=1 GiB contiguous=false\n";
    const GDB: &str = "walk: va=0xffff000040000000 ttbr=1 root=0x402e0000 granule=4k va_bits=48 levels=4 start_level=0 read=phys\n\
        walk: L0 (pgd) idx=0 table=0x402e0000 entry=0x402e0000 desc=0x10000000402ed003 TABLE next=0x402ed000 UXNTable\n\
        walk: L1 (pud) idx=1 table=0x402ed000 entry=0x402ed008 desc=0x0060000040000705 BLOCK oa=0x40000000 size=1 GiB Normal RW XN AF SH=inner\n\
        walk: -> pa=0x40000000 level=1 size=1 GiB contiguous=false\n";

    #[test]
    fn walks_compare() {
        let (g, k) = (parse_walk(GDB, "walk:"), parse_walk(KERNEL, "pt:"));
        assert_eq!(g.steps.len(), 2);
        assert_eq!(g.leaf, Some((0x4000_0000, 1)));
        assert_eq!((g.levels, g.ttbr), (Some(4), Some(1)));
        assert_eq!(compare_walks(&g, &k), Ok(()));
        let other = GDB.replace("idx=1 table=0x402ed000", "idx=2 table=0x402ed000");
        assert!(compare_walks(&parse_walk(&other, "walk:"), &k).is_err());
        let f = parse_walk(
            "walk: va=0x1 ttbr=1 levels=2\nwalk: -> not mapped: translation fault at level 2 (L2 pmd idx=8): invalid descriptor 0x0\n",
            "walk:",
        );
        assert!(f.not_mapped && f.fault_level == Some(2));
        assert!(parse_walk("walk: va=0x40200000: in the TTBR0 half\nwalk: -> not walked\n", "walk:").not_walked);
    }

    #[test]
    fn pages_zones_ptdump() {
        let k = "page: pfn=0x40000 pa=0x40000000 struct_page=0xffff800001000000 flags=0x1 (reserved) order=0 zone=Normal node=0 refcount=0 block=8 next=- prev=-";
        let g = format!("{k} private=0x0 struct_page_pa=0x7fe00000");
        assert_eq!(compare_page(&g, k), Ok(()));
        assert!(compare_page(&g.replace("order=0", "order=1"), k).is_err());
        assert!(compare_page(
            "page: pfn=0x0 has no memmap (pfn_valid is false: section 0 state=none)",
            "page: pfn=0x0 has no memmap (pfn_valid is false)"
        )
        .is_ok());
        let m = "meminfo: zone=Normal managed_pages=5 free_pages=3 isolated_pages=0 free_blocks_by_order=[1, 1]";
        let f = "freelists: zone=Normal managed_pages=5 free_pages=3 isolated_pages=0 free_blocks_by_order=[1, 1]";
        assert_eq!(zone_lines(m, "meminfo:"), zone_lines(f, "freelists:"));
        assert_eq!(zone_lines(m, "meminfo:")[0].0, "Normal");
        assert_eq!(
            ptdump_mapped(
                "ptdump: region=linear start=0x0 mapped=1 GiB mapped_bytes=1073741824 rows=1",
                "linear"
            ),
            Some(1 << 30)
        );
        let l = Layout::of(&KernelConfig::new(Granule::K16, 47).unwrap());
        assert_eq!(l.vmemmap_start, 0xffff_c000_0000_0000);
        assert_eq!(l.memmap_per_section(), 512 << 10);
    }
}
