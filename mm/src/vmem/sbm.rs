//! Sub-block mode (Linux SBM): device blocks smaller than a memory block, plugged and unplugged
//! one by one inside memory blocks added as needed. The plug bitmap is the policy's
//! ([`Sbm`](super::Sbm), with counts per memory block); the memory side keeps a mirror that the
//! online filter reads.
//!
//! A resize is O(memory blocks of the region) plus O(device blocks it changes): grow walks the
//! added blocks once (filling their free device blocks), then the others once (adding them);
//! shrink computes its order once and empties each block in turn. A block that goes wholly is
//! offlined and removed in one hotplug operation and unplugged with one request per plugged run;
//! neighbouring blocks that all go wholly share both (one batch of TLB maintenance).

use super::{request, RequestType, Vmem, VmemDevice, VmemMemory};
use crate::hotplug::{BlockId, HotplugError};
use crate::size::Size;
use alloc::{format, string::String, vec::Vec};
use arch::mutant::{self, Mutant};

/// What [`Vmem::sbm_remove_blocks_together`] did.
enum Together {
    /// Fewer than two blocks qualify: nothing tried.
    No,
    /// The removal was refused (busy memory); the blocks are as they were.
    Refused,
    /// That many blocks of the order were removed; then their UNPLUGs' result.
    Removed(usize, Result<(), String>),
}

impl Vmem {
    pub(super) fn sbm_resize(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        requested: u64,
    ) -> Option<String> {
        let target = (requested / self.cfg.block_size) as usize;
        if self.units_plugged() < target {
            if let Err(e) = self.sbm_grow(dev, mem, target - self.units_plugged()) {
                return Some(e);
            }
        }
        let order = self.sbm_shrink_order(mem);
        self.below = self.sbm_lowest_taken(&order, self.units_plugged().saturating_sub(target));
        let r = self.sbm_shrink(dev, mem, &order, target);
        self.below = u64::MAX;
        r
    }

    fn m(&self) -> &super::Sbm {
        self.sbm.as_ref().expect("sub-block mode")
    }

    /// Record a plug state change in the policy's bitmap and the memory side's mirror.
    fn sbm_mark(&mut self, mem: &mut impl VmemMemory, first: usize, n: usize, v: bool) {
        if let Some(m) = self.sbm.as_mut() {
            m.mark(first, n, v);
        }
        mem.set_plugged(first, n, v);
    }

    /// The lowest address a shrink by `excess` device blocks takes away, following `order` as
    /// [`sbm_shrink`](Self::sbm_shrink) does (`u64::MAX`: none).
    fn sbm_lowest_taken(&self, order: &[usize], mut excess: usize) -> u64 {
        let m = self.m();
        let (s, meta) = (m.subs_per_block, m.meta);
        let mut lowest = u64::MAX;
        for &blk in order {
            if excess == 0 {
                break;
            }
            let first = blk * s;
            let plugged: Vec<usize> = (first + meta..first + s).rev().filter(|&i| m.plugged(i)).collect();
            if excess < plugged.len() {
                lowest = lowest.min(self.sub_addr(plugged[excess - 1]));
                break;
            }
            // The whole block goes (its memmap's device blocks last).
            lowest = lowest.min(self.sub_addr(first));
            excess -= m.plugged_in(blk).min(excess);
        }
        lowest
    }

    /// Unplug device blocks down to `target`, block by block in `order`; a block that refuses
    /// is left for the next one (and the next resize).
    fn sbm_shrink(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        order: &[usize],
        target: usize,
    ) -> Option<String> {
        let mut last = String::new();
        let mut i = 0;
        // After a refused batch the blocks go one by one: a busy block would refuse every
        // batch that holds it, each after offlining the blocks before it.
        let mut batches = true;
        while let Some(&blk) = order.get(i) {
            if batches {
                match self.sbm_remove_blocks_together(dev, mem, &order[i..], target) {
                    Together::No => {}
                    Together::Refused => batches = false,
                    Together::Removed(n, r) => {
                        if let Err(e) = r {
                            last = e;
                        }
                        i += n;
                        if self.units_plugged() <= target {
                            return None;
                        }
                        continue;
                    }
                }
            }
            i += 1;
            while self.units_plugged() > target && self.m().plugged_in(blk) > 0 {
                let excess = self.units_plugged() - target;
                if let Err(e) = self.sbm_shrink_block(dev, mem, blk, excess) {
                    last = e;
                    break;
                }
            }
            if self.units_plugged() <= target {
                return None;
            }
        }
        Some(format!(
            "memory busy: no plugged device block could be offlined and unplugged (last: {last})"
        ))
    }

    /// Online (`on`) or fake-offline device blocks `[first, first + n)` of memory block `block`.
    fn sbm_online(
        &self,
        mem: &mut impl VmemMemory,
        block: BlockId,
        first: usize,
        n: usize,
        on: bool,
    ) -> Result<(), HotplugError> {
        let pfn = self.sub_addr(first) >> self.geom.page_shift;
        mem.set_online(block, pfn, n as u64 * self.sub_pages(), on, self.below)
    }

