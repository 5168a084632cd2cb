//! Planted bugs for the tests that must catch them ("a check counts only once it has been seen
//! to fail"). Each [`Mutant`] puts one known-wrong order back into the code at one site; the
//! test harness (`tests/tests/mutants.rs`) turns it on and asserts that the named check fails.
//!
//! The switch is compiled in only with the `mutants` feature (never in a release kernel: there
//! [`on`] is a constant `false` and every site folds away). With the feature, one build holds
//! every mutant and one is chosen at run time: on the host from the `HOTMEM_MUTANT`
//! environment variable, in the kernel from `mutant=NAME` on the command line ([`select`]).
//! So one test kernel per granule covers the whole table instead of one build per mutant.
//!
//! This registry lives in `arch`, the lowest crate, because sites sit in `arch` (TLBI planning),
//! `mm` (the engine, vmemmap, buddy, hotplug) and the kernel (migration).

/// The known-wrong orders, each named like its site's rule (docs/teardown.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mutant {
    /// `unisolate_range` clears every ISOLATED bit before merging.
    UnisolateEarlyClear = 1,
    /// A DIMM block may be onlined into another zone than the DIMM's other blocks.
    DimmZoneSplit,
    /// The shell's remove takes a DIMM's memory behind its driver.
    DimmRemoveBehindDriver,
    /// `Vmemmap::free` releases the memmap backing before unmapping it.
    FreeBeforeUnmap,
    /// An empty table page is freed after a last-level (VAALE1IS) flush only.
    LeafTlbiForTable,
    /// Unmap clears leaves but never invalidates them.
    NoLeafTlbi,
    /// Map makes entries valid without `DSB ISHST; ISB`.
    MissingMapBarrier,
    /// Every planned leaf TLBI is addressed one page too high.
    TlbiOffByOnePage,
    /// Per-leaf TLBIs are local (`VAALE1`) instead of broadcast (`VAALE1IS`).
    LocalTlbi,
    /// Migration through the movable window never maps the new frame.
    MigrateNoRemap,
    /// Migration clears the window PTE without a TLBI.
    MigrateNoTlbi,
    /// The O(1) "struct page initialised?" test answers yes everywhere, so the PFN walkers
    /// read deferred (never initialised) struct pages.
    DeferredWalkReadsUninit,
    /// Isolation walks block heads from the range's start only: a free block whose head lies
    /// below the range (or that reaches past its end) is not cut at the edge.
    IsolateHeadOnlyWalk,
    /// Memory removal leaves the deferred-memmap bits of the removed range set.
    RemoveLeavesDeferredBits,
    /// virtio-mem growth into an added memory block onlines the new device blocks before
    /// marking them plugged (the online filter then hands over nothing).
    VmemOnlineBeforePlugged,
    /// virtio-mem sends UNPLUG for device blocks before taking them offline.
    VmemUnplugBeforeOffline,
    /// A virtio-mem resize that stopped short is remembered as handled: never retried.
    VmemForgetStopped,
    /// A DIMM eject answers `_OST` success before the DIMM's memory is offline and removed.
    DimmOstBeforeRemove,
    /// A failed hot-add's rollback unmaps the memmap it populated but keeps the emptied
    /// page-table pages.
    RollbackLeaksTables,
    /// An exhausted altmap hands out memmap backing from the page allocator instead.
    AltmapFallsBack,
    /// A contiguous run of vmemmap base pages is mapped even where it reaches past the end of
    /// the range being populated.
    ContRunPastEnd,
    /// Hot-added memory's memmap is initialised at once after a (planted) failure to defer it:
    /// correct, but a fallback no test asked for.
    DeferMemmapFallsBack,
    /// A CPU whose access to the movable window faults on a page under migration does not
    /// wait for the migration: the fault is taken for a real one.
    WriterDoesNotWait,
    /// The hotplug cycle test counts a block's movable pages while holding the kernel page
    /// table's lock: `kernel_pt` then `handles`, the reverse of the movable window's order.
    LockInversion,
    /// The timer interrupt allocates from the heap, whose lock is not IRQ-safe.
    IrqAllocates,
    /// Isolation (hence offline) does not look at deferred chunks in flight: an offline
    /// completes over a chunk an idle CPU is initialising.
    HandoverNoInflight,
    /// Idle CPUs take deferred chunks whatever the hotplug window says.
    BusyWindowIgnored,
    /// The virtio-mem bottom half clears its latched config change after its pass instead of
    /// before it: a change that arrives during a resize is lost.
    IrqPendingClearedLate,
    /// Every CPU counts as node 0's: allocations ignore the calling CPU's node.
    NumaNodeIgnored,
    /// A DIMM's memory is added to node 0 whatever its proximity domain says.
    DimmNodeIgnored,
    /// Migration picks new frames in node 0's fallback order, not the page's node's.
    MigrateIgnoresNode,
    /// A migration batch's single invalidation covers only the batch's first block: the
    /// others are freed with their cleared window entries still cached.
    MigrateBatchFlushFirst,
    /// A block pushed onto a free list leaves the list's lower bound above it, so an
    /// allocation below a limit skips the list although the block qualifies.
    FreeListLowStale,
}

