//! The kernel command line: `mem=SIZE` (hold RAM above SIZE back for `probe`),
//! `memhp_default_state=offline|online|online_kernel|online_movable`,
//! `memory_hotplug.online_policy=contig-zones|auto-movable`, `memory_hotplug.auto_movable_ratio=N`,
//! `ktest.hotplug_cycles=N`, `ktest.only=CASE[,CASE]` (test build), `debug_vm` (check the allocator and hotplug
//! invariants after every hotplug operation; stop on the first broken one), `mutant=NAME` (the
//! test kernel built with `mutants`: turn one planted bug on, `arch::mutant`), `teardown_check=off` (test
//! build: the teardown-order checker reports its first violation and goes on instead of stopping),
//! `memmap_init=deferred|eager` (write the `struct page`s of boot and hot-added memory when first
//! needed, the default, or all of them up front), `memmap_poison=off` (test build: do not fill
//! deferred memmap with the poison pattern; for very large adds). Words are separated by
//! whitespace; a repeated option takes its last good value. Unknown options and bad values are
//! reported and ignored.

use crate::{dtb::Range, num::parse_u64};
use alloc::{string::String, vec::Vec};
use core::fmt;
use mm::{
    buddy::MemmapInit,
    hotplug::{OnlinePolicy, OnlineType},
};

/// Smallest `mem=` accepted: below it the kernel would not have room for its memmap, heap and
/// page tables.
pub const MIN_MEM: u64 = 64 << 20;

#[derive(Debug, Default)]
pub struct Options {
    /// RAM the kernel uses at boot; the rest is held back.
    pub mem: Option<u64>,
    pub default_online: Option<Option<OnlineType>>,
    pub policy: Option<OnlinePolicy>,
    pub ratio: Option<u64>,
    /// Test build: probe/online/stress/offline/remove cycles of the hotplug test.
    pub ktest_hotplug_cycles: Option<u64>,
    /// Test build: run only the cases whose names are listed (comma-separated).
    pub ktest_only: Option<String>,
    /// Check every allocator and hotplug invariant after each hotplug operation.
    pub debug_vm: Option<bool>,
    /// `mutant=NAME`: the planted bug to turn on (checked by `arch::mutant::select`).
    pub mutant: Option<String>,
    /// Test build: `teardown_check=off` reports teardown-order violations without stopping.
    pub teardown_check: Option<bool>,
    /// `memmap_init=`: how the memmap of boot and hot-added memory is initialised.
    pub memmap_init: Option<MemmapInit>,
    /// Test build: `memmap_poison=off` leaves deferred memmap as it is instead of poisoning it.
    pub memmap_poison: Option<bool>,
}

/// A word of the command line that was ignored; each names the word as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineWarning {
    /// A known option with a value it does not take; `want` says what it takes, if more than
    /// "a number".
    BadValue { word: String, want: Option<&'static str> },
    /// An option the kernel does not know.
    Unknown { word: String },
}

impl CmdlineWarning {
    /// The word that was ignored.
    pub fn word(&self) -> &str {
        match self {
            CmdlineWarning::BadValue { word, .. } | CmdlineWarning::Unknown { word } => word,
        }
    }
}

impl fmt::Display for CmdlineWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineWarning::BadValue { word, want: Some(want) } => {
                write!(f, "bad value in '{word}' ({want}), ignored")
            }
            CmdlineWarning::BadValue { word, want: None } => write!(f, "bad value in '{word}', ignored"),
            CmdlineWarning::Unknown { word } => write!(f, "unknown option '{word}' ignored"),
        }
    }
}

/// Why a value was refused: what the option takes (`None`: a number).
type Want = Option<&'static str>;

const ON_OFF: Want = Some("on|off");

fn on_off(value: &str) -> Result<bool, Want> {
    match value {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        _ => Err(ON_OFF),
    }
}

fn number(value: &str) -> Result<u64, Want> {
    parse_u64(value).map_err(|_| None)
}

/// Set the option `key` from `value`; `Ok(false)` when `key` is no option.
fn set(o: &mut Options, key: &str, value: &str) -> Result<bool, Want> {
    match key {
        "mem" => match parse_u64(value) {
            Ok(v) if v >= MIN_MEM => o.mem = Some(v),
            _ => return Err(Some("want a size of at least 64M, like 1G")),
        },
        "memhp_default_state" => {
            o.default_online =
                Some(parse_online_state(value).ok_or(Some("offline|online|online_kernel|online_movable"))?)
        }
        "memory_hotplug.online_policy" => {
            o.policy = Some(match value {
                "contig-zones" => OnlinePolicy::ContigZones,
                "auto-movable" => OnlinePolicy::AutoMovable,
                _ => return Err(Some("contig-zones|auto-movable")),
            })
        }
        "memory_hotplug.auto_movable_ratio" => o.ratio = Some(number(value)?),
        "ktest.hotplug_cycles" => o.ktest_hotplug_cycles = Some(number(value)?),
        "ktest.only" if !value.is_empty() => o.ktest_only = Some(value.into()),
        "mutant" => o.mutant = Some(value.into()),
        "teardown_check" => o.teardown_check = Some(on_off(value)?),
        "memmap_init" => {
            o.memmap_init = Some(match value {
                "eager" => MemmapInit::Eager,
                "deferred" => MemmapInit::Deferred,
                _ => return Err(Some("deferred|eager")),
            })
        }
        "memmap_poison" => o.memmap_poison = Some(on_off(value)?),
        "debug_vm" => o.debug_vm = Some(if value.is_empty() { true } else { on_off(value)? }),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parse the command line; problems come back as warnings (printed once the console is up).
pub fn parse(cmdline: &str) -> (Options, Vec<CmdlineWarning>) {
    let mut o = Options::default();
    let mut warn = Vec::new();
    for word in cmdline.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match set(&mut o, key, value) {
            Ok(true) => {}
            Ok(false) => warn.push(CmdlineWarning::Unknown { word: word.into() }),
            Err(want) => warn.push(CmdlineWarning::BadValue {
                word: word.into(),
                want,
            }),
        }
    }
    (o, warn)
}

/// `offline` → `None`; `online` → Auto; `online_kernel`, `online_movable`.
pub fn parse_online_state(v: &str) -> Option<Option<OnlineType>> {
    Some(match v {
        "offline" => None,
        "online" => Some(OnlineType::Auto),
        "online_kernel" => Some(OnlineType::Kernel),
        "online_movable" => Some(OnlineType::Movable),
        _ => return None,
    })
}

/// Split RAM into what the kernel uses (the lowest `limit` bytes) and what is held back.
pub fn apply_mem_limit(ram: &[Range], limit: Option<u64>) -> (Vec<Range>, Vec<Range>) {
    let Some(mut left) = limit else {
        return (ram.to_vec(), Vec::new());
    };
    let mut sorted = ram.to_vec();
    sorted.sort_by_key(|r| r.base);
    let (mut used, mut held) = (Vec::new(), Vec::new());
    for r in sorted {
        let take = r.size.min(left);
        left -= take;
        if take > 0 {
            used.push(Range {
                base: r.base,
                size: take,
            });
        }
        if take < r.size {
            held.push(Range {
                base: r.base + take,
                size: r.size - take,
            });
        }
    }
    (used, held)
}
