//! The shell's line discipline: a bounded line buffer with echo and editing.
//!
//! Rules: printable ASCII and every byte of a multi-byte UTF-8 character are stored and echoed;
//! Backspace (DEL or BS) removes the last character, Ctrl-U the whole line; escape sequences
//! (arrow keys) are swallowed; other control bytes are ignored. A line holds at most `N` bytes
//! (UTF-8 bytes, not characters; the kernel's `N` is `LINE_MAX` in
//! `platform/src/shell/line.rs`): the bytes beyond are counted, not stored or echoed (a BEL
//! marks the first), and at Enter the whole line is refused with its length, so a truncated
//! command never runs and the next line starts clean.

/// What Enter hands to the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A line, read with [`LineEditor::text`].
    Line,
    /// The line had `len` bytes, more than the editor holds.
    TooLong { len: usize },
    /// Byte `byte` at offset `at` starts no valid UTF-8 character.
    NotUtf8 { at: usize, byte: u8 },
}

#[derive(Clone, Copy)]
enum Escape {
    None,
    Start,
    Csi,
}

/// A line editor holding at most `N` bytes.
pub struct LineEditor<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Bytes typed beyond `N` (not stored).
    extra: usize,
    escape: Escape,
    /// The last byte completed a line: the next one starts a new line.
    done: bool,
}

const ERASE: &[u8] = b"\x08 \x08";

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

impl<const N: usize> Default for LineEditor<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineEditor<N> {
    pub const fn new() -> Self {
        LineEditor {
            buf: [0; N],
            len: 0,
            extra: 0,
            escape: Escape::None,
            done: false,
        }
    }

    /// The line completed by the last [`Outcome::Line`].
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    fn clear(&mut self) {
        self.len = 0;
        self.extra = 0;
    }

    /// Takes one input byte; `echo` gets what the terminal should show. Returns the outcome
    /// when the byte is an Enter.
    pub fn feed(&mut self, c: u8, echo: &mut dyn FnMut(&[u8])) -> Option<Outcome> {
        if self.done {
            self.done = false;
            self.clear();
        }
        match (self.escape, c) {
            (Escape::None, 0x1b) => {
                self.escape = Escape::Start;
                return None;
            }
            (Escape::Start, b'[' | b'O') => {
                self.escape = Escape::Csi;
                return None;
            }
            (Escape::Csi, 0x20..=0x3f) => return None, // parameters and intermediates
            (Escape::Start | Escape::Csi, b'\r' | b'\n') => self.escape = Escape::None,
            (Escape::Start | Escape::Csi, _) => {
                // The final byte (or a lone ESC's follower).
                self.escape = Escape::None;
                return None;
            }
            (Escape::None, _) => {}
        }
        match c {
            b'\r' | b'\n' => {
                echo(b"\n");
                self.done = true;
                return Some(self.outcome());
            }
            0x15 => {
                // Ctrl-U: erase the whole line, including what went beyond the limit.
                let chars = self.buf[..self.len].iter().filter(|&&b| !is_continuation(b)).count();
                for _ in 0..chars {
                    echo(ERASE);
                }
                self.clear();
            }
            0x7f | 0x08 => {
                if self.extra > 0 {
                    // Bytes beyond the limit were never shown: nothing to erase on screen.
                    self.extra -= 1;
                } else if self.len > 0 {
                    while self.len > 1 && is_continuation(self.buf[self.len - 1]) {
                        self.len -= 1;
                    }
                    self.len -= 1;
                    echo(ERASE);
                }
            }
            0x20..=0x7e | 0x80..=0xff => {
                if self.len < N && self.extra == 0 {
                    self.buf[self.len] = c;
                    self.len += 1;
                    echo(&[c]);
                } else {
                    if self.extra == 0 {
                        echo(b"\x07");
                    }
                    self.extra += 1;
                }
            }
            _ => {}
        }
        None
    }

    fn outcome(&self) -> Outcome {
        if self.extra > 0 {
            return Outcome::TooLong {
                len: self.len + self.extra,
            };
        }
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(_) => Outcome::Line,
            Err(e) => Outcome::NotUtf8 {
                at: e.valid_up_to(),
                byte: self.buf[e.valid_up_to()],
            },
        }
    }
}
