//! The virtio-mem device (virtio 1.2 §5.15) over the modern virtio-pci transport of
//! `virtio-drivers`, in the style of that crate's own devices: the config layout as a typed
//! struct read field by field, the feature bits, a strict initialisation (`VERSION_1` offered,
//! `FEATURES_OK` kept by the device), and one request at a time with a deadline. The requests'
//! wire format and the policy are portable ([`mm::vmem`]); the kernel's policy
//! (`kernel::mem::device::virtio_mem`) owns a [`VirtioMem`] per device.

use crate::drivers::{pci::Ecam, timer};
use alloc::{boxed::Box, format};
use core::mem::offset_of;
use mm::vmem::{DeviceConfig, Request, Response, TransportError, VmemDevice};
use virtio_drivers::{
    config::ReadOnly,
    queue::VirtQueue,
    transport::{
        pci::{
            bus::{DeviceFunction, PciRoot},
            PciTransport,
        },
        DeviceStatus, Transport,
    },
    Hal,
};

/// PCI device id of a modern virtio-mem device (0x1040 + 24).
pub const PCI_DEVICE_ID: u16 = 0x1058;
pub const VIRTIO_VENDOR: u16 = 0x1af4;
const QUEUE_SIZE: usize = 8;
/// Longest wait for the device's answer to one request; a device that does not answer in time
/// is given up (its buffers stay with it, leaked, so a late answer writes nothing of ours).
const ANSWER_TIMEOUT_MS: u64 = 5_000;

/// Feature bits.
pub mod feature {
    pub const ACPI_PXM: u64 = 1 << 0;
    pub const UNPLUGGED_INACCESSIBLE: u64 = 1 << 1;
    pub const VERSION_1: u64 = 1 << 32;
    /// What this driver accepts of what the device offers.
    pub const SUPPORTED: u64 = VERSION_1 | UNPLUGGED_INACCESSIBLE | ACPI_PXM;
}

/// `struct virtio_mem_config`. The 64-bit fields are read as two 32-bit halves under the config
/// generation (virtio §2.5.1: they need not be read atomically).
#[repr(C)]
struct Config {
    block_size: ReadOnly<u64>,
    node_id: ReadOnly<u16>,
    _padding: [ReadOnly<u8>; 6],
    addr: ReadOnly<u64>,
    region_size: ReadOnly<u64>,
    usable_region_size: ReadOnly<u64>,
    plugged_size: ReadOnly<u64>,
    requested_size: ReadOnly<u64>,
}

/// Read the 64-bit config field `$field` of [`Config`].
macro_rules! config_u64 {
    ($t:expr, $field:ident) => {
        read_u64($t, offset_of!(Config, $field))
    };
}

fn read_u64(t: &PciTransport, off: usize) -> u64 {
    t.read_consistent(|| {
        let lo: u32 = t.read_config_space(off)?;
        let hi: u32 = t.read_config_space(off + 4)?;
        Ok((hi as u64) << 32 | lo as u64)
    })
    .unwrap_or(0)
}

/// Why a function was not brought up (the device is left FAILED).
#[derive(Debug)]
pub enum ProbeError {
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    NoVersion1,
    FeaturesRejected(u64),
    Queue(virtio_drivers::Error),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::Transport(e) => write!(f, "transport: {e}"),
            ProbeError::NoVersion1 => write!(f, "the device does not offer VIRTIO_F_VERSION_1"),
            ProbeError::FeaturesRejected(v) => write!(f, "the device rejected features {v:#x}"),
            ProbeError::Queue(e) => write!(f, "virtqueue: {e:?}"),
        }
    }
}

/// One virtio-mem function in use: its transport and request queue.
pub struct VirtioMem<H: Hal> {
    transport: PciTransport,
    queue: VirtQueue<H, QUEUE_SIZE>,
    /// A request went unanswered: the device is no longer used.
    pub gone: bool,
    /// Cycles spent waiting for the device's answers (reset by the caller).
    pub wait_cycles: u64,
}

/// A function between feature negotiation and DRIVER_OK: the caller reads its configuration
/// and either [`starts`](Self::start) it or [`fails`](Self::fail) it.
pub struct Probed {
    transport: PciTransport,
    pub features: u64,
    pub config: DeviceConfig,
}

