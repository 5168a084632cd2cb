//! The barrier that publishes new kernel mappings.
//!
//! After a descriptor is made valid, the architecture requires `DSB ISHST` (the store reaches
//! the inner-shareable domain, so every table walker sees it) and `ISB` (this CPU drops any
//! translation-fault result an earlier, speculative walk may have produced) before the new
//! mapping is used; otherwise a real core (or KVM) may take a spurious translation fault on
//! the first access. Linux issues it in `set_pte`/`set_pmd` (`emit_pte_barriers`). TCG never
//! shows the problem, so on the host every call is recorded and tests assert it happened.
//!
//! The page-table engine (`mm::pgtable::PageTable::map`) calls [`publish_new_mappings`] at the
//! end of every commit, so no caller can forget it.

/// `DSB ISHST; ISB`: make descriptors written so far visible to all table walkers and
/// resynchronise this CPU's context. Safe to call with the MMU off.
#[cfg(target_os = "none")]
#[inline(always)]
pub fn publish_new_mappings() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: barriers only; no memory is accessed.
    unsafe {
        core::arch::asm!("dsb ishst", "isb", options(nostack, preserves_flags))
    };
}

/// Host build: counts the barriers issued on this thread (see [`host::published`]).
#[cfg(not(target_os = "none"))]
pub fn publish_new_mappings() {
    host::PUBLISHED.with(|c| c.set(c.get() + 1));
}

/// Host-side record of the barriers (tests only; not built for the kernel).
#[cfg(not(target_os = "none"))]
pub mod host {
    extern crate std;
    use std::cell::Cell;
    std::thread_local! {
        pub(super) static PUBLISHED: Cell<u64> = const { Cell::new(0) };
    }
    /// `DSB ISHST; ISB` barriers issued by this thread so far.
    pub fn published() -> u64 {
        PUBLISHED.with(|c| c.get())
    }
}
