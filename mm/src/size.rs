//! Sizes as people type and read them: the one parser and the one formatter shared by the guest
//! shell, the kernel command line and the host runner.
//!
//! Accepted spellings ([`parse_size`]): decimal (`4096`), `0x`/`0X` hex (`0x8000000`), an
//! optional `K`/`M`/`G`/`T` suffix in either case on a decimal number (binary units: `2M` is
//! 2 MiB), `_` separators anywhere (`1_000`, `0x8000_0000`) and one leading `+`. Nothing
//! allocates. Zero is a size here; callers that need a non-zero one say so themselves.
//!
//! Printed spelling ([`Size`]): the shortest exact one in the same units (`1G`, `1536M`, `64K`,
//! `0x3e8`, `0`), so what is printed parses back to the same number. `{:#}` gives the long
//! form for people (`128 TiB`, `2 MiB`, `1000 B`).

use core::fmt;

/// Why a string is not a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// No digits (`""`, `"K"`, `"0x"`, `"_"`).
    Empty,
    /// A character that is not a digit of the number's base (`"12a"`, `"1.5G"`, `"0xz"`).
    InvalidDigit(char),
    /// A unit suffix on a hex number (`"0x10M"`): hex is already exact bytes.
    HexWithSuffix,
    /// More than `u64::MAX` bytes (`"16777216T"`).
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => f.write_str("no digits"),
            SizeError::InvalidDigit(c) => write!(f, "`{c}` is not a digit"),
            SizeError::HexWithSuffix => f.write_str("a hex number takes no K/M/G/T suffix"),
            SizeError::Overflow => f.write_str("too large for 64 bits"),
        }
    }
}

/// The unit suffixes, largest first: letter and shift.
const UNITS: [(char, u32); 4] = [('T', 40), ('G', 30), ('M', 20), ('K', 10)];

/// Parses a size in bytes (see the module documentation for the accepted spellings).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim_end_matches('_');
    let (number, shift) = match t.chars().next_back().map(|c| c.to_ascii_uppercase()) {
        Some(last) => match UNITS.iter().find(|&&(u, _)| u == last) {
            Some(&(_, shift)) => (&t[..t.len() - 1], shift),
            None => (t, 0),
        },
        None => (t, 0),
    };
    let mut digits = number.chars().filter(|&c| c != '_').peekable();
    if digits.peek() == Some(&'+') {
        digits.next();
    }
    let mut radix = 10;
    if digits.peek() == Some(&'0') {
        digits.next();
        match digits.peek() {
            Some('x' | 'X') => {
                digits.next();
                if shift != 0 {
                    return Err(SizeError::HexWithSuffix);
                }
                radix = 16;
            }
            // The `0` was a digit after all.
            _ => return accumulate(core::iter::once('0').chain(digits), 10, shift),
        }
    }
    accumulate(digits, radix, shift)
}

fn accumulate(digits: impl Iterator<Item = char>, radix: u32, shift: u32) -> Result<u64, SizeError> {
    let mut value: Option<u64> = None;
    for c in digits {
        let d = c.to_digit(radix).ok_or(SizeError::InvalidDigit(c))?;
        value = Some(
            value
                .unwrap_or(0)
                .checked_mul(u64::from(radix))
                .and_then(|v| v.checked_add(u64::from(d)))
                .ok_or(SizeError::Overflow)?,
        );
    }
    let value = value.ok_or(SizeError::Empty)?;
    if value.leading_zeros() < shift {
        return Err(SizeError::Overflow);
    }
    Ok(value << shift)
}

/// A byte count that prints as [`parse_size`] reads it: `1G`, `128M`, `64K`, `0x3e8`, `0`;
/// with `{:#}`, as people read it: `1 GiB`, `128 MiB`, `1000 B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let unit = UNITS.iter().find(|&&(_, shift)| v != 0 && v.trailing_zeros() >= shift);
        match (unit, f.alternate()) {
            (Some(&(u, shift)), false) => write!(f, "{}{u}", v >> shift),
            (Some(&(u, shift)), true) => write!(f, "{} {u}iB", v >> shift),
            (None, false) if v == 0 => f.write_str("0"),
            (None, false) => write!(f, "{v:#x}"),
            (None, true) => write!(f, "{v} B"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_every_spelling() {
        for (s, v) in [
            ("0", 0),
            ("4096", 4096),
            ("0x8000000", 0x800_0000),
            ("0X1f", 0x1f),
            ("00", 0),
            ("010", 10),
            ("1K", 1 << 10),
            ("1k", 1 << 10),
            ("512M", 512 << 20),
            ("2m", 2 << 20),
            ("1G", 1 << 30),
            ("3g", 3 << 30),
            ("4T", 4 << 40),
            ("1t", 1 << 40),
            ("0K", 0),
            ("1_000", 1000),
            ("0x8000_0000", 0x8000_0000),
            ("_0x1_", 1),
            ("1_G", 1 << 30),
            ("1G_", 1 << 30),
            ("+5", 5),
            ("18446744073709551615", u64::MAX),
            ("0xffffffffffffffff", u64::MAX),
            ("16777215T", 16_777_215 << 40),
        ] {
            assert_eq!(parse_size(s), Ok(v), "{s}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        for (s, e) in [
            ("", SizeError::Empty),
            ("_", SizeError::Empty),
            ("K", SizeError::Empty),
            ("0x", SizeError::Empty),
            ("+", SizeError::Empty),
            ("12a", SizeError::InvalidDigit('a')),
            ("1.5G", SizeError::InvalidDigit('.')),
            ("0xz", SizeError::InvalidDigit('z')),
            ("-1", SizeError::InvalidDigit('-')),
            ("++1", SizeError::InvalidDigit('+')),
            (" 1", SizeError::InvalidDigit(' ')),
            ("1KB", SizeError::InvalidDigit('K')),
            ("0b101", SizeError::InvalidDigit('b')),
            ("0x10M", SizeError::HexWithSuffix),
            ("0x1k", SizeError::HexWithSuffix),
            ("18446744073709551616", SizeError::Overflow),
            ("0x10000000000000000", SizeError::Overflow),
            ("16777216T", SizeError::Overflow),
            ("17179869184G", SizeError::Overflow),
        ] {
            assert_eq!(parse_size(s), Err(e), "{s}");
        }
    }

    #[test]
    fn prints_the_shortest_exact_spelling() {
        for (v, short, long) in [
            (0, "0", "0 B"),
            (1000, "0x3e8", "1000 B"),
            (1 << 10, "1K", "1 KiB"),
            (64 << 10, "64K", "64 KiB"),
            (128 << 20, "128M", "128 MiB"),
            (1536 << 20, "1536M", "1536 MiB"),
            (1 << 30, "1G", "1 GiB"),
            (4 << 40, "4T", "4 TiB"),
            (1 << 50, "1024T", "1024 TiB"),
            (u64::MAX, "0xffffffffffffffff", "18446744073709551615 B"),
        ] {
            assert_eq!(Size(v).to_string(), short, "{v:#x}");
            assert_eq!(alloc::format!("{:#}", Size(v)), long, "{v:#x}");
        }
    }

    #[test]
    fn printed_sizes_parse_back() {
        let mut v = 1u64;
        while v != 0 {
            for x in [v, v - 1, v + (v >> 1), v.wrapping_mul(3)] {
                assert_eq!(parse_size(&Size(x).to_string()), Ok(x), "{x:#x}");
            }
            v <<= 1;
        }
    }
}
