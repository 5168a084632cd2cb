//! `struct page`: 64 bytes of metadata per physical page, in the virtually contiguous memmap.
//!
//! The page allocator keeps its state here (free-list links, order, zone), which is what makes
//! the memmap real and offlining checkable: a block can go offline only when every one of its
//! `struct page`s says free.

/// Page flags (Linux `PG_*` where one exists).
pub mod flags {
    /// Not managed by the allocator (kernel image, DTB, firmware, holes).
    pub const RESERVED: u32 = 1 << 0;
    /// Head of a free block on a buddy free list (`order` is valid).
    pub const BUDDY: u32 = 1 << 1;
    /// Backs the memmap of its own memory block (memmap on memory): never given to the allocator.
    pub const VMEMMAP_SELF_HOSTED: u32 = 1 << 2;
    /// Belongs to an offline memory block.
    pub const OFFLINE: u32 = 1 << 3;
    /// In a range being offlined: the allocator must not hand it out; frees park it.
    pub const ISOLATED: u32 = 1 << 4;
    /// Allocated for a movable user (its data may be migrated by copy + remap).
    pub const MOVABLE: u32 = 1 << 5;
    /// Head of an allocated block (`order` is valid).
    pub const HEAD: u32 = 1 << 6;
    /// A page-table page.
    pub const PAGETABLE: u32 = 1 << 7;

    pub const NAMES: [(u32, &str); 8] = [
        (RESERVED, "reserved"),
        (BUDDY, "buddy"),
        (VMEMMAP_SELF_HOSTED, "vmemmap_self_hosted"),
        (OFFLINE, "offline"),
        (ISOLATED, "isolated"),
        (MOVABLE, "movable"),
        (HEAD, "head"),
        (PAGETABLE, "pagetable"),
    ];
}

/// [`flags::NAMES`] under a fixed symbol for debuggers: the GDB extension
/// (`qemu/gdb/hotmem_gdb`) decodes `struct page` flags with this table, read from the ELF, so
/// the names and bits are written down once, here. `#[used]` keeps it in the image although
/// nothing in the kernel reads it.
#[used]
#[no_mangle]
pub static HOTMEM_PAGE_FLAGS: [(u32, &str); flags::NAMES.len()] = flags::NAMES;

/// Whether this build poisons uninitialised struct pages and asserts on every read of one.
pub const POISON_CHECKS: bool = cfg!(any(test, feature = "poison"));

/// "No page" in a free-list link.
pub const NO_PFN: u64 = u64::MAX;

/// Zones (Linux names). Kernel allocations come from NORMAL only; MOVABLE holds only memory
/// whose users can be migrated, so its blocks can always be offlined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ZoneId {
    Normal = 0,
    Movable = 1,
}

impl ZoneId {
    pub const ALL: [ZoneId; 2] = [ZoneId::Normal, ZoneId::Movable];
    pub const fn name(self) -> &'static str {
        match self {
            ZoneId::Normal => "Normal",
            ZoneId::Movable => "Movable",
        }
    }
    pub const fn from_u8(v: u8) -> Option<ZoneId> {
        match v {
            0 => Some(ZoneId::Normal),
            1 => Some(ZoneId::Movable),
            _ => None,
        }
    }
}

/// One page's metadata. Exactly 64 bytes (asserted), so `pfn_to_page` is `vmemmap + 64 * pfn`
/// and a 4K page of memmap describes 64 pages.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub flags: u32,
    /// Buddy order of a free block head (`BUDDY`) or allocated block head (`HEAD`).
    pub order: u8,
    /// [`ZoneId`] as u8 (valid once the page is online).
    pub zone: u8,
    pub node: u8,
    pub _pad0: u8,
    pub refcount: u32,
    /// Memory block id, for reports.
    pub block: u32,
    /// Free-list links (PFNs, [`NO_PFN`] = none).
    pub next: u64,
    pub prev: u64,
    /// Owner data: for movable pages, the handle that maps them.
    pub private: u64,
    pub _reserved: [u64; 3],
}

const _: () = assert!(core::mem::size_of::<Page>() == 64);

impl Page {
    /// A page fresh out of memmap initialisation: reserved until onlined or freed.
    pub const INIT: Page = Page {
        flags: flags::RESERVED,
        order: 0,
        zone: 0,
        node: 0,
        _pad0: 0,
        refcount: 0,
        block: 0,
        next: NO_PFN,
        prev: NO_PFN,
        private: 0,
        _reserved: [0; 3],
    };

