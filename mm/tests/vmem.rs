//! virtio-mem's policy ([`mm::vmem`]) against a fake device and a fake memory, in every
//! configuration and mode (sub-block 2 MiB, memory-block 1 MiB where it exists, big-block 1 GiB).
//!
//! The fake device follows the spec (PLUG of plugged blocks or past the usable region is ERROR,
//! PLUG beyond `requested_size` is NACK, UNPLUG of unplugged blocks is ERROR) and can be made to
//! misbehave per request: NACK, BUSY n times, ERROR, an answer type the spec does not define, no
//! answer at all, and `requested_size` changed in the middle of a request. The fake memory
//! mirrors the kernel: blocks added with memmap on memory, an online filter that hands over
//! plugged device blocks only, device blocks that cannot be offlined (pinned).
//!
//! After every pass the protocol invariants hold: the guest never uses memory the device has
//! unplugged, never writes a memmap into unplugged memory, the driver's plug state equals the
//! device's, plugged memory of online blocks is online, and the device was never told to unplug
//! memory that was online. After the faults stop, the next request completes.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use mm::geometry::{Config, Geometry};
use mm::hotplug::{BlockId, HotplugError};
use mm::vmem::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const BASE: u64 = 64 * GIB;

/// How the fake device answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Nack,
    /// BUSY this many times, then carry the request out.
    Busy(u32),
    Error,
    WrongType(u16),
    NoAnswer,
    /// The host changes `requested_size` while the request is in flight; then carried out.
    Requested(u64),
}

#[derive(Default)]
struct World {
    geom: Option<Geometry>,
    block: u64,
    region: u64,
    usable: u64,
    requested: u64,
    /// The device's plug state, per device block.
    dev: Vec<bool>,
    /// Faults for the next requests (`None`: behave), in order.
    faults: VecDeque<Option<Fault>>,
    busy_left: u32,
    /// The driver's plug bitmap (the online filter's).
    plugged: Vec<bool>,
    /// Pages of the device block in use by the guest (online).
    online: Vec<bool>,
    /// Added memory blocks: first device block, count, online, in ZONE_NORMAL.
    blocks: BTreeMap<BlockId, (usize, usize, bool, bool)>,
    /// Device blocks that cannot be offlined.
    pinned: Vec<bool>,
    /// Blocks are onlined to ZONE_NORMAL (else MOVABLE).
    online_normal: bool,
    violations: Vec<String>,
    requests: u32,
    /// UNPLUG requests answered ACK: (first device block, count).
    unplugs: Vec<(usize, usize)>,
    /// Successful offline-and-removes: (address, size).
    removals: Vec<(u64, u64)>,
    /// The device stopped answering (until the test says otherwise).
    gone: bool,
    /// Sub-block mode: the online filter reads the plug bitmap (else whole blocks are plugged).
    sbm: bool,
}

impl World {
    fn idx(&self, addr: u64) -> usize {
        ((addr - BASE) / self.block) as usize
    }
}

struct Dev(Rc<RefCell<World>>);
struct Mem(Rc<RefCell<World>>);

impl VmemDevice for Dev {
    fn requested_size(&mut self) -> u64 {
        self.0.borrow().requested
    }

    fn plugged_size(&mut self) -> u64 {
        let w = self.0.borrow();
        w.dev.iter().filter(|&&p| p).count() as u64 * w.block
    }

    fn usable_region_size(&mut self) -> u64 {
        self.0.borrow().usable
    }

