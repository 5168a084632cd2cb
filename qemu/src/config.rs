//! Build and machine configurations: granule × VA size (the kernel build matrix, docs/design.md#configuration-matrix),
//! boot mode, GIC version, memory size.

use std::fmt;
use std::str::FromStr;

use mm::geometry::Geometry;
use mm::size::{parse_size, Size};

/// Translation granule of a kernel build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granule {
    K4,
    K16,
    K64,
}

impl Granule {
    pub const ALL: [Granule; 3] = [Granule::K4, Granule::K16, Granule::K64];

    /// Short name used on the command line and in file names: `4k`, `16k`, `64k`.
    pub fn name(self) -> &'static str {
        match self {
            Granule::K4 => "4k",
            Granule::K16 => "16k",
            Granule::K64 => "64k",
        }
    }

    /// Cargo feature of `hotmem-platform` selecting this granule.
    pub fn feature(self) -> &'static str {
        match self {
            Granule::K4 => "granule-4k",
            Granule::K16 => "granule-16k",
            Granule::K64 => "granule-64k",
        }
    }

    pub fn page_shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
            Granule::K16 => 14,
            Granule::K64 => 16,
        }
    }

    /// The memory block (sparse section) size of this granule's kernel: the unit of hot-add.
    pub fn memory_block_size(self) -> u64 {
        Geometry::MATRIX
            .into_iter()
            .find(|g| g.page_shift == self.page_shift())
            .map_or(0, |g| g.section_size())
    }

    fn from_page_shift(shift: u32) -> Granule {
        *Granule::ALL
            .iter()
            .find(|g| g.page_shift() == shift)
            .expect("a granule of the matrix")
    }

    /// VA sizes the kernel supports with this granule (the build matrix, [`Geometry::MATRIX`]).
    pub fn valid_va_bits(self) -> Vec<u32> {
        let geometries = Geometry::MATRIX
            .into_iter()
            .filter(|g| g.page_shift == self.page_shift());
        geometries.map(|g| g.va_bits).collect()
    }

    pub fn default_va_bits(self) -> u32 {
        Geometry::default_for(self.page_shift()).va_bits
    }
}

impl fmt::Display for Granule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Granule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s
            .trim()
            .to_ascii_lowercase()
            .trim_end_matches("ib")
            .trim_end_matches('b')
        {
            "4k" | "4" | "4096" => Ok(Granule::K4),
            "16k" | "16" | "16384" => Ok(Granule::K16),
            "64k" | "64" | "65536" => Ok(Granule::K64),
            _ => Err(format!("unknown granule `{s}` (expected 4k, 16k or 64k)")),
        }
    }
}

