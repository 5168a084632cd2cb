//! The platform operations of the test machine: the real engine, vmemmap, allocator and
//! migration, each fallible step able to fail on request, each checked as it goes.

extern crate std;

use std::cell::UnsafeCell;

use super::{Machine, NCPUS};
use crate::altmap::Altmap;
use crate::geometry::Config;
use crate::hotplug::{BlockId, HotplugError, HotplugOps};
use crate::migrate::{move_window_batch, offline_pages, Move};
use crate::numa::NodeId;
use crate::page::{flags, Memmap, Page, ZoneId};
use crate::pgtable::{Attrs, MapFlags};
use arch::tlb::MAX_TLBI_OPS;

impl<C: Config> HotplugOps for Machine<C> {
    fn map_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        self.injected()?;
        self.pt
            .map(
                &mut self.tables,
                Self::linear(pa),
                pa,
                size,
                Attrs::NORMAL_RW,
                MapFlags::LARGEST,
            )
            .map_err(|_| HotplugError::NoMemory)?;
        let stride = C::GEOM.pmd_size().min(size);
        self.touch(Self::linear(pa), size, stride);
        Ok(())
    }

    fn check_unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        self.pt
            .check_unmap(&self.tables, Self::linear(pa), size)
            .map_err(|_| HotplugError::WouldSplitLeaf { pa })
    }

    fn unmap_linear(&mut self, pa: u64, size: u64) -> Result<(), HotplugError> {
        let (lo, hi) = Self::linear_region();
        let r = self
            .pt
            .unmap_within(&mut self.tables, &mut self.tlb, Self::linear(pa), size, lo, hi)
            .map(|_| ())
            .map_err(|_| HotplugError::WouldSplitLeaf { pa });
        self.assert_teardown_ok("unmap_linear");
        r
    }

    fn removed(&mut self, pa: u64, size: u64) {
        self.assert_removed(pa, size);
    }

    fn populate_memmap(
        &mut self,
        section_pfn: u64,
        _nid: NodeId,
        altmap: Option<&mut Altmap>,
    ) -> Result<(), HotplugError> {
        self.injected()?;
        let g = C::GEOM;
        let start = Self::vmemmap_region().0 + section_pfn * 64;
        self.vmemmap()
            .populate(start, start + g.memmap_per_section(), altmap)
            .map_err(|e| match e {
                crate::vmemmap::VmemmapError::AltmapExhausted(_) => HotplugError::MemmapOnMemory("altmap exhausted"),
                _ => HotplugError::NoMemory,
            })?;
        self.touch(start, g.memmap_per_section(), g.page_size());
        let pages = (0..g.pages_per_section())
            .map(|_| UnsafeCell::new(Page::POISON))
            .collect();
        self.memmap
            .sections
            .borrow_mut()
            .insert(section_pfn / g.pages_per_section(), pages);
        Ok(())
    }

    fn depopulate_memmap(&mut self, section_pfn: u64, altmap: Option<&mut Altmap>) {
        let g = C::GEOM;
        self.memmap
            .sections
            .borrow_mut()
            .remove(&(section_pfn / g.pages_per_section()));
        let start = Self::vmemmap_region().0 + section_pfn * 64;
        self.vmemmap()
            .free(start, start + g.memmap_per_section(), altmap)
            .unwrap();
        self.assert_teardown_ok("vmemmap_free");
    }

    fn init_memmap(&mut self, pfn: u64, nr: u64, block: BlockId) {
        let page = Page {
            block: block as u32,
            flags: flags::RESERVED | flags::OFFLINE,
            ..Page::INIT
        };
        // SAFETY: populated just before; nothing else reaches these pages yet (as the kernel).
        unsafe { self.memmap.init_pages(pfn, nr, page) };
    }

    fn defer_memmap(&mut self, pfn: u64, nr: u64, _block: BlockId) {
        self.alloc
            .defer_memmap(pfn, nr)
            .expect("deferral of a new block's memmap");
    }

    fn defer_vmemmap(&mut self, pfn: u64, nr: u64, _block: BlockId) {
        self.alloc
            .defer_vmemmap(pfn, nr)
            .expect("deferral of a new block's self-hosted memmap");
    }

    fn release_memmap(&mut self, pfn: u64, nr: u64) {
        self.alloc
            .memmap_removed(pfn, nr)
            .expect("memmap removed while in a zone");
    }

    fn section_update(&mut self, nr: u64, set: u8, clear: u8) {
        self.sparse.set(nr as usize, set);
        self.sparse.clear(nr as usize, clear);
    }

    fn init_vmemmap_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) {
        // As the kernel: the block's state when its memmap was deferred, else through the
        // allocator's accessor (the pages are not in the allocator).
        if self.alloc.set_vmemmap_zone(pfn, Some(zone)) {
            return;
        }
        for p in pfn..pfn + nr {
            self.alloc
                .update_page(p, |page| {
                    page.flags = flags::VMEMMAP_SELF_HOSTED;
                    page.zone = zone as u8;
                    page.node = nid;
                })
                .unwrap();
        }
    }

    fn deinit_vmemmap_pages(&mut self, pfn: u64, nr: u64) {
        if self.alloc.set_vmemmap_zone(pfn, None) {
            return;
        }
        for p in pfn..pfn + nr {
            self.alloc
                .update_page(p, |page| page.flags = flags::RESERVED | flags::OFFLINE)
                .unwrap();
        }
    }

    fn online_pages(&mut self, pfn: u64, nr: u64, zone: ZoneId, nid: NodeId) -> Result<(), HotplugError> {
        self.injected()?;
        self.onlined_nodes.push((pfn, nid));
        let r = self
            .alloc
            .online_range(zone, nid, pfn, nr)
            .map(|_| ())
            .map_err(HotplugError::Allocator);
        self.assert_alloc_ok("online_pages");
        r
    }

    fn offline_pages(
        &mut self,
        pfn: u64,
        nr: u64,
        block: BlockId,
        nid: NodeId,
        target_below: u64,
    ) -> Result<(), HotplugError> {
        self.injected()?;
        self.offlined_nodes.push((pfn, nid));
        let g = C::GEOM;
        let Machine {
            pt,
            tables,
            tlb,
            checker,
            alloc,
            handles,
            contents,
            ..
        } = self;
        let r = offline_pages(
            alloc,
            handles,
            pfn,
            nr,
            target_below,
            |batch| {
                let size = |m: &Move| g.page_size() << m.order;
                // Every CPU uses each block right up to the move.
                for m in batch {
                    for cpu in 0..NCPUS {
                        assert_eq!(
                            tlb.touch(cpu, pt, tables, Self::window_va(m.handle)),
                            Some(m.src << g.page_shift)
                        );
                    }
                }
                move_window_batch(pt, tables, tlb, batch, Self::window_va, MAX_TLBI_OPS, || {
                    for m in batch {
                        if let Some(v) = contents.remove(&m.src) {
                            contents.insert(m.dst, v);
                        }
                    }
                })
                .expect("move through the movable window");
                for m in batch {
                    let va = Self::window_va(m.handle);
                    for cpu in 0..NCPUS {
                        for v in (va..va + size(m)).step_by(g.page_size() as usize) {
                            if let Some(pa) = tlb.translate(cpu, v) {
                                panic!("TLB model: cpu {cpu} still translates migrated va {v:#x} to {pa:#x}");
                            }
                            assert_eq!(
                                pt.walk(tables, v).leaf.map(|l| l.pa),
                                Some((m.dst << g.page_shift) + (v - va)),
                                "window va {v:#x} does not map the new frame"
                            );
                        }
                    }
                }
            },
            |src, order| {
                let _ = checker
                    .borrow_mut()
                    .freeing(src << g.page_shift, g.page_size() << order);
            },
        )
        .map(|_| ())
        .map_err(|e| HotplugError::from_offline(block, e));
        self.assert_alloc_ok("offline_pages");
        self.assert_teardown_ok("offline_pages");
        r
    }
}
