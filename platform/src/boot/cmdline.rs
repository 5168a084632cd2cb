//! The kernel command line: `mem=SIZE` (hold RAM above SIZE back for `probe`),
//! `memhp_default_state=offline|online|online_kernel|online_movable`,
//! `memory_hotplug.online_policy=contig-zones|auto-movable`, `memory_hotplug.auto_movable_ratio=N`,
//! `ktest.hotplug_cycles=N`, `ktest.only=CASE[,CASE]` (test build), `debug_vm` (check the allocator and hotplug
//! invariants after every hotplug operation; stop on the first broken one), `mutant=NAME` (the
//! test kernel built with `mutants`: turn one planted bug on, `arch::mutant`), `teardown_check=off` (test
//! build: the teardown-order checker reports its first violation and goes on instead of stopping),
//! `memmap_init=deferred|eager` (write the `struct page`s of boot and hot-added memory when first
//! needed, the default, or all of them up front), `memmap_poison=off` (test build: do not fill
//! deferred memmap with the poison pattern; for very large adds). Unknown options are reported
//! and ignored.

use crate::boot::{dtb::Range, num::parse_u64};
use alloc::{format, string::String, vec::Vec};
use mm::{
    buddy::MemmapInit,
    hotplug::{OnlinePolicy, OnlineType},
};

/// Smallest `mem=` accepted: below it the kernel would not have room for its memmap, heap and
/// page tables (`mem=1` used to boot into a FATAL).
const MIN_MEM: u64 = 64 << 20;

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

/// Parse the command line; problems come back as messages (printed once the console is up).
pub fn parse(cmdline: &str) -> (Options, Vec<String>) {
    let mut o = Options::default();
    let mut warn = Vec::new();
    for word in cmdline.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key {
            "mem" => match parse_u64(value) {
                Ok(v) if v >= MIN_MEM => o.mem = Some(v),
                _ => warn.push(format!(
                    "bad value in '{word}' (want a size of at least 64M, like 1G), ignored"
                )),
            },
            "memhp_default_state" => match parse_online_state(value) {
                Some(t) => o.default_online = Some(t),
                None => warn.push(format!(
                    "bad value in '{word}' (offline|online|online_kernel|online_movable), ignored"
                )),
            },
            "memory_hotplug.online_policy" => match value {
                "contig-zones" => o.policy = Some(OnlinePolicy::ContigZones),
                "auto-movable" => o.policy = Some(OnlinePolicy::AutoMovable),
                _ => warn.push(format!("bad value in '{word}' (contig-zones|auto-movable), ignored")),
            },
            "memory_hotplug.auto_movable_ratio" => match parse_u64(value) {
                Ok(v) => o.ratio = Some(v),
                Err(_) => warn.push(format!("bad value in '{word}', ignored")),
            },
            "ktest.hotplug_cycles" => match parse_u64(value) {
                Ok(v) => o.ktest_hotplug_cycles = Some(v),
                Err(_) => warn.push(format!("bad value in '{word}', ignored")),
            },
            "ktest.only" if !value.is_empty() => o.ktest_only = Some(value.into()),
            "mutant" => o.mutant = Some(value.into()),
            "teardown_check" => match value {
                "on" | "1" => o.teardown_check = Some(true),
                "off" | "0" => o.teardown_check = Some(false),
                _ => warn.push(format!("bad value in '{word}' (on|off), ignored")),
            },
            "memmap_init" => match value {
                "eager" => o.memmap_init = Some(MemmapInit::Eager),
                "deferred" => o.memmap_init = Some(MemmapInit::Deferred),
                _ => warn.push(format!("bad value in '{word}' (deferred|eager), ignored")),
            },
            "memmap_poison" => match value {
                "on" | "1" => o.memmap_poison = Some(true),
                "off" | "0" => o.memmap_poison = Some(false),
                _ => warn.push(format!("bad value in '{word}' (on|off), ignored")),
            },
            "debug_vm" => match value {
                "" | "on" | "1" => o.debug_vm = Some(true),
                "off" | "0" => o.debug_vm = Some(false),
                _ => warn.push(format!("bad value in '{word}' (on|off), ignored")),
            },
            _ => warn.push(format!("unknown option '{word}' ignored")),
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