/// One line listing every valid granule/VA pair, for error messages and `--help`.
pub fn valid_pairs_text() -> String {
    Granule::ALL
        .iter()
        .map(|g| {
            let vas: Vec<String> = g.valid_va_bits().iter().map(|v| v.to_string()).collect();
            format!("{}: {} (default {})", g, vas.join(", "), g.default_va_bits())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A kernel build configuration: exactly one granule and one VA size, plus the test kernel flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelConfig {
    pub granule: Granule,
    pub va_bits: u32,
    /// Build the in-guest test kernel (`ktest` feature).
    pub ktest: bool,
}

impl KernelConfig {
    /// Validates the pair; the error lists the valid ones.
    pub fn new(granule: Granule, va_bits: u32) -> Result<Self, String> {
        if granule.valid_va_bits().contains(&va_bits) {
            Ok(KernelConfig {
                granule,
                va_bits,
                ktest: false,
            })
        } else {
            Err(format!(
                "invalid configuration: granule {granule} with {va_bits}-bit VA is not supported; \
                 valid pairs are {}",
                valid_pairs_text()
            ))
        }
    }

    /// The granule's default VA size.
    pub fn default_for(granule: Granule) -> Self {
        KernelConfig {
            granule,
            va_bits: granule.default_va_bits(),
            ktest: false,
        }
    }

    pub fn with_ktest(mut self, ktest: bool) -> Self {
        self.ktest = ktest;
        self
    }

    /// All seven granule/VA builds of the matrix (without `ktest`), from [`Geometry::MATRIX`].
    pub fn matrix() -> Vec<KernelConfig> {
        let config = |g: Geometry| KernelConfig::new(Granule::from_page_shift(g.page_shift), g.va_bits);
        Geometry::MATRIX
            .into_iter()
            .map(|g| config(g).expect("a matrix pair"))
            .collect()
    }

    /// The translation geometry of this build (`mm`'s model of it).
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.granule.page_shift(), self.va_bits)
    }

    /// The `--features` value for `cargo build -p hotmem-platform`.
    pub fn features(&self) -> String {
        let mut f = format!("{} va-{}", self.granule.feature(), self.va_bits);
        if self.ktest {
            f.push_str(" ktest");
        }
        f
    }

    /// `4k-48`, `16k-47-ktest`: used in file names and messages.
    pub fn name(&self) -> String {
        let mut n = format!("{}-{}", self.granule, self.va_bits);
        if self.ktest {
            n.push_str("-ktest");
        }
        n
    }

    /// Number of translation levels ([`Geometry::levels`]).
    pub fn levels(&self) -> u32 {
        self.geometry().levels()
    }

    /// Lowest address of the TTBR1 (kernel) half for this VA size.
    pub fn ttbr1_base(&self) -> u64 {
        self.geometry().ttbr1_base()
    }
}

impl fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How QEMU loads the kernel (docs/design.md#boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootMode {
    /// `-bios hotmem.bin`: runs from flash at 0, relocates itself; GED/DIMM hotplug exist.
    Firmware,
    /// `-kernel hotmem.elf`: RAM-linked ELF, no DTB pointer.
    Kernel,
    /// `-kernel hotmem.bin`: arm64 Image form, DTB pointer in x0.
    Image,
    /// `-drive if=pflash,...,file=hotmem.pflash`: the firmware image padded to the 64 MiB of
    /// flash 0, read-only; runs from flash as `-bios` does (libvirt's `<loader type='pflash'>`).
    Pflash,
}

impl BootMode {
    pub const ALL: [BootMode; 4] = [BootMode::Firmware, BootMode::Kernel, BootMode::Image, BootMode::Pflash];

    /// Booted as the machine's firmware (`-bios` or pflash): QEMU then gives `virt` its ACPI GED
    /// (DIMM hotplug, the power button), and the command line travels through fw_cfg.
    pub fn is_firmware(self) -> bool {
        matches!(self, BootMode::Firmware | BootMode::Pflash)
    }

    pub fn name(self) -> &'static str {
        match self {
            BootMode::Firmware => "firmware",
            BootMode::Kernel => "kernel",
            BootMode::Image => "image",
            BootMode::Pflash => "pflash",
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BootMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "firmware" | "bios" | "fw" => Ok(BootMode::Firmware),
            "kernel" | "elf" => Ok(BootMode::Kernel),
            "image" | "bin" => Ok(BootMode::Image),
            "pflash" | "flash" => Ok(BootMode::Pflash),
            _ => Err(format!(
                "unknown boot mode `{s}` (expected firmware, kernel, image or pflash)"
            )),
        }
    }
}

/// GIC version of the `virt` machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GicVersion {
    V2,
    V3,
}

impl GicVersion {
    pub fn number(self) -> u32 {
        match self {
            GicVersion::V2 => 2,
            GicVersion::V3 => 3,
        }
    }
}

impl fmt::Display for GicVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl FromStr for GicVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().trim_start_matches('v') {
            "2" => Ok(GicVersion::V2),
            "3" => Ok(GicVersion::V3),
            _ => Err(format!("unknown GIC version `{s}` (expected 2 or 3)")),
        }
    }
}

/// The kernel's source of its CPU limit (`pub const MAX_CPUS: usize = N;`), compiled into the
/// runner so the two cannot disagree.
const KERNEL_SMP_SOURCE: &str = include_str!("../../platform/src/kernel/smp.rs");

/// The most CPUs the kernel brings online (`MAX_CPUS` in `platform/src/kernel/smp.rs`): the runner
/// refuses a larger `--smp` rather than booting CPUs the kernel leaves offline.
pub fn kernel_max_cpus() -> u32 {
    parse_max_cpus(KERNEL_SMP_SOURCE).expect("platform/src/kernel/smp.rs defines `pub const MAX_CPUS: usize = N;`")
}

fn parse_max_cpus(src: &str) -> Option<u32> {
    let rest = src.split("pub const MAX_CPUS: usize =").nth(1)?;
    rest.split(';').next()?.trim().replace('_', "").parse().ok()
}

/// The guest shell's line discipline (`pub const LINE_MAX: usize = N;`), compiled into the runner
/// so that `--exec` refuses a command the shell would refuse, before anything is typed.
const KERNEL_LINE_SOURCE: &str = include_str!("../../platform/src/shell/line.rs");

