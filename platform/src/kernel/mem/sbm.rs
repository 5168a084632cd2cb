//! The sub-block plug state of virtio-mem regions (Linux SBM): which device blocks of a memory
//! block are plugged. virtio-mem ([`super::virtio_mem`]) writes it; the online/offline paths
//! of [`super::hotplug`] read it ([`plugged_runs`]), so it sits below both.

use alloc::vec::Vec;

/// Sub-block mode (device block < memory block): which device blocks of a region are plugged.
/// Read by the platform's online/offline hooks ([`plugged_runs`]) under the hotplug lock, so it
/// lives apart from virtio-mem's devices (`virtio_mem::DEVICES`); lock order: hotplug, then this.
pub struct SbmRegion {
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub sub_pages: u64,
    pub plugged: Vec<bool>,
}

pub static SBM: spin::Mutex<Vec<SbmRegion>> = spin::Mutex::new(Vec::new());

/// The parts of `[pfn, pfn + nr)` that may be online: everything outside sub-block-mode
/// regions, and inside them only plugged device blocks (Linux's online_page_callback role).
pub fn plugged_runs(pfn: u64, nr: u64) -> Vec<(u64, u64)> {
    let sbm = SBM.lock();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut push = |p: u64, n: u64| match out.last_mut() {
        Some((q, m)) if *q + *m == p => *m += n,
        _ => out.push((p, n)),
    };
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
                push(p, next - p);
                p = next;
            }
            Some(r) => {
                let i = ((p - r.start_pfn) / r.sub_pages) as usize;
                let sub_end = (r.start_pfn + (i as u64 + 1) * r.sub_pages).min(end);
                if r.plugged[i] {
                    push(p, sub_end - p);
                }
                p = sub_end;
            }
        }
    }
    out
}

/// A page whose online state contradicts its device block's plug state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SbmViolation {
    pub pfn: u64,
    /// The device block's state in the bitmap.
    pub plugged: bool,
}

impl core::fmt::Display for SbmViolation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.plugged {
            write!(
                f,
                "pfn {:#x} of a plugged device block of an online memory block is offline",
                self.pfn
            )
        } else {
            write!(f, "pfn {:#x} of an unplugged device block is online", self.pfn)
        }
    }
}

/// In every online memory block of a sub-block-mode region, the pages of plugged device blocks
/// are online and those of unplugged ones offline (deferred memmap included: on a zone's list
/// is online). `online(pfn)`: `Some(online?)`, `None` without memmap; `block_online(pfn)`:
/// whether the memory block holding `pfn` is online. O(pages of the regions' online blocks).
/// Lock order: the page allocator (the caller's), then this.
pub fn check(
    block_pages: u64,
    block_online: impl Fn(u64) -> bool,
    online: impl Fn(u64) -> Option<bool>,
) -> Result<(), SbmViolation> {
    let sbm = SBM.lock();
    for r in sbm.iter() {
        let mut blk = r.start_pfn;
        while blk < r.end_pfn {
            if block_online(blk) {
                for pfn in blk..(blk + block_pages).min(r.end_pfn) {
                    let plugged = r.plugged[((pfn - r.start_pfn) / r.sub_pages) as usize];
                    if online(pfn).is_some_and(|on| on != plugged) {
                        return Err(SbmViolation { pfn, plugged });
                    }
                }
            }
            blk += block_pages;
        }
    }
    Ok(())
}
