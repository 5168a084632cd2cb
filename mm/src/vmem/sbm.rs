//! Sub-block mode (Linux SBM): device blocks smaller than a memory block, plugged and unplugged
//! one by one inside memory blocks added as needed; the plug bitmap is the memory side's (the
//! online filter reads it).

use super::{request, RequestType, Vmem, VmemDevice, VmemMemory};
use crate::hotplug::{BlockId, HotplugError};
use crate::size::Size;
use alloc::{format, string::String, vec::Vec};
use arch::mutant::{self, Mutant};

impl Vmem {
    pub(super) fn sbm_resize(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        requested: u64,
    ) -> Option<String> {
        let target = (requested / self.cfg.block_size) as usize;
        while self.units_plugged(mem) < target {
            let need = target - self.units_plugged(mem);
            if let Err(e) = self.sbm_grow_step(dev, mem, need) {
                return Some(e);
            }
        }
        self.below = self.sbm_lowest_taken(mem, self.units_plugged(mem).saturating_sub(target));
        let r = self.sbm_shrink(dev, mem, target);
        self.below = u64::MAX;
        r
    }

    /// The lowest address a shrink by `excess` device blocks takes away, following the order
    /// [`sbm_shrink_block`](Self::sbm_shrink_block) takes them in (`u64::MAX`: none).
    fn sbm_lowest_taken(&self, mem: &mut impl VmemMemory, mut excess: usize) -> u64 {
        let Some(m) = self.sbm.as_ref() else { return u64::MAX };
        let (s, meta) = (m.subs_per_block, m.meta);
        let mut lowest = u64::MAX;
        for blk in self.sbm_shrink_order(mem) {
            if excess == 0 {
                break;
            }
            let first = blk * s;
            let plugged: Vec<usize> = (first + meta..first + s).rev().filter(|&i| mem.plugged(i)).collect();
            if excess < plugged.len() {
                lowest = lowest.min(self.sub_addr(plugged[excess - 1]));
                break;
            }
            // The whole block goes (its memmap's device blocks last).
            lowest = lowest.min(self.sub_addr(first));
            excess -= (first..first + s).filter(|&i| mem.plugged(i)).count().min(excess);
        }
        lowest
    }

