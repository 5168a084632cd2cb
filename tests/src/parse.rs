//! The kernel's log lines, parsed in one place: `key=value` fields (a `[..]` list is one value),
//! hex and decimal numbers, and the line shapes the suites read — `meminfo:`, `block:`
//! (`blocks`), `dimm:`/`dimms:`, `vmem:`, `virtio-mem:`, `layout:`, `pt:` and the GDB
//! extension's `walk:`. A format change is a fix here, not in every suite.

/// `key=value` pairs of a line, in order. A key is the word before `=`; a value runs to the next
/// whitespace, or, when it starts with `[`, to the matching `]` (the kernel prints lists with
/// Rust's `{:?}`: `blocks=[16, 17] zones=["Movable", "Movable"]`).
pub fn fields(line: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(char::is_whitespace).next().unwrap_or("");
        let after = &rest[eq + 1..];
        let end = if after.starts_with('[') {
            after.find(']').map_or(after.len(), |e| e + 1)
        } else {
            after.find(char::is_whitespace).unwrap_or(after.len())
        };
        out.push((key, &after[..end]));
        rest = &after[end..];
    }
    out
}

/// The value of `key` in `line` (see [`fields`]): the first `key=` of the line.
pub fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    fields(line).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `0x1f` (surrounding whitespace and a trailing `,` allowed) → 31; no `0x`, no number.
pub fn hex(s: &str) -> Option<u64> {
    let t = s.trim().trim_end_matches(',');
    u64::from_str_radix(t.strip_prefix("0x")?, 16).ok()
}

/// A hex (`0x`) or decimal number.
pub fn num(s: &str) -> Option<u64> {
    let t = s.trim();
    hex(t).or_else(|| t.parse().ok())
}

/// `[16, 17]` / `["Movable", "Normal"]` → items without quotes.
pub fn list(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Trimmed lines of `text` starting with one of `prefixes`.
pub fn lines_with<'a>(text: &'a str, prefixes: &[&str]) -> Vec<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .collect()
}

/// A `dimm: slot=N ... event=...` line of the kernel log (boot scan, insert, remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimmEvent {
    pub slot: u64,
    /// `coldplug`, `insert` or `remove`.
    pub event: String,
    pub base: Option<u64>,
    pub size: Option<u64>,
    pub blocks: Vec<u64>,
    pub zones: Vec<String>,
    /// `ost=` (absent on `remove ejected` lines).
    pub ost: Option<u64>,
    /// The text after `refused:`, when refused.
    pub refused: Option<String>,
    pub ejected: bool,
    pub line: String,
}

impl DimmEvent {
    pub fn parse(line: &str) -> Option<DimmEvent> {
        let l = &line[line.find("dimm: slot=")?..];
        let f = |k: &str| kv(l, k);
        let event = f("event")?.to_string();
        let refused = l.find("refused:").map(|i| {
            let r = &l[i + "refused:".len()..];
            r[..r.find(" ost=").unwrap_or(r.len())].trim().to_string()
        });
        Some(DimmEvent {
            slot: f("slot")?.parse().ok()?,
            event,
            base: f("base").and_then(hex),
            size: f("size").and_then(hex),
            blocks: f("blocks")
                .map(|v| list(v).iter().filter_map(|b| b.parse().ok()).collect())
                .unwrap_or_default(),
            zones: f("zones").map(list).unwrap_or_default(),
            ost: f("ost").and_then(hex),
            refused,
            ejected: l.contains("event=remove ejected"),
            line: l.to_string(),
        })
    }

    /// Every event line of `text`, in order.
    pub fn all(text: &str) -> Vec<DimmEvent> {
        text.lines().filter_map(DimmEvent::parse).collect()
    }
}

/// One DIMM of the guest's `dimms` listing (`dimm: slot= base= size= blocks=[..] group=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestDimm {
    pub slot: u64,
    pub base: u64,
    pub size: u64,
    pub blocks: Vec<u64>,
    pub group: String,
}

/// The guest's `dimms` output: DIMMs in use and the slots it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestDimms {
    pub dimms: Vec<GuestDimm>,
    pub refused_slots: Vec<u64>,
    pub count: Option<u64>,
}

