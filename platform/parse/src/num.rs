//! Numbers as people type them, for the kernel command line and the shell: decimal or `0x`
//! hex, `_` separators anywhere, and on decimal numbers an optional K/M/G/T suffix (binary
//! multiples: `1K` is 1024).

use alloc::string::String;
use core::fmt;

/// Why a text is not a number [`parse_u64`] accepts; each variant holds the text as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NumError {
    /// Not of the grammar above (empty, a sign, a stray letter, a suffix on hex, ...).
    NotANumber(String),
    /// A number of the grammar, but above `u64::MAX` (its digits, or digits times suffix).
    TooLarge(String),
}

impl NumError {
    /// The text that was refused.
    pub fn text(&self) -> &str {
        match self {
            NumError::NotANumber(t) | NumError::TooLarge(t) => t,
        }
    }
}

impl fmt::Display for NumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumError::NotANumber(t) => write!(
                f,
                "'{t}' is not a number (decimal or 0x hex, optional _ separators, K/M/G/T suffix on decimal)"
            ),
            NumError::TooLarge(t) => write!(f, "'{t}' is more than {} (the largest 64-bit number)", u64::MAX),
        }
    }
}

/// The multiple a suffix stands for.
fn suffix(b: u8) -> Option<u64> {
    match b {
        b'k' | b'K' => Some(1 << 10),
        b'm' | b'M' => Some(1 << 20),
        b'g' | b'G' => Some(1 << 30),
        b't' | b'T' => Some(1 << 40),
        _ => None,
    }
}

/// Parse a number: decimal, `0x` hex, optional `_` separators, optional K/M/G/T suffix
/// (decimal only).
pub fn parse_u64(s: &str) -> Result<u64, NumError> {
    let t: String = s.chars().filter(|&c| c != '_').collect();
    // The suffix is one ASCII byte, so cutting it off leaves a `str` boundary.
    let (digits, mult) = match t.as_bytes().last().and_then(|&b| suffix(b)) {
        Some(m) => (&t[..t.len() - 1], m),
        None => (&t[..], 1),
    };
    let v = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        if mult != 1 {
            return Err(NumError::NotANumber(String::from(s)));
        }
        u64::from_str_radix(h, 16)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|e| match e.kind() {
        core::num::IntErrorKind::PosOverflow => NumError::TooLarge(String::from(s)),
        _ => NumError::NotANumber(String::from(s)),
    })?;
    v.checked_mul(mult).ok_or_else(|| NumError::TooLarge(String::from(s)))
}
