//! Sub-block plug and unplug (virtio-mem's sub-block mode) in the double: random sequences of
//! unplugging and plugging device blocks of one online memory block, at every device block size
//! the granule allows (a power of two from a pageblock up to half a memory block), interleaved
//! with movable allocations of every order (so max-order blocks straddle small device blocks),
//! frees, pins and whole-block offline/online. After every step: the allocator's and the
//! hotplug accounting's invariants, every page of an unplugged device block offline, the zone's
//! managed pages equal to a recount of the plugged ones, and every movable allocation's data
//! where its handle says. At the end all memory is allocated, counted and freed.

use super::*;

mm::matrix_tests!(subblock_plug_unplug_sequences);

#[derive(Clone, Copy, Debug)]
enum Step {
    Unplug(usize),
    Plug(usize),
    Alloc(u32),
    Free(usize),
    Pin(u32),
    Unpin(usize),
    /// Offline the whole memory block and online it again (its unplugged device blocks stay
    /// offline).
    Cycle,
}

fn step(nsubs: usize, max_order: u32) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..nsubs).prop_map(Step::Unplug),
        2 => (0..nsubs).prop_map(Step::Plug),
        3 => (0..=max_order).prop_map(Step::Alloc),
        1 => any::<usize>().prop_map(Step::Free),
        1 => (0..=max_order).prop_map(Step::Pin),
        1 => any::<usize>().prop_map(Step::Unpin),
        1 => Just(Step::Cycle),
    ]
}

/// The device block sizes (bytes) a granule supports in sub-block mode.
fn sub_block_sizes(g: Geometry) -> Vec<u64> {
    let mut v = Vec::new();
    let mut b = g.page_size() << g.pageblock_order();
    while b < g.section_size() {
        v.push(b);
        b <<= 1;
    }
    v
}