impl Mutant {
    pub const ALL: [Mutant; 33] = [
        Mutant::UnisolateEarlyClear,
        Mutant::DimmZoneSplit,
        Mutant::DimmRemoveBehindDriver,
        Mutant::FreeBeforeUnmap,
        Mutant::LeafTlbiForTable,
        Mutant::NoLeafTlbi,
        Mutant::MissingMapBarrier,
        Mutant::TlbiOffByOnePage,
        Mutant::LocalTlbi,
        Mutant::MigrateNoRemap,
        Mutant::MigrateNoTlbi,
        Mutant::DeferredWalkReadsUninit,
        Mutant::IsolateHeadOnlyWalk,
        Mutant::RemoveLeavesDeferredBits,
        Mutant::VmemOnlineBeforePlugged,
        Mutant::VmemUnplugBeforeOffline,
        Mutant::VmemForgetStopped,
        Mutant::DimmOstBeforeRemove,
        Mutant::RollbackLeaksTables,
        Mutant::AltmapFallsBack,
        Mutant::ContRunPastEnd,
        Mutant::DeferMemmapFallsBack,
        Mutant::WriterDoesNotWait,
        Mutant::LockInversion,
        Mutant::IrqAllocates,
        Mutant::HandoverNoInflight,
        Mutant::BusyWindowIgnored,
        Mutant::IrqPendingClearedLate,
        Mutant::NumaNodeIgnored,
        Mutant::DimmNodeIgnored,
        Mutant::MigrateIgnoresNode,
        Mutant::MigrateBatchFlushFirst,
        Mutant::FreeListLowStale,
    ];

