//! `parse::line`: the shell's line discipline (docs/shell.md, "Typing a line"): echo, editing,
//! escape sequences, the byte limit and UTF-8, by hand and over random byte streams.

use parse::line::{LineEditor, Outcome};
use proptest::prelude::*;

/// What a terminal sees and the shell gets from feeding `input`: the echo, and each Enter's
/// outcome with the line's text.
fn feed<const N: usize>(ed: &mut LineEditor<N>, input: &[u8]) -> (Vec<u8>, Vec<(Outcome, String)>) {
    let (mut echo, mut lines) = (Vec::new(), Vec::new());
    for &b in input {
        if let Some(o) = ed.feed(b, &mut |e| echo.extend_from_slice(e)) {
            lines.push((o, ed.text().to_string()));
        }
    }
    (echo, lines)
}

fn lines<const N: usize>(input: &[u8]) -> Vec<(Outcome, String)> {
    feed(&mut LineEditor::<N>::new(), input).1
}

fn line(text: &str) -> (Outcome, String) {
    (Outcome::Line, text.into())
}

#[test]
fn enter_hands_over_the_line_and_echoes_a_newline() {
    let mut ed = LineEditor::<16>::new();
    let (echo, got) = feed(&mut ed, b"meminfo\r");
    assert_eq!(echo, b"meminfo\n");
    assert_eq!(got, [line("meminfo")]);
    assert_eq!(lines::<16>(b"a\nb\r\r"), [line("a"), line("b"), line("")]);
}

#[test]
fn backspace_removes_one_character_and_ctrl_u_the_line() {
    let mut ed = LineEditor::<16>::new();
    let (echo, got) = feed(&mut ed, "pé\x7fa\x08\x08\x08x\r".as_bytes());
    assert_eq!(got, [line("x")]);
    assert_eq!(
        echo,
        ["p".as_bytes(), "é".as_bytes(), b"\x08 \x08a\x08 \x08\x08 \x08x\n"].concat()
    );
    let (echo, got) = feed(&mut ed, "ab€\x15c\r".as_bytes());
    assert_eq!(got, [line("c")]);
    assert!(
        echo.ends_with(b"\x08 \x08\x08 \x08\x08 \x08c\n"),
        "one erase per character"
    );
}

#[test]
fn escape_sequences_and_control_bytes_are_ignored() {
    assert_eq!(lines::<16>(b"a\x1b[A\x1b[1;5Cb\x1bOPc\x01\x02\t\r"), [line("abc")]);
    // Enter ends an unfinished escape sequence and the line.
    assert_eq!(lines::<16>(b"ab\x1b[\r"), [line("ab")]);
}

#[test]
fn a_line_beyond_the_limit_is_refused_whole_and_the_next_starts_clean() {
    let mut ed = LineEditor::<4>::new();
    let (echo, got) = feed(&mut ed, b"abcdef\r");
    assert_eq!(echo, b"abcd\x07\n", "one BEL, the rest not echoed");
    assert_eq!(got, [(Outcome::TooLong { len: 6 }, "abcd".into())]);
    assert_eq!(feed(&mut ed, b"ok\r").1, [line("ok")]);
    // Backspace first takes back what went beyond the limit, unseen.
    assert_eq!(lines::<4>(b"abcdef\x7f\x7f\x7fx\r"), [line("abcx")]);
    assert_eq!(lines::<4>(b"abcdef\x15hi\r"), [line("hi")]);
}

#[test]
fn a_line_that_is_not_utf8_is_refused_with_its_first_bad_byte() {
    assert_eq!(lines::<16>(b"ab\xffc\r")[0].0, Outcome::NotUtf8 { at: 2, byte: 0xff });
    assert_eq!(lines::<16>(b"\xc3\r")[0].0, Outcome::NotUtf8 { at: 0, byte: 0xc3 });
    assert_eq!(lines::<16>("méminfo\r".as_bytes()), [line("méminfo")]);
}

proptest! {
    #[test]
    fn any_byte_stream_gives_bounded_lines(input in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut ed = LineEditor::<32>::new();
        for (o, text) in feed(&mut ed, &input).1 {
            match o {
                Outcome::Line => prop_assert!(text.len() <= 32),
                Outcome::TooLong { len } => prop_assert!(len > 32),
                Outcome::NotUtf8 { at, .. } => prop_assert!(at < 32),
            }
        }
    }

    #[test]
    fn printable_text_comes_back_as_typed_or_is_refused_by_length(
        words in prop::collection::vec("[ -~]{0,12}|\\PC{0,6}", 1..6),
    ) {
        let mut ed = LineEditor::<24>::new();
        for w in &words {
            let (_, got) = feed(&mut ed, format!("{w}\r").as_bytes());
            let want = if w.len() <= 24 { line(w) } else { (Outcome::TooLong { len: w.len() }, got[0].1.clone()) };
            prop_assert_eq!(&got[..], &[want][..]);
        }
    }

    #[test]
    fn backspace_after_a_character_undoes_it(prefix in "[ -~]{0,10}", c in "\\PC") {
        let typed = format!("{prefix}{c}\x7f\r");
        prop_assert_eq!(lines::<64>(typed.as_bytes()), vec![line(&prefix)]);
    }
}
