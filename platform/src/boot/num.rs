//! Numbers as people type them, for the kernel command line and the shell.

use alloc::string::String;

/// The text is not a number [`parse_u64`] accepts (or it overflows a `u64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotANumber;

/// Parse a number: decimal, `0x` hex, optional `_` separators, optional K/M/G/T suffix.
pub fn parse_u64(s: &str) -> Result<u64, NotANumber> {
    let bad = || NotANumber;
    let t: String = s.chars().filter(|&c| c != '_').collect();
    let (digits, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        Some(b't' | b'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (&t[..], 1),
    };
    let v = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        if mult != 1 {
            return Err(bad());
        }
        u64::from_str_radix(h, 16)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| bad())?;
    v.checked_mul(mult).ok_or_else(bad)
}
