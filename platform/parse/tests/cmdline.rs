//! `parse::cmdline`: every kernel command-line option with its good and bad values, the exact
//! warnings the kernel prints, `mem=`'s split of RAM, and properties over random and hostile
//! command lines (no panic, the last good value of a repeated option wins, each warning names
//! its word).

use mm::{
    buddy::MemmapInit,
    hotplug::{OnlinePolicy, OnlineType},
};
use parse::{
    cmdline::{apply_mem_limit, parse, parse_online_state, CmdlineWarning, Options, MIN_MEM},
    dtb::Range,
};
use proptest::prelude::*;

fn warnings(cmdline: &str) -> Vec<String> {
    parse(cmdline).1.iter().map(ToString::to_string).collect()
}

fn options(cmdline: &str) -> Options {
    let (o, w) = parse(cmdline);
    assert!(w.is_empty(), "{cmdline:?}: {w:?}");
    o
}

#[test]
fn empty_line_sets_nothing() {
    let (o, w) = parse("  \t\n ");
    assert!(w.is_empty());
    assert_eq!(format!("{o:?}"), format!("{:?}", Options::default()));
}

#[test]
fn every_option_takes_its_documented_values() {
    let o = options(
        "mem=1G memhp_default_state=online_movable memory_hotplug.online_policy=auto-movable \
         memory_hotplug.auto_movable_ratio=301 ktest.hotplug_cycles=0x10 ktest.only=a,b mutant=x \
         teardown_check=off memmap_init=eager memmap_poison=0 debug_vm",
    );
    assert_eq!(o.mem, Some(1 << 30));
    assert_eq!(o.default_online, Some(Some(OnlineType::Movable)));
    assert_eq!(o.policy, Some(OnlinePolicy::AutoMovable));
    assert_eq!(o.ratio, Some(301));
    assert_eq!(o.ktest_hotplug_cycles, Some(16));
    assert_eq!(o.ktest_only.as_deref(), Some("a,b"));
    assert_eq!(o.mutant.as_deref(), Some("x"));
    assert_eq!(o.teardown_check, Some(false));
    assert_eq!(o.memmap_init, Some(MemmapInit::Eager));
    assert_eq!(o.memmap_poison, Some(false));
    assert_eq!(o.debug_vm, Some(true));
    let o = options("memhp_default_state=offline memory_hotplug.online_policy=contig-zones memmap_init=deferred");
    assert_eq!(o.default_online, Some(None));
    assert_eq!(o.policy, Some(OnlinePolicy::ContigZones));
    assert_eq!(o.memmap_init, Some(MemmapInit::Deferred));
    let o = options("teardown_check=1 memmap_poison=on debug_vm=off mutant=");
    assert_eq!(
        (o.teardown_check, o.memmap_poison, o.debug_vm),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(o.mutant.as_deref(), Some(""));
    assert_eq!(options(&format!("mem={MIN_MEM}")).mem, Some(64 << 20));
}

#[test]
fn online_states_are_the_sysfs_words() {
    assert_eq!(parse_online_state("offline"), Some(None));
    assert_eq!(parse_online_state("online"), Some(Some(OnlineType::Auto)));
    assert_eq!(parse_online_state("online_kernel"), Some(Some(OnlineType::Kernel)));
    assert_eq!(parse_online_state("online_movable"), Some(Some(OnlineType::Movable)));
    assert_eq!(parse_online_state("Online"), None);
    assert_eq!(parse_online_state(""), None);
}

#[test]
fn bad_values_and_unknown_options_are_reported_as_the_kernel_prints_them() {
    let cases = [
        (
            "mem=1",
            "bad value in 'mem=1' (want a size of at least 64M, like 1G), ignored",
        ),
        (
            "mem=63M",
            "bad value in 'mem=63M' (want a size of at least 64M, like 1G), ignored",
        ),
        (
            "mem=",
            "bad value in 'mem=' (want a size of at least 64M, like 1G), ignored",
        ),
        (
            "memhp_default_state=on",
            "bad value in 'memhp_default_state=on' (offline|online|online_kernel|online_movable), ignored",
        ),
        (
            "memory_hotplug.online_policy=x",
            "bad value in 'memory_hotplug.online_policy=x' (contig-zones|auto-movable), ignored",
        ),
        (
            "memory_hotplug.auto_movable_ratio=-1",
            "bad value in 'memory_hotplug.auto_movable_ratio=-1', ignored",
        ),
        (
            "ktest.hotplug_cycles=99999999999999999999",
            "bad value in 'ktest.hotplug_cycles=99999999999999999999', ignored",
        ),
        ("teardown_check=", "bad value in 'teardown_check=' (on|off), ignored"),
        (
            "memmap_init=lazy",
            "bad value in 'memmap_init=lazy' (deferred|eager), ignored",
        ),
        (
            "memmap_poison=yes",
            "bad value in 'memmap_poison=yes' (on|off), ignored",
        ),
        ("debug_vm=2", "bad value in 'debug_vm=2' (on|off), ignored"),
        ("ktest.only=", "unknown option 'ktest.only=' ignored"),
        ("ktest.only", "unknown option 'ktest.only' ignored"),
        ("quiet", "unknown option 'quiet' ignored"),
        ("=1G", "unknown option '=1G' ignored"),
        ("MEM=1G", "unknown option 'MEM=1G' ignored"),
    ];
    for (line, want) in cases {
        assert_eq!(warnings(line), [want], "{line:?}");
    }
    let (o, w) = parse("mem=1 quiet");
    assert_eq!(o.mem, None);
    assert_eq!(
        w.iter().map(CmdlineWarning::word).collect::<Vec<_>>(),
        ["mem=1", "quiet"]
    );
}

#[test]
fn a_repeated_option_keeps_its_last_good_value() {
    let (o, w) = parse("mem=1G mem=2G mem=1 memmap_init=eager memmap_init=deferred");
    assert_eq!(o.mem, Some(2 << 30));
    assert_eq!(o.memmap_init, Some(MemmapInit::Deferred));
    assert_eq!(w.len(), 1);
}

#[test]
fn the_first_equals_sign_splits_key_and_value() {
    let o = options("mutant=a=b ktest.only=x=y");
    assert_eq!(o.mutant.as_deref(), Some("a=b"));
    assert_eq!(o.ktest_only.as_deref(), Some("x=y"));
}

const RAM: [Range; 2] = [
    Range {
        base: 0x1_0000_0000,
        size: 1 << 30,
    },
    Range {
        base: 0x4000_0000,
        size: 1 << 30,
    },
];

#[test]
fn mem_limit_keeps_the_lowest_bytes_and_holds_back_the_rest() {
    assert_eq!(apply_mem_limit(&RAM, None), (RAM.to_vec(), vec![]));
    let (used, held) = apply_mem_limit(&RAM, Some(3 << 29));
    assert_eq!(
        used,
        [
            Range {
                base: 0x4000_0000,
                size: 1 << 30
            },
            Range {
                base: 0x1_0000_0000,
                size: 1 << 29
            }
        ]
    );
    assert_eq!(
        held,
        [Range {
            base: 0x1_2000_0000,
            size: 1 << 29
        }]
    );
    let (used, held) = apply_mem_limit(&RAM, Some(1 << 30));
    assert_eq!((used, held), (vec![RAM[1]], vec![RAM[0]]));
    assert_eq!(apply_mem_limit(&RAM, Some(u64::MAX)).1, vec![]);
    assert_eq!(apply_mem_limit(&RAM, Some(0)).0, vec![]);
}

/// Words of a command line: the options with good and bad values, repeated, and noise.
fn word() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "mem",
        "memhp_default_state",
        "memory_hotplug.online_policy",
        "memory_hotplug.auto_movable_ratio",
        "ktest.hotplug_cycles",
        "ktest.only",
        "mutant",
        "teardown_check",
        "memmap_init",
        "memmap_poison",
        "debug_vm",
        "bogus",
        "",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "",
            "on",
            "off",
            "0",
            "1",
            "64M",
            "1G",
            "99999999999999999999G",
            "0x10G",
            "offline",
            "online",
            "online_movable",
            "auto-movable",
            "contig-zones",
            "eager",
            "deferred",
            "=",
            "é",
        ])
        .prop_map(String::from),
        "[0-9]{1,25}[kKmMgGtT]?",
        "\\PC{0,8}",
    ];
    prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k}={v}")),
        "[a-z_.]{1,12}",
        "\\PC{1,12}",
    ]
}

