//! The hotplug window of background completion: an idle step that begins while a hotplug
//! operation runs takes no deferred chunk, through the kernel's protocol
//! (`mm::buddy::background_after` published in an atomic by the operation, compared by
//! `mm::buddy::idle_may_take` before the real `deferred_init_step`). An idle step that checked
//! the window before the operation started may still take a chunk during it: the offline then
//! refuses with `InitInProgress` and retries (the hand-over model).

use std::sync::Arc;

use mm::buddy::{background_after, deferred_init_step, idle_may_take};
use shuttle::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use shuttle::sync::Mutex;
use shuttle::thread;

use crate::handover::{deferred_block, offline_retrying, ITERATIONS};

/// The model's counter stands still: one tick after an operation is never over.
const NOW: u64 = 0;
const TICK: u64 = 1;

/// The kernel's `BACKGROUND_AFTER` and what the model knows of the operation.
struct Window {
    after: AtomicU64,
    running: AtomicBool,
}

fn window_schedule() {
    let (memmap, a, start, nr) = deferred_block();
    let lock = Arc::new(Mutex::new(a));
    let w = Arc::new(Window {
        after: AtomicU64::new(0),
        running: AtomicBool::new(false),
    });
    let idle = {
        let (lock, w) = (lock.clone(), w.clone());
        thread::spawn(move || {
            for _ in 0..2 {
                let during = w.running.load(Ordering::SeqCst);
                if !idle_may_take(NOW, w.after.load(Ordering::Acquire)) {
                    continue;
                }
                let n = deferred_init_step(&memmap, 1, |f| f(&mut lock.lock().unwrap()));
                assert!(
                    !(during && n > 0),
                    "an idle CPU took a chunk during a hotplug operation"
                );
            }
        })
    };
    // The hotplug operation: `hotplug_busy(true)`, an offline, `hotplug_busy(false)`.
    w.after.store(background_after(true, NOW, TICK), Ordering::Release);
    w.running.store(true, Ordering::SeqCst);
    let _ = offline_retrying(&lock, start, nr);
    w.running.store(false, Ordering::SeqCst);
    w.after.store(background_after(false, NOW, TICK), Ordering::Release);
    idle.join().unwrap();
}

#[test]
fn hotplug_window_model() {
    shuttle::check_random(window_schedule, ITERATIONS);
}
