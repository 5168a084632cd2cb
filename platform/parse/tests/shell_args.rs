//! `parse::shell`: the argument grammar of the shell's commands (docs/shell.md), the errors
//! the kernel reports, and properties over random and hostile argument lists: no panic, and an
//! error about a word names that word.

use mm::hotplug::{OnlinePolicy, OnlineType};
use parse::shell::{
    addr_size, bench_args, bench_sizes, exactly, meminfo_args, no_args, one_number, online_args, parse_u64,
    policy_args, probe_args, stress_args, MeminfoMode, PolicyChange, ShellError, Stress, BENCH_DEFAULT_REPS,
};
use proptest::prelude::*;

fn bad_number(s: &str) -> ShellError {
    ShellError::BadNumber(s.into())
}

fn extra(s: &str) -> ShellError {
    ShellError::Extra(s.into())
}

#[test]
fn argument_counts_name_the_first_extra_word() {
    assert_eq!(no_args(&[]), Ok(()));
    assert_eq!(no_args(&["x", "y"]), Err(extra("x")));
    assert_eq!(exactly::<2>(&["a", "b"]), Ok(["a", "b"]));
    assert_eq!(exactly::<2>(&["a"]), Err(ShellError::Missing));
    assert_eq!(exactly::<2>(&["a", "b", "c", "d"]), Err(extra("c")));
    assert_eq!(one_number(&[]), Err(ShellError::Missing));
    assert_eq!(one_number(&["1", "2"]), Err(extra("2")));
    assert_eq!(one_number(&["zz"]), Err(bad_number("zz")));
    assert_eq!(one_number(&["0x4000_0000"]), Ok(0x4000_0000));
    assert_eq!(addr_size(&["0x1_0000_0000", "1G"]), Ok((1 << 32, 1 << 30)));
    assert_eq!(addr_size(&["1G", "1Q"]), Err(bad_number("1Q")));
    assert_eq!(addr_size(&["x", "1Q"]), Err(bad_number("x")), "the first bad number");
}

#[test]
fn numbers_follow_the_shared_grammar() {
    assert_eq!(parse_u64("128M"), Ok(128 << 20));
    assert_eq!(
        parse_u64("99999999999999999999"),
        Err(bad_number("99999999999999999999"))
    );
    assert_eq!(parse_u64("0x10G"), Err(bad_number("0x10G")));
    assert_eq!(parse_u64("-1"), Err(bad_number("-1")));
}

#[test]
fn online_takes_a_block_and_an_optional_zone() {
    assert_eq!(online_args(&["16"]), Ok((16, OnlineType::Auto)));
    assert_eq!(online_args(&["16", "kernel"]), Ok((16, OnlineType::Kernel)));
    assert_eq!(online_args(&["16", "movable"]), Ok((16, OnlineType::Movable)));
    assert_eq!(online_args(&["16", "auto"]), Ok((16, OnlineType::Auto)));
    let bogus = ShellError::BadWord {
        word: "bogus".into(),
        want: "a zone (kernel, movable or auto)",
    };
    assert_eq!(online_args(&["1", "bogus"]), Err(bogus.clone()));
    assert_eq!(online_args(&["zz", "bogus"]), Err(bogus), "the zone is checked first");
    assert_eq!(online_args(&["zz", "kernel"]), Err(bad_number("zz")));
    assert_eq!(online_args(&["1", "kernel", "x"]), Err(extra("x")));
    assert_eq!(online_args(&[]), Err(ShellError::Missing));
}

