//! Device drivers: MMIO register blocks and system registers of QEMU `virt`'s devices, and
//! their interrupt top halves. No policy lives here.

pub mod fw_cfg;
pub mod ged;
pub mod gic;
pub mod pci;
pub mod pl011;
pub mod psci;
pub mod timer;
pub mod virtio_mem;
