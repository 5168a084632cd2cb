//! The kernel's pure parsers: what it reads from people and firmware, with no hardware in
//! reach, so every rule is tested on the host (`platform/parse/tests/`) with unit and property
//! tests. The kernel (`platform`) links this library and re-exports it where its modules
//! expect it (`boot::num`, `boot::cmdline`, `boot::dtb`, `shell::line`, the shell's argument
//! helpers).
//!
//! Contract of every parser here: any input, however hostile (random bytes, huge numbers,
//! unicode, truncated cells), gives a value or a typed error and never panics; an error that
//! comes from a piece of the input names that piece in its `Display`.
#![no_std]

extern crate alloc;

pub mod acpi;
pub mod cmdline;
pub mod dtb;
pub mod fdt;
pub mod line;
pub mod num;
pub mod numa;
pub mod shell;
