//! Translation geometry of one build configuration: granule (page size) and VA size.
//!
//! Level numbering follows the architecture: the last level is 3 (PTE); a configuration with
//! `n` levels starts its walk at level `4 - n`. Linux names: level 0 = PGD/P4D, 1 = PUD,
//! 2 = PMD, 3 = PTE. A level below the start level is *folded* and does not exist.

/// Page size and VA width of one configuration. All methods are `const` so a configuration
/// chosen at build time folds to constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// log2 of the granule: 12 (4K), 14 (16K) or 16 (64K).
    pub page_shift: u32,
    /// Width of the TTBR1 (and TTBR0) virtual address space.
    pub va_bits: u32,
}

impl Geometry {
    pub const fn new(page_shift: u32, va_bits: u32) -> Self {
        assert!(page_shift == 12 || page_shift == 14 || page_shift == 16);
        assert!(va_bits >= 36 && va_bits <= 48);
        Geometry { page_shift, va_bits }
    }

    /// The configuration a granule gets when no VA size is asked for: 48 bits for 4K and 64K,
    /// 47 for 16K (Linux's defaults; 16K/48 needs a 2-entry level-0 table).
    pub const fn default_for(page_shift: u32) -> Self {
        Geometry::new(page_shift, if page_shift == 14 { 47 } else { 48 })
    }

    pub const fn page_size(&self) -> u64 {
        1 << self.page_shift
    }

    /// VA bits resolved by one table level (8-byte descriptors).
    pub const fn bits_per_level(&self) -> u32 {
        self.page_shift - 3
    }

    /// Number of translation levels (Linux `ARM64_HW_PGTABLE_LEVELS`).
    pub const fn levels(&self) -> u32 {
        (self.va_bits - 4) / (self.page_shift - 3)
    }

    /// First level of a walk (the PGD level of this configuration).
    pub const fn start_level(&self) -> u32 {
        4 - self.levels()
    }

    /// True when `level` exists in this configuration.
    pub const fn has_level(&self, level: u32) -> bool {
        level >= self.start_level() && level <= 3
    }

    /// log2 of the size one entry at `level` maps (Linux `ARM64_HW_PGTABLE_LEVEL_SHIFT`).
    pub const fn level_shift(&self, level: u32) -> u32 {
        (self.page_shift - 3) * (4 - level) + 3
    }

    pub const fn level_size(&self, level: u32) -> u64 {
        1 << self.level_shift(level)
    }

    /// Entries in a table at `level`; the start level may be a partial table (e.g. 2 entries
    /// for 16K/48-bit, 64 for 64K/48-bit).
    pub const fn entries(&self, level: u32) -> usize {
        if level == self.start_level() {
            1 << (self.va_bits - self.level_shift(level))
        } else {
            1 << self.bits_per_level()
        }
    }

    /// Index of `va` in the table at `level`.
    pub const fn index(&self, va: u64, level: u32) -> usize {
        ((va >> self.level_shift(level)) as usize) & (self.entries(level) - 1)
    }

    /// Whether a block (leaf at a non-last level) is architecturally allowed at `level`
    /// without FEAT_LPA/LPA2: 4K at levels 1 and 2, 16K and 64K at level 2 only.
    pub const fn block_allowed(&self, level: u32) -> bool {
        if !self.has_level(level) {
            return false;
        }
        matches!((self.page_shift, level), (12, 1) | (_, 2))
    }

    /// log2 of the number of entries that form one contiguous-hint run at `level`
    /// (CONT_PTE / CONT_PMD), or `None` where the hint is not used.
    pub const fn cont_shift(&self, level: u32) -> Option<u32> {
        match (self.page_shift, level) {
            (12, 3) => Some(4), // 16 x 4K = 64 KiB
            (12, 2) => Some(4), // 16 x 2M = 32 MiB
            (14, 3) => Some(7), // 128 x 16K = 2 MiB
            (14, 2) => Some(5), // 32 x 32M = 1 GiB
            (16, 3) => Some(5), // 32 x 64K = 2 MiB
            (16, 2) => Some(5), // 32 x 512M = 16 GiB
            _ => None,
        }
    }

    /// Bytes covered by one contiguous run at `level`.
    pub const fn cont_size(&self, level: u32) -> Option<u64> {
        match self.cont_shift(level) {
            Some(s) => Some(1 << (self.level_shift(level) + s)),
            None => None,
        }
    }

    /// PMD (level 2) block size: 2 MiB / 32 MiB / 512 MiB.
    pub const fn pmd_size(&self) -> u64 {
        self.level_size(2)
    }

