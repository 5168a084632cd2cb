//! The hotplug window of background completion: while a hotplug operation runs, and for one
//! timer tick after it, idle CPUs take no deferred chunks (they would compete with the
//! operation for the allocator lock and, under TCG, for the host's cores). The kernel keeps one
//! counter value, "background after", in an atomic: an operation's start sets it to `u64::MAX`,
//! its end to one tick after the end; an idle CPU compares the counter's value with it before
//! taking a chunk. The pure steps live here so the kernel and the host model share them.

/// The "background after" value to publish when a hotplug operation starts (`busy`) or ends at
/// counter value `now`, `tick` counter periods being one timer tick.
pub const fn background_after(busy: bool, now: u64, tick: u64) -> u64 {
    if busy {
        u64::MAX
    } else {
        now.saturating_add(tick)
    }
}

/// Whether an idle CPU may take deferred chunks at counter value `now`, given the published
/// "background after" value.
pub fn idle_may_take(now: u64, after: u64) -> bool {
    now >= after || arch::mutant::on(arch::mutant::Mutant::BusyWindowIgnored)
}