    /// Plug `need` device blocks: first the free ones of added memory blocks (lowest address
    /// first), then by adding memory blocks.
    fn sbm_grow(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        mut need: usize,
    ) -> Result<(), String> {
        let (s, meta, nr_blocks) = (self.m().subs_per_block, self.m().meta, self.m().added.len());
        let usable = ((dev.usable_region_size() / self.cfg.block_size) as usize).min(nr_blocks * s);
        for blk in 0..nr_blocks {
            let Some(id) = self.m().added[blk] else { continue };
            let end = ((blk + 1) * s).min(usable);
            let mut i = blk * s;
            while need > 0 && i < end && self.m().plugged_in(blk) < s {
                if self.m().plugged(i) {
                    i += 1;
                    continue;
                }
                let mut n = 1;
                while n < need && i + n < end && !self.m().plugged(i + n) {
                    n += 1;
                }
                self.sbm_plug_run(dev, mem, id, i, n)?;
                need -= n;
                i += n;
            }
        }
        for blk in 0..nr_blocks {
            if need == 0 {
                return Ok(());
            }
            let n = need.min(s).max(meta);
            // Not added; stale plugged device blocks are unplugged by the next shrink first.
            if self.m().added[blk].is_some() || self.m().plugged_in(blk) > 0 || blk * s + n > usable {
                continue;
            }
            self.sbm_add_block(dev, mem, blk, n)?;
            need = need.saturating_sub(n);
        }
        if need == 0 {
            return Ok(());
        }
        Err(format!(
            "no room left in the usable region of {:#}",
            Size(usable as u64 * self.cfg.block_size)
        ))
    }

    /// PLUG device blocks `[first, first + n)` of added memory block `id` and online them.
    fn sbm_plug_run(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        id: BlockId,
        first: usize,
        n: usize,
    ) -> Result<(), String> {
        let addr = self.sub_addr(first);
        request(dev, RequestType::Plug, addr, n as u16)
            .map_err(|e| format!("plugging {addr:#x}+{:#}: {e}", Size(n as u64 * self.cfg.block_size)))?;
        // Plugged first: the online filter hands over plugged device blocks only.
        let online = if mutant::on(Mutant::VmemOnlineBeforePlugged) {
            let r = self.sbm_online(mem, id, first, n, true);
            self.sbm_mark(mem, first, n, true);
            r
        } else {
            self.sbm_mark(mem, first, n, true);
            self.sbm_online(mem, id, first, n, true)
        };
        if let Err(e) = online {
            self.sbm_mark(mem, first, n, false);
            let _ = request(dev, RequestType::Unplug, addr, n as u16);
            return Err(format!("onlining {addr:#x}: {e}"));
        }
        Ok(())
    }

    /// PLUG the first `n` device blocks of memory block `blk` (its memmap's among them), then
    /// add the memory block (its plugged part goes online per the policy).
    fn sbm_add_block(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        blk: usize,
        n: usize,
    ) -> Result<(), String> {
        let first = blk * self.m().subs_per_block;
        let addr = self.sub_addr(first);
        request(dev, RequestType::Plug, addr, n as u16)
            .map_err(|e| format!("plugging {addr:#x}+{:#}: {e}", Size(n as u64 * self.cfg.block_size)))?;
        self.sbm_mark(mem, first, n, true);
        let mb = self.geom.section_size();
        match mem.add(addr, mb) {
            Ok(ids) => {
                if let Some(m) = self.sbm.as_mut() {
                    m.added[blk] = ids.first().copied();
                }
                Ok(())
            }
            Err(e) => {
                self.sbm_mark(mem, first, n, false);
                let _ = request(dev, RequestType::Unplug, addr, n as u16);
                Err(format!("adding {addr:#x}+{:#}: {e}", Size(mb)))
            }
        }
    }

    /// Unplug up to `excess` device blocks from memory block `blk`: the whole block (offlined
    /// and removed in one operation) when all its plugged device blocks go, else its highest
    /// plugged run; once only the memmap's device blocks are left, the block with them.
    fn sbm_shrink_block(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        blk: usize,
        excess: usize,
    ) -> Result<(), String> {
        let m = self.m();
        let (s, meta) = (m.subs_per_block, m.meta);
        let id = m.added[blk];
        let first = blk * s;
        let bs = self.cfg.block_size;
        let hi = (first + meta..first + s).rev().find(|&i| m.plugged(i));
        if id.is_some() && excess >= m.plugged_in(blk) {
            match self.sbm_remove_block(dev, mem, blk) {
                Ok(()) => return Ok(()),
                // Removed, but the device refused the UNPLUG (the next shrink retries it), or
                // only the memmap's device blocks were left: nothing smaller to try.
                Err(e) if self.m().added[blk].is_none() || hi.is_none() => return Err(e),
                // Busy somewhere: the highest plugged run may still go.
                Err(_) => {}
            }
        }
        match (id, hi) {
            (Some(id), Some(hi)) => {
                let mut lo = hi;
                while lo > first + meta && self.m().plugged(lo - 1) && hi - lo + 1 < excess {
                    lo -= 1;
                }
                let n = hi - lo + 1;
                let addr = self.sub_addr(lo);
                if mutant::on(Mutant::VmemUnplugBeforeOffline) {
                    let _ = request(dev, RequestType::Unplug, addr, n as u16);
                }
                self.sbm_online(mem, id, lo, n, false)
                    .map_err(|e| format!("{addr:#x}+{:#}: {e}", Size(n as u64 * bs)))?;
                self.sbm_mark(mem, lo, n, false);
                if let Err(e) = request(dev, RequestType::Unplug, addr, n as u16) {
                    self.sbm_mark(mem, lo, n, true);
                    let _ = self.sbm_online(mem, id, lo, n, true);
                    return Err(format!("unplugging {addr:#x}: {e}"));
                }
                Ok(())
            }
            (Some(_), None) => self.sbm_remove_block(dev, mem, blk),
            (None, _) => self.sbm_unplug_stale(dev, mem, blk),
        }
    }

