//! In-guest workloads: users of memory as a program would use it, through the kernel's safe
//! APIs only (no unsafe code here). The shell and the in-guest tests drive them.

pub mod stress;
pub mod torture;
