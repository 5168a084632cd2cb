//! Memory hotplug in the kernel: the platform operations behind `mm::hotplug` (linear map,
//! vmemmap, struct pages, allocator, migration of the movable window's pages) and the global
//! hotplug state.
//!
//! Locking: `HOTPLUG` (a plain spin lock, never taken in interrupt context) serialises the
//! hotplug paths against each other. Inside, the kernel page table lock orders table changes
//! against software walkers (the shell's `pt`, tests); other CPUs' hardware walks are handled by
//! broadcast TLB invalidation before any page or table is freed. Memmap readers hold the
//! allocator lock, under which the section state changes (see `section_update`), so hotplug
//! work and memmap readers may run on any CPU.

use crate::{
    boot::dtb::Range,
    boot::layout::{self, G, PAGE_SHIFT, PAGE_SIZE},
    kernel::mem::movable::HANDLES,
    kernel::mem::teardown::KernelTlb,
    kernel::mem::{counters, fault, kernel_pt, memmap, memmap::VMEMMAP, page_alloc, vmemmap},
};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use mm::{
    altmap::Altmap,
    buddy::{DeferredState, PageLookup, Violation, ZoneCensus},
    hotplug::{AccountingViolation, BlockId, Hotplug, HotplugError, HotplugOps},
    numa::NodeId,
    page::{flags, ZoneId},
    pgtable::{Attrs, MapFlags},
    vmemmap::VmemmapError,
};

pub static HOTPLUG: crate::kernel::sync::Mutex<Option<Hotplug>> = crate::kernel::sync::Mutex::new("hotplug", None);
/// RAM held back by `mem=` (what `probe` may add).
pub static HELD_BACK: crate::kernel::sync::Mutex<Vec<Range>> =
    crate::kernel::sync::Mutex::new("held-back ranges", Vec::new());
/// `ktest.hotplug_cycles=` (test build).
pub static KTEST_CYCLES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(2);

/// `debug_vm` on the command line (always on in the test build): check every allocator and
/// hotplug invariant after each hotplug operation and stop on the first broken one, as Linux's
/// `VM_BUG_ON` does under `CONFIG_DEBUG_VM`.
pub static DEBUG_VM: AtomicBool = AtomicBool::new(cfg!(feature = "ktest"));

pub fn with_hotplug<R>(f: impl FnOnce(&mut Hotplug, &mut KernelOps) -> R) -> R {
    let mut guard = HOTPLUG.lock();
    let hp = guard.as_mut().expect("hotplug initialised at boot");
    page_alloc::hotplug_busy(true);
    let r = f(hp, &mut KernelOps);
    page_alloc::hotplug_busy(false);
    if DEBUG_VM.load(Ordering::Relaxed) {
        // Not the device types' rules: a device changes its own state around these calls
        // (virtio-mem its plug bitmap), so those are checked when its operation ends.
        if let Err(e) = check_core(hp) {
            crate::kernel::exit::fatal_stop(format_args!("debug_vm: {e}"));
        }
    }
    r
}

/// A broken invariant found by [`check_invariants`].
#[derive(Debug)]
pub enum Broken {
    Allocator(Violation),
    Accounting(AccountingViolation),
    Device(super::device::DeviceViolation),
}

impl core::fmt::Display for Broken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Broken::Allocator(v) => write!(f, "page allocator invariant broken: {v}"),
            Broken::Accounting(v) => write!(f, "hotplug accounting invariant broken: {v}"),
            Broken::Device(v) => write!(f, "{v}"),
        }
    }
}

/// The page allocator's invariants (free lists, memmap flags, zone counters vs a recount) and
/// the hotplug accounting's (block states, present pages, groups); `hp` is borrowed from the
/// hotplug lock, so no offline is in progress.
fn check_core(hp: &Hotplug) -> Result<[ZoneCensus; 2], Broken> {
    hp.check().map_err(Broken::Accounting)?;
    page_alloc::check_page_alloc().map_err(Broken::Allocator)
}

