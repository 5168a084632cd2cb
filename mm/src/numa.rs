//! NUMA node identifiers (Linux `nid`) and the number of nodes the kernel supports.

pub type NodeId = u8;
pub const MAX_NUMNODES: usize = 8;