/// Initialise the function (virtio §3.1.1, by hand: `begin_init` wants a bitflags type) up to
/// its configuration: the device must offer `VERSION_1` and keep `FEATURES_OK`.
pub fn probe<H: Hal>(root: &mut PciRoot<Ecam>, df: DeviceFunction) -> Result<Probed, ProbeError> {
    let mut t = PciTransport::new::<H, Ecam>(root, df).map_err(ProbeError::Transport)?;
    t.set_status(DeviceStatus::empty());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = t.read_device_features();
    if offered & feature::VERSION_1 == 0 {
        t.set_status(DeviceStatus::FAILED);
        return Err(ProbeError::NoVersion1);
    }
    let features = offered & feature::SUPPORTED;
    t.write_driver_features(features);
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    if !t.get_status().contains(DeviceStatus::FEATURES_OK) {
        t.set_status(DeviceStatus::FAILED);
        return Err(ProbeError::FeaturesRejected(features));
    }
    let config = DeviceConfig {
        block_size: config_u64!(&t, block_size),
        addr: config_u64!(&t, addr),
        region_size: config_u64!(&t, region_size),
        usable_region_size: config_u64!(&t, usable_region_size),
        plugged_size: config_u64!(&t, plugged_size),
        node_id: t.read_config_space::<u16>(offset_of!(Config, node_id)).unwrap_or(0),
    };
    Ok(Probed {
        transport: t,
        features,
        config,
    })
}

impl Probed {
    /// The driver refuses the device's configuration: FAILED.
    pub fn fail(mut self) {
        self.transport.set_status(DeviceStatus::FAILED);
    }

    /// Set up the request queue (requests are waited for synchronously: no used-buffer
    /// interrupts) and tell the device the driver is ready (DRIVER_OK).
    pub fn start<H: Hal>(mut self) -> Result<VirtioMem<H>, ProbeError> {
        let mut queue = match VirtQueue::<H, QUEUE_SIZE>::new(&mut self.transport, 0, false, false) {
            Ok(q) => q,
            Err(e) => {
                self.fail();
                return Err(ProbeError::Queue(e));
            }
        };
        queue.set_dev_notify(false);
        self.transport.finish_init();
        Ok(VirtioMem {
            transport: self.transport,
            queue,
            gone: false,
            wait_cycles: 0,
        })
    }
}

impl<H: Hal> VirtioMem<H> {
    /// The driver gives the device up: FAILED.
    pub fn fail(&mut self) {
        self.transport.set_status(DeviceStatus::FAILED);
    }

    /// Read the ISR (deasserting a legacy INTx line).
    pub fn ack_interrupt(&mut self) {
        let _ = self.transport.ack_interrupt();
    }
}

impl<H: Hal> VmemDevice for VirtioMem<H> {
    fn requested_size(&mut self) -> u64 {
        config_u64!(&self.transport, requested_size)
    }

    fn plugged_size(&mut self) -> u64 {
        config_u64!(&self.transport, plugged_size)
    }

    fn usable_region_size(&mut self) -> u64 {
        config_u64!(&self.transport, usable_region_size)
    }

    fn exchange(&mut self, req: Request) -> Result<Response, TransportError> {
        if self.gone {
            return Err(TransportError("the device stopped answering earlier".into()));
        }
        let t0 = arch::cpu::counter();
        let req_buf = Box::new(req.to_bytes());
        let mut resp_buf = Box::new([0u8; 16]);
        // SAFETY: both buffers are heap-owned and stay untouched until the token is popped; if
        // the device never answers they are leaked below, never freed or reused, so a late
        // write by the device lands in memory nobody else owns.
        let token = unsafe { self.queue.add(&[&req_buf[..]], &mut [&mut resp_buf[..]]) }
            .map_err(|e| TransportError(format!("virtqueue: {e:?}")))?;
        if self.queue.should_notify() {
            self.transport.notify(0);
        }
        let deadline = t0 + arch::cpu::counter_freq() * ANSWER_TIMEOUT_MS / 1000;
        while !self.queue.can_pop() {
            if arch::cpu::counter() > deadline {
                self.gone = true;
                Box::leak(req_buf);
                Box::leak(resp_buf);
                return Err(TransportError(format!(
                    "no answer within {} s; the driver stops using the device",
                    ANSWER_TIMEOUT_MS / 1000
                )));
            }
            core::hint::spin_loop();
        }
        // SAFETY: the token and buffers are the ones added above.
        unsafe { self.queue.pop_used(token, &[&req_buf[..]], &mut [&mut resp_buf[..]]) }
            .map_err(|e| TransportError(format!("virtqueue: {e:?}")))?;
        self.wait_cycles += arch::cpu::counter() - t0;
        Ok(Response::from_bytes(&resp_buf))
    }

    fn sleep_ms(&mut self, ms: u64) {
        timer::sleep_ms(ms);
    }
}
