//! virtio-mem's policy ([`mm::vmem`]) over the real hotplug core, allocator and vmemmap of the
//! test machine ([`mm::testing`]), with deferred struct page initialisation: growing and
//! shrinking idle memory writes no `struct page` at all (each memory block's self-hosted memmap
//! pages included), in sub-block and big-block mode, in every configuration.
//!
//! The memory side is [`mm::vmem::memory`] (what the kernel runs under its hotplug lock) with
//! the sub-block online filter ([`mm::vmem::memory::plugged_runs`]) in the platform operations,
//! as the kernel's are; the device follows the spec (PLUG of plugged or UNPLUG of unplugged
//! device blocks is an error, PLUG beyond `requested_size` a NACK). After every operation the
//! allocator's checker (deferred lists and counters included) and the hotplug accounting hold;
//! after every resize the zone's deferred pages are exactly the plugged pages minus the
//! self-hosted memmap pages, nothing of them is free (initialised), every struct page of the
//! region still holds the poison, and the double counted no access to one.

use mm::altmap::Altmap;
use mm::buddy::MemmapInit;
use mm::geometry::{Config, Geometry};
use mm::hotplug::{BlockId, GroupId, HotplugError, HotplugOps, OnlineType};
use mm::numa::NodeId;
use mm::page::{Memmap, ZoneId};
use mm::testing::{base, boot_in, check_all, Checked, Machine};
use mm::vmem::{
    memory, DeviceConfig, Mode, Request, RequestType, Response, TransportError, Vmem, VmemDevice, VmemMemory,
};

mm::matrix_tests!(idle_grow_and_shrink_write_no_struct_page);

/// The device: one plug bit per device block.
struct Dev {
    base: u64,
    block: u64,
    requested: u64,
    plugged: Vec<bool>,
}

impl VmemDevice for Dev {
    fn requested_size(&mut self) -> u64 {
        self.requested
    }
    fn plugged_size(&mut self) -> u64 {
        self.plugged.iter().filter(|&&p| p).count() as u64 * self.block
    }
    fn usable_region_size(&mut self) -> u64 {
        self.plugged.len() as u64 * self.block
    }
    fn exchange(&mut self, req: Request) -> Result<Response, TransportError> {
        let i = ((req.addr - self.base) / self.block) as usize;
        let n = req.nb_blocks as usize;
        let want = match req.ty {
            RequestType::Plug => false,
            RequestType::Unplug => true,
            _ => return Ok(Response::Error),
        };
        if i + n > self.plugged.len() || self.plugged[i..i + n].iter().any(|&p| p != want) {
            return Ok(Response::Error);
        }
        if !want && self.plugged_size() + n as u64 * self.block > self.requested {
            return Ok(Response::Nack);
        }
        self.plugged[i..i + n].fill(!want);
        Ok(Response::Ack)
    }
    fn sleep_ms(&mut self, _: u64) {}
}

/// The platform operations as the kernel's: the machine's, with online and offline going
/// through the sub-block online filter.
struct Ops<'a, C: Config> {
    m: &'a mut Machine<C>,
    /// Sub-block mode: first PFN, pages per device block, the plug mirror.
    filter: Option<(u64, u64, &'a [bool])>,
}

impl<C: Config> Ops<'_, C> {
    fn runs(&self, pfn: u64, nr: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        match self.filter {
            Some((start, sub, plugged)) => {
                memory::plugged_runs(start, sub, plugged, pfn, nr, &mut |p, n| v.push((p, n)))
            }
            None => v.push((pfn, nr)),
        }
        v
    }
}

