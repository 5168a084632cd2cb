//! Memory-block and big-block mode: a unit (one memory block, or one device block holding
//! several) is plugged, added and onlined, or offlined, removed and unplugged, as a whole.

use super::{request, RequestType, Unit, Vmem, VmemDevice, VmemError, VmemMemory};
use crate::size::Size;
use alloc::{format, string::String, vec::Vec};

impl Vmem {
    /// Move the plugged units toward `requested`; returns why it stopped short, if it did.
    /// One pass over the units each way: O(units) plus the units it changes.
    pub(super) fn units_resize(
        &mut self,
        dev: &mut impl VmemDevice,
        mem: &mut impl VmemMemory,
        requested: u64,
    ) -> Option<String> {
        let target = (requested / self.unit) as usize;
        let mut plugged = self.units_plugged();
        let mut why: Option<String> = None;
        if plugged < target {
            let usable = dev.usable_region_size();
            let mut next = 0;
            while plugged < target {
                let Some(i) = (next..self.units.len())
                    .find(|&i| self.units[i] == Unit::Unplugged && (i as u64 + 1) * self.unit <= usable)
                else {
                    why = Some(format!(
                        "no unplugged unit left in the usable region of {:#}",
                        Size(usable)
                    ));
                    break;
                };
                next = i + 1;
                if let Err(e) = self.grow_unit(dev, mem, i) {
                    why = Some(format!("plugging {:#x}+{:#}: {e}", self.unit_addr(i), Size(self.unit)));
                    break;
                }
                plugged += 1;
            }
        }
        if plugged > target {
            let order = self.shrink_order(mem);
            self.below = order
                .iter()
                .take(plugged - target)
                .map(|&i| self.unit_addr(i))
                .min()
                .unwrap_or(u64::MAX);
            let mut last: Option<String> = None;
            for i in order {
                if plugged <= target {
                    break;
                }
                match self.shrink_unit(dev, mem, i) {
                    Ok(()) => plugged -= 1,
                    Err(e) => last = Some(format!("{:#x}+{:#}: {e}", self.unit_addr(i), Size(self.unit))),
                }
            }
            self.below = u64::MAX;
            if plugged > target {
                why = Some(format!(
                    "memory busy: no plugged unit could be offlined and unplugged (last: {})",
                    last.unwrap_or_default()
                ));
            }
        }
        if why.is_none() && !requested.is_multiple_of(self.unit) {
            why = Some(format!(
                "requested size is not a multiple of the {:#} unit (device blocks smaller than a pageblock are plugged a memory block at a time)",
                Size(self.unit)
            ));
        }
        why
    }

    /// PLUG unit `i`, add its memory blocks to the group and online them per the policy.
    fn grow_unit(&mut self, dev: &mut impl VmemDevice, mem: &mut impl VmemMemory, i: usize) -> Result<(), VmemError> {
        let (addr, nb) = (self.unit_addr(i), self.unit_blocks());
        request(dev, RequestType::Plug, addr, nb)?;
        match mem.add(addr, self.unit) {
            Ok(blocks) => {
                self.units[i] = Unit::Added { blocks };
                Ok(())
            }
            Err(e) => {
                if request(dev, RequestType::Unplug, addr, nb).is_err() {
                    self.units[i] = Unit::PluggedRemoved;
                }
                Err(VmemError::Hotplug(e))
            }
        }
    }

    /// Offline + remove + UNPLUG unit `i`.
    fn shrink_unit(&mut self, dev: &mut impl VmemDevice, mem: &mut impl VmemMemory, i: usize) -> Result<(), VmemError> {
        let (addr, nb, unit) = (self.unit_addr(i), self.unit_blocks(), self.unit);
        if matches!(self.units[i], Unit::Added { .. }) {
            mem.offline_and_remove(addr, unit, self.below)
                .map_err(VmemError::Hotplug)?;
            self.units[i] = Unit::PluggedRemoved;
        }
        request(dev, RequestType::Unplug, addr, nb)?;
        self.units[i] = Unit::Unplugged;
        Ok(())
    }

    /// Shrink candidates: removed-but-plugged first, then units wholly in MOVABLE, then the
    /// rest; highest address first within each.
    pub(super) fn shrink_order(&self, mem: &mut impl VmemMemory) -> Vec<usize> {
        let mut v: Vec<(u8, usize)> = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            match u {
                Unit::Unplugged => {}
                Unit::PluggedRemoved => v.push((0, i)),
                Unit::Added { blocks } => {
                    let movable = blocks.iter().all(|&b| !mem.in_normal(b));
                    v.push((if movable { 1 } else { 2 }, i));
                }
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        v.into_iter().map(|(_, i)| i).collect()
    }
}
