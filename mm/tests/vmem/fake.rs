//! The fake device and the fake memory the virtio-mem policy tests drive (see `main.rs`), and
//! the protocol invariants checked after every pass.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use mm::geometry::Geometry;
use mm::hotplug::{BlockId, HotplugError};
use mm::vmem::*;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const BASE: u64 = 64 * GIB;

/// How the fake device answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
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
pub struct World {
    pub geom: Option<Geometry>,
    pub block: u64,
    pub region: u64,
    pub usable: u64,
    pub requested: u64,
    /// The device's plug state, per device block.
    pub dev: Vec<bool>,
    /// Faults for the next requests (`None`: behave), in order.
    pub faults: VecDeque<Option<Fault>>,
    pub busy_left: u32,
    /// The driver's plug bitmap (the online filter's).
    pub plugged: Vec<bool>,
    /// Pages of the device block in use by the guest (online).
    pub online: Vec<bool>,
    /// Added memory blocks: first device block, count, online, in ZONE_NORMAL.
    pub blocks: BTreeMap<BlockId, (usize, usize, bool, bool)>,
    /// Device blocks that cannot be offlined.
    pub pinned: Vec<bool>,
    /// Blocks are onlined to ZONE_NORMAL (else MOVABLE).
    pub online_normal: bool,
    pub violations: Vec<String>,
    pub requests: u32,
    /// UNPLUG requests answered ACK: (first device block, count).
    pub unplugs: Vec<(usize, usize)>,
    /// Successful offline-and-removes: (address, size).
    pub removals: Vec<(u64, u64)>,
    /// Every offline-and-remove asked for, refused ones included: (address, size).
    pub removal_attempts: Vec<(u64, u64)>,
    /// The device stopped answering (until the test says otherwise).
    pub gone: bool,
    /// Sub-block mode: the online filter reads the plug bitmap (else whole blocks are plugged).
    pub sbm: bool,
}

impl World {
    pub fn idx(&self, addr: u64) -> usize {
        ((addr - BASE) / self.block) as usize
    }
}

pub struct Dev(pub Rc<RefCell<World>>);
pub struct Mem(pub Rc<RefCell<World>>);

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
        w.removal_attempts.push((addr, size));
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

pub struct Case {
    pub w: Rc<RefCell<World>>,
    pub dev: Dev,
    pub mem: Mem,
    pub v: Vmem,
    pub now: u64,
}

impl Case {
    pub fn new(g: Geometry, block: u64, region: u64) -> Case {
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
    pub fn request(&mut self, size: u64) -> Resized {
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

    pub fn pass(&mut self, config_change: bool) -> Option<Resized> {
        let r = self.v.process(&mut self.dev, &mut self.mem, config_change, self.now);
        self.check(&format!("after a pass ({r:?})"));
        r
    }

    /// The protocol invariants (see the file's documentation).
    pub fn check(&self, when: &str) {
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

    pub fn plugged(&self) -> u64 {
        let w = self.w.borrow();
        w.dev.iter().filter(|&&p| p).count() as u64 * w.block
    }

    pub fn fault(&mut self, f: &[Option<Fault>]) {
        self.w.borrow_mut().faults.extend(f.iter().copied());
    }

    /// Faults over: the same size asked again (a config change) completes, or is already done.
    pub fn recovers(&mut self, size: u64) {
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