/// The most bytes a guest shell line holds (`LINE_MAX` in `platform/src/shell/line.rs`).
pub fn kernel_line_max() -> usize {
    KERNEL_LINE_SOURCE
        .split("pub const LINE_MAX: usize =")
        .nth(1)
        .and_then(|rest| rest.split(';').next()?.trim().replace('_', "").parse().ok())
        .expect("platform/src/shell/line.rs defines `pub const LINE_MAX: usize = N;`")
}

/// The kernel's NUMA parser (`pub const MAX_NUMNODES: usize = N;`), compiled into the runner so
/// that `--numa` refuses a node the kernel could not describe.
const KERNEL_NUMA_SOURCE: &str = include_str!("../../platform/parse/src/numa.rs");

/// The most NUMA nodes the kernel supports (`MAX_NUMNODES` in `platform/parse/src/numa.rs`).
pub fn kernel_max_numnodes() -> u32 {
    KERNEL_NUMA_SOURCE
        .split("pub const MAX_NUMNODES: usize =")
        .nth(1)
        .and_then(|rest| rest.split(';').next()?.trim().replace('_', "").parse().ok())
        .expect("platform/parse/src/numa.rs defines `pub const MAX_NUMNODES: usize = N;`")
}

/// QEMU's limit on DIMM slots (`ACPI_MAX_RAM_SLOTS`).
pub const MAX_DIMM_SLOTS: u32 = 256;

/// Checks a QEMU `-m` value: a size (`1G`, `512M`, `1536` = MiB), optionally followed by the
/// hotplug options `,slots=N,maxmem=SIZE`; returns it in QEMU's spelling. `slots=` without
/// `maxmem=` gets `maxmem=SIZE+32G` (QEMU refuses slots without a maximum); what QEMU would
/// refuse at start (maxmem below the RAM, slots with no room above it, more than 256 slots)
/// is refused here with the reason.
pub fn parse_mem_option(s: &str) -> Result<String, String> {
    let mut parts = s.split(',');
    let ram = parse_mem_size(parts.next().unwrap_or(""))?;
    let ram_bytes = mem_size_bytes(&ram).unwrap_or(0);
    let (mut slots, mut maxmem): (Option<u32>, Option<String>) = (None, None);
    for p in parts {
        match p.split_once('=').map(|(k, v)| (k.trim(), v)) {
            Some(("slots", _)) if slots.is_some() => return Err(format!("`slots=` given twice in `{s}`")),
            Some(("maxmem", _)) if maxmem.is_some() => return Err(format!("`maxmem=` given twice in `{s}`")),
            Some(("slots", n)) => {
                let n: u32 = n
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid slots count `{n}` in `{s}` (a number, 0 to {MAX_DIMM_SLOTS})"))?;
                if n > MAX_DIMM_SLOTS {
                    return Err(format!(
                        "slots={n} in `{s}`: QEMU supports at most {MAX_DIMM_SLOTS} DIMM slots"
                    ));
                }
                slots = Some(n);
            }
            Some(("maxmem", m)) => maxmem = Some(parse_mem_size(m)?),
            _ if p.trim().is_empty() => return Err(format!("empty memory option in `{s}` (a stray `,`?)")),
            _ => {
                return Err(format!(
                    "invalid memory option `{p}` in `{s}` (expected slots=N or maxmem=SIZE)"
                ))
            }
        }
    }
    if let Some(m) = &maxmem {
        let max = mem_size_bytes(m).unwrap_or(0);
        if max < ram_bytes {
            return Err(format!(
                "maxmem={m} in `{s}` is below the RAM size {ram} (maxmem is RAM + room for DIMMs)"
            ));
        }
        if max == ram_bytes && slots.is_some_and(|n| n > 0) {
            return Err(format!(
                "maxmem={m} in `{s}` leaves no room for DIMMs: make it larger than the RAM size {ram}, or leave it out"
            ));
        }
    }
    let mut out = ram;
    if let Some(n) = slots {
        out.push_str(&format!(",slots={n}"));
        if maxmem.is_none() && n > 0 {
            maxmem = Some(Size(ram_bytes + DEFAULT_DIMM_ROOM).to_string());
        }
    }
    if let Some(m) = maxmem {
        out.push_str(&format!(",maxmem={m}"));
    }
    Ok(out)
}

/// DIMM slots the runner configures in firmware mode when `--mem` names none.
pub const DEFAULT_DIMM_SLOTS: u32 = 8;
/// Room for DIMMs the runner configures in firmware mode: `maxmem = RAM + this`.
pub const DEFAULT_DIMM_ROOM: u64 = 32 << 30;