    /// What an uninitialised `struct page` holds in the test builds (feature `poison`, and
    /// cfg(test)): every byte 0xff, like Linux's `PAGE_POISON_PATTERN`. No initialised page
    /// has all flag bits set, so [`is_poison`](Self::is_poison) needs only the flags word.
    pub const POISON: Page = Page {
        flags: u32::MAX,
        order: u8::MAX,
        zone: u8::MAX,
        node: u8::MAX,
        _pad0: u8::MAX,
        refcount: u32::MAX,
        block: u32::MAX,
        next: u64::MAX,
        prev: u64::MAX,
        private: u64::MAX,
        _reserved: [u64::MAX; 3],
    };

    /// Whether this page still holds [`Page::POISON`] (was never initialised).
    pub const fn is_poison(&self) -> bool {
        self.flags == u32::MAX
    }

    pub const fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    pub fn zone_id(&self) -> Option<ZoneId> {
        ZoneId::from_u8(self.zone)
    }
}

/// Access to `struct page`s by PFN.
///
/// # Safety
/// Implementations promise that `page(pfn)` returns a pointer to a live, writable, 64-byte
/// aligned `Page` for every `pfn` for which `valid(pfn)` is true, and that distinct PFNs give
/// distinct pages. Callers serialise access (the allocator's lock).
///
/// Every read and write of a `struct page` goes through the provided methods below
/// ([`Memmap::read`], [`Memmap::page_mut`], [`Memmap::init_pages`]), never through `page`.
pub unsafe trait Memmap {
    fn page(&self, pfn: u64) -> *mut Page;
    /// Whether `pfn` has a populated memmap (Linux `pfn_valid`).
    fn valid(&self, pfn: u64) -> bool;

    /// Copy of the `struct page` of `pfn`, if it has a memmap.
    fn read(&self, pfn: u64) -> Option<Page> {
        // SAFETY: `valid` checked, so `page` is live and aligned (the trait's contract); the
        // caller serialises access, so no writer runs concurrently.
        self.valid(pfn).then(|| unsafe { self.page(pfn).read() })
    }

    /// The `struct page` of `pfn`, for writing.
    ///
    /// # Safety
    /// `valid(pfn)` holds, and no other reference to this `struct page` exists while the
    /// returned one lives (the caller holds the allocator exclusively).
    #[allow(clippy::mut_from_ref)]
    unsafe fn page_mut(&self, pfn: u64) -> &mut Page {
        // SAFETY: live and aligned by the trait's contract for a valid PFN; exclusive by the
        // caller's.
        unsafe { &mut *self.page(pfn) }
    }

    /// Writes `page` to every `struct page` of `[pfn, pfn + n)` (memmap initialisation, before
    /// the PFNs become valid).
    ///
    /// # Safety
    /// The memmap of `[pfn, pfn + n)` is populated (mapped writable at `page(pfn)` onwards), and
    /// nothing else reads or writes those `struct page`s during the call.
    unsafe fn init_pages(&self, pfn: u64, n: u64, page: Page) {
        let first = self.page(pfn);
        for i in 0..n as usize {
            // SAFETY: `first + i` stays inside the populated memmap of the range (the caller's
            // contract), so the offset is within one mapped object.
            let p = unsafe { first.add(i) };
            // SAFETY: a live, aligned `struct page` of the range, exclusive (the caller's contract).
            unsafe { p.write(page) };
        }
    }
}

/// The memmap as it lives in the vmemmap region: `page(pfn) = base + 64 * pfn`.
#[derive(Clone, Copy, Debug)]
pub struct Vmemmap {
    pub base: u64,
}

impl Vmemmap {
    pub const fn pfn_to_page(&self, pfn: u64) -> u64 {
        self.base + pfn * 64
    }
    pub const fn page_to_pfn(&self, va: u64) -> u64 {
        (va - self.base) / 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pfn_page_round_trip() {
        let v = Vmemmap {
            base: 0xffff_8000_0000_0000,
        };
        for pfn in [0, 1, 12345, 1 << 30] {
            assert_eq!(v.page_to_pfn(v.pfn_to_page(pfn)), pfn);
        }
        assert_eq!(core::mem::align_of::<Page>(), 64);
    }
}
