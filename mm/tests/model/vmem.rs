//! The virtio-mem request state machine against config-change interrupts: the real
//! `Vmem::process` (memory-block mode) behind the model mutex (the kernel's device lock), the
//! bottom half's latch protocol (`mm::vmem::with_config_change`, as the kernel's
//! `process_pending` runs it over `IRQ_PENDING`), and a host that changes `requested_size` and
//! raises the interrupt while a resize runs. A change must never be lost (once the host is done
//! the driver's passes reach its last request); the device never has two requests in flight and
//! answers each once.

use std::sync::Arc;

use mm::hotplug::{BlockId, HotplugError};
use mm::vmem::{with_config_change, DeviceConfig, Request, RequestType, Response, TransportError, Vmem};
use mm::vmem::{VmemDevice, VmemMemory};
use shuttle::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use shuttle::sync::Mutex;
use shuttle::thread;

use crate::handover::{G, ITERATIONS};

const BASE: u64 = 64 << 30;
const UNITS: u64 = 4;
/// Passes each bottom-half thread makes while the host works.
const PASSES: usize = 3;

/// The device, shared with the host thread.
#[derive(Default)]
struct Host {
    requested: AtomicU64,
    plugged: AtomicU64,
    /// The kernel's `IRQ_PENDING`.
    latch: AtomicBool,
    in_flight: AtomicBool,
}

struct Dev(Arc<Host>);

impl VmemDevice for Dev {
    fn requested_size(&mut self) -> u64 {
        self.0.requested.load(Ordering::SeqCst)
    }
    fn plugged_size(&mut self) -> u64 {
        self.0.plugged.load(Ordering::SeqCst)
    }
    fn usable_region_size(&mut self) -> u64 {
        UNITS * G.section_size()
    }
    /// PLUG beyond `requested_size` is NACK (the spec); everything else is carried out.
    fn exchange(&mut self, req: Request) -> Result<Response, TransportError> {
        let h = &self.0;
        assert!(!h.in_flight.swap(true, Ordering::SeqCst), "two requests in flight");
        thread::yield_now();
        let size = u64::from(req.nb_blocks) * G.section_size();
        let plugged = h.plugged.load(Ordering::SeqCst);
        let answer = match req.ty {
            RequestType::Plug if plugged + size > h.requested.load(Ordering::SeqCst) => Response::Nack,
            RequestType::Plug => {
                h.plugged.store(plugged + size, Ordering::SeqCst);
                Response::Ack
            }
            RequestType::Unplug => {
                h.plugged.store(plugged - size, Ordering::SeqCst);
                Response::Ack
            }
            _ => {
                h.plugged.store(0, Ordering::SeqCst);
                Response::Ack
            }
        };
        assert!(h.in_flight.swap(false, Ordering::SeqCst), "a request answered twice");
        Ok(answer)
    }
    fn sleep_ms(&mut self, _ms: u64) {
        thread::yield_now();
    }
}

/// Memory that every block can be added to, onlined, offlined and removed from.
struct Mem;

impl VmemMemory for Mem {
    fn add(&mut self, addr: u64, _size: u64) -> Result<Vec<BlockId>, HotplugError> {
        Ok(vec![addr / G.section_size()])
    }
    fn offline_and_remove(&mut self, _addr: u64, _size: u64, _below: u64) -> Result<(), HotplugError> {
        Ok(())
    }
    fn set_online(&mut self, _: BlockId, _: u64, _: u64, _: bool, _: u64) -> Result<(), HotplugError> {
        Ok(())
    }
    fn in_normal(&mut self, _: BlockId) -> bool {
        false
    }
    fn set_plugged(&mut self, _: usize, _: usize, _: bool) {}
}

/// One bottom-half pass as the kernel's `process_pending` runs it for a device with an
/// interrupt line: nothing to do without a latched change or a due retry.
fn pass(h: &Host, state: &Mutex<(Vmem, Dev, Mem)>) {
    with_config_change(
        |v| h.latch.swap(v, Ordering::SeqCst),
        |irq| {
            let mut s = state.lock().unwrap();
            let (vmem, dev, mem) = &mut *s;
            if irq || vmem.retry().is_some_and(|r| r.at_ms == 0) {
                vmem.process(dev, mem, irq, 0);
            }
        },
    );
}

fn vmem_schedule() {
    let b = G.section_size();
    let h = Arc::new(Host::default());
    let cfg = DeviceConfig {
        block_size: b,
        addr: BASE,
        region_size: UNITS * b,
        usable_region_size: UNITS * b,
        plugged_size: 0,
        node_id: 0,
    };
    let vmem = Vmem::new(G, cfg).unwrap();
    let state = Arc::new(Mutex::new((vmem, Dev(h.clone()), Mem)));
    let host = {
        let h = h.clone();
        thread::spawn(move || {
            for requested in [2 * b, b] {
                h.requested.store(requested, Ordering::SeqCst);
                h.latch.store(true, Ordering::SeqCst);
                thread::yield_now();
            }
        })
    };
    // Two bottom-half runs at once (the deferred-work queue and a timer retry, say): the device
    // lock serialises their passes.
    let other = {
        let (h, state) = (h.clone(), state.clone());
        thread::spawn(move || {
            for _ in 0..PASSES {
                pass(&h, &state);
                thread::yield_now();
            }
        })
    };
    for _ in 0..PASSES {
        pass(&h, &state);
        thread::yield_now();
    }
    host.join().unwrap();
    other.join().unwrap();
    // The kernel runs the bottom half again whenever the latch is set.
    while h.latch.load(Ordering::SeqCst) {
        pass(&h, &state);
    }
    let (requested, plugged) = (h.requested.load(Ordering::SeqCst), h.plugged.load(Ordering::SeqCst));
    assert_eq!(plugged, requested, "a config change was lost");
}

#[test]
fn vmem_config_change_model() {
    shuttle::check_random(vmem_schedule, ITERATIONS);
}
