//! Boot page tables, built with the MMU off while executing at the load (physical) address.
//!
//! Only position-independent code may run here: no formatting, no panics that can trigger, no
//! statics holding pointers (they contain link-time VAs). Linker symbols and statics are
//! reached PC-relative, so taking their address yields their *physical* address now.
//!
//! Maps, in a pool of page-table pages inside the image's bss:
//! - TTBR1: the kernel image at its link address with W^X (text RX, rodata R, data/bss RW),
//!   and the DTB read-only at `FDT_VADDR`;
//! - TTBR0: the image identity-mapped RX, used only for the instructions that turn the MMU on.

use crate::boot::layout::{FDT_MAPPED, FDT_VADDR, G, KIMAGE_VADDR, KIMAGE_VOFFSET, PAGE_SIZE};
use arch::boot::{BootMmu, BOOT_MMU_PA_SLOT, RAM_BASE};
use arch::descriptor::{Attrs, MemType, Perm};
use core::sync::atomic::Ordering;
use mm::pgtable::{MapFlags, PageTable, PhysAddr, TableAlloc};

/// Bytes of the early page-table pool (bss): the boot tables (image, DTB, identity map), the
/// first piece of the linear map and the UART's ioremap. Every table of the linear map beyond
/// its first GiB comes from memblock, out of RAM the linear map already covers (see
/// `kernel_pt::map_linear`), so the supply of tables grows with the memory map.
const POOL_BYTES: usize = 1 << 20;

/// Page-table pages in the pool: 256 on 4K, 64 on 16K, 16 on 64K.
/// Exit status when the CPU lacks the configured granule (one of the kernel's exit statuses,
/// `kernel::exit::ExitStatus::UnsupportedGranule`, which checks it; the MMU-off code cannot
/// import the kernel).
pub const UNSUPPORTED_GRANULE_STATUS: u32 = 3;

pub const POOL_TABLES: usize = POOL_BYTES >> crate::boot::layout::PAGE_SHIFT;

#[repr(C, align(65536))]
pub struct Pool(pub [u8; POOL_BYTES]);

/// Backing store of the early pool (bss), aligned for every granule.
#[no_mangle]
pub static mut EARLY_POOL: Pool = Pool([0; POOL_BYTES]);

pub static EARLY_POOL_USED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Physical address of the pool (computed once at early boot).
pub static EARLY_POOL_PA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

static mut BOOT_MMU: BootMmu = BootMmu {
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    ttbr1: 0,
    sctlr: 0,
};

/// Table allocator over the pool, MMU off: table PA == pointer.
struct PhysPool;

// SAFETY: with the MMU off a PA is the pointer; `pool_alloc` hands out each page of the
// zero-initialised (bss), page-aligned `EARLY_POOL` once, and only the page-table engine
// reaches those pages. Pool pages are never freed here (nothing is unmapped before the MMU is on).
unsafe impl TableAlloc for PhysPool {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        pool_alloc()
    }
    fn free_table(&mut self, _pa: PhysAddr) {}
    fn table_ptr(&self, pa: PhysAddr) -> *mut u64 {
        pa as *mut u64
    }
}

/// Take one zeroed page from the pool (the pool is zero: it is bss).
pub fn pool_alloc() -> Option<PhysAddr> {
    let used = EARLY_POOL_USED.load(Ordering::Relaxed);
    if used >= POOL_TABLES {
        return None;
    }
    EARLY_POOL_USED.store(used + 1, Ordering::Relaxed);
    Some(EARLY_POOL_PA.load(Ordering::Relaxed) + (used as u64) * PAGE_SIZE)
}

