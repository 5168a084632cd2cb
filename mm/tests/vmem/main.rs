//! virtio-mem's policy ([`mm::vmem`]) against a fake device and a fake memory, in every
//! configuration and mode (sub-block 2 MiB, memory-block 1 MiB where it exists, big-block 1 GiB).
//!
//! The fake device follows the spec (PLUG of plugged blocks or past the usable region is ERROR,
//! PLUG beyond `requested_size` is NACK, UNPLUG of unplugged blocks is ERROR) and can be made to
//! misbehave per request: NACK, BUSY n times, ERROR, an answer type the spec does not define, no
//! answer at all, and `requested_size` changed in the middle of a request. The fake memory
//! mirrors the kernel: blocks added with memmap on memory, an online filter that hands over
//! plugged device blocks only, device blocks that cannot be offlined (pinned).
//!
//! After every pass the protocol invariants hold: the guest never uses memory the device has
//! unplugged, never writes a memmap into unplugged memory, the driver's plug state equals the
//! device's, plugged memory of online blocks is online, and the device was never told to unplug
//! memory that was online. After the faults stop, the next request completes.

mod fake;

use fake::*;
use mm::geometry::{Config, Geometry};
use mm::vmem::*;

/// The device block sizes each configuration offers, with the mode they give.
fn modes(g: Geometry) -> Vec<(u64, Mode)> {
    let mut v = vec![(2 * MIB, Mode::SubBlock), (GIB, Mode::BigBlock)];
    if g.page_shift == 12 {
        v.push((MIB, Mode::MemoryBlock));
    }
    if g.page_shift == 16 {
        // 64K: 2 MiB is a whole number of 512 KiB pageblocks too; 1 GiB is two memory blocks.
        v.push((512 * MIB, Mode::MemoryBlock));
    }
    v
}

fn unit_of(c: &Case) -> u64 {
    c.v.unit.max(c.v.cfg.block_size)
}

mm::matrix_tests!(
    grow_and_shrink_in_every_mode,
    every_answer_the_device_can_give,
    requested_size_changes_during_a_request,
    a_device_that_stops_answering,
    pinned_memory_stops_and_is_retried,
    sub_block_shrink_removes_adjacent_whole_blocks_together,
    random_requests_and_faults,
    refused_configurations,
);

fn grow_and_shrink_in_every_mode<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        assert_eq!(c.v.mode, mode, "block {block:#x}");
        let mb = C::GEOM.section_size().max(block);
        for size in [2 * mb, 5 * mb, mb, 0, 3 * mb, 0] {
            let r = c.request(size);
            assert_eq!((r.stopped, r.plugged), (None, size), "{mode:?} to {size:#x}");
        }
        if mode == Mode::SubBlock {
            // Inside a memory block, growing into an added, partly plugged one.
            for size in [mb + 38 * MIB, 2 * mb, mb + 2 * MIB, 0] {
                let r = c.request(size);
                assert_eq!((r.stopped, r.plugged), (None, size), "{mode:?} to {size:#x}");
            }
        }
    }
}

fn every_answer_the_device_can_give<C: Config>() {
    let faults: &[(Fault, &str)] = &[
        (Fault::Nack, "answered NACK"),
        (Fault::Error, "answered ERROR"),
        (Fault::WrongType(7), "answered unknown type 7"),
        (Fault::Busy(BUSY_TRIES + 2), "still BUSY after 8 tries"),
    ];
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        for &(f, says) in faults {
            // On a PLUG (the first request of a grow), then on an UNPLUG (the first of a shrink),
            // then on a later request of a grow.
            for (pre, size, at) in [(0, 2 * mb, 0), (2 * mb, mb, 0), (0, 3 * mb, 2)] {
                let mut c = Case::new(C::GEOM, block, 8 * GIB);
                if pre > 0 {
                    c.request(pre);
                }
                let mut script = vec![None; at];
                script.push(Some(f));
                c.fault(&script);
                let r = c.request(size);
                match &r.stopped {
                    Some(s) => {
                        assert!(s.reason.contains(says), "{mode:?} {f:?}: {}", s.reason);
                        assert_eq!(s.backoff_ms, RETRY_FIRST_MS);
                    }
                    // A shrink whose UNPLUG is refused puts that memory back and takes other
                    // memory instead, if there is any.
                    None => assert!(pre > size && r.plugged == size, "{mode:?} {f:?}: not stopped: {r:?}"),
                }
                c.recovers(size);
            }
        }
        // BUSY a few times only: retried within the request, nothing stops.
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.fault(&[Some(Fault::Busy(3))]);
        let r = c.request(mb);
        assert_eq!((r.stopped, r.plugged), (None, mb), "{mode:?}: BUSY 3 times");
    }
}

