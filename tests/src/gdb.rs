//! Helpers of the GDB session tests (`tests/tests/gdb.rs`): the layout a configuration implies,
//! and comparisons that put the extension's output (`walk:`, `page:`, `ptdump:`) next to the
//! kernel's own (`pt:`, `page:`); the lines themselves are parsed by [`crate::parse`].

use hotmem_qemu::config::{Granule, KernelConfig};

use crate::parse::{kv, lines_with, Walk};

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
    use crate::parse::{parse_walk, zone_lines};

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