    /// Lowest address of the TTBR1 (kernel) half: `0xffff...` with `va_bits` free bits.
    pub const fn ttbr1_base(&self) -> u64 {
        !0u64 << self.va_bits
    }

    /// T0SZ/T1SZ field value for TCR_EL1.
    pub const fn tsz(&self) -> u64 {
        64 - self.va_bits as u64
    }

    /// log2 of the sparse section (= memory block) size: 27 (128 MiB) for 4K and 16K, 29
    /// (512 MiB) for 64K, as Linux arm64 (`SECTION_SIZE_BITS`). On 4K this makes one section's
    /// memmap exactly one PMD block (2 MiB); on 64K it is the smallest section that holds a
    /// MAX_PAGE_ORDER block.
    pub const fn section_shift(&self) -> u32 {
        if self.page_shift == 16 {
            29
        } else {
            27
        }
    }

    pub const fn section_size(&self) -> u64 {
        1 << self.section_shift()
    }

    pub const fn pages_per_section(&self) -> u64 {
        1 << (self.section_shift() - self.page_shift)
    }

    /// Largest buddy order (inclusive, Linux `MAX_PAGE_ORDER`): 4 MiB / 32 MiB / 512 MiB blocks.
    pub const fn max_order(&self) -> u32 {
        match self.page_shift {
            12 => 10,
            14 => 11,
            _ => 13,
        }
    }

    /// Bytes of memmap (64-byte `struct page`) per section: 2 MiB / 512 KiB / 512 KiB.
    pub const fn memmap_per_section(&self) -> u64 {
        self.pages_per_section() * 64
    }

    /// Pages of self-hosted memmap per memory block (memmap on memory): 512 / 32 / 8.
    pub const fn memmap_pages_per_block(&self) -> u64 {
        self.memmap_per_section() >> self.page_shift
    }

    /// log2 of the pageblock (isolation unit) in pages: 9 (2 MiB) / 5 (512 KiB) / 3 (512 KiB).
    ///
    /// Chosen so that a block's self-hosted memmap is exactly one pageblock: the first onlined
    /// PFN after it is then pageblock-aligned in every granule, which is what lets memmap on
    /// memory work on 16K and 64K (Linux's 32 MiB / 512 MiB pageblocks make it impossible).
    pub const fn pageblock_order(&self) -> u32 {
        self.memmap_pages_per_block().trailing_zeros()
    }

    /// Short name used in logs, features and file names, e.g. `16k-47`.
    pub const fn granule_name(&self) -> &'static str {
        match self.page_shift {
            12 => "4k",
            14 => "16k",
            _ => "64k",
        }
    }
}

/// A build configuration as a type, so code generic over it folds to constants.
pub trait Config: 'static {
    const GEOM: Geometry;
}

/// Declares a zero-sized configuration type.
#[macro_export]
macro_rules! config {
    ($name:ident, $shift:expr, $va:expr) => {
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;
        impl $crate::geometry::Config for $name {
            const GEOM: $crate::geometry::Geometry = $crate::geometry::Geometry::new($shift, $va);
        }
    };
}

/// The build matrix, written once: every granule/VA configuration the kernel builds as
/// `test-module type page_shift va_bits;`. `config_matrix!(@with (callback) extra...)` calls
/// `callback! { [extra...] cfg_4k_39 Cfg4K39 12 39; ... }`. The `Cfg*` types,
/// [`Geometry::MATRIX`] and [`matrix_tests!`] come from it; the host runner, the bench and
/// the QEMU suites read [`Geometry::MATRIX`] and [`Geometry::default_for`].
#[macro_export]
macro_rules! config_matrix {
    (@with ($($callback:tt)*) $($extra:tt)*) => {
        $($callback)*! { [$($extra)*]
            cfg_4k_39 Cfg4K39 12 39;
            cfg_4k_48 Cfg4K48 12 48;
            cfg_16k_36 Cfg16K36 14 36;
            cfg_16k_47 Cfg16K47 14 47;
            cfg_16k_48 Cfg16K48 14 48;
            cfg_64k_42 Cfg64K42 16 42;
            cfg_64k_48 Cfg64K48 16 48;
        }
    };
}

macro_rules! declare_matrix {
    ([] $($module:ident $name:ident $shift:literal $va:literal;)*) => {
        $(config!($name, $shift, $va);)*
        impl Geometry {
            /// Every configuration of the build matrix ([`config_matrix!`]), in order.
            pub const MATRIX: [Geometry; [$($va),*].len()] = [$(Geometry::new($shift, $va)),*];
        }
    };
}