    /// The name used by `mutant=` and `HOTMEM_MUTANT`.
    pub const fn name(self) -> &'static str {
        match self {
            Mutant::UnisolateEarlyClear => "unisolate-early-clear",
            Mutant::DimmZoneSplit => "dimm-zone-split",
            Mutant::DimmRemoveBehindDriver => "dimm-remove-behind-driver",
            Mutant::FreeBeforeUnmap => "free-before-unmap",
            Mutant::LeafTlbiForTable => "leaf-tlbi-for-table",
            Mutant::NoLeafTlbi => "no-leaf-tlbi",
            Mutant::MissingMapBarrier => "missing-map-barrier",
            Mutant::TlbiOffByOnePage => "tlbi-off-by-one-page",
            Mutant::LocalTlbi => "local-tlbi",
            Mutant::MigrateNoRemap => "migrate-no-remap",
            Mutant::MigrateNoTlbi => "migrate-no-tlbi",
            Mutant::DeferredWalkReadsUninit => "deferred-walk-reads-uninit",
            Mutant::IsolateHeadOnlyWalk => "isolate-head-only-walk",
            Mutant::RemoveLeavesDeferredBits => "remove-leaves-deferred-bits",
            Mutant::VmemOnlineBeforePlugged => "vmem-online-before-plugged",
            Mutant::VmemUnplugBeforeOffline => "vmem-unplug-before-offline",
            Mutant::VmemForgetStopped => "vmem-forget-stopped",
            Mutant::DimmOstBeforeRemove => "dimm-ost-before-remove",
            Mutant::RollbackLeaksTables => "rollback-leaks-tables",
            Mutant::AltmapFallsBack => "altmap-falls-back",
            Mutant::ContRunPastEnd => "cont-run-past-end",
            Mutant::DeferMemmapFallsBack => "defer-memmap-falls-back",
            Mutant::WriterDoesNotWait => "writer-does-not-wait",
            Mutant::LockInversion => "lock-inversion",
            Mutant::IrqAllocates => "irq-allocates",
            Mutant::HandoverNoInflight => "handover-no-inflight",
            Mutant::BusyWindowIgnored => "busy-window-ignored",
            Mutant::IrqPendingClearedLate => "irq-pending-cleared-late",
            Mutant::NumaNodeIgnored => "numa-node-ignored",
            Mutant::DimmNodeIgnored => "dimm-node-ignored",
            Mutant::MigrateIgnoresNode => "migrate-ignores-node",
            Mutant::MigrateBatchFlushFirst => "migrate-batch-flush-first",
            Mutant::FreeListLowStale => "free-list-low-stale",
        }
    }

    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Is the planted bug `m` on? Always `false` without the `mutants` feature.
#[inline(always)]
pub fn on(m: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        imp::active() == m as u8
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        false
    }
}

/// The kernel's `mutant=NAME`: turn one mutant on for the rest of the run. `Err` for a name
/// no mutant has, or in a build without the `mutants` feature (the caller says so and stops:
/// a mutant run that silently ran no mutant would pass for the wrong reason).
pub fn select(name: &str) -> Result<Mutant, SelectError> {
    let m = Mutant::from_name(name).ok_or(SelectError::Unknown)?;
    #[cfg(feature = "mutants")]
    {
        imp::set(m);
        Ok(m)
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        Err(SelectError::NotBuilt)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectError {
    /// No mutant has this name.
    Unknown,
    /// This build has no mutants (the `mutants` feature is off).
    NotBuilt,
}

#[cfg(feature = "mutants")]
mod imp {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// 0: not chosen yet (host: read `HOTMEM_MUTANT` on first use); `NONE`: no mutant;
    /// otherwise the `Mutant` discriminant.
    static ACTIVE: AtomicU8 = AtomicU8::new(0);
    const NONE: u8 = u8::MAX;

    pub(super) fn set(m: super::Mutant) {
        ACTIVE.store(m as u8, Ordering::Relaxed);
    }

    pub(super) fn active() -> u8 {
        match ACTIVE.load(Ordering::Relaxed) {
            0 => {
                let v = from_env();
                ACTIVE.store(v, Ordering::Relaxed);
                v
            }
            v => v,
        }
    }

    #[cfg(not(target_os = "none"))]
    fn from_env() -> u8 {
        extern crate std;
        match std::env::var("HOTMEM_MUTANT") {
            Err(_) => NONE,
            Ok(name) if name.is_empty() => NONE,
            // A misspelt name must not run the tests mutant-free and pass.
            Ok(name) => match super::Mutant::from_name(&name) {
                Some(m) => m as u8,
                None => panic!("HOTMEM_MUTANT={name}: no such mutant"),
            },
        }
    }

    #[cfg(target_os = "none")]
    fn from_env() -> u8 {
        NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for m in Mutant::ALL {
            assert_eq!(Mutant::from_name(m.name()), Some(m));
        }
        assert_eq!(Mutant::from_name("no-such"), None);
        let mut names: [&str; Mutant::ALL.len()] = Mutant::ALL.map(Mutant::name);
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]));
    }
}