    /// The leading blocks of `order` when they go wholly and follow each other down in memory
    /// (two or more, added, the excess covering all their plugged device blocks): offlined and
    /// removed in one hotplug operation (one batch of TLB maintenance, not one per block), then
    /// unplugged with one request per plugged run across them.
    fn sbm_remove_blocks_together(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        order: &[usize],
        target: usize,
    ) -> Together {
        let m = self.m();
        let mut excess = self.units_plugged().saturating_sub(target);
        let mut n = 0;
        while let Some(&blk) = order.get(n) {
            let below_last = n == 0 || order[n - 1] == blk + 1;
            if !below_last || m.added[blk].is_none() || m.plugged_in(blk) > excess {
                break;
            }
            excess -= m.plugged_in(blk);
            n += 1;
        }
        if n < 2 {
            return Together::No;
        }
        let s = m.subs_per_block;
        let (first, end) = (order[n - 1] * s, (order[0] + 1) * s);
        let (addr, size) = (self.sub_addr(first), n as u64 * self.geom.section_size());
        if mutant::on(Mutant::VmemUnplugBeforeOffline) {
            let _ = self.sbm_unplug_runs(dev, mem, first, end, false);
        }
        if mem.offline_and_remove(addr, size, self.below).is_err() {
            return Together::Refused;
        }
        if let Some(m) = self.sbm.as_mut() {
            for &blk in &order[..n] {
                m.added[blk] = None;
            }
        }
        Together::Removed(n, self.sbm_unplug_runs(dev, mem, first, end, true))
    }

    /// Offline and remove added memory block `blk` whole, then UNPLUG what was plugged in it.
    fn sbm_remove_block(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        blk: usize,
    ) -> Result<(), String> {
        let (addr, mb) = (self.sub_addr(blk * self.m().subs_per_block), self.geom.section_size());
        let s = self.m().subs_per_block;
        if mutant::on(Mutant::VmemUnplugBeforeOffline) {
            let _ = self.sbm_unplug_runs(dev, mem, blk * s, (blk + 1) * s, false);
        }
        mem.offline_and_remove(addr, mb, self.below)
            .map_err(|e| format!("{addr:#x}+{:#}: {e}", Size(mb)))?;
        if let Some(m) = self.sbm.as_mut() {
            m.added[blk] = None;
        }
        self.sbm_unplug_stale(dev, mem, blk)
    }

    /// UNPLUG whatever is still plugged in a memory block that is not added.
    fn sbm_unplug_stale(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        blk: usize,
    ) -> Result<(), String> {
        let s = self.m().subs_per_block;
        self.sbm_unplug_runs(dev, mem, blk * s, (blk + 1) * s, true)
    }

    /// UNPLUG every run of plugged device blocks in `[first, end)` (one request per run, of at
    /// most `u16::MAX` blocks: UNPLUG of an unplugged device block is an error); `mark`: record
    /// them unplugged.
    fn sbm_unplug_runs(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        first: usize,
        end: usize,
        mark: bool,
    ) -> Result<(), String> {
        let mut i = first;
        while i < end {
            if !self.m().plugged(i) {
                i += 1;
                continue;
            }
            let mut n = 1;
            while i + n < end && n < u16::MAX as usize && self.m().plugged(i + n) {
                n += 1;
            }
            let addr = self.sub_addr(i);
            request(dev, RequestType::Unplug, addr, n as u16).map_err(|e| format!("unplugging {addr:#x}: {e}"))?;
            if mark {
                self.sbm_mark(mem, i, n, false);
            }
            i += n;
        }
        Ok(())
    }

    /// Shrink candidates in sub-block mode: blocks not added but still plugged, then blocks
    /// wholly in MOVABLE, then the rest; highest address first within each. O(memory blocks).
    pub(super) fn sbm_shrink_order(&self, mem: &mut impl VmemMemory) -> Vec<usize> {
        let m = self.m();
        let mut v: Vec<(u8, usize)> = Vec::new();
        for b in 0..m.added.len() {
            if m.plugged_in(b) == 0 {
                continue;
            }
            v.push(match m.added[b] {
                None => (0, b),
                Some(id) if !mem.in_normal(id) => (1, b),
                Some(_) => (2, b),
            });
        }
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.into_iter().map(|(_, b)| b).collect()
    }
}