    fn exchange(&mut self, req: Request) -> Result<Response, TransportError> {
        let mut w = self.0.borrow_mut();
        w.requests += 1;
        if w.gone {
            return Err(TransportError("fake: gone".into()));
        }
        if w.busy_left > 0 {
            w.busy_left -= 1;
            return Ok(Response::Busy);
        }
        match w.faults.pop_front().flatten() {
            Some(Fault::Nack) => return Ok(Response::Nack),
            Some(Fault::Error) => return Ok(Response::Error),
            Some(Fault::WrongType(v)) => return Ok(Response::Unknown(v)),
            Some(Fault::NoAnswer) => {
                w.gone = true;
                return Err(TransportError("fake: no answer".into()));
            }
            Some(Fault::Busy(n)) => {
                w.busy_left = n.saturating_sub(1);
                return Ok(Response::Busy);
            }
            Some(Fault::Requested(r)) => w.requested = r,
            None => {}
        }
        let n = req.nb_blocks as usize;
        let bad = req.addr < BASE || !(req.addr - BASE).is_multiple_of(w.block) || n == 0;
        match req.ty {
            RequestType::UnplugAll => {
                w.dev.fill(false);
                Ok(Response::Ack)
            }
            _ if bad => Ok(Response::Error),
            RequestType::Plug => {
                let i = w.idx(req.addr);
                if (i + n) as u64 * w.block > w.usable || w.dev[i..i + n].iter().any(|&p| p) {
                    return Ok(Response::Error);
                }
                let plugged = w.dev.iter().filter(|&&p| p).count();
                if (plugged + n) as u64 * w.block > w.requested {
                    return Ok(Response::Nack);
                }
                w.dev[i..i + n].fill(true);
                Ok(Response::Ack)
            }
            RequestType::Unplug => {
                let i = w.idx(req.addr);
                if (i + n) as u64 * w.block > w.region || w.dev[i..i + n].iter().any(|&p| !p) {
                    return Ok(Response::Error);
                }
                if let Some(j) = (i..i + n).find(|&j| w.online[j]) {
                    w.violations
                        .push(format!("UNPLUG of device block {j} while it is online"));
                }
                w.dev[i..i + n].fill(false);
                w.unplugs.push((i, n));
                Ok(Response::Ack)
            }
            RequestType::State => Ok(Response::Error),
        }
    }

    fn sleep_ms(&mut self, _: u64) {}
}

impl VmemMemory for Mem {
    fn add(&mut self, addr: u64, size: u64) -> Result<Vec<BlockId>, HotplugError> {
        let mut w = self.0.borrow_mut();
        let geom = w.geom.unwrap();
        let mb = geom.section_size();
        let first = w.idx(addr);
        // The memmap on memory is written at add: its device blocks must be plugged.
        let memmap = geom.memmap_pages_per_block() << geom.page_shift;
        let per_mb = (mb / w.block).max(1) as usize;
        let mut ids = Vec::new();
        for k in 0..size / mb {
            let b0 = w.idx(addr + k * mb);
            let meta = (memmap.div_ceil(w.block) as usize).min(per_mb).max(1);
            if let Some(j) = (b0..b0 + meta).find(|&j| !w.dev[j]) {
                w.violations
                    .push(format!("memmap written into unplugged device block {j}"));
            }
            let id = ((addr + k * mb) / mb) as BlockId;
            let normal = w.online_normal;
            w.blocks.insert(id, (b0, per_mb, true, normal));
            ids.push(id);
        }
        for j in first..first + (size / w.block).max(1) as usize {
            // The online filter: only plugged device blocks reach the allocator.
            w.online[j] = !w.sbm || w.plugged[j];
        }
        Ok(ids)
    }

    fn offline_and_remove(&mut self, addr: u64, size: u64, _below: u64) -> Result<(), HotplugError> {
        let mut w = self.0.borrow_mut();
        let first = w.idx(addr);
        let n = (size / w.block).max(1) as usize;
        let mb = w.geom.unwrap().section_size();
        if let Some(j) = (first..first + n).find(|&j| w.pinned[j] && w.online[j]) {
            return Err(HotplugError::Busy {
                block: (addr / mb) as BlockId,
                pfn: (BASE + j as u64 * w.block) >> 12,
            });
        }
        w.online[first..first + n].fill(false);
        w.removals.push((addr, size));
        for k in 0..(size / mb).max(1) {
            w.blocks.remove(&((addr / mb + k) as BlockId));
        }
        Ok(())
    }

    fn set_online(&mut self, block: BlockId, pfn: u64, nr: u64, on: bool, _below: u64) -> Result<(), HotplugError> {
        let mut w = self.0.borrow_mut();
        let shift = w.geom.unwrap().page_shift;
        let Some(&(_, _, true, _)) = w.blocks.get(&block) else {
            return Ok(());
        };
        let first = w.idx(pfn << shift);
        let n = ((nr << shift) / w.block) as usize;
        if !on {
            if let Some(j) = (first..first + n).find(|&j| w.pinned[j]) {
                return Err(HotplugError::Busy {
                    block,
                    pfn: (BASE + j as u64 * w.block) >> shift,
                });
            }
        }
        for j in first..first + n {
            w.online[j] = if on { w.plugged[j] } else { false };
        }
        Ok(())
    }