/// [`check_core`], and every memory device type's own rules (virtio-mem's sub-block rule:
/// every page of a device block is online exactly when the block is plugged and its memory
/// block online), for when no device operation is half-way (`meminfo check`, the end of a
/// resize).
pub fn check_invariants(hp: &Hotplug) -> Result<[ZoneCensus; 2], Broken> {
    let census = check_core(hp)?;
    super::device::check_all(hp).map_err(Broken::Device)?;
    Ok(census)
}

/// Set up the hotplug state: every early section is an online boot block.
pub fn init(held_back: Vec<Range>, opts: &crate::boot::cmdline::Options) {
    // DIMMs are onlined per `default_online` (auto, i.e. the online policy, unless
    // memhp_default_state= says otherwise); `probe` leaves blocks offline for `online`.
    let mut hp = Hotplug::new(G, memmap::sparse().max_pa());
    for (nr, _) in memmap::sparse().iter_with(mm::sparse::state::EARLY) {
        let nid = crate::kernel::numa::boot_node_of(memmap::sparse().section_nr_to_pfn(nr) << layout::PAGE_SHIFT);
        if let Err(e) = hp.add_boot_block(nr as BlockId, nid) {
            crate::kernel::exit::fatal_stop(format_args!("hotplug: boot block {nr}: {e}"));
        }
    }
    if let Some(d) = opts.default_online {
        hp.default_online = d;
    }
    if let Some(p) = opts.policy {
        hp.policy = p;
    }
    if let Some(r) = opts.ratio {
        hp.ratio = r;
    }
    if let Some(on) = opts.debug_vm {
        DEBUG_VM.store(on, Ordering::Relaxed);
    }
    hp.memmap_init = page_alloc::memmap_init();
    if let Some(n) = opts.ktest_hotplug_cycles {
        KTEST_CYCLES.store(n, Ordering::Relaxed);
    }
    #[cfg(feature = "ktest")]
    if let Some(on) = opts.teardown_check {
        super::teardown::set_enforce(on);
    }
    *HOTPLUG.lock() = Some(hp);
    *HELD_BACK.lock() = held_back;
    if let Err(e) = populate_movable_window() {
        crate::println!("hotplug: movable window tables: {e:?} (stress will fail)");
    }
}

/// Allocate every table the movable window needs, now, from boot memory (no leaf, so no TLB
/// maintenance): later window maps and unmaps (floor/ceiling = the page) never allocate or
/// free a table.
fn populate_movable_window() -> Result<(), mm::pgtable::MapError> {
    kernel_pt::with_kernel_pt(|pt, t| pt.populate_tables(t, layout::MOVABLE_START, layout::MOVABLE_SIZE))
}

fn linear_region() -> (u64, u64) {
    (layout::PAGE_OFFSET, layout::PAGE_OFFSET + layout::LINEAR_SIZE)
}

fn vmemmap_err(e: VmemmapError) -> HotplugError {
    match e {
        VmemmapError::AltmapExhausted(_) => {
            HotplugError::MemmapOnMemory("the block's altmap is too small for its memmap")
        }
        _ => HotplugError::NoMemory,
    }
}

/// The platform side of hotplug.
pub struct KernelOps;