fn requested_size_changes_during_a_request<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        // Shrunk to 0 while the grow is under way: the grow stops (NACK), the next pass
        // (the config change the host's write raised) goes to 0.
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.fault(&[None, Some(Fault::Requested(0))]);
        c.request(4 * mb);
        let r = c.pass(true).expect("the change is seen");
        assert_eq!((r.requested, r.plugged, r.stopped), (0, 0, None), "{mode:?}");
        // Grown while a shrink is under way: the shrink completes what it can; the next pass grows.
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.request(4 * mb);
        c.fault(&[Some(Fault::Requested(6 * mb))]);
        c.request(mb);
        let r = c.pass(true).expect("the change is seen");
        assert_eq!((r.requested, r.plugged, r.stopped), (6 * mb, 6 * mb, None), "{mode:?}");
    }
}

fn a_device_that_stops_answering<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        for (pre, size) in [(0, 3 * mb), (3 * mb, 0)] {
            let mut c = Case::new(C::GEOM, block, 8 * GIB);
            if pre > 0 {
                c.request(pre);
            }
            // Growing: the second request (the first is answered). Shrinking: the first, as a
            // shrink of adjacent whole memory blocks sends one UNPLUG for all of them.
            let first_answered = if pre == 0 { vec![None] } else { vec![] };
            c.fault(&[first_answered, vec![Some(Fault::NoAnswer)]].concat());
            let r = c.request(size);
            let s = r.stopped.unwrap_or_else(|| panic!("{mode:?}: not stopped"));
            assert!(s.reason.contains("no answer from the device"), "{mode:?}: {}", s.reason);
            c.recovers(size);
        }
    }
}

fn pinned_memory_stops_and_is_retried<C: Config>() {
    for (block, mode) in modes(C::GEOM) {
        let mb = C::GEOM.section_size().max(block);
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        c.w.borrow_mut().online_normal = true;
        c.request(2 * mb);
        // The middle of the second unit (sub-block mode: of the second memory block).
        let pin = (mb / block) as usize * 3 / 2;
        c.w.borrow_mut().pinned[pin] = true;
        let r = c.request(0);
        let s = r.stopped.clone().unwrap_or_else(|| panic!("{mode:?}: not stopped"));
        assert!(s.reason.starts_with("memory busy"), "{}", s.reason);
        assert!(r.plugged > 0 && r.plugged <= mb);
        // Nothing changed: the timer retries with backoff, the same request fails again.
        assert_eq!(c.pass(false), None, "not due yet");
        c.now += RETRY_FIRST_MS;
        let r = c.pass(false).expect("the timer retries");
        assert_eq!(r.stopped.unwrap().backoff_ms, 2 * RETRY_FIRST_MS);
        for _ in 0..10 {
            c.now += RETRY_MAX_MS;
            c.pass(false);
        }
        assert_eq!(c.v.retry().unwrap().backoff_ms, RETRY_MAX_MS);
        // Unpinned: the timer's next retry finishes the job.
        c.w.borrow_mut().pinned[pin] = false;
        c.now += RETRY_MAX_MS;
        let r = c.pass(false).expect("the timer retries");
        assert_eq!((r.plugged, r.stopped), (0, None), "{mode:?}");
        assert_eq!(c.pass(false), None, "done: nothing to retry");
        assert_eq!(c.plugged(), 0);
    }
}