    fn in_normal(&mut self, block: BlockId) -> bool {
        self.0.borrow().blocks.get(&block).is_none_or(|b| b.3)
    }

    fn set_plugged(&mut self, first: usize, n: usize, v: bool) {
        self.0.borrow_mut().plugged[first..first + n].fill(v);
    }
}

struct Case {
    w: Rc<RefCell<World>>,
    dev: Dev,
    mem: Mem,
    v: Vmem,
    now: u64,
}

impl Case {
    fn new(g: Geometry, block: u64, region: u64) -> Case {
        let n = (region / block) as usize;
        let w = Rc::new(RefCell::new(World {
            geom: Some(g),
            block,
            region,
            usable: region,
            dev: vec![false; n],
            plugged: vec![false; n],
            online: vec![false; n],
            pinned: vec![false; n],
            ..World::default()
        }));
        let cfg = DeviceConfig {
            block_size: block,
            addr: BASE,
            region_size: region,
            usable_region_size: region,
            plugged_size: 0,
            node_id: 0,
        };
        let v = Vmem::new(g, cfg).unwrap_or_else(|e| panic!("{g:?} block {block:#x}: {e}"));
        w.borrow_mut().sbm = v.mode == Mode::SubBlock;
        Case {
            dev: Dev(w.clone()),
            mem: Mem(w.clone()),
            w,
            v,
            now: 0,
        }
    }

    /// The host sets `requested_size`: a config change, one pass.
    fn request(&mut self, size: u64) -> Resized {
        self.w.borrow_mut().requested = size;
        self.pass(true).unwrap_or_else(|| {
            // The size the last pass reached: nothing to do.
            assert_eq!(self.plugged(), size, "a config change did nothing");
            Resized {
                requested: size,
                from: size,
                plugged: size,
                stopped: None,
            }
        })
    }

    fn pass(&mut self, config_change: bool) -> Option<Resized> {
        let r = self.v.process(&mut self.dev, &mut self.mem, config_change, self.now);
        self.check(&format!("after a pass ({r:?})"));
        r
    }

    /// The protocol invariants (see the file's documentation).
    fn check(&self, when: &str) {
        let w = self.w.borrow();
        assert!(w.violations.is_empty(), "{when}: {:?}", w.violations);
        for j in 0..w.dev.len() {
            assert!(
                !w.online[j] || w.dev[j],
                "{when}: device block {j} online but unplugged at the device"
            );
        }
        if let Some(m) = self.v.sbm() {
            assert_eq!(
                w.plugged, w.dev,
                "{when}: the driver's plug bitmap differs from the device's"
            );
            let mine: Vec<bool> = (0..w.dev.len()).map(|i| m.plugged(i)).collect();
            assert_eq!(
                mine, w.plugged,
                "{when}: the policy's plug bitmap differs from its mirror"
            );
            for b in 0..m.added.len() {
                let s = m.subs_per_block;
                let n = (b * s..(b + 1) * s).filter(|&i| m.plugged(i)).count();
                assert_eq!(m.plugged_in(b), n, "{when}: plugged count of memory block {b}");
            }
            assert_eq!(
                m.nr_plugged(),
                mine.iter().filter(|&&p| p).count(),
                "{when}: plugged count"
            );
            for &(b0, n, online, _) in w.blocks.values() {
                for j in b0..b0 + n {
                    assert!(
                        !online || w.online[j] == w.plugged[j],
                        "{when}: device block {j} plugged={} online={}",
                        w.plugged[j],
                        w.online[j]
                    );
                }
            }
        }
        let dev_plugged = w.dev.iter().filter(|&&p| p).count() as u64 * w.block;
        drop(w);
        assert_eq!(
            self.v.plugged_bytes(),
            dev_plugged,
            "{when}: the driver's count differs from the device's"
        );
    }

    fn plugged(&self) -> u64 {
        let w = self.w.borrow();
        w.dev.iter().filter(|&&p| p).count() as u64 * w.block
    }

    fn fault(&mut self, f: &[Option<Fault>]) {
        self.w.borrow_mut().faults.extend(f.iter().copied());
    }

