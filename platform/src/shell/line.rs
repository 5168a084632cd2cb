//! The shell's line limit. The line discipline itself (echo, editing, refusing a line that is
//! too long or not UTF-8) is [`parse::line`], host-tested; the runner reads `LINE_MAX` from
//! this file to refuse longer `--exec` commands before typing them.

pub use parse::line::Outcome;

/// The most bytes a shell line holds (UTF-8 bytes, not characters).
pub const LINE_MAX: usize = 256;

/// The console's line editor: [`LINE_MAX`] bytes.
pub type LineEditor = parse::line::LineEditor<LINE_MAX>;