config_matrix!(@with (declare_matrix));

/// `mm::matrix_tests!(test_a, test_b);` → for each configuration of the build matrix a module
/// (`cfg_4k_39`, ...) with one `#[test]` per generic `fn test_x<C: Config>()` of the caller.
#[macro_export]
macro_rules! matrix_tests {
    ([@expand $tests:tt] $($module:ident $name:ident $shift:literal $va:literal;)*) => {
        $($crate::matrix_tests!(@module $module $name $tests);)*
    };
    (@module $module:ident $name:ident [$($test:ident),*]) => {
        mod $module {
            $( #[test] fn $test() { super::$test::<$crate::geometry::$name>(); } )*
        }
    };
    ($($test:ident),* $(,)?) => {
        $crate::config_matrix!(@with ($crate::matrix_tests) @expand [$($test),*]);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_design_table() {
        let want = [
            (12, 39, 3),
            (12, 48, 4),
            (14, 36, 2),
            (14, 47, 3),
            (14, 48, 4),
            (16, 42, 2),
            (16, 48, 3),
        ];
        let got: Vec<_> = Geometry::MATRIX
            .iter()
            .map(|g| (g.page_shift, g.va_bits, g.levels()))
            .collect();
        assert_eq!(got, want);
        // Each granule's default is in the matrix, and the config types are its entries.
        for shift in [12, 14, 16] {
            assert!(Geometry::MATRIX.contains(&Geometry::default_for(shift)));
        }
        assert_eq!(
            [Cfg4K39::GEOM, Cfg16K47::GEOM, Cfg64K48::GEOM],
            [Geometry::MATRIX[0], Geometry::MATRIX[3], Geometry::MATRIX[6]]
        );
    }

    #[test]
    fn top_table_sizes() {
        assert_eq!(Geometry::new(14, 48).entries(0), 2);
        assert_eq!(Geometry::new(16, 48).entries(1), 64);
        assert_eq!(Geometry::new(16, 42).entries(2), 8192);
        assert_eq!(Geometry::new(12, 39).entries(1), 512);
        // Every configuration resolves exactly va_bits bits.
        for g in Geometry::MATRIX {
            let mut bits = g.page_shift;
            for l in g.start_level()..=3 {
                bits += g.entries(l).trailing_zeros();
            }
            assert_eq!(bits, g.va_bits, "{g:?}");
        }
    }

    #[test]
    fn sparse_invariants() {
        for g in Geometry::MATRIX {
            // A MAX_PAGE_ORDER block never spans two sections (docs/design.md#sparse-model-and-memmap).
            assert!(g.max_order() + g.page_shift <= g.section_shift(), "{g:?}");
            assert_eq!(g.memmap_per_section() % g.page_size(), 0, "{g:?}");
        }
        assert_eq!(Geometry::new(12, 48).memmap_per_section(), 2 << 20);
        assert_eq!(Geometry::new(14, 47).memmap_per_section(), 512 << 10);
        assert_eq!(Geometry::new(16, 48).memmap_per_section(), 512 << 10);
        assert_eq!(Geometry::new(16, 48).section_size(), 512 << 20);
        let orders: [u32; 3] = [
            Geometry::new(12, 48).pageblock_order(),
            Geometry::new(14, 47).pageblock_order(),
            Geometry::new(16, 48).pageblock_order(),
        ];
        assert_eq!(orders, [9, 5, 3]);
        for g in Geometry::MATRIX {
            assert!(g.pageblock_order() <= g.max_order());
            assert_eq!(1 << g.pageblock_order(), g.memmap_pages_per_block());
        }
    }

    #[test]
    fn block_and_cont_sizes() {
        assert_eq!(Geometry::new(12, 48).pmd_size(), 2 << 20);
        assert_eq!(Geometry::new(14, 47).pmd_size(), 32 << 20);
        assert_eq!(Geometry::new(16, 48).pmd_size(), 512 << 20);
        assert_eq!(Geometry::new(12, 48).cont_size(3), Some(64 << 10));
        assert_eq!(Geometry::new(14, 47).cont_size(3), Some(2 << 20));
        assert_eq!(Geometry::new(16, 42).cont_size(3), Some(2 << 20));
        assert!(Geometry::new(12, 39).block_allowed(1));
        assert!(!Geometry::new(14, 48).block_allowed(1));
        assert!(!Geometry::new(16, 42).block_allowed(1)); // folded
    }
}
