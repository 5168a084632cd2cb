//! The deferred struct-page init chunk hand-over between an idle CPU, an allocation and an
//! offline, over the real `PageAlloc` behind a model mutex (the allocator lock).

use std::sync::Arc;

use mm::buddy::{deferred_init_step, wait_for_chunks, AllocKind, BuddyError, PageAlloc};
use mm::geometry::Geometry;
use mm::migrate::{offline_pages, Handles, OfflineError};
use mm::page::ZoneId;
use mm::testing::SharedMemmap;
use shuttle::sync::Mutex;
use shuttle::thread;

/// 16K granule: a memory block of 8192 pages, four max-order chunks.
pub const G: Geometry = Geometry::new(14, 47);
/// Schedules explored per model.
pub const ITERATIONS: usize = 300;
/// The kernel's offline retries for about a second; the model, this many times.
const OFFLINE_TRIES: u32 = 8;

pub type Alloc = PageAlloc<SharedMemmap>;

/// One hot-added memory block (block 1), deferred and online in ZONE_MOVABLE.
pub fn deferred_block() -> (SharedMemmap, Alloc, u64, u64) {
    let (start, nr) = (G.pages_per_section(), G.pages_per_section());
    let memmap = SharedMemmap::new(start, nr);
    let mut a = PageAlloc::new(memmap.clone(), G.max_order());
    a.enable_deferred(G, 2 * nr).unwrap();
    a.defer_memmap(start, nr).unwrap();
    a.online_range(ZoneId::Movable, 0, start, nr).unwrap();
    (memmap, a, start, nr)
}

/// A movable allocation as the kernel's `with_page_alloc_waiting` runs it
/// (`mm::buddy::wait_for_chunks`): waiting for chunks in flight, the lock dropped.
fn alloc_waiting(lock: &Mutex<Alloc>, order: u32) -> Option<u64> {
    wait_for_chunks(
        |g| g(&mut lock.lock().unwrap()),
        |a| a.alloc(order, AllocKind::Movable).ok_or(()),
        thread::yield_now,
    )
    .ok()
}

/// The kernel's `offline_run_retrying` with a bounded number of tries: `InitInProgress` is
/// retried; success must never come while a chunk of the range is in flight.
pub fn offline_retrying(lock: &Mutex<Alloc>, start: u64, nr: u64) -> Result<u64, OfflineError> {
    for _ in 0..OFFLINE_TRIES {
        {
            let mut a = lock.lock().unwrap();
            let r = offline_pages(&mut a, &mut Handles::new(), start, nr, u64::MAX, |_| {}, |_, _| {});
            if r.is_ok() {
                let over = a.deferred_in_flight().any(|(_, s, e)| s < start + nr && start < e);
                assert!(!over, "offline completed over a chunk in flight");
            }
            match r {
                Err(OfflineError::Range(BuddyError::InitInProgress { .. })) => {}
                r => return r,
            }
        }
        thread::yield_now();
    }
    Err(OfflineError::Range(BuddyError::InitInProgress { pfn: start }))
}

/// The end state: nothing in flight, the allocator's checker holds, and every page of the block
/// is accounted for (free and initialised once everything deferred is handed over, or offline).
fn check_end(memmap: &SharedMemmap, lock: &Mutex<Alloc>, start: u64, nr: u64, offlined: bool) {
    let mut a = lock.lock().unwrap();
    assert_eq!(a.deferred_in_flight().count(), 0, "a chunk never handed over");
    while deferred_init_step(memmap, u64::MAX, |f| f(&mut a)) > 0 {}
    if let Err(v) = a.check(&[(start, nr)], true) {
        panic!("page allocator invariant broken after the model: {v:?}");
    }
    let c = a.counters(ZoneId::Movable);
    if offlined {
        assert_eq!(
            (c.managed, c.free, c.deferred),
            (0, 0, 0),
            "pages left in an offline zone"
        );
    } else {
        assert_eq!(a.uninit_pages(start, nr), 0, "a chunk never initialised");
        assert_eq!((c.managed, c.free, c.deferred), (nr, nr, 0), "pages lost");
    }
}

/// An idle CPU initialising chunks, an allocation that needs deferred memory, and an offline
/// of the block.
fn handover_schedule() {
    let (memmap, a, start, nr) = deferred_block();
    let lock = Arc::new(Mutex::new(a));
    let idle = {
        let (lock, memmap) = (lock.clone(), memmap.clone());
        thread::spawn(move || {
            for _ in 0..2 {
                deferred_init_step(&memmap, 1, |f| f(&mut lock.lock().unwrap()));
            }
        })
    };
    let user = {
        let lock = lock.clone();
        thread::spawn(move || {
            let p = alloc_waiting(&lock, 0);
            let q = alloc_waiting(&lock, 0);
            if let (Some(p), Some(q)) = (p, q) {
                assert_ne!(p, q, "page {p:#x} handed out twice");
            }
            for pfn in [p, q].into_iter().flatten() {
                lock.lock().unwrap().free(pfn, 0).unwrap();
            }
        })
    };
    let offlined = offline_retrying(&lock, start, nr).is_ok();
    idle.join().unwrap();
    user.join().unwrap();
    check_end(&memmap, &lock, start, nr, offlined);
}

#[test]
fn deferred_handover_model() {
    shuttle::check_random(handover_schedule, ITERATIONS);
}