/// Sub-block mode: the memory blocks a shrink takes wholly, next to each other, go in one
/// offline-and-remove (one batch of TLB maintenance) and one UNPLUG per plugged run across
/// them; a partly emptied block stays its own; a refused batch leaves everything as it was and
/// the shrink goes block by block.
fn sub_block_shrink_removes_adjacent_whole_blocks_together<C: Config>() {
    let g = C::GEOM;
    let mb = g.section_size();
    let block = 2 * MIB;
    let per_mb = (mb / block) as usize;
    let mut c = Case::new(g, block, 8 * GIB);
    assert_eq!(c.v.mode, Mode::SubBlock);
    c.request(5 * mb);
    let take = |c: &mut Case| {
        let mut w = c.w.borrow_mut();
        (core::mem::take(&mut w.removals), core::mem::take(&mut w.unplugs))
    };
    take(&mut c);
    // Down to 1.5 blocks: blocks 4, 3, 2 whole and together, then half of block 1.
    c.request(mb + mb / 2);
    let (removals, unplugs) = take(&mut c);
    assert_eq!(removals, vec![(BASE + 2 * mb, 3 * mb)], "removals");
    assert_eq!(unplugs[0], (2 * per_mb, 3 * per_mb), "one UNPLUG for the three blocks");
    assert_eq!(unplugs.len(), 2, "then one for half of block 1: {unplugs:?}");
    assert_eq!(unplugs[1], (per_mb + per_mb / 2, per_mb / 2));
    // A pinned device block in block 2 of 4, shrinking to 1: the batch (blocks 3, 2, 1) is
    // refused and changes nothing; block by block, block 3 goes alone and block 2 stays.
    c.request(4 * mb);
    take(&mut c);
    c.w.borrow_mut().pinned[2 * per_mb + 5] = true;
    let r = c.request(mb);
    let (removals, _) = take(&mut c);
    assert_eq!(
        removals.first(),
        Some(&(BASE + 3 * mb, mb)),
        "block 3 alone: {removals:?}"
    );
    assert!(
        removals.iter().all(|&(a, s)| !(a..a + s).contains(&(BASE + 2 * mb))),
        "block 2 removed while pinned: {removals:?}"
    );
    assert!(r.plugged < 4 * mb);
    c.w.borrow_mut().pinned[2 * per_mb + 5] = false;
    c.recovers(0);
    // Pinned in the lowest of six blocks, shrinking to 0: one batch is tried and refused, then
    // the blocks go one by one; no later batch holding the busy block is tried again.
    c.request(6 * mb);
    c.w.borrow_mut().pinned[5] = true;
    c.w.borrow_mut().removal_attempts.clear();
    c.request(0);
    let attempts = core::mem::take(&mut c.w.borrow_mut().removal_attempts);
    let over_pin = attempts.iter().filter(|&&(a, _)| a == BASE).count();
    assert_eq!(
        over_pin, 2,
        "removals tried over the busy block (one batch, then its own): {attempts:?}"
    );
    c.w.borrow_mut().pinned[5] = false;
    c.recovers(0);
}

/// Random requests, pins and faults; the invariants after every pass; at the end everything
/// can be unplugged.
fn random_requests_and_faults<C: Config>() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ C::GEOM.page_shift as u64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let all = [
        Fault::Nack,
        Fault::Error,
        Fault::WrongType(9),
        Fault::NoAnswer,
        Fault::Busy(2),
        Fault::Busy(20),
    ];
    for (block, mode) in modes(C::GEOM) {
        let mut c = Case::new(C::GEOM, block, 8 * GIB);
        let unit = unit_of(&c);
        let units = 8 * GIB / unit;
        for step in 0..60 {
            let size = rand(units + 1) * unit;
            let faults: Vec<Option<Fault>> = (0..rand(4))
                .map(|_| (rand(3) == 0).then(|| all[rand(all.len() as u64) as usize]))
                .collect();
            c.fault(&faults);
            let n = c.w.borrow().pinned.len();
            if rand(4) == 0 {
                let j = rand(n as u64) as usize;
                let mut w = c.w.borrow_mut();
                w.pinned[j] = !w.pinned[j];
            }
            if rand(5) == 0 {
                c.now += RETRY_MAX_MS;
                c.pass(false);
            } else {
                let r = c.request(size);
                assert!(r.stopped.is_some() || r.plugged == size, "{mode:?} step {step}: {r:?}");
            }
        }
        c.w.borrow_mut().pinned.fill(false);
        c.recovers(0);
    }
}

fn refused_configurations<C: Config>() {
    let g = C::GEOM;
    let ok = DeviceConfig {
        block_size: 2 * MIB,
        addr: BASE,
        region_size: 4 * GIB,
        usable_region_size: 4 * GIB,
        plugged_size: 0,
        node_id: 0,
    };
    assert!(Vmem::new(g, ok).is_ok());
    let mb = g.section_size();
    let cases = [
        (
            DeviceConfig {
                block_size: 3 * MIB,
                ..ok
            },
            "not a power of two",
        ),
        (DeviceConfig { block_size: 0, ..ok }, "not a power of two"),
        (
            DeviceConfig {
                block_size: g.page_size() / 2,
                ..ok
            },
            "not a power of two",
        ),
        (
            DeviceConfig {
                addr: BASE + 2 * MIB,
                ..ok
            },
            "is not aligned",
        ),
        (
            DeviceConfig {
                region_size: mb + 2 * MIB,
                ..ok
            },
            "is not aligned",
        ),
        (DeviceConfig { region_size: 0, ..ok }, "is not aligned"),
        (
            DeviceConfig {
                plugged_size: 8 * GIB,
                ..ok
            },
            "beyond the",
        ),
        (
            DeviceConfig {
                usable_region_size: 8 * GIB,
                ..ok
            },
            "beyond the",
        ),
        (
            DeviceConfig {
                plugged_size: MIB,
                ..ok
            },
            "not a block multiple",
        ),
    ];
    for (cfg, says) in cases {
        match Vmem::new(g, cfg) {
            Err(e) => assert!(e.to_string().contains(says), "{cfg:?}: {e}"),
            Ok(_) => panic!("{cfg:?} accepted"),
        }
    }
}