impl HotplugOps for KernelOps {
    fn map_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        kernel_pt::with_kernel_pt(|pt, t| {
            pt.map(
                t,
                layout::phys_to_virt(pa),
                pa,
                size,
                Attrs::NORMAL_RW,
                MapFlags::LARGEST,
            )
        })
        .map_err(|_| HotplugError::NoMemory)
        // The engine published the new descriptors (DSB ISHST; ISB) before returning.
    }

    fn check_unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        kernel_pt::with_kernel_pt(|pt, t| pt.check_unmap(t, layout::phys_to_virt(pa), size))
            .map_err(|_| HotplugError::WouldSplitLeaf { pa })
    }

    fn unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        let (lo, hi) = linear_region();
        kernel_pt::with_kernel_pt(|pt, t| pt.unmap_within(t, &mut KernelTlb, layout::phys_to_virt(pa), size, lo, hi))
            .map(|_| ())
            .map_err(|_| HotplugError::WouldSplitLeaf { pa })
    }

    /// Without an altmap the backing comes from the block's node first (Linux
    /// `vmemmap_populate`'s node argument).
    fn populate_memmap(
        &mut self,
        section_pfn: u64,
        nid: NodeId,
        mut altmap: Option<&mut Altmap>,
    ) -> Result<(), HotplugError> {
        let start = VMEMMAP.pfn_to_page(section_pfn);
        let self_hosted = altmap.is_some();
        // Injected altmap exhaustion (test kernel): the altmap holds only `limit` more pages
        // for this call, as if it had been sized too small.
        let limit = fault::altmap_limit();
        let saved_free = altmap.as_deref().map(|a| a.free);
        if let (Some(a), Some(limit)) = (altmap.as_deref_mut(), limit) {
            a.free = a.free.min(a.alloc + a.align + limit);
        }
        let r = vmemmap::with_vmemmap_on(nid, |v| {
            v.populate(start, start + G.memmap_per_section(), altmap.as_deref_mut())
        });
        if let (Some(a), Some(free)) = (altmap, saved_free) {
            a.free = free;
        }
        let st = r.map_err(vmemmap_err)?;
        counters::MEMMAP_BYTES.fetch_add(st.bytes, Ordering::Relaxed);
        if self_hosted {
            counters::MEMMAP_SELF_HOSTED_BYTES.fetch_add(st.bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    fn depopulate_memmap(&mut self, section_pfn: u64, altmap: Option<&mut Altmap>) {
        let start = VMEMMAP.pfn_to_page(section_pfn);
        let self_hosted = altmap.is_some();
        let r = vmemmap::with_vmemmap(|v| v.free(start, start + G.memmap_per_section(), altmap));
        match r {
            Ok(st) => {
                counters::MEMMAP_BYTES.fetch_sub(st.bytes, Ordering::Relaxed);
                if self_hosted {
                    counters::MEMMAP_SELF_HOSTED_BYTES.fetch_sub(st.bytes, Ordering::Relaxed);
                }
            }
            Err(e) => crate::println!("hotplug: vmemmap_free of section pfn {section_pfn:#x} failed: {e:?}"),
        }
    }

    fn removed(&mut self, pa: u64, size: u64) {
        let memmap = VMEMMAP.pfn_to_page(pa >> PAGE_SHIFT);
        crate::kernel::mem::teardown::check_removed(
            pa,
            size,
            layout::phys_to_virt(pa),
            memmap,
            (size >> PAGE_SHIFT) * 64,
        );
    }

    fn init_memmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        // SAFETY: `HotplugOps::init_memmap` runs right after the block's memmap was populated
        // and before its sections are marked as having one: nothing else reaches these pages.
        unsafe { memmap::init_struct_pages(pfn, nr, block as u32, flags::OFFLINE) };
    }

    fn defer_memmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        // SAFETY: as in `init_memmap`: populated, not yet marked as having a memmap.
        unsafe { page_alloc::poison_memmap(pfn, nr) };
        // Mutant: the deferral refused (a range it does not cover), so the fallback runs.
        let r = if arch::mutant::on(arch::mutant::Mutant::DeferMemmapFallsBack) {
            Err(mm::buddy::BuddyError::BadRange { start: pfn, nr })
        } else {
            page_alloc::with_page_alloc(|a| a.defer_memmap(pfn, nr))
        };
        if let Err(e) = r {
            crate::println!("hotplug: cannot defer the memmap of pfn {pfn:#x}+{nr:#x} ({e}); initialising it now");
            self.init_memmap(pfn, nr, block);
        }
    }

    fn defer_vmemmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        // SAFETY: as in `init_memmap`: populated, not yet marked as having a memmap.
        unsafe { page_alloc::poison_memmap(pfn, nr) };
        if let Err(e) = page_alloc::with_page_alloc(|a| a.defer_vmemmap(pfn, nr)) {
            crate::println!(
                "hotplug: cannot defer the self-hosted memmap of pfn {pfn:#x}+{nr:#x} ({e}); initialising it now"
            );
            self.init_memmap(pfn, nr, block);
        }
    }

    fn release_memmap(&mut self, pfn: u64, nr: u64) {
        if let Err(e) = page_alloc::with_page_alloc(|a| a.memmap_removed(pfn, nr)) {
            crate::println!("hotplug: deferred memmap of pfn {pfn:#x}+{nr:#x} still in use: {e}");
        }
    }

    fn section_update(&mut self, nr: u64, set: u8, clear: u8) {
        // Memmap readers (the allocator, `page`, `meminfo`, any CPU) check `pfn_valid` and
        // read the struct page under the allocator lock; changing the section state under the
        // same lock means a reader sees either a valid, mapped memmap or an invalid PFN, never
        // a memmap that `remove` is about to unmap (Linux: `get_online_mems`).
        page_alloc::with_page_alloc(|_| {
            memmap::sparse().set(nr as usize, set);
            memmap::sparse().clear(nr as usize, clear);
        });
    }

    fn init_vmemmap_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) {
        // The block is present (valid memmap) and these pages are not in the allocator.
        page_alloc::with_page_alloc(|a| {
            if a.set_vmemmap_zone(pfn, Some(zone)) {
                return;
            }
            for p in pfn..pfn + nr {
                let r = a.update_page(p, |page| {
                    page.flags = flags::VMEMMAP_SELF_HOSTED;
                    page.zone = zone as u8;
                    page.node = nid;
                });
                if let Err(e) = r {
                    crate::kernel::exit::fatal_stop(format_args!("hotplug: present block: {e}"));
                }
            }
        });
    }

    fn deinit_vmemmap_pages(&mut self, pfn: u64, nr: u64) {
        page_alloc::with_page_alloc(|a| {
            if a.set_vmemmap_zone(pfn, None) {
                return;
            }
            for p in pfn..pfn + nr {
                let r = a.update_page(p, |page| page.flags = flags::RESERVED | flags::OFFLINE);
                if let Err(e) = r {
                    crate::kernel::exit::fatal_stop(format_args!("hotplug: present block: {e}"));
                }
            }
        });
    }

    fn online_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) -> Result<(), HotplugError> {
        // Like Linux's online_page_callback: only the parts the device types let online (the
        // plugged sub-blocks of virtio-mem) reach the allocator; the rest stays fake-offline.
        for (p, n) in super::device::online_runs(pfn, nr) {
            page_alloc::with_page_alloc(|a| a.online_range(zone, nid, p, n)).map_err(HotplugError::Allocator)?;
        }
        if page_alloc::with_page_alloc(|a| a.uninit_pages(pfn, nr)) > 0 {
            page_alloc::deferred_work_added();
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
        // Fake-offline parts (what a device type's online filter holds back) are not in the
        // allocator; on a failure the runs already taken out go back, so the range is as it was.
        let runs = super::device::online_runs(pfn, nr);
        for (i, &(p, n)) in runs.iter().enumerate() {
            // The block is present and online (valid memmap; its first page initialised or on
            // a zone's deferred list).
            let zone = page_alloc::with_page_alloc(|a| match a.lookup(p) {
                PageLookup::Page(pg) if pg.zone == ZoneId::Movable as u8 => ZoneId::Movable,
                PageLookup::Deferred(DeferredState::Zone { zone, .. } | DeferredState::InFlight { zone }) => zone,
                _ => ZoneId::Normal,
            });
            if let Err(e) = self.offline_run_retrying(p, n, block, target_below) {
                for &(q, m) in runs[..i].iter().rev() {
                    let _ = page_alloc::with_page_alloc(|a| a.online_range(zone, nid, q, m));
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Test build: whether an offline waits for deferred chunks in flight (off: the first
/// `InitInProgress` is the offline's answer, so a test sees the refusal itself).
#[cfg(feature = "ktest")]
pub static OFFLINE_WAITS_FOR_INIT: AtomicBool = AtomicBool::new(true);

/// How long an offline waits for deferred chunks in flight (counter periods): about a second.
fn offline_init_wait() -> u64 {
    #[cfg(feature = "ktest")]
    if !OFFLINE_WAITS_FOR_INIT.load(Ordering::Relaxed) {
        return 0;
    }
    arch::cpu::counter_freq()
}

impl KernelOps {
    /// [`offline_run`](Self::offline_run), waiting for idle CPUs that are initialising deferred
    /// chunks (of the range, or migration targets) to hand them over (one chunk: microseconds;
    /// given up after about a second, and then the offline fails and says why).
    fn offline_run_retrying(
        &mut self,
        pfn: u64,
        nr: u64,
        block: BlockId,
        target_below: u64,
    ) -> Result<(), HotplugError> {
        let deadline = arch::cpu::counter() + offline_init_wait();
        loop {
            match self.offline_run(pfn, nr, block, target_below) {
                Err(HotplugError::Allocator(mm::buddy::BuddyError::InitInProgress { .. }))
                    if arch::cpu::counter() < deadline =>
                {
                    core::hint::spin_loop()
                }
                // Migration targets that are still being initialised are not lost: wait.
                Err(HotplugError::NoMigrationTarget { .. })
                    if arch::cpu::counter() < deadline && page_alloc::deferred_in_flight() =>
                {
                    core::hint::spin_loop()
                }
                r => return r,
            }
        }
    }

    fn offline_run(&mut self, pfn: u64, nr: u64, block: BlockId, target_below: u64) -> Result<(), HotplugError> {
        // Lock order: handles, then the kernel page table, then the allocator (as every movable
        // user and every table allocation does). Migration re-points the handle's window PTE:
        // the window's tables exist (kept once allocated), so no table is allocated or freed
        // under the allocator lock.
        let mut handles = HANDLES.lock();
        kernel_pt::with_kernel_pt(|pt, t| {
            page_alloc::with_page_alloc(|a| {
                mm::migrate::offline_pages(
                    a,
                    &mut handles,
                    pfn,
                    nr,
                    target_below,
                    |batch| {
                        let moved = super::movable::migrate_window_batch(pt, t, batch, || {
                            for m in batch {
                                copy_block(m.src, m.dst, m.order);
                            }
                        });
                        if let Err(e) = moved {
                            crate::kernel::exit::fatal_stop(format_args!("migrate: window batch: {e:?}"));
                        }
                    },
                    |src, order| {
                        crate::kernel::mem::teardown::check_free(src << PAGE_SHIFT, PAGE_SIZE << order);
                        // The freed frame is poisoned (test build), so a CPU that still
                        // translated the window VA to it would read garbage, not the data.
                        if cfg!(feature = "ktest") {
                            poison(src, order);
                        }
                    },
                )
            })
        })
        .map(|_| ())
        .map_err(|e| HotplugError::from_offline(block, e))
    }
}

/// Copy a migrating block to its new frame (through the linear map).
fn copy_block(src: u64, dst: u64, order: u32) {
    // SAFETY: both blocks are ours under the handle, page-table and allocator locks (the
    // source is a live movable allocation no window entry maps any more, the destination was
    // just allocated), both reached through the linear map, no overlap.
    unsafe {
        arch::memops::copy(
            layout::phys_to_virt(dst << PAGE_SHIFT) as *mut u8,
            layout::phys_to_virt(src << PAGE_SHIFT) as *const u8,
            (PAGE_SIZE << order) as usize,
        )
    }
}

/// Fill a block about to be freed with a poison pattern (through the linear map).
fn poison(pfn: u64, order: u32) {
    let words = ((PAGE_SIZE << order) / 8) as usize;
    let p = layout::phys_to_virt(pfn << PAGE_SHIFT) as *mut u64;
    for i in 0..words {
        // SAFETY: the block is ours until it goes back to the allocator (after this call);
        // nothing else maps it (the teardown checker just checked that in the test build).
        unsafe { p.wrapping_add(i).write_volatile(0xdead_beef_dead_beef) };
    }
}

/// The held-back range containing `[start, start + size)`, if any: `probe` only adds memory
/// that exists (QEMU RAM that `mem=` kept from the kernel), since touching the memmap of
/// nonexistent memory would abort.
pub fn probe_allowed(start: u64, size: u64) -> bool {
    HELD_BACK
        .lock()
        .iter()
        .any(|r| start >= r.base && start + size <= r.end())
}