    /// Faults over: the same size asked again (a config change) completes, or is already done.
    fn recovers(&mut self, size: u64) {
        {
            let mut w = self.w.borrow_mut();
            w.faults.clear();
            w.busy_left = 0;
            w.gone = false;
            w.requested = size;
        }
        if let Some(r) = self.pass(true) {
            assert_eq!(
                (r.stopped.as_ref().map(|s| &s.reason), r.plugged),
                (None, size),
                "no recovery"
            );
        }
        assert_eq!(self.plugged(), size);
        assert!(self.v.retry().is_none());
    }
}

/// The device block sizes each configuration offers, with the mode they give.
fn modes(g: Geometry) -> Vec<(u64, Mode)> {
    let mut v = vec![(2 * MIB, Mode::SubBlock), (GIB, Mode::BigBlock)];
    if g.page_shift == 12 {
        v.push((MIB, Mode::MemoryBlock));
    }
    if g.page_shift == 16 {
        // 64K: 2 MiB is a whole number of 512 KiB pageblocks too; 1 GiB is two memory blocks.
        v.push((512 * MIB, Mode::MemoryBlock));
    }
    v
}

fn unit_of(c: &Case) -> u64 {
    c.v.unit.max(c.v.cfg.block_size)
}

mm::matrix_tests!(
    grow_and_shrink_in_every_mode,
    every_answer_the_device_can_give,
    requested_size_changes_during_a_request,
    a_device_that_stops_answering,
    pinned_memory_stops_and_is_retried,
    sub_block_shrink_removes_adjacent_whole_blocks_together,
    random_requests_and_faults,
    refused_configurations,
);

fn grow_and_shrink_in_every_mode<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        assert_eq!(c.v.mode, mode, "block {block:#x}");
        let mb = C::GEOM.section_size().max(block);
        for size in [2 * mb, 5 * mb, mb, 0, 3 * mb, 0] {
            let r = c.request(size);
            assert_eq!((r.stopped, r.plugged), (None, size), "{mode:?} to {size:#x}");
        }
        if mode == Mode::SubBlock {
            // Inside a memory block, growing into an added, partly plugged one.
            for size in [mb + 38 * MIB, 2 * mb, mb + 2 * MIB, 0] {
                let r = c.request(size);
                assert_eq!((r.stopped, r.plugged), (None, size), "{mode:?} to {size:#x}");
            }
        }
    }
}

fn every_answer_the_device_can_give<C: Config>() {
    let faults: &[(Fault, &str)] = &[
        (Fault::Nack, "answered NACK"),
        (Fault::Error, "answered ERROR"),
        (Fault::WrongType(7), "answered unknown type 7"),
        (Fault::Busy(BUSY_TRIES + 2), "still BUSY after 8 tries"),
    ];
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        for &(f, says) in faults {
            // On a PLUG (the first request of a grow), then on an UNPLUG (the first of a shrink),
            // then on a later request of a grow.
            for (pre, size, at) in [(0, 2 * mb, 0), (2 * mb, mb, 0), (0, 3 * mb, 2)] {
                let mut c = Case::new(C::GEOM, block, 8 * GIB);
                if pre > 0 {
                    c.request(pre);
                }
                let mut script = vec![None; at];
                script.push(Some(f));
                c.fault(&script);
                let r = c.request(size);
                match &r.stopped {
                    Some(s) => {
                        assert!(s.reason.contains(says), "{mode:?} {f:?}: {}", s.reason);
                        assert_eq!(s.backoff_ms, RETRY_FIRST_MS);
                    }
                    // A shrink whose UNPLUG is refused puts that memory back and takes other
                    // memory instead, if there is any.
                    None => assert!(pre > size && r.plugged == size, "{mode:?} {f:?}: not stopped: {r:?}"),
                }
                c.recovers(size);
            }
        }
        // BUSY a few times only: retried within the request, nothing stops.
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.fault(&[Some(Fault::Busy(3))]);
        let r = c.request(mb);
        assert_eq!((r.stopped, r.plugged), (None, mb), "{mode:?}: BUSY 3 times");
    }
}