fn subblock_plug_unplug_sequences<C: Config>() {
    let g = C::GEOM;
    let cases = std::env::var("SUBBLOCK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let old = WINDOW_ORDER.with(|w| w.replace(g.max_order()));
    for mode in [MemmapInit::Eager, MemmapInit::Deferred] {
        for bs in sub_block_sizes(g) {
            let nsubs = (g.section_size() / bs) as usize;
            let cfg = PtConfig {
                cases,
                failure_persistence: None,
                ..PtConfig::default()
            };
            let steps = prop::collection::vec(step(nsubs, g.max_order()), 8..24);
            TestRunner::new(cfg)
                .run(&(steps, any::<bool>()), |(steps, movable)| {
                    subblock_case::<C>(mode, bs, movable, &steps)
                })
                .unwrap_or_else(|e| panic!("{mode:?}, device block {bs:#x}: {e}"));
        }
    }
    WINDOW_ORDER.with(|w| w.set(old));
}

fn subblock_case<C: Config>(mode: MemmapInit, bs: u64, movable: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut c = SubblockCase::<C>::new(mode, bs, movable)?;
    for (n, &s) in steps.iter().enumerate() {
        if !c.apply(s)? {
            continue;
        }
        check_all(&c.m, &c.hp);
        c.check_step(&format!("after step {n} ({s:?}) of {steps:?}"))?;
    }
    c.check_usable()?;
    check_all(&c.m, &c.hp);
    Ok(())
}

fn fail(what: &str, e: HotplugError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

/// One memory block (block 8, added with memmap on memory and online) cut into device blocks
/// of `sub_pages`, and what the steps did to it.
struct SubblockCase<C: Config> {
    m: Machine<C>,
    hp: Checked,
    id: BlockId,
    online: OnlineType,
    zone: ZoneId,
    /// The zone's managed pages before the block was onlined.
    boot_managed: u64,
    sub_pages: u64,
    first_pfn: u64,
    /// Pages of self-hosted memmap at the start of the block.
    vm: u64,
    /// Device blocks holding the self-hosted memmap stay plugged while the block exists.
    meta: usize,
    nsubs: usize,
    plugged: Vec<bool>,
    block_online: bool,
    /// Movable data (handle, value) and pins (pfn, order).
    data: Vec<(Handle, u64)>,
    pins: Vec<(u64, u32)>,
    next_value: u64,
}

impl<C: Config> SubblockCase<C> {
    fn new(mode: MemmapInit, bs: u64, movable: bool) -> Result<Self, TestCaseError> {
        let g = C::GEOM;
        let (mut m, mut hp) = boot_in::<C>(mode);
        let id = 8;
        hp.add_memory(&mut m, 0, None, base::<C>(), g.section_size(), MOM)
            .map_err(|e| fail("add", e))?;
        let (online, zone) = if movable {
            (OnlineType::Movable, ZoneId::Movable)
        } else {
            (OnlineType::Kernel, ZoneId::Normal)
        };
        let boot_managed = m.alloc.counters(zone).managed;
        hp.online_block(&mut m, id, online).map_err(|e| fail("online", e))?;
        let sub_pages = bs >> g.page_shift;
        let vm = g.memmap_pages_per_block();
        let nsubs = (g.section_size() / bs) as usize;
        Ok(SubblockCase {
            m,
            hp,
            id,
            online,
            zone,
            boot_managed,
            sub_pages,
            first_pfn: base::<C>() >> g.page_shift,
            vm,
            meta: vm.div_ceil(sub_pages) as usize,
            nsubs,
            plugged: vec![true; nsubs],
            block_online: true,
            data: Vec::new(),
            pins: Vec::new(),
            next_value: 1,
        })
    }

    /// The PFN range of device block `i`.
    fn range(&self, i: usize) -> (u64, u64) {
        (self.first_pfn + i as u64 * self.sub_pages, self.sub_pages)
    }

    /// Carry out `s`; `false` if it does not apply to the current state (nothing done).
    fn apply(&mut self, s: Step) -> Result<bool, TestCaseError> {
        let (id, zone) = (self.id, self.zone);
        match s {
            Step::Unplug(i) if i >= self.meta && self.plugged[i] && self.block_online => {
                let (pfn, nr) = self.range(i);
                // Targets below the device block: the shrink path's placement.
                match self.m.offline_pages(pfn, nr, id, 0, pfn) {
                    Ok(()) => self.plugged[i] = false,
                    Err(HotplugError::Busy { .. } | HotplugError::NoMigrationTarget { .. }) => {}
                    Err(e) => return Err(fail("unplug", e)),
                }
            }
            Step::Plug(i) if !self.plugged[i] && self.block_online => {
                let (pfn, nr) = self.range(i);
                self.m.online_pages(pfn, nr, zone, 0).map_err(|e| fail("plug", e))?;
                self.plugged[i] = true;
            }
            Step::Alloc(order) => {
                if let Some(h) = self.m.alloc_movable(order) {
                    let (pfn, _) = self.m.handles.get(h).unwrap();
                    self.m.contents.insert(pfn, self.next_value);
                    self.data.push((h, self.next_value));
                    self.next_value += 1;
                }
            }
            Step::Free(k) if !self.data.is_empty() => {
                let (h, _) = self.data.swap_remove(k % self.data.len());
                let (pfn, _) = self.m.handles.get(h).unwrap();
                self.m.contents.remove(&pfn);
                self.m.free_movable(h);
            }
            Step::Pin(order) => {
                if let Some(p) = self.m.alloc.alloc(order, AllocKind::Movable) {
                    self.pins.push((p, order));
                }
            }
            Step::Unpin(k) if !self.pins.is_empty() => {
                let (p, o) = self.pins.swap_remove(k % self.pins.len());
                self.m.alloc.free(p, o).unwrap();
            }
            Step::Cycle if self.block_online => match self.hp.offline_block(&mut self.m, id) {
                Ok(()) => self.block_online = false,
                Err(HotplugError::Busy { .. } | HotplugError::NoMigrationTarget { .. }) => {}
                Err(e) => return Err(fail("offline block", e)),
            },
            Step::Cycle => {
                // Online the plugged parts only (what virtio-mem's online filter hands over).
                self.hp
                    .online_block(&mut self.m, id, self.online)
                    .map_err(|e| fail("online block", e))?;
                for i in (0..self.nsubs).filter(|&i| !self.plugged[i]) {
                    let (pfn, nr) = self.range(i);
                    self.m
                        .offline_pages(pfn, nr, id, 0, u64::MAX)
                        .map_err(|e| fail("re-offline unplugged", e))?;
                }
                self.block_online = true;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// After a step: every page of an unplugged device block offline, the managed pages those
    /// of the plugged device blocks, every movable allocation's data where its handle says.
    fn check_step(&self, ctx: &str) -> Result<(), TestCaseError> {
        let m = &self.m;
        // Every page of an unplugged device block is offline (or never initialised).
        for i in (0..self.nsubs).filter(|&i| !self.plugged[i]) {
            let (pfn, nr) = self.range(i);
            for p in pfn..pfn + nr {
                if let Some(page) = m.alloc.page(p) {
                    prop_assert!(
                        page.has(flags::OFFLINE),
                        "pfn {:#x} of unplugged device block {} is online {}",
                        p,
                        i,
                        ctx
                    );
                }
            }
        }
        // Managed pages: the plugged device blocks, less the self-hosted memmap.
        let want = self.boot_managed
            + if self.block_online {
                self.plugged.iter().filter(|&&p| p).count() as u64 * self.sub_pages - self.vm
            } else {
                0
            };
        prop_assert_eq!(m.alloc.counters(self.zone).managed, want, "managed pages {}", ctx);
        for &(h, v) in &self.data {
            let (pfn, _) = m.handles.get(h).unwrap();
            prop_assert_eq!(m.contents.get(&pfn), Some(&v), "data of {:?} lost {}", h, ctx);
        }
        Ok(())
    }

    /// The memory is usable: every free page can be allocated once, and freed again; none of
    /// an unplugged device block is handed out.
    fn check_usable(&mut self) -> Result<(), TestCaseError> {
        let m = &mut self.m;
        for (p, o) in self.pins.drain(..) {
            m.alloc.free(p, o).unwrap();
        }
        for (h, _) in self.data.drain(..) {
            let (pfn, _) = m.handles.get(h).unwrap();
            m.contents.remove(&pfn);
            m.free_movable(h);
        }
        let free = |m: &Machine<C>| {
            m.alloc.counters(ZoneId::Normal).available() + m.alloc.counters(ZoneId::Movable).available()
        };
        let before = free(m);
        let all: Vec<u64> = std::iter::from_fn(|| m.alloc.alloc(0, AllocKind::Movable)).collect();
        prop_assert_eq!(all.len() as u64, before);
        let mut seen = std::collections::HashSet::new();
        for &p in &all {
            prop_assert!(seen.insert(p), "pfn {:#x} handed out twice", p);
            if let Some(i) = (p >= self.first_pfn)
                .then(|| ((p - self.first_pfn) / self.sub_pages) as usize)
                .filter(|&i| i < self.nsubs)
            {
                prop_assert!(
                    self.plugged[i] && self.block_online,
                    "pfn {:#x} of an unplugged device block handed out",
                    p
                );
            }
        }
        for p in all {
            m.alloc.free(p, 0).unwrap();
        }
        Ok(())
    }
}