impl<C: Config> HotplugOps for Ops<'_, C> {
    fn map_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        self.m.map_linear(pa, size)
    }
    fn check_unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        self.m.check_unmap_linear(pa, size)
    }
    fn unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        self.m.unmap_linear(pa, size)
    }
    fn populate_memmap(
        &mut self,
        section_pfn: u64,
        nid: NodeId,
        altmap: Option<&mut Altmap>,
    ) -> Result<(), HotplugError> {
        self.m.populate_memmap(section_pfn, nid, altmap)
    }
    fn depopulate_memmap(&mut self, section_pfn: u64, altmap: Option<&mut Altmap>) {
        self.m.depopulate_memmap(section_pfn, altmap)
    }
    fn init_memmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        self.m.init_memmap(pfn, nr, block)
    }
    fn defer_memmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        self.m.defer_memmap(pfn, nr, block)
    }
    fn release_memmap(&mut self, pfn: u64, nr: u64) {
        self.m.release_memmap(pfn, nr)
    }
    fn section_update(&mut self, section_nr: u64, set: u8, clear: u8) {
        self.m.section_update(section_nr, set, clear)
    }
    fn defer_vmemmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        self.m.defer_vmemmap(pfn, nr, block)
    }
    fn init_vmemmap_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) {
        self.m.init_vmemmap_pages(pfn, nr, zone, nid)
    }
    fn deinit_vmemmap_pages(&mut self, pfn: u64, nr: u64) {
        self.m.deinit_vmemmap_pages(pfn, nr)
    }
    fn online_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) -> Result<(), HotplugError> {
        for (p, n) in self.runs(pfn, nr) {
            self.m.online_pages(p, n, zone, nid)?;
        }
        Ok(())
    }
    fn offline_pages(
        &mut self,
        pfn: u64,
        nr: u64,
        block: BlockId,
        nid: NodeId,
        target_below: u64,
    ) -> Result<(), HotplugError> {
        for (p, n) in self.runs(pfn, nr) {
            self.m.offline_pages(p, n, block, nid, target_below)?;
        }
        Ok(())
    }
    fn removed(&mut self, pa: u64, size: u64) {
        self.m.removed(pa, size)
    }
}

/// The memory side: the hotplug core on the machine, both checked after every operation.
struct Mem<C: Config> {
    m: Machine<C>,
    hp: Checked,
    group: GroupId,
    /// Sub-block mode: first PFN and pages per device block of the region.
    region: Option<(u64, u64)>,
    mirror: Vec<bool>,
    ops: u32,
}