/// A non-zero size in bytes as host commands and `--virtio-mem` take it
/// ([`mm::size::parse_size`]): decimal or `0x` hex, optional `_` separators and K/M/G/T suffix.
pub fn parse_nonzero_size(s: &str) -> Result<u64, String> {
    match parse_size(s.trim()) {
        Ok(0) => Err(format!("size `{s}` must be larger than zero")),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("`{s}` is not a size (examples: 1G, 512M, 0x8000000)")),
    }
}

/// Bytes of a size in QEMU's spelling (`1G`, `512M`; a bare number is MiB).
pub fn mem_size_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let bytes = parse_size(t).ok()?;
    if t.ends_with(|c: char| c.is_ascii_digit()) {
        bytes.checked_mul(1 << 20)
    } else {
        Some(bytes)
    }
}

/// The `-m` value with DIMM hotplug configured: a value without `slots=` gets
/// `slots=8,maxmem=<RAM + 32G>` (QEMU needs both for `pc-dimm`: slots for the ACPI slot
/// table, maxmem for the device-memory region). Values that name `slots=` are the user's
/// choice and stay as they are.
pub fn mem_with_dimm_slots(mem: &str) -> String {
    if mem.contains("slots=") {
        return mem.to_string();
    }
    let mut parts = mem.split(',');
    let ram = parts.next().unwrap_or("");
    let Some(bytes) = mem_size_bytes(ram) else {
        return mem.to_string();
    };
    let has_maxmem = mem.contains("maxmem=");
    let mut out = format!("{mem},slots={DEFAULT_DIMM_SLOTS}");
    if !has_maxmem {
        out.push_str(&format!(",maxmem={}", Size(bytes + DEFAULT_DIMM_ROOM)));
    }
    out
}