fn requested_size_changes_during_a_request<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        // Shrunk to 0 while the grow is under way: the grow stops (NACK), the next pass
        // (the config change the host's write raised) goes to 0.
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.fault(&[None, Some(Fault::Requested(0))]);
        c.request(4 * mb);
        let r = c.pass(true).expect("the change is seen");
        assert_eq!((r.requested, r.plugged, r.stopped), (0, 0, None), "{mode:?}");
        // Grown while a shrink is under way: the shrink completes what it can; the next pass grows.
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.request(4 * mb);
        c.fault(&[Some(Fault::Requested(6 * mb))]);
        c.request(mb);
        let r = c.pass(true).expect("the change is seen");
        assert_eq!((r.requested, r.plugged, r.stopped), (6 * mb, 6 * mb, None), "{mode:?}");
    }
}

fn a_device_that_stops_answering<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        for (pre, size) in [(0, 3 * mb), (3 * mb, 0)] {
            let mut c = Case::new(C::GEOM, block, 8 * GIB);
            if pre > 0 {
                c.request(pre);
            }
            // Growing: the second request (the first is answered). Shrinking: the first, as a
            // shrink of adjacent whole memory blocks sends one UNPLUG for all of them.
            let first_answered = if pre == 0 { vec![None] } else { vec![] };
            c.fault(&[first_answered, vec![Some(Fault::NoAnswer)]].concat());
            let r = c.request(size);
            let s = r.stopped.unwrap_or_else(|| panic!("{mode:?}: not stopped"));
            assert!(s.reason.contains("no answer from the device"), "{mode:?}: {}", s.reason);
            c.recovers(size);
        }
    }
}

fn pinned_memory_stops_and_is_retried<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.w.borrow_mut().online_normal = true;
        c.request(2 * mb);
        // The middle of the second unit (sub-block mode: of the second memory block).
        let pin = (mb / block) as usize * 3 / 2;
        c.w.borrow_mut().pinned[pin] = true;
        let r = c.request(0);
        let s = r.stopped.clone().unwrap_or_else(|| panic!("{mode:?}: not stopped"));
        assert!(s.reason.starts_with("memory busy"), "{}", s.reason);
        assert!(r.plugged > 0 && r.plugged <= mb);
        // Nothing changed: the timer retries with backoff, the same request fails again.
        assert_eq!(c.pass(false), None, "not due yet");
        c.now += RETRY_FIRST_MS;
        let r = c.pass(false).expect("the timer retries");
        assert_eq!(r.stopped.unwrap().backoff_ms, 2 * RETRY_FIRST_MS);
        for _ in 0..10 {
            c.now += RETRY_MAX_MS;
            c.pass(false);
        }
        assert_eq!(c.v.retry().unwrap().backoff_ms, RETRY_MAX_MS);
        // Unpinned: the timer's next retry finishes the job.
        c.w.borrow_mut().pinned[pin] = false;
        c.now += RETRY_MAX_MS;
        let r = c.pass(false).expect("the timer retries");
        assert_eq!((r.plugged, r.stopped), (0, None), "{mode:?}");
        assert_eq!(c.pass(false), None, "done: nothing to retry");
        assert_eq!(c.plugged(), 0);
    }
}

/// Sub-block mode: the memory blocks a shrink takes wholly, next to each other, go in one
/// offline-and-remove (one batch of TLB maintenance) and one UNPLUG per plugged run across
/// them; a partly emptied block stays its own; a refused batch leaves everything as it was and
/// the shrink goes block by block.
fn sub_block_shrink_removes_adjacent_whole_blocks_together<C: Config>() {
    let g = C::GEOM;
    let mb = g.section_size();
    let block = 2 * MIB;
    let per_mb = (mb / block) as usize;
    let mut c = Case::new(g, block, 8 * GIB);
    assert_eq!(c.v.mode, Mode::SubBlock);
    c.request(5 * mb);
    let take = |c: &mut Case| {
        let mut w = c.w.borrow_mut();
        (core::mem::take(&mut w.removals), core::mem::take(&mut w.unplugs))
    };
    take(&mut c);
    // Down to 1.5 blocks: blocks 4, 3, 2 whole and together, then half of block 1.
    c.request(mb + mb / 2);
    let (removals, unplugs) = take(&mut c);
    assert_eq!(removals, vec![(BASE + 2 * mb, 3 * mb)], "removals");
    assert_eq!(unplugs[0], (2 * per_mb, 3 * per_mb), "one UNPLUG for the three blocks");
    assert_eq!(unplugs.len(), 2, "then one for half of block 1: {unplugs:?}");
    assert_eq!(unplugs[1], (per_mb + per_mb / 2, per_mb / 2));
    // A pinned device block in block 2 of 4, shrinking to 1: the batch (blocks 3, 2, 1) is
    // refused and changes nothing; block by block, block 3 goes alone and block 2 stays.
    c.request(4 * mb);
    take(&mut c);
    c.w.borrow_mut().pinned[2 * per_mb + 5] = true;
    let r = c.request(mb);
    let (removals, _) = take(&mut c);
    assert_eq!(
        removals.first(),
        Some(&(BASE + 3 * mb, mb)),
        "block 3 alone: {removals:?}"
    );
    assert!(
        removals.iter().all(|&(a, s)| !(a..a + s).contains(&(BASE + 2 * mb))),
        "block 2 removed while pinned: {removals:?}"
    );
    assert!(r.plugged < 4 * mb);
    c.w.borrow_mut().pinned[2 * per_mb + 5] = false;
    c.recovers(0);
}

