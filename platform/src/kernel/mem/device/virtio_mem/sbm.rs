//! The sub-block plug state of virtio-mem regions (Linux SBM): which device blocks of a memory
//! block are plugged. The driver's memory side writes it; the generic online/offline paths read
//! it through the registration's online filter ([`online_filter`]), and the checker through
//! its rule ([`check`]).

use crate::boot::layout::G;
use crate::kernel::mem::device::DeviceViolation;
use crate::kernel::mem::page_alloc;
use alloc::vec::Vec;
use mm::hotplug::{BlockState, Hotplug};

/// Sub-block mode (device block < memory block): which device blocks of a region are plugged.
/// Read by the generic online/offline paths ([`online_filter`]) under the hotplug lock, so it
/// lives apart from virtio-mem's devices (`DEVICES`); lock order: hotplug, then this.
pub struct SbmRegion {
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub sub_pages: u64,
    pub plugged: Vec<bool>,
}

pub static SBM: crate::kernel::sync::Mutex<Vec<SbmRegion>> = crate::kernel::sync::Mutex::new("sbm", Vec::new());

/// The parts of `[pfn, pfn + nr)` that may be online: everything outside sub-block-mode
/// regions, and inside them only plugged device blocks (Linux's online_page_callback role), one
/// call of `keep` per run ([`mm::vmem::memory::plugged_runs`]).
pub fn online_filter(pfn: u64, nr: u64, keep: &mut dyn FnMut(u64, u64)) {
    let sbm = SBM.lock();
    let end = pfn + nr;
    let mut p = pfn;
    while p < end {
        match sbm.iter().find(|r| r.start_pfn <= p && p < r.end_pfn) {
            None => {
                let next = sbm
                    .iter()
                    .map(|r| r.start_pfn)
                    .filter(|&s| s > p)
                    .min()
                    .unwrap_or(end)
                    .min(end);
                keep(p, next - p);
                p = next;
            }
            Some(r) => {
                let next = r.end_pfn.min(end);
                mm::vmem::memory::plugged_runs(r.start_pfn, r.sub_pages, &r.plugged, p, next - p, keep);
                p = next;
            }
        }
    }
}

/// The sub-block rule: in every online memory block of a sub-block-mode region, the pages of
/// plugged device blocks are online and those of unplugged ones offline (deferred memmap
/// included: on a zone's list is online). O(pages of the regions' online blocks). Lock order:
/// hotplug (the caller's), the page allocator, then this.
pub fn check(hp: &Hotplug) -> Result<(), DeviceViolation> {
    let block_pages = G.pages_per_section();
    let block_online = |pfn: u64| {
        hp.block(pfn / block_pages)
            .is_some_and(|b| b.state == BlockState::Online)
    };
    page_alloc::with_page_alloc(|a| {
        let sbm = SBM.lock();
        for r in sbm.iter() {
            let mut blk = r.start_pfn;
            while blk < r.end_pfn {
                if block_online(blk) {
                    for pfn in blk..(blk + block_pages).min(r.end_pfn) {
                        let plugged = r.plugged[((pfn - r.start_pfn) / r.sub_pages) as usize];
                        if a.is_online(pfn).is_some_and(|on| on != plugged) {
                            return Err(DeviceViolation {
                                device: "virtio-mem sub-block",
                                pfn,
                                rule: if plugged {
                                    "of a plugged device block of an online memory block is offline"
                                } else {
                                    "of an unplugged device block is online"
                                },
                            });
                        }
                    }
                }
                blk += block_pages;
            }
        }
        Ok(())
    })
}