    fn sbm_shrink(&mut self, dev: &mut impl VmemDevice, mem: &mut impl VmemMemory, target: usize) -> Option<String> {
        while self.units_plugged(mem) > target {
            let excess = self.units_plugged(mem) - target;
            let mut last = String::new();
            let mut done = false;
            for blk in self.sbm_shrink_order(mem) {
                match self.sbm_shrink_block(dev, mem, blk, excess) {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if !done {
                return Some(format!(
                    "memory busy: no plugged device block could be offlined and unplugged (last: {last})"
                ));
            }
        }
        None
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

    /// Plug up to `need` device blocks: first in added memory blocks, else by adding one.
    fn sbm_grow_step(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        need: usize,
    ) -> Result<(), String> {
        let m = self.sbm.as_ref().expect("sub-block mode");
        let (s, meta) = (m.subs_per_block, m.meta);
        let added = m.added.clone();
        let bs = self.cfg.block_size;
        let usable = (dev.usable_region_size() / bs) as usize;
        let free_in = |blk: usize| (blk * s..(blk + 1) * s).find(|&i| i < usable && !mem.plugged(i));
        if let Some((blk, first)) = (0..added.len())
            .filter(|&b| added[b].is_some())
            .find_map(|b| free_in(b).map(|i| (b, i)))
        {
            let mut n = 0;
            while n < need && first + n < (blk + 1) * s && first + n < usable && !mem.plugged(first + n) {
                n += 1;
            }
            let addr = self.sub_addr(first);
            let id = added[blk].unwrap_or(0);
            request(dev, RequestType::Plug, addr, n as u16)
                .map_err(|e| format!("plugging {addr:#x}+{:#}: {e}", Size(n as u64 * bs)))?;
            // Plugged first: the online filter hands over plugged device blocks only.
            let online = if mutant::on(Mutant::VmemOnlineBeforePlugged) {
                let r = self.sbm_online(mem, id, first, n, true);
                mem.set_plugged(first, n, true);
                r
            } else {
                mem.set_plugged(first, n, true);
                self.sbm_online(mem, id, first, n, true)
            };
            if let Err(e) = online {
                mem.set_plugged(first, n, false);
                let _ = request(dev, RequestType::Unplug, addr, n as u16);
                return Err(format!("onlining {addr:#x}: {e}"));
            }
            return Ok(());
        }
        let n = need.min(s).max(meta);
        let Some(blk) = (0..added.len()).find(|&b| added[b].is_none() && b * s + n <= usable) else {
            return Err(format!(
                "no room left in the usable region of {:#}",
                Size(usable as u64 * bs)
            ));
        };
        let first = blk * s;
        let addr = self.sub_addr(first);
        request(dev, RequestType::Plug, addr, n as u16)
            .map_err(|e| format!("plugging {addr:#x}+{:#}: {e}", Size(n as u64 * bs)))?;
        mem.set_plugged(first, n, true);
        let mb = self.geom.section_size();
        match mem.add(addr, mb) {
            Ok(ids) => {
                if let Some(m) = self.sbm.as_mut() {
                    m.added[blk] = ids.first().copied();
                }
                Ok(())
            }
            Err(e) => {
                mem.set_plugged(first, n, false);
                let _ = request(dev, RequestType::Unplug, addr, n as u16);
                Err(format!("adding {addr:#x}+{:#}: {e}", Size(mb)))
            }
        }
    }

    /// Unplug up to `excess` device blocks from memory block `blk` (its highest plugged ones
    /// first; the whole block, memmap included, once only the memmap's are left).
    fn sbm_shrink_block(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        blk: usize,
        excess: usize,
    ) -> Result<(), String> {
        let m = self.sbm.as_ref().expect("sub-block mode");
        let (s, meta) = (m.subs_per_block, m.meta);
        let id = m.added[blk];
        let first = blk * s;
        let bs = self.cfg.block_size;
        let hi = (first + meta..first + s).rev().find(|&i| mem.plugged(i));
        match (id, hi) {
            (Some(id), Some(hi)) => {
                let mut lo = hi;
                while lo > first + meta && mem.plugged(lo - 1) && hi - lo + 1 < excess {
                    lo -= 1;
                }
                let n = hi - lo + 1;
                let addr = self.sub_addr(lo);
                if mutant::on(Mutant::VmemUnplugBeforeOffline) {
                    let _ = request(dev, RequestType::Unplug, addr, n as u16);
                }
                self.sbm_online(mem, id, lo, n, false)
                    .map_err(|e| format!("{addr:#x}+{:#}: {e}", Size(n as u64 * bs)))?;
                mem.set_plugged(lo, n, false);
                if let Err(e) = request(dev, RequestType::Unplug, addr, n as u16) {
                    mem.set_plugged(lo, n, true);
                    let _ = self.sbm_online(mem, id, lo, n, true);
                    return Err(format!("unplugging {addr:#x}: {e}"));
                }
                Ok(())
            }
            (Some(_), None) => {
                let (addr, mb) = (self.sub_addr(first), self.geom.section_size());
                mem.offline_and_remove(addr, mb, self.below)
                    .map_err(|e| format!("{addr:#x}+{:#}: {e}", Size(mb)))?;
                if let Some(m) = self.sbm.as_mut() {
                    m.added[blk] = None;
                }
                self.sbm_unplug_stale(dev, mem, blk)
            }
            (None, _) => self.sbm_unplug_stale(dev, mem, blk),
        }
    }

    /// UNPLUG whatever is still plugged in a memory block that is not added.
    fn sbm_unplug_stale(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        blk: usize,
    ) -> Result<(), String> {
        let s = self.sbm.as_ref().map_or(1, |m| m.subs_per_block);
        let first = blk * s;
        let plugged: Vec<usize> = (first..first + s).filter(|&i| mem.plugged(i)).collect();
        let (Some(&lo), Some(&hi)) = (plugged.first(), plugged.last()) else {
            return Ok(());
        };
        let addr = self.sub_addr(lo);
        request(dev, RequestType::Unplug, addr, (hi - lo + 1) as u16)
            .map_err(|e| format!("unplugging {addr:#x}: {e}"))?;
        mem.set_plugged(lo, hi - lo + 1, false);
        Ok(())
    }

    /// Shrink candidates in sub-block mode: blocks not added but still plugged, then blocks
    /// wholly in MOVABLE, then the rest; highest address first within each.
    pub(super) fn sbm_shrink_order(&self, mem: &mut impl VmemMemory) -> Vec<usize> {
        let m = self.sbm.as_ref().expect("sub-block mode");
        let s = m.subs_per_block;
        let mut v: Vec<(u8, usize)> = Vec::new();
        for b in 0..m.added.len() {
            if !(b * s..(b + 1) * s).any(|i| mem.plugged(i)) {
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