/// Random requests, pins and faults; the invariants after every pass; at the end everything
/// can be unplugged.
fn random_requests_and_faults<C: Config>() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ C::GEOM.page_shift as u64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let all = [
        Fault::Nack,
        Fault::Error,
        Fault::WrongType(9),
        Fault::NoAnswer,
        Fault::Busy(2),
        Fault::Busy(20),
    ];
    for (block, mode) in modes(C::GEOM) {
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        let unit = unit_of(&c);
        let units = 8 * GIB / unit;
        for step in 0..60 {
            let size = rand(units + 1) * unit;
            let faults: Vec<Option<Fault>> = (0..rand(4))
                .map(|_| (rand(3) == 0).then(|| all[rand(all.len() as u64) as usize]))
                .collect();
            c.fault(&faults);
            let n = c.w.borrow().pinned.len();
            if rand(4) == 0 {
                let j = rand(n as u64) as usize;
                let mut w = c.w.borrow_mut();
                w.pinned[j] = !w.pinned[j];
            }
            if rand(5) == 0 {
                c.now += RETRY_MAX_MS;
                c.pass(false);
            } else {
                let r = c.request(size);
                assert!(r.stopped.is_some() || r.plugged == size, "{mode:?} step {step}: {r:?}");
            }
        }
        c.w.borrow_mut().pinned.fill(false);
        c.recovers(0);
    }
}

fn refused_configurations<C: Config>() {
    let g = C::GEOM;
    let ok = DeviceConfig {
        block_size: 2 * MIB,
        addr: BASE,
        region_size: 4 * GIB,
        usable_region_size: 4 * GIB,
        plugged_size: 0,
        node_id: 0,
    };
    assert!(Vmem::new(g, ok).is_ok());
    let mb = g.section_size();
    let cases = [
        (
            DeviceConfig {
                block_size: 3 * MIB,
                ..ok
            },
            "not a power of two",
        ),
        (DeviceConfig { block_size: 0, ..ok }, "not a power of two"),
        (
            DeviceConfig {
                block_size: g.page_size() / 2,
                ..ok
            },
            "not a power of two",
        ),
        (
            DeviceConfig {
                addr: BASE + 2 * MIB,
                ..ok
            },
            "is not aligned",
        ),
        (
            DeviceConfig {
                region_size: mb + 2 * MIB,
                ..ok
            },
            "is not aligned",
        ),
        (DeviceConfig { region_size: 0, ..ok }, "is not aligned"),
        (
            DeviceConfig {
                plugged_size: 8 * GIB,
                ..ok
            },
            "beyond the",
        ),
        (
            DeviceConfig {
                usable_region_size: 8 * GIB,
                ..ok
            },
            "beyond the",
        ),
        (
            DeviceConfig {
                plugged_size: MIB,
                ..ok
            },
            "not a block multiple",
        ),
    ];
    for (cfg, says) in cases {
        match Vmem::new(g, cfg) {
            Err(e) => assert!(e.to_string().contains(says), "{cfg:?}: {e}"),
            Ok(_) => panic!("{cfg:?} accepted"),
        }
    }
}
