//! A flattened device tree (DTB) read in one pass: the header, the memory reservation block,
//! and one walk of the structure block that reports each node's start, its properties and its
//! end, in order. Finding what the kernel needs is the caller's (`platform/src/boot/dtb.rs`);
//! this file only splits the blob.
//!
//! One walk is the point: a reader that searches the tree again for every node it wants pays
//! the whole structure block each time (QEMU virt's DTB holds dozens of nodes in a 1 MiB blob),
//! milliseconds under TCG at boot.
//!
//! Hostile blobs (truncated, bad offsets, unknown tokens, names without their NUL, nesting that
//! does not close) give a typed error naming the offset; nothing panics and nothing is read
//! outside the slice.

use crate::dtb::Range;

/// The header's magic (`0xd00dfeed`, big-endian).
pub const MAGIC: u32 = 0xd00d_feed;
/// Header bytes this reader uses (up to `size_dt_struct`, version 17).
pub const HEADER_LEN: usize = 40;
/// Deepest nesting the walk accepts (QEMU virt nests 4 deep).
pub const MAX_DEPTH: usize = 32;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why a blob is not a device tree this reader can walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// Fewer bytes than the header (or than its `totalsize`).
    Truncated { need: usize, have: usize },
    /// The first word is not [`MAGIC`].
    BadMagic(u32),
    /// A header block (`struct`, `strings`, `mem_rsvmap`) lies outside `totalsize`.
    BadBlock(&'static str),
    /// The structure block ends (or a value runs past it) at this offset.
    StructEnd { offset: usize },
    /// An unknown token at this offset of the structure block.
    BadToken { offset: usize, token: u32 },
    /// A property name offset outside the strings block, or a name without its NUL.
    BadName { offset: usize },
    /// Nesting deeper than [`MAX_DEPTH`], an end without a begin, or a node left open.
    BadNesting { offset: usize },
}

impl core::fmt::Display for FdtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FdtError::Truncated { need, have } => write!(f, "truncated: {have} bytes, need {need}"),
            FdtError::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            FdtError::BadBlock(b) => write!(f, "the {b} block lies outside the blob"),
            FdtError::StructEnd { offset } => write!(f, "structure block ends at offset {offset:#x}"),
            FdtError::BadToken { offset, token } => {
                write!(f, "unknown token {token:#x} at structure offset {offset:#x}")
            }
            FdtError::BadName { offset } => write!(f, "bad name at structure offset {offset:#x}"),
            FdtError::BadNesting { offset } => write!(f, "bad node nesting at structure offset {offset:#x}"),
        }
    }
}

/// What the walk meets, in blob order. A node's properties come before its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A node starts; `depth` 0 is the root (whose name is empty), `name` includes any unit
    /// address (`memory@40000000`).
    Begin { name: &'a str, depth: usize },
    /// A property of the node begun last and not yet ended.
    Prop { name: &'a str, value: &'a [u8] },
    /// The node begun last ends.
    End { depth: usize },
}

/// A device tree blob, its blocks located and bounded by `totalsize`.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    total: usize,
    structs: &'a [u8],
    strings: &'a [u8],
    rsv: &'a [u8],
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some((u64::from(be32(b, at)?) << 32) | u64::from(be32(b, at + 4)?))
}

fn block<'a>(blob: &'a [u8], off: u32, size: u32, what: &'static str) -> Result<&'a [u8], FdtError> {
    let (off, size) = (off as usize, size as usize);
    off.checked_add(size)
        .and_then(|end| blob.get(off..end))
        .ok_or(FdtError::BadBlock(what))
}

/// The text of a NUL-terminated name at the start of `b` (without its NUL), if it is UTF-8.
fn c_str(b: &[u8]) -> Option<(&str, usize)> {
    let n = b.iter().position(|&c| c == 0)?;
    Some((core::str::from_utf8(&b[..n]).ok()?, n + 1))
}

