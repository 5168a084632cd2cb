//! Boot: what runs before (and right after) the MMU is on, and what the firmware hands over.
//! The MMU-off boot page tables ([`early`]), the device tree ([`dtb`]), the kernel command
//! line ([`cmdline`]) with its number parser ([`num`]) and the virtual layout ([`layout`]). Imports nothing of the kernel.

pub mod cmdline;
pub mod dtb;
pub mod early;
pub mod layout;
pub mod num;