pub fn parse_dimms(text: &str) -> GuestDimms {
    let mut g = GuestDimms::default();
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("dimms: ") {
            g.count = kv(rest, "count").and_then(|v| v.parse().ok());
            g.refused_slots = kv(rest, "refused_slots")
                .map(|v| list(v).iter().filter_map(|s| s.parse().ok()).collect())
                .unwrap_or_default();
        } else if l.starts_with("dimm: slot=") && !l.contains("event=") {
            let f = |k: &str| kv(l, k);
            if let (Some(slot), Some(base), Some(size)) = (
                f("slot").and_then(|v| v.parse().ok()),
                f("base").and_then(hex),
                f("size").and_then(hex),
            ) {
                g.dimms.push(GuestDimm {
                    slot,
                    base,
                    size,
                    blocks: f("blocks")
                        .map(|v| list(v).iter().filter_map(|b| b.parse().ok()).collect())
                        .unwrap_or_default(),
                    group: f("group").unwrap_or_default().to_string(),
                });
            }
        }
    }
    g
}

/// One line of the guest's `blocks` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestBlock {
    pub id: u64,
    pub start: u64,
    pub end: u64,
    /// NUMA node (0 when the line has none).
    pub node: u32,
    pub state: String,
    pub zone: String,
    pub group: String,
    pub vmemmap_pages: u64,
    pub early: bool,
}

pub fn parse_blocks(text: &str) -> Vec<GuestBlock> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("block: id="))
        .filter_map(|l| {
            let f = |k: &str| kv(l, k);
            let range = f("range")?;
            let (a, b) = range.split_once('-')?;
            Some(GuestBlock {
                id: f("id")?.parse().ok()?,
                start: hex(a)?,
                end: hex(b)?,
                node: f("node").and_then(|n| n.parse().ok()).unwrap_or(0),
                state: f("state")?.to_string(),
                zone: f("zone").unwrap_or_default().to_string(),
                group: f("group").unwrap_or_default().to_string(),
                vmemmap_pages: f("vmemmap_pages").and_then(num).unwrap_or(0),
                early: f("early") == Some("true"),
            })
        })
        .collect()
}

/// The counters of `meminfo:` that hotplug must give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meminfo {
    pub ram_bytes: u64,
    pub free_pages: u64,
    pub pt_pages: u64,
    pub memmap_bytes: u64,
}

pub fn parse_meminfo(text: &str) -> Option<Meminfo> {
    let l = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("meminfo: ram_bytes="))?;
    let f = |k: &str| kv(l, k).and_then(num);
    Some(Meminfo {
        ram_bytes: f("ram_bytes")?,
        free_pages: f("free_pages")?,
        pt_pages: f("pt_pages")?,
        memmap_bytes: f("memmap_bytes")?,
    })
}

/// `free_pages` of one zone (`meminfo: zone=Movable managed_pages= free_pages= ...`).
pub fn zone_free_pages(text: &str, zone: &str) -> Option<u64> {
    let want = format!("meminfo: zone={zone} ");
    let l = text.lines().map(str::trim).find(|l| l.starts_with(&want))?;
    kv(l, "free_pages").and_then(num)
}

/// `start=` of the boot log's `layout: region=<name>` line.
pub fn region_start(boot_log: &str, name: &str) -> Option<u64> {
    let l = boot_log.lines().map(str::trim).find(|l| {
        l.strip_prefix("layout: region=")
            .is_some_and(|r| r.split_whitespace().next() == Some(name))
    })?;
    kv(l, "start").and_then(hex)
}

/// `pt <va>` said `not mapped` (and nothing was mapped).
pub fn pt_not_mapped(text: &str) -> bool {
    let leaf = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("pt: -> "))
        .collect::<Vec<_>>();
    leaf.len() == 1 && leaf[0].contains("not mapped")
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

/// One `pt <va>` walk as printed by the kernel:
/// `pt: va=.. levels=N`, then `pt: L<level> (...) ...` per table visited, then
/// `pt: -> pa=0x.. level=L ...` or `pt: -> not mapped`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PtWalk {
    /// `levels=` of the header line.
    pub levels: Option<u32>,
    /// Levels of the `pt: L<n>` lines, in order.
    pub steps: Vec<u32>,
    /// `(pa, level)` of the leaf.
    pub leaf: Option<(u64, u32)>,
}