impl<'a> Fdt<'a> {
    /// Locate the blocks of the blob at the start of `blob` (which may be longer than its
    /// `totalsize`).
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        let hdr = |i: usize| {
            be32(blob, 4 * i).ok_or(FdtError::Truncated {
                need: HEADER_LEN,
                have: blob.len(),
            })
        };
        let magic = hdr(0)?;
        if magic != MAGIC {
            return Err(FdtError::BadMagic(magic));
        }
        let total = hdr(1)? as usize;
        if blob.len() < HEADER_LEN || total < HEADER_LEN || blob.len() < total {
            return Err(FdtError::Truncated {
                need: total.max(HEADER_LEN),
                have: blob.len(),
            });
        }
        let blob = &blob[..total];
        let structs = block(blob, hdr(2)?, hdr(9)?, "struct")?;
        let strings = block(blob, hdr(3)?, hdr(8)?, "strings")?;
        let rsv_off = hdr(4)? as usize;
        let rsv = blob.get(rsv_off..).ok_or(FdtError::BadBlock("mem_rsvmap"))?;
        Ok(Fdt {
            total,
            structs,
            strings,
            rsv,
        })
    }

    /// The header's `totalsize`.
    pub fn total_size(&self) -> usize {
        self.total
    }

    /// The `/memreserve/` entries, up to the terminating empty one (or the blob's end).
    pub fn reservations(&self) -> impl Iterator<Item = Range> + 'a {
        let rsv = self.rsv;
        (0..)
            .map_while(move |i: usize| Some((be64(rsv, 16 * i)?, be64(rsv, 16 * i + 8)?)))
            .take_while(|&(base, size)| base != 0 || size != 0)
            .map(|(base, size)| Range { base, size })
    }

    /// Walk the structure block once, handing every node start, property and node end to `f`
    /// in blob order; stops at the first malformed token (after reporting what came before).
    pub fn walk(&self, mut f: impl FnMut(Event<'a>)) -> Result<(), FdtError> {
        let s = self.structs;
        let (mut at, mut depth) = (0usize, 0usize);
        loop {
            let offset = at;
            let token = be32(s, at).ok_or(FdtError::StructEnd { offset })?;
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let (name, len) = c_str(s.get(at..).unwrap_or(&[])).ok_or(FdtError::BadName { offset })?;
                    if depth >= MAX_DEPTH {
                        return Err(FdtError::BadNesting { offset });
                    }
                    f(Event::Begin { name, depth });
                    depth += 1;
                    at = (at + len).next_multiple_of(4);
                }
                FDT_END_NODE => {
                    depth = depth.checked_sub(1).ok_or(FdtError::BadNesting { offset })?;
                    f(Event::End { depth });
                }
                FDT_PROP => {
                    let len = be32(s, at).ok_or(FdtError::StructEnd { offset })? as usize;
                    let name_off = be32(s, at + 4).ok_or(FdtError::StructEnd { offset })? as usize;
                    let value = at
                        .checked_add(8 + len)
                        .and_then(|end| s.get(at + 8..end))
                        .ok_or(FdtError::StructEnd { offset })?;
                    let (name, _) =
                        c_str(self.strings.get(name_off..).unwrap_or(&[])).ok_or(FdtError::BadName { offset })?;
                    if depth == 0 {
                        return Err(FdtError::BadNesting { offset });
                    }
                    f(Event::Prop { name, value });
                    at = (at + 8 + len).next_multiple_of(4);
                }
                FDT_NOP => {}
                FDT_END if depth == 0 => return Ok(()),
                FDT_END => return Err(FdtError::BadNesting { offset }),
                token => return Err(FdtError::BadToken { offset, token }),
            }
        }
    }
}

/// The first string of a string or string-list value (without its NUL), if UTF-8.
pub fn str_value(value: &[u8]) -> Option<&str> {
    let n = value.iter().position(|&c| c == 0).unwrap_or(value.len());
    core::str::from_utf8(&value[..n]).ok()
}

/// The strings of a string-list value (`compatible`), the non-UTF-8 ones skipped.
pub fn strings(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| core::str::from_utf8(s).ok())
}

/// A number of `cells` big-endian cells at the start of `value` (`cells` ≤ 2), and the rest.
pub fn take_cells(value: &[u8], cells: u32) -> Option<(u64, &[u8])> {
    let n = cells as usize * 4;
    if cells > 2 || value.len() < n {
        return None;
    }
    let v = (0..cells as usize).fold(0u64, |acc, i| (acc << 32) | u64::from(be32(value, 4 * i).unwrap_or(0)));
    Some((v, &value[n..]))
}

/// The (address, size) entries of a `reg` value under a parent with `addr_cells` and
/// `size_cells`; with `size_cells` 0 every size is 0. A cut-short last entry is dropped.
pub fn reg(mut value: &[u8], addr_cells: u32, size_cells: u32) -> impl Iterator<Item = Range> + '_ {
    core::iter::from_fn(move || {
        if addr_cells == 0 && size_cells == 0 {
            return None;
        }
        let (base, rest) = take_cells(value, addr_cells)?;
        let (size, rest) = take_cells(rest, size_cells)?;
        value = rest;
        Some(Range { base, size })
    })
}
