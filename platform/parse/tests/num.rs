//! `parse::num`: the number grammar of the command line and the shell (docs/shell.md: decimal or
//! `0x` hex, `_` separators, K/M/G/T suffixes), and that no input panics it or gets an error
//! that does not name it.

use parse::num::{parse_u64, NumError};
use proptest::prelude::*;

const SUFFIXES: [(char, u64); 8] = [
    ('K', 1 << 10),
    ('k', 1 << 10),
    ('M', 1 << 20),
    ('m', 1 << 20),
    ('G', 1 << 30),
    ('g', 1 << 30),
    ('T', 1 << 40),
    ('t', 1 << 40),
];

fn not_a_number(s: &str) -> Result<u64, NumError> {
    Err(NumError::NotANumber(s.into()))
}

fn too_large(s: &str) -> Result<u64, NumError> {
    Err(NumError::TooLarge(s.into()))
}

#[test]
fn decimal_hex_separators_and_suffixes() {
    assert_eq!(parse_u64("0"), Ok(0));
    assert_eq!(parse_u64("42"), Ok(42));
    assert_eq!(parse_u64("1_000_000"), Ok(1_000_000));
    assert_eq!(parse_u64("0x4000_0000"), Ok(0x4000_0000));
    assert_eq!(parse_u64("0X1f"), Ok(0x1f));
    assert_eq!(parse_u64("0xFFFF_ffff_FFFF_ffff"), Ok(u64::MAX));
    assert_eq!(parse_u64("1k"), Ok(1024));
    assert_eq!(parse_u64("128M"), Ok(128 << 20));
    assert_eq!(parse_u64("2G"), Ok(2 << 30));
    assert_eq!(parse_u64("1_T"), Ok(1 << 40));
    assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
    assert_eq!(parse_u64("16777215T"), Ok(16_777_215 << 40));
    // Rust's integer syntax takes a leading plus; the grammar inherits it.
    assert_eq!(parse_u64("+5"), Ok(5));
}

#[test]
fn malformed_numbers_are_refused_with_their_text() {
    for s in [
        "", "_", "K", "0x", "0xG", "-1", "1.5", "1 2", "0x10G", "12Q", "é", "1é", "1KB", "0b101", "x10",
    ] {
        assert_eq!(parse_u64(s), not_a_number(s), "{s:?}");
    }
}

#[test]
fn numbers_beyond_64_bits_are_too_large() {
    for s in [
        "18446744073709551616",
        "99999999999999999999",
        "99999999999999999999G",
        "16777216T",
        "17179869184G",
        "0x1_0000_0000_0000_0000",
    ] {
        assert_eq!(parse_u64(s), too_large(s), "{s:?}");
    }
}

#[test]
fn errors_say_what_was_typed() {
    let e = parse_u64("12Q").unwrap_err();
    assert_eq!(e.text(), "12Q");
    assert_eq!(
        e.to_string(),
        "'12Q' is not a number (decimal or 0x hex, optional _ separators, K/M/G/T suffix on decimal)"
    );
    let e = parse_u64("99999999999999999999G").unwrap_err();
    assert_eq!(
        e.to_string(),
        "'99999999999999999999G' is more than 18446744073709551615 (the largest 64-bit number)"
    );
}

/// `v` with `_` put before the characters whose indices are in `at`.
fn with_separators(v: &str, at: &[usize]) -> String {
    v.chars()
        .enumerate()
        .flat_map(|(i, c)| at.contains(&i).then_some('_').into_iter().chain([c]))
        .collect()
}

proptest! {
    #[test]
    fn any_text_gives_a_number_or_an_error_naming_it(s in any::<String>()) {
        if let Err(e) = parse_u64(&s) {
            prop_assert_eq!(e.text(), s.as_str());
            prop_assert!(e.to_string().contains(&format!("'{s}'")), "{}", e);
        }
    }

    #[test]
    fn ascii_noise_gives_a_number_or_an_error_naming_it(s in "[0-9a-fA-FxXkKmMgGtT_+ -]{0,24}") {
        match parse_u64(&s) {
            Ok(_) => prop_assert!(!s.contains(['-', ' '])),
            Err(e) => prop_assert!(e.to_string().contains(&format!("'{s}'")), "{}", e),
        }
    }

    #[test]
    fn every_u64_round_trips_in_decimal_and_hex(v in any::<u64>(), at in prop::collection::vec(0usize..20, 0..4)) {
        prop_assert_eq!(parse_u64(&v.to_string()), Ok(v));
        prop_assert_eq!(parse_u64(&format!("{v:#x}")), Ok(v));
        prop_assert_eq!(parse_u64(&format!("{v:#X}").replace("0X", "0x")), Ok(v));
        prop_assert_eq!(parse_u64(&with_separators(&v.to_string(), &at)), Ok(v));
    }

    #[test]
    fn a_suffix_multiplies_or_the_number_is_too_large(v in any::<u64>(), k in 0usize..SUFFIXES.len()) {
        let (c, mult) = SUFFIXES[k];
        let s = format!("{v}{c}");
        match v.checked_mul(mult) {
            Some(want) => prop_assert_eq!(parse_u64(&s), Ok(want)),
            None => prop_assert_eq!(parse_u64(&s), too_large(&s)),
        }
    }

    #[test]
    fn huge_digit_strings_are_too_large(d in "[1-9][0-9]{20,60}", k in 0usize..=SUFFIXES.len()) {
        let s = match SUFFIXES.get(k) {
            Some((c, _)) => format!("{d}{c}"),
            None => d,
        };
        prop_assert_eq!(parse_u64(&s), too_large(&s));
    }

    #[test]
    fn hex_takes_no_suffix(v in any::<u64>(), k in 0usize..SUFFIXES.len()) {
        let s = format!("{v:#x}{}", SUFFIXES[k].0);
        // `g`..`t` are no hex digits, and K/M/G/T after hex digits are refused.
        prop_assert_eq!(parse_u64(&s), not_a_number(&s));
    }
}