impl<C: Config> Mem<C> {
    fn op<R>(&mut self, f: impl FnOnce(&mut Checked, &mut Ops<'_, C>) -> R) -> R {
        let filter = self.region.map(|(s, n)| (s, n, &self.mirror[..]));
        let mut ops = Ops { m: &mut self.m, filter };
        let r = f(&mut self.hp, &mut ops);
        check_all(&self.m, &self.hp);
        self.ops += 1;
        r
    }
}

impl<C: Config> VmemMemory for Mem<C> {
    fn add(&mut self, addr: u64, size: u64) -> Result<Vec<BlockId>, HotplugError> {
        let group = self.group;
        self.op(|hp, ops| memory::add(hp, ops, 0, group, addr, size))
    }
    fn offline_and_remove(&mut self, addr: u64, size: u64, below: u64) -> Result<(), HotplugError> {
        let shift = C::GEOM.page_shift;
        self.op(|hp, ops| hp.offline_and_remove_below(ops, addr, size, below >> shift))
    }
    fn set_online(&mut self, block: BlockId, pfn: u64, nr: u64, on: bool, below: u64) -> Result<(), HotplugError> {
        let shift = C::GEOM.page_shift;
        self.op(|hp, ops| memory::set_online(hp, ops, block, pfn, nr, on, below >> shift))
    }
    fn in_normal(&mut self, block: BlockId) -> bool {
        memory::in_normal(&self.hp, block)
    }
    fn set_plugged(&mut self, first: usize, n: usize, v: bool) {
        self.mirror[first..first + n].fill(v);
    }
}

/// The device block sizes giving sub-block mode (2 MiB) and big-block mode (two memory blocks).
fn cases(g: Geometry) -> [(u64, Mode); 2] {
    [(2 << 20, Mode::SubBlock), (2 * g.section_size(), Mode::BigBlock)]
}

fn idle_grow_and_shrink_write_no_struct_page<C: Config>() {
    let g = C::GEOM;
    for (block, mode) in cases(g) {
        for online in [OnlineType::Movable, OnlineType::Kernel] {
            idle_case::<C>(block, mode, online);
        }
    }
}

fn idle_case<C: Config>(block: u64, mode: Mode, online: OnlineType) {
    let g = C::GEOM;
    let mb = g.section_size();
    let (addr, region) = (base::<C>(), 4 * mb.max(block));
    let (mut m, mut hp) = boot_in::<C>(MemmapInit::Deferred);
    hp.default_online = Some(online);
    let zone = if online == OnlineType::Movable {
        ZoneId::Movable
    } else {
        ZoneId::Normal
    };
    let cfg = DeviceConfig {
        block_size: block,
        addr,
        region_size: region,
        usable_region_size: region,
        plugged_size: 0,
        node_id: 0,
    };
    let mut v = Vmem::new(g, cfg).unwrap();
    assert_eq!(v.mode, mode);
    let group = hp.register_dynamic_group(0, mb.max(block) >> g.page_shift).unwrap();
    m.check_each_op = true;
    let nsubs = (region / block) as usize;
    let mut dev = Dev {
        base: addr,
        block,
        requested: 0,
        plugged: vec![false; nsubs],
    };
    let first_pfn = addr >> g.page_shift;
    let n_vm = g.memmap_pages_per_block();
    // Every struct page of the region, the self-hosted memmap pages of its blocks included.
    let watched: Vec<(u64, u64)> = (0..region / mb)
        .map(|k| first_pfn + k * g.pages_per_section())
        .map(|p| (p, p + g.pages_per_section()))
        .collect();
    *m.memmap.watched.borrow_mut() = watched.clone();
    let base_counters = m.alloc.counters(zone);
    let mut mem = Mem {
        m,
        hp,
        group,
        region: (mode == Mode::SubBlock).then_some((first_pfn, block >> g.page_shift)),
        mirror: vec![false; nsubs],
        ops: 0,
    };
    let unit = v.unit;
    // Up by one and a half memory blocks (sub-block mode: part of a block), to the whole
    // region, down into the middle of a block, up again, to nothing.
    let sizes = [mb + mb / 2, region, region / 2 - mb / 4, 3 * region / 4, 0];
    for size in sizes.map(|s| s / unit * unit) {
        dev.requested = size;
        let r = v.resize(&mut dev, &mut mem, size);
        let when = format!("{mode:?} {online:?}, resized to {size:#x}");
        assert_eq!((r, dev.plugged_size()), (None, size), "{when}");
        let c = mem.m.alloc.counters(zone);
        let blocks = region / mb
            - (0..region / mb)
                .filter(|&k| mem.hp.block(first_pfn / g.pages_per_section() + k).is_none())
                .count() as u64;
        let plugged_pages = size >> g.page_shift;
        assert_eq!(
            (
                c.managed - base_counters.managed,
                c.deferred - base_counters.deferred,
                c.free
            ),
            (
                plugged_pages - blocks * n_vm,
                plugged_pages - blocks * n_vm,
                base_counters.free
            ),
            "{when}: zone counters (managed, deferred, free) of {blocks} blocks"
        );
        assert_eq!(
            mem.m.memmap.watched_accesses.get(),
            0,
            "{when}: struct pages of plugged memory accessed"
        );
        for &(s, e) in &watched {
            if mem.m.memmap.valid(s) {
                for pfn in s..e {
                    assert!(
                        mem.m.memmap.peek(pfn).is_poison(),
                        "{when}: struct page of pfn {pfn:#x} written"
                    );
                }
            }
        }
    }
    assert!(mem.ops > 0);
    check_all(&mem.m, &mem.hp);
}