proptest! {
    #[test]
    fn any_text_gives_options_and_warnings_naming_their_words(s in any::<String>()) {
        let words: Vec<&str> = s.split_whitespace().collect();
        let (_, warn) = parse(&s);
        prop_assert!(warn.len() <= words.len());
        for w in &warn {
            prop_assert!(words.contains(&w.word()), "{:?} not a word of {:?}", w.word(), s);
            prop_assert!(w.to_string().contains(&format!("'{}'", w.word())), "{}", w);
        }
    }

    #[test]
    fn option_soup_warns_once_per_refused_word(ws in prop::collection::vec(word(), 0..12)) {
        let line = ws.join(" ");
        let words: Vec<&str> = line.split_whitespace().collect();
        let (o, warn) = parse(&line);
        // A word is refused alone: parsing it by itself warns exactly when it warned in the line.
        let alone: Vec<String> = words
            .iter()
            .filter(|w| !parse(w).1.is_empty())
            .map(|w| w.to_string())
            .collect();
        prop_assert_eq!(warn.iter().map(|w| w.word().to_string()).collect::<Vec<_>>(), alone);
        // `mem=`: the last word that parsed alone to a value is the value.
        let last_mem = words.iter().rev().find_map(|w| parse(w).0.mem);
        prop_assert_eq!(o.mem, last_mem);
        prop_assert!(o.mem.is_none_or(|m| m >= MIN_MEM));
    }

    #[test]
    fn mem_limit_splits_ram_without_losing_a_byte(
        ranges in prop::collection::vec((0u64..1 << 40, 0u64..1 << 36), 0..6),
        limit in prop::option::of(0u64..1 << 38),
    ) {
        let ram: Vec<Range> = ranges.iter().map(|&(base, size)| Range { base, size }).collect();
        let (used, held) = apply_mem_limit(&ram, limit);
        let total = |rs: &[Range]| rs.iter().map(|r| r.size).sum::<u64>();
        prop_assert_eq!(total(&used) + total(&held), total(&ram));
        prop_assert_eq!(total(&used), limit.map_or(total(&ram), |l| l.min(total(&ram))));
        prop_assert!(used.iter().chain(&held).all(|r| r.size > 0 || limit.is_none()));
        // Every piece lies inside a range of RAM.
        for p in used.iter().chain(&held).filter(|r| r.size > 0) {
            prop_assert!(ram.iter().any(|r| r.base <= p.base && p.end() <= r.end()), "{:?}", p);
        }
    }
}