extern "C" {
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// Raw output to QEMU virt's PL011 at its physical address, for the one message that can be
/// printed before the MMU is on (refusing an unsupported granule).
fn early_puts(s: &[u8]) {
    const UART_DR: *mut u32 = 0x0900_0000 as *mut u32;
    for &b in s {
        // SAFETY: the PL011 data register of QEMU virt; MMU off, so this is a device access.
        unsafe { core::ptr::write_volatile(UART_DR, b as u32) };
    }
}

fn early_put_hex_digit(v: u64) {
    let d = (v & 0xf) as u8;
    early_puts(&[if d < 10 { b'0' + d } else { b'a' + d - 10 }]);
}

/// Entry from the boot assembly (MMU off, at the load address). Returns the PA of the
/// `BootMmu` to load, or 0 after printing why the boot cannot continue.
#[no_mangle]
pub extern "C" fn __hotmem_early_map(phys_start: u64, dtb: u64, entry_el: u64) -> u64 {
    ENTRY_EL.store(entry_el, Ordering::Relaxed);
    let mmfr0 = arch::cpu::id_aa64mmfr0();
    if !arch::cpu::granule_supported(mmfr0, G.page_shift) {
        let (field, value) = arch::cpu::tgran_field(mmfr0, G.page_shift);
        early_puts(b"hotmem: FATAL granule=");
        early_puts(G.granule_name().as_bytes());
        early_puts(b" is not supported by this CPU (ID_AA64MMFR0_EL1.");
        early_puts(field.as_bytes());
        early_puts(b"=0x");
        early_put_hex_digit(value);
        early_puts(b"); use a CPU that implements it, e.g. -cpu max,lpa2=off or cortex-a76\r\n");
        arch::cpu::semihosting_exit(UNSUPPORTED_GRANULE_STATUS);
    }

    let voffset = KIMAGE_VADDR.wrapping_sub(phys_start);
    KIMAGE_VOFFSET.store(voffset, Ordering::Relaxed);
    EARLY_POOL_PA.store(core::ptr::addr_of!(EARLY_POOL) as u64, Ordering::Relaxed);
    let text_end = core::ptr::addr_of!(__text_end) as u64;
    let rodata_end = core::ptr::addr_of!(__rodata_end) as u64;
    let image_end = core::ptr::addr_of!(__image_end) as u64;

    let mut pool = PhysPool;
    let Ok(mut ttbr1) = PageTable::<crate::config::Cfg>::new(&mut pool) else {
        return 0;
    };
    let Ok(mut ttbr0) = PageTable::<crate::config::Cfg>::new(&mut pool) else {
        return 0;
    };
    let pages = MapFlags {
        block: false,
        cont: true,
    };
    let normal = |perm| Attrs {
        mem: MemType::Normal,
        perm,
    };
    let regions = [
        (phys_start, text_end, Perm::ReadExec),
        (text_end, rodata_end, Perm::ReadOnly),
        (rodata_end, image_end, Perm::ReadWrite),
    ];
    for (start, end, perm) in regions {
        if ttbr1
            .map(&mut pool, start + voffset, start, end - start, normal(perm), pages)
            .is_err()
        {
            return 0;
        }
    }
    if ttbr0
        .map(
            &mut pool,
            phys_start,
            phys_start,
            image_end - phys_start,
            normal(Perm::ReadExec),
            pages,
        )
        .is_err()
    {
        return 0;
    }

    // The DTB: given in x0 (Image protocol) or at the base of RAM (ELF and firmware boots).
    let dtb = if dtb == 0 { RAM_BASE } else { dtb };
    let dtb_base = dtb & !(PAGE_SIZE - 1);
    let dtb_end = (dtb + FDT_MAPPED + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    if ttbr1
        .map(
            &mut pool,
            FDT_VADDR,
            dtb_base,
            dtb_end - dtb_base,
            normal(Perm::ReadOnly),
            pages,
        )
        .is_err()
    {
        return 0;
    }
    DTB_PA.store(dtb, Ordering::Relaxed);

    let boot = BootMmu {
        mair: arch::mmu::mair(),
        tcr: arch::mmu::tcr(G.page_shift, G.va_bits, arch::cpu::pa_range()),
        ttbr0: ttbr0.root(),
        ttbr1: ttbr1.root(),
        sctlr: arch::mmu::sctlr_mmu_on(),
    };
    let slot = core::ptr::addr_of_mut!(BOOT_MMU);
    // SAFETY: single-threaded early boot; nothing else references BOOT_MMU yet.
    unsafe { slot.write(boot) };
    BOOT_MMU_PA_SLOT.store(slot as u64, Ordering::Relaxed);
    slot as u64
}

/// Exception level the boot CPU entered at (2 when QEMU runs with virtualization=on).
pub static ENTRY_EL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Physical address of the DTB found at early boot.
pub static DTB_PA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The boot MMU registers (read after the MMU is on, e.g. for secondaries and `meminfo`).
pub fn boot_mmu() -> BootMmu {
    let p = core::ptr::addr_of!(BOOT_MMU);
    // SAFETY: written once during early boot before any reader exists.
    unsafe { p.read() }
}