/// Checks a QEMU size (`1G`, `512M`, `1536` = MiB, `2GiB`) and returns it in QEMU's
/// spelling, the shortest exact one ([`Size`]: unit letter upper case, no `B`/`iB`).
pub fn parse_mem_size(s: &str) -> Result<String, String> {
    let lower = s.trim().to_ascii_lowercase();
    let core = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    // QEMU reads a bare number as MiB (and a hex one then has a suffix: refused).
    let core = if core.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{core}M")
    } else {
        core.to_string()
    };
    match parse_size(&core) {
        Ok(0) => Err(format!("memory size `{s}` must be larger than zero")),
        Ok(b) if b < 128 << 20 => Err(format!("memory size `{s}` is too small (at least 128M)")),
        Ok(b) => Ok(Size(b).to_string()),
        Err(_) => Err(format!("invalid memory size `{s}` (examples: 1G, 512M, 2048 = MiB)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_sizes() {
        assert_eq!(parse_nonzero_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_nonzero_size("128m").unwrap(), 128 << 20);
        assert_eq!(parse_nonzero_size("0x8000000").unwrap(), 128 << 20);
        assert_eq!(parse_nonzero_size("1_073_741_824").unwrap(), 1 << 30);
        assert!(parse_nonzero_size("0x10M").is_err());
        assert!(parse_nonzero_size("0").is_err());
        assert!(parse_nonzero_size("lots").is_err());
        assert!(parse_nonzero_size("99999999999T").is_err());
    }

    #[test]
    fn matrix_has_seven_builds_with_design_levels() {
        let m = KernelConfig::matrix();
        let names: Vec<String> = m.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            ["4k-39", "4k-48", "16k-36", "16k-47", "16k-48", "64k-42", "64k-48"]
        );
        let levels: Vec<u32> = m.iter().map(|c| c.levels()).collect();
        assert_eq!(levels, [3, 4, 2, 3, 4, 2, 3]);
    }

    #[test]
    fn invalid_pair_lists_valid_ones() {
        let e = KernelConfig::new(Granule::K64, 47).unwrap_err();
        assert!(e.contains("64k with 47-bit"), "{e}");
        assert!(
            e.contains("4k: 39, 48 (default 48); 16k: 36, 47, 48 (default 47); 64k: 42, 48 (default 48)"),
            "{e}"
        );
        assert!(KernelConfig::new(Granule::K16, 36).is_ok());
    }

    #[test]
    fn features_and_names() {
        let c = KernelConfig::new(Granule::K16, 47).unwrap().with_ktest(true);
        assert_eq!(c.features(), "granule-16k va-47 ktest");
        assert_eq!(c.name(), "16k-47-ktest");
        assert_eq!(KernelConfig::default_for(Granule::K64).features(), "granule-64k va-48");
        assert_eq!(
            KernelConfig::default_for(Granule::K4).ttbr1_base(),
            0xffff_0000_0000_0000
        );
    }

    #[test]
    fn parse_enums() {
        assert_eq!("16K".parse::<Granule>().unwrap(), Granule::K16);
        assert_eq!("64kib".parse::<Granule>().unwrap(), Granule::K64);
        assert!("8k".parse::<Granule>().is_err());
        assert_eq!("Kernel".parse::<BootMode>().unwrap(), BootMode::Kernel);
        assert!("uefi".parse::<BootMode>().is_err());
        assert_eq!("v3".parse::<GicVersion>().unwrap(), GicVersion::V3);
        assert!("4".parse::<GicVersion>().is_err());
    }

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem_size("1G").unwrap(), "1G");
        assert_eq!(parse_mem_size("512m").unwrap(), "512M");
        assert_eq!(parse_mem_size("2GiB").unwrap(), "2G");
        assert_eq!(parse_mem_size("1536").unwrap(), "1536M");
        assert!(parse_mem_size("0").is_err());
        assert!(parse_mem_size("64M").is_err());
        assert!(parse_mem_size("lots").is_err());
        assert!(parse_mem_size("1X").is_err());
        assert!(parse_mem_size("G").is_err());
        assert_eq!(
            parse_mem_option("1g,slots=4,maxmem=4g").unwrap(),
            "1G,slots=4,maxmem=4G"
        );
        assert!(parse_mem_option("1G,slots=x").is_err());
        assert_eq!(mem_with_dimm_slots("1G"), "1G,slots=8,maxmem=33G");
        assert_eq!(mem_with_dimm_slots("1536M"), "1536M,slots=8,maxmem=34304M");
        assert_eq!(mem_with_dimm_slots("2G,maxmem=4G"), "2G,maxmem=4G,slots=8");
        assert_eq!(mem_with_dimm_slots("1G,slots=2,maxmem=3G"), "1G,slots=2,maxmem=3G");
        assert_eq!(mem_size_bytes("512M"), Some(512 << 20));
        assert!(parse_mem_option("1G,foo=1").is_err());
    }

    #[test]
    fn kernel_cpu_limit_comes_from_the_kernel_source() {
        assert_eq!(parse_max_cpus("x\npub const MAX_CPUS: usize = 1_6;\n"), Some(16));
        assert_eq!(parse_max_cpus("const X: usize = 8;"), None);
        let n = kernel_max_cpus();
        assert!((1..=512).contains(&n), "{n}");
        assert_eq!(kernel_max_numnodes(), 8);
    }

    /// What QEMU would refuse at start is completed or refused here.
    #[test]
    fn mem_hotplug_options() {
        // slots= alone: QEMU says "slots specified but no max-size"; the runner adds maxmem.
        assert_eq!(parse_mem_option("1G,slots=4").unwrap(), "1G,slots=4,maxmem=33G");
        assert_eq!(parse_mem_option("1536,slots=2").unwrap(), "1536M,slots=2,maxmem=34304M");
        assert_eq!(parse_mem_option("1G,slots=0").unwrap(), "1G,slots=0");
        assert_eq!(parse_mem_option("1G,maxmem=4G").unwrap(), "1G,maxmem=4G");
        assert_eq!(
            parse_mem_option("1G,slots=256,maxmem=9G").unwrap(),
            "1G,slots=256,maxmem=9G"
        );
        let e = parse_mem_option("1G,slots=300,maxmem=40G").unwrap_err();
        assert!(e.contains("at most 256 DIMM slots"), "{e}");
        let e = parse_mem_option("1G,slots=4,maxmem=512M").unwrap_err();
        assert!(e.contains("below the RAM size 1G"), "{e}");
        let e = parse_mem_option("1G,slots=4,maxmem=1G").unwrap_err();
        assert!(e.contains("leaves no room for DIMMs"), "{e}");
        assert!(parse_mem_option("1G,slots=2,slots=3")
            .unwrap_err()
            .contains("given twice"));
        assert!(parse_mem_option("1G,").unwrap_err().contains("empty memory option"));
        assert!(parse_mem_option("1G,slots=-1").unwrap_err().contains("0 to 256"));
        // A completed value is left alone by the firmware default.
        assert_eq!(
            mem_with_dimm_slots(&parse_mem_option("2G,slots=4").unwrap()),
            "2G,slots=4,maxmem=34G"
        );
    }
}