#[test]
fn meminfo_policy_and_stress_forms() {
    assert_eq!(meminfo_args(&[]), Ok(MeminfoMode::Show));
    assert_eq!(meminfo_args(&["check"]), Ok(MeminfoMode::Check));
    assert_eq!(meminfo_args(&["settle"]), Ok(MeminfoMode::Settle));
    assert!(matches!(meminfo_args(&["extra"]), Err(ShellError::BadWord { word, .. }) if word == "extra"));
    assert_eq!(meminfo_args(&["check", "extra"]), Err(extra("extra")));

    assert_eq!(policy_args(&[]), Ok(PolicyChange::Show));
    assert_eq!(policy_args(&["default", "offline"]), Ok(PolicyChange::Default(None)));
    assert_eq!(
        policy_args(&["default", "online_kernel"]),
        Ok(PolicyChange::Default(Some(OnlineType::Kernel)))
    );
    assert_eq!(
        policy_args(&["online_policy", "auto-movable"]),
        Ok(PolicyChange::Policy(OnlinePolicy::AutoMovable))
    );
    assert_eq!(
        policy_args(&["online_policy", "contig-zones"]),
        Ok(PolicyChange::Policy(OnlinePolicy::ContigZones))
    );
    assert_eq!(policy_args(&["ratio", "301"]), Ok(PolicyChange::Ratio(301)));
    assert_eq!(policy_args(&["ratio", "lots"]), Err(bad_number("lots")));
    for bad in [
        &["default", "on"][..],
        &["online_policy", "x"],
        &["ratio"],
        &["bogus"],
        &["ratio", "1", "2"],
    ] {
        assert_eq!(policy_args(bad), Err(ShellError::Usage), "{bad:?}");
    }

    assert_eq!(stress_args(&["verify"]), Ok(Stress::Verify));
    assert_eq!(stress_args(&["free"]), Ok(Stress::Free));
    assert_eq!(stress_args(&["1G"]), Ok(Stress::Fill(1 << 30, None)));
    assert_eq!(stress_args(&["1G", "node=2"]), Ok(Stress::Fill(1 << 30, Some(2))));
    assert_eq!(probe_args(&["0x80000000", "128M"]), Ok((0x8000_0000, 128 << 20, None)));
    assert_eq!(
        probe_args(&["0x80000000", "128M", "node=1"]),
        Ok((0x8000_0000, 128 << 20, Some(1)))
    );
    assert_eq!(probe_args(&["0x80000000"]), Err(ShellError::Missing));
    assert_eq!(
        probe_args(&["1", "2", "node=1", "x"]),
        Err(ShellError::Extra("x".into()))
    );
    assert!(matches!(
        probe_args(&["1", "2", "node=9"]),
        Err(ShellError::BadWord { .. })
    ));
    for bad in ["node=8", "node=", "node=x", "nod=1", "2"] {
        assert_eq!(
            stress_args(&["1G", bad]),
            Err(ShellError::BadWord {
                word: bad.into(),
                want: "node=N with N a node id (0-7)"
            }),
            "{bad}"
        );
    }
    assert_eq!(stress_args(&["lots"]), Err(bad_number("lots")));
    assert_eq!(stress_args(&[]), Err(ShellError::Usage));
    assert!(matches!(
        stress_args(&["1G", "verify"]),
        Err(ShellError::BadWord { .. })
    ));
    assert_eq!(stress_args(&["1G", "node=1", "x"]), Err(ShellError::Usage));
}

#[test]
fn bench_takes_reps_then_sizes() {
    assert_eq!(bench_args(&["1G"]), Ok((BENCH_DEFAULT_REPS, &["1G"][..])));
    assert_eq!(bench_args(&["reps=3", "1G", "2G"]), Ok((3, &["1G", "2G"][..])));
    assert_eq!(bench_args(&[]), Err(ShellError::Usage));
    assert_eq!(bench_args(&["reps=3"]), Err(ShellError::Usage));
    assert_eq!(bench_args(&["reps=0", "1G"]), Err(ShellError::Usage));
    assert_eq!(bench_args(&["reps=", "1G"]), Err(bad_number("")));
    assert_eq!(bench_args(&["reps=x", "1G"]), Err(bad_number("x")));
    // Only the first word is `reps=`: a second one is a size (and not a number).
    assert_eq!(bench_args(&["reps=1", "reps=2"]), Ok((1, &["reps=2"][..])));
    assert_eq!(bench_sizes(&["reps=2"]), Err(bad_number("reps=2")));
    assert_eq!(bench_sizes(&["1G", "0x4000_0000"]), Ok(vec![1 << 30, 1 << 30]));
}

