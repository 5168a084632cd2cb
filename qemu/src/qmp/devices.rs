//! What QEMU reports about memory devices, as QMP carries it: `query-memory-devices` entries,
//! the ACPI OSPM status (`query-acpi-ospm-status`, `ACPI_DEVICE_OST` events), and the NUMA
//! nodes devices can go to (`info numa`).

use serde::Deserialize;

/// One entry of a `query-memory-devices` reply: the device's kind and its `data`.
#[derive(Deserialize)]
pub struct Tagged<T> {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: T,
}

/// The `data` of one `query-memory-devices` entry (pc-dimm and others; fields a kind lacks are
/// `None`), with its `type` in [`MemoryDevice::kind`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MemoryDevice {
    /// `type`: `dimm`, `nvdimm`, `virtio-mem`, ...
    #[serde(skip)]
    pub kind: String,
    pub id: Option<String>,
    pub slot: Option<u64>,
    /// `addr` (`memaddr` for virtio-mem).
    #[serde(alias = "memaddr")]
    pub addr: u64,
    pub size: u64,
    /// QOM path of the backend, e.g. `/objects/mem-dimm0`.
    pub memdev: Option<String>,
    pub hotplugged: bool,
    pub node: Option<u64>,
}

impl MemoryDevice {
    /// The backend object's id: the last component of [`MemoryDevice::memdev`].
    pub fn memdev_id(&self) -> Option<&str> {
        self.memdev.as_deref().map(|p| p.rsplit('/').next().unwrap_or(p))
    }
}

/// `ACPI_DEVICE_OST` source of an insert (ACPI "device check" / hot-add).
pub const OST_SOURCE_INSERT: u64 = 1;
/// `ACPI_DEVICE_OST` source of an eject request.
pub const OST_SOURCE_EJECT: u64 = 3;

/// One entry of `query-acpi-ospm-status`, or the `info` of an `ACPI_DEVICE_OST` event: the last
/// _OST the guest reported for a slot (`source` = ACPI event: 1 insert, 3 eject; `status` 0 =
/// success).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct OspmStatus {
    /// The device's id, when the slot holds a device that has one.
    pub device: Option<String>,
    pub slot: String,
    pub slot_type: String,
    pub source: u64,
    pub status: u64,
}

impl OspmStatus {
    /// The slot as a number (QEMU reports it as a string).
    pub fn slot_number(&self) -> Option<u64> {
        self.slot.parse().ok()
    }
}

/// The node count of HMP `info numa` output (`3 nodes\r\nnode 0 cpus: 0\r\n...`; QEMU says
/// `1 nodes` for a machine without `-numa`).
pub fn info_numa_nodes(out: &str) -> Option<u32> {
    out.lines().next()?.trim().strip_suffix(" nodes")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As QEMU 10.0 prints it, with `-numa` and without.
    #[test]
    fn info_numa_gives_the_node_count() {
        let three = "3 nodes\r\nnode 0 cpus: 0\r\nnode 0 size: 1024 MB\r\nnode 0 plugged: 0 MB\r\nnode 1 cpus: 1\r\nnode 2 cpus:\r\n";
        assert_eq!(info_numa_nodes(three), Some(3));
        assert_eq!(info_numa_nodes("1 nodes\r\nnode 0 cpus: 0 1\r\n"), Some(1));
        assert_eq!(info_numa_nodes(""), None);
        assert_eq!(info_numa_nodes("unknown command: 'info numa'\r\n"), None);
    }
}
