//! The sparse memory model: physical memory in sections (= memory blocks) of
//! `Geometry::section_size()`, each with state bits, and `pfn_valid` by section.

use crate::geometry::Geometry;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

/// Section state bits (Linux `SECTION_*`).
pub mod state {
    /// The section has memory (boot RAM or hot-added).
    pub const PRESENT: u8 = 1 << 0;
    /// Its memmap is populated: `pfn_valid` is true for its PFNs.
    pub const HAS_MEMMAP: u8 = 1 << 1;
    /// Its memory block is online.
    pub const ONLINE: u8 = 1 << 2;
    /// Boot memory: can never be offlined or removed.
    pub const EARLY: u8 = 1 << 3;
    /// Its memmap lives in its own memory (altmap / memmap on memory).
    pub const SELF_HOSTED: u8 = 1 << 4;

    pub const NAMES: [(u8, &str); 5] = [
        (PRESENT, "present"),
        (HAS_MEMMAP, "memmap"),
        (ONLINE, "online"),
        (EARLY, "early"),
        (SELF_HOSTED, "self-hosted"),
    ];
}

/// Highest physical address the model covers (4 TiB), unless the linear map is smaller: room
/// for a 1 TiB hot-add above QEMU virt's RAM (which starts at 1 GiB) at a cost of one state
/// byte per section (32 Ki sections on 4K, 8 Ki on 64K).
pub const MAX_PHYSMEM_BITS: u32 = 42;

/// Section states for every section below the maximum physical address. States are atomics so
/// `pfn_valid` needs no lock; transitions are serialised by the hotplug lock.
pub struct Sparse {
    geom: Geometry,
    sections: Vec<AtomicU8>,
}

impl Sparse {
    /// Sections covering `[0, max_pa)`.
    pub fn new(geom: Geometry, max_pa: u64) -> Self {
        let n = max_pa.div_ceil(geom.section_size()) as usize;
        Sparse {
            geom,
            sections: (0..n).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    pub fn nr_sections(&self) -> usize {
        self.sections.len()
    }

    /// Physical addresses below this are covered.
    pub fn max_pa(&self) -> u64 {
        self.sections.len() as u64 * self.geom.section_size()
    }

    pub fn pfn_to_section_nr(&self, pfn: u64) -> usize {
        (pfn >> (self.geom.section_shift() - self.geom.page_shift)) as usize
    }

    pub fn section_nr_to_pfn(&self, nr: usize) -> u64 {
        (nr as u64) << (self.geom.section_shift() - self.geom.page_shift)
    }

    pub fn state(&self, nr: usize) -> u8 {
        self.sections.get(nr).map_or(0, |s| s.load(Ordering::Acquire))
    }

    pub fn set(&self, nr: usize, bits: u8) {
        if let Some(s) = self.sections.get(nr) {
            s.fetch_or(bits, Ordering::AcqRel);
        }
    }

    pub fn clear(&self, nr: usize, bits: u8) {
        if let Some(s) = self.sections.get(nr) {
            s.fetch_and(!bits, Ordering::AcqRel);
        }
    }

    /// Linux `pfn_valid`: the PFN's section has a populated memmap.
    pub fn pfn_valid(&self, pfn: u64) -> bool {
        self.state(self.pfn_to_section_nr(pfn)) & state::HAS_MEMMAP != 0
    }

    /// Numbers of the sections overlapping `[pa, pa + size)`.
    pub fn sections_of(&self, pa: u64, size: u64) -> core::ops::Range<usize> {
        if size == 0 {
            return 0..0;
        }
        let s = (pa >> self.geom.section_shift()) as usize;
        let e = ((pa + size - 1) >> self.geom.section_shift()) as usize + 1;
        s.min(self.sections.len())..e.min(self.sections.len())
    }

    /// Sections with any of `bits` set.
    pub fn iter_with(&self, bits: u8) -> impl Iterator<Item = (usize, u8)> + '_ {
        self.sections
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.load(Ordering::Acquire)))
            .filter(move |(_, s)| s & bits != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_arithmetic_all_granules() {
        for g in Geometry::MATRIX {
            let s = Sparse::new(g, 1 << 36);
            assert_eq!(s.nr_sections() as u64, (1u64 << 36) / g.section_size());
            let pfn = (5 * g.section_size() + 1234 * g.page_size()) >> g.page_shift;
            assert_eq!(s.pfn_to_section_nr(pfn), 5);
            assert_eq!(s.section_nr_to_pfn(5), 5 * g.pages_per_section());
            assert!(!s.pfn_valid(pfn));
            s.set(5, state::PRESENT | state::HAS_MEMMAP);
            assert!(s.pfn_valid(pfn) && !s.pfn_valid(pfn + g.pages_per_section()));
            s.clear(5, state::HAS_MEMMAP);
            assert!(!s.pfn_valid(pfn));
            assert_eq!(s.sections_of(g.section_size() - 1, 2), 0..2);
            assert_eq!(s.sections_of(0, g.section_size()), 0..1);
            // Out-of-range queries are harmless.
            assert!(!s.pfn_valid(u64::MAX >> 20));
        }
    }
}