#[test]
fn errors_read_as_the_kernel_prints_them() {
    assert_eq!(
        bad_number("zz").to_string(),
        "'zz' is not a number (use decimal, 0x-hex, or a K/M/G suffix)"
    );
    let w = ShellError::BadWord {
        word: "bogus".into(),
        want: "a zone (kernel, movable or auto)",
    };
    assert_eq!(w.to_string(), "'bogus' is not a zone (kernel, movable or auto)");
    assert_eq!(extra("2").to_string(), "unexpected argument '2'");
    assert_eq!(ShellError::Missing.to_string(), "missing argument(s)");
}

/// Argument words: the grammar's keywords, numbers good and bad, `reps=`, unicode, noise.
fn arg() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "kernel",
            "movable",
            "auto",
            "check",
            "settle",
            "verify",
            "free",
            "default",
            "online_policy",
            "ratio",
            "offline",
            "online",
            "auto-movable",
            "contig-zones",
            "reps=",
            "reps=0",
            "reps=5",
            "1G",
            "0x10G",
            "99999999999999999999G",
            "18446744073709551616",
            "-1",
            "",
        ])
        .prop_map(String::from),
        "[0-9]{1,24}[kKmMgGtT]?",
        "reps=[0-9a-z]{0,8}",
        "\\PC{1,10}",
    ]
}

/// Every parser on `args`, as the shell would call it.
fn every_parser(args: &[&str]) -> Vec<Result<(), ShellError>> {
    let sizes = bench_args(args).and_then(|(_, sizes)| bench_sizes(sizes)).map(drop);
    vec![
        no_args(args),
        exactly::<2>(args).map(drop),
        one_number(args).map(drop),
        addr_size(args).map(drop),
        online_args(args).map(drop),
        meminfo_args(args).map(drop),
        policy_args(args).map(drop),
        stress_args(args).map(drop),
        sizes,
    ]
}

proptest! {
    #[test]
    fn an_error_about_a_word_names_a_word_of_the_input(raw in prop::collection::vec(arg(), 0..5)) {
        let args: Vec<&str> = raw.iter().map(String::as_str).collect();
        for e in every_parser(&args).into_iter().filter_map(Result::err) {
            if let Some(w) = e.word() {
                // `reps=N` is refused by its value.
                prop_assert!(args.iter().any(|a| *a == w || a.strip_prefix("reps=") == Some(w)), "{:?} in {:?}", e, args);
                prop_assert!(e.to_string().contains(&format!("'{w}'")), "{}", e);
            }
        }
    }

    #[test]
    fn any_words_at_all_parse_or_fail_cleanly(raw in prop::collection::vec(any::<String>(), 0..5)) {
        let args: Vec<&str> = raw.iter().map(String::as_str).collect();
        for e in every_parser(&args).into_iter().filter_map(Result::err) {
            prop_assert!(e.word().is_none_or(|w| e.to_string().contains(w)), "{}", e);
        }
    }

    #[test]
    fn counts_decide_missing_and_extra(raw in prop::collection::vec("[a-z]{1,4}", 0..6)) {
        let args: Vec<&str> = raw.iter().map(String::as_str).collect();
        let got = exactly::<3>(&args);
        match args.len() {
            0..=2 => prop_assert_eq!(got, Err(ShellError::Missing)),
            3 => prop_assert_eq!(got, Ok([args[0], args[1], args[2]])),
            _ => prop_assert_eq!(got, Err(extra(args[3]))),
        }
    }
}
