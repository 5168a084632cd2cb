//! Boot: what runs before (and right after) the MMU is on, and what the firmware hands over.
//! The MMU-off boot page tables ([`early`]), the device tree ([`dtb`]), the kernel command
//! line ([`cmdline`]) and the virtual layout ([`layout`]). Imports nothing of the kernel.
//! The command line and its number parser are the host-tested `parse` crate's
//! (`platform/parse`: `parse::cmdline`, `parse::num`).

pub use parse::cmdline;

pub mod dtb;
pub mod early;
pub mod layout;
pub mod numa;