pub fn parse_pt(text: &str) -> PtWalk {
    let mut w = PtWalk::default();
    for l in text.lines().map(str::trim) {
        let Some(rest) = l.strip_prefix("pt: ") else {
            continue;
        };
        if let Some(n) = kv(rest, "levels") {
            w.levels = n.parse().ok();
        } else if let Some(lv) = rest.strip_prefix('L') {
            if let Some(n) = lv
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
            {
                w.steps.push(n);
            }
        } else if let Some(leaf) = rest.strip_prefix("-> ") {
            if let (Some(pa), Some(level)) = (
                kv(leaf, "pa").and_then(hex),
                kv(leaf, "level").and_then(|v| v.parse().ok()),
            ) {
                w.leaf = Some((pa, level));
            }
        }
    }
    w
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
            if let (Some(level), Some(index), Some(table), Some(desc)) = (
                level,
                kv(rest, "idx").and_then(|v| v.parse().ok()),
                kv(rest, "table").and_then(num),
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

/// One device of the guest's `vmem` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestVmem {
    pub dev: u64,
    pub addr: u64,
    pub region: u64,
    pub block: u64,
    pub unit: u64,
    pub plugged: u64,
    pub requested: u64,
    pub units_plugged: u64,
    pub group: String,
    pub irq: String,
    /// `memory-block`, `big-block` or `sub-block`.
    pub mode: String,
    /// Sub-block mode: `(block id, plugged device blocks)` of each added memory block.
    pub sub_blocks: Vec<(u64, u64)>,
}

pub fn parse_vmem(text: &str) -> Vec<GuestVmem> {
    let mut v: Vec<GuestVmem> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("vmem: dev=") && l.contains(" pci="))
        .filter_map(|l| {
            let f = |k: &str| kv(l, k);
            let h = |k: &str| f(k).and_then(hex);
            Some(GuestVmem {
                dev: f("dev")?.parse().ok()?,
                addr: h("addr")?,
                region: h("region")?,
                block: h("block")?,
                unit: h("unit")?,
                plugged: h("plugged")?,
                requested: h("requested")?,
                units_plugged: f("units")?.split('/').next()?.parse().ok()?,
                group: f("group")?.to_string(),
                irq: f("irq").unwrap_or_default().to_string(),
                mode: f("mode")?.to_string(),
                sub_blocks: Vec::new(),
            })
        })
        .collect();
    for l in text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("vmem: dev=") && l.contains(" subblocks="))
    {
        let (Some(dev), Some(block), Some(n)) = (
            kv(l, "dev").and_then(|d| d.parse::<u64>().ok()),
            kv(l, "block").and_then(|b| b.parse::<u64>().ok()),
            kv(l, "subblocks").and_then(|s| s.split('/').next()?.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if let Some(d) = v.iter_mut().find(|d| d.dev == dev) {
            d.sub_blocks.push((block, n));
        }
    }
    v
}

/// The boot log's `virtio-mem: dev=<dev> ...` line (the device found at boot), if any.
pub fn virtio_mem_line(text: &str, dev: u64) -> Option<&str> {
    let want = format!("virtio-mem: dev={dev} ");
    text.lines().map(str::trim).find(|l| l.starts_with(&want))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSERT: &str = r#"dimm: slot=1 base=0x80000000 size=0x40000000 event=insert blocks=[16, 17, 18] zones=["Movable", "Movable", "Movable"] ost=0x0 cycles=46000430"#;

    #[test]
    fn parses_fields_and_events() {
        assert_eq!(kv(INSERT, "blocks"), Some("[16, 17, 18]"));
        assert_eq!(kv(INSERT, "ost"), Some("0x0"));
        assert_eq!(kv("a=1 bb=2 b=3", "b"), Some("3"));
        assert_eq!(kv("x\tk=v", "k"), Some("v"));
        assert_eq!(
            (hex(" 0x1f, "), hex("31"), num("31"), num("0x1f")),
            (Some(31), None, Some(31), Some(31))
        );
        let e = DimmEvent::parse(&format!("hotmem> {INSERT}")).unwrap();
        assert_eq!(
            (e.slot, e.event.as_str(), e.base, e.size),
            (1, "insert", Some(0x8000_0000), Some(1 << 30))
        );
        assert_eq!(e.blocks, [16, 17, 18]);
        assert_eq!(e.zones, ["Movable"; 3]);
        assert_eq!((e.ost, e.refused.clone(), e.ejected), (Some(0), None, false));
        let r = DimmEvent::parse("dimm: slot=0 base=0x80000000 size=0x8000000 event=insert refused: range 0x80000000+0x8000000 is not aligned to the memory block size 0x20000000 (the 64k granule uses 512 MiB memory blocks) ost=0x82").unwrap();
        assert_eq!(r.ost, Some(0x82));
        assert!(r
            .refused
            .unwrap()
            .starts_with("range 0x80000000+0x8000000 is not aligned"));
        let x = DimmEvent::parse("dimm: slot=0 event=remove ejected base=0x80000000 size=0x40000000 cycles=1").unwrap();
        assert!(x.ejected && x.event == "remove");
        let x = DimmEvent::parse(
            "dimm: slot=2 event=remove refused: Busy ost=0x82 (the DIMM stays usable; retry device_del)",
        )
        .unwrap();
        assert_eq!((x.refused.as_deref(), x.ost), (Some("Busy"), Some(0x82)));
        assert!(DimmEvent::parse("dimm: slot=0 base=0x1 size=0x2 blocks=[1] group=0").is_none());
    }

    #[test]
    fn parses_listings() {
        let d = parse_dimms("dimms\ndimms: count=1 refused_slots=[2, 3]\ndimm: slot=0 base=0x80000000 size=0x8000000 blocks=[16] group=0\n");
        assert_eq!(d.count, Some(1));
        assert_eq!(d.refused_slots, [2, 3]);
        assert_eq!(
            d.dimms,
            [GuestDimm {
                slot: 0,
                base: 0x8000_0000,
                size: 0x800_0000,
                blocks: vec![16],
                group: "0".into()
            }]
        );
        let b = parse_blocks("block: id=16 range=0x80000000-0x88000000 state=online zone=Movable group=0 vmemmap_pages=512 early=false\n");
        assert_eq!(b[0].id, 16);
        assert_eq!(
            (b[0].start, b[0].end, b[0].vmemmap_pages, b[0].early),
            (0x8000_0000, 0x8800_0000, 512, false)
        );
        let m = parse_meminfo("meminfo: ram_bytes=2147483648 ram_pages=524288 free_pages=513246 used_pages=11042 pt_pages=18 memmap_bytes=33554432 x=1\nmeminfo: zone=Movable managed_pages=258048 free_pages=258000 isolated_pages=0 free_blocks_by_order=[0, 0]\n").unwrap();
        assert_eq!((m.free_pages, m.pt_pages, m.memmap_bytes), (513246, 18, 33554432));
        assert_eq!(
            zone_free_pages(
                "meminfo: zone=Movable managed_pages=2 free_pages=258000 x=[1, 2]",
                "Movable"
            ),
            Some(258000)
        );
        let log = "layout: region=linear   start=0xffff000000000000 end=0xffff800000000000 size=128 TiB\nlayout: region=vmemmap  start=0xffff800000000000 end=0x1 size=2 TiB\n";
        assert_eq!(region_start(log, "linear"), Some(0xffff_0000_0000_0000));
        assert_eq!(region_start(log, "vmemmap"), Some(0xffff_8000_0000_0000));
        assert!(pt_not_mapped(
            "pt 0x1\npt: va=0x1 levels=4\npt: L0 (pgd) idx=0\npt: -> not mapped\n"
        ));
        assert!(!pt_not_mapped(
            "pt: -> pa=0x80000000 level=1 size=1 GiB contiguous=false\n"
        ));
        assert_eq!(list(r#"["Movable", "Normal"]"#), ["Movable", "Normal"]);
    }
}
