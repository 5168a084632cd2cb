//! `torture`: every secondary CPU allocates and frees at random orders from every zone, writes
//! a per-CPU pattern through the movable window (pages offline may migrate under the writes,
//! [`OwnedPage`]) and through the linear map (kernel pages), and verifies it, continuously,
//! while CPU 0 does hotplug: the shell's commands and the memory devices' bottom halves (DIMMs,
//! virtio-mem driven by the host), or an in-guest test's cycles. Every word that does not read
//! back what its CPU wrote last is a lost write; the allocator and hotplug checkers run after
//! every hotplug operation (`debug_vm`).

use crate::kernel::mem::movable::{self, OwnedPage};
use crate::kernel::mem::pages::Pages;
use crate::kernel::smp;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Window pages a worker holds at most (each rewritten and verified in turn).
const WINDOW_PAGES: usize = 32;
/// Kernel blocks a worker holds at most, and their largest order.
const KERNEL_BLOCKS: usize = 8;
const KERNEL_MAX_ORDER: u32 = 3;

static RUNNING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
/// When the run started (counter).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// One worker's counters (indexed by CPU).
struct Counters {
    ops: AtomicU64,
    window_writes: AtomicU64,
    lost_writes: AtomicU64,
    kernel_bad: AtomicU64,
    alloc_failures: AtomicU64,
}

static COUNTERS: [Counters; smp::MAX_CPUS] = [const {
    Counters {
        ops: AtomicU64::new(0),
        window_writes: AtomicU64::new(0),
        lost_writes: AtomicU64::new(0),
        kernel_bad: AtomicU64::new(0),
        alloc_failures: AtomicU64::new(0),
    }
}; smp::MAX_CPUS];

/// What the workers did (all of them, so far).
#[derive(Clone, Copy, Debug, Default)]
pub struct TortureReport {
    pub workers: u32,
    pub seconds: u64,
    pub ops: u64,
    /// Window pages written (whole pages).
    pub window_writes: u64,
    /// Words of window pages that did not read back what their CPU wrote last.
    pub lost_writes: u64,
    /// Words of kernel pages (linear map) that did not read back.
    pub kernel_bad: u64,
    /// Allocations refused (out of memory: expected when memory is short, not a violation).
    pub alloc_failures: u64,
    /// Accesses that met a migration and waited for it.
    pub migration_waits: u64,
}

impl TortureReport {
    pub fn violations(&self) -> u64 {
        self.lost_writes + self.kernel_bad
    }
}

/// Why `torture start|stop` did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TortureError {
    AlreadyRunning,
    NotRunning,
    /// Only one CPU is online: nobody to run the workers.
    NoSecondaryCpu,
    /// A worker did not stop within the timeout.
    WorkerStuck {
        cpu: usize,
    },
}

impl core::fmt::Display for TortureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TortureError::AlreadyRunning => write!(f, "already running (torture stop ends it)"),
            TortureError::NotRunning => write!(f, "not running (torture start begins it)"),
            TortureError::NoSecondaryCpu => write!(f, "no secondary CPU online (boot with --smp 2 or more)"),
            TortureError::WorkerStuck { cpu } => write!(f, "the worker on cpu {cpu} did not stop"),
        }
    }
}

/// Start a worker on every online secondary CPU.
pub fn start() -> Result<u32, TortureError> {
    if RUNNING.swap(true, Relaxed) {
        return Err(TortureError::AlreadyRunning);
    }
    STOP.store(false, Relaxed);
    for c in &COUNTERS {
        for a in [
            &c.ops,
            &c.window_writes,
            &c.lost_writes,
            &c.kernel_bad,
            &c.alloc_failures,
        ] {
            a.store(0, Relaxed);
        }
    }
    STARTED.store(arch::cpu::counter(), Relaxed);
    let workers = (1..smp::MAX_CPUS)
        .filter(|&cpu| smp::post(cpu, worker, cpu as u64))
        .count() as u32;
    if workers == 0 {
        RUNNING.store(false, Relaxed);
        return Err(TortureError::NoSecondaryCpu);
    }
    Ok(workers)
}

/// The counters so far.
pub fn report() -> TortureReport {
    let mut r = TortureReport {
        seconds: (arch::cpu::counter() - STARTED.load(Relaxed)) / arch::cpu::counter_freq().max(1),
        migration_waits: movable::MIGRATION_WAITS.load(Relaxed),
        ..Default::default()
    };
    for c in &COUNTERS {
        let ops = c.ops.load(Relaxed);
        r.workers += (ops > 0) as u32;
        r.ops += ops;
        r.window_writes += c.window_writes.load(Relaxed);
        r.lost_writes += c.lost_writes.load(Relaxed);
        r.kernel_bad += c.kernel_bad.load(Relaxed);
        r.alloc_failures += c.alloc_failures.load(Relaxed);
    }
    r
}

pub fn running() -> bool {
    RUNNING.load(Relaxed)
}

/// Stop the workers (each verifies and frees what it holds) and report.
pub fn stop() -> Result<TortureReport, TortureError> {
    if !RUNNING.load(Relaxed) {
        return Err(TortureError::NotRunning);
    }
    STOP.store(true, Relaxed);
    let mut stuck = None;
    for cpu in 1..smp::MAX_CPUS {
        if smp::online_mask() & (1 << cpu) != 0 && smp::collect(cpu, 10_000).is_none() {
            stuck.get_or_insert(cpu);
        }
    }
    RUNNING.store(false, Relaxed);
    match stuck {
        Some(cpu) => Err(TortureError::WorkerStuck { cpu }),
        None => Ok(report()),
    }
}

/// xorshift64: the workers' own random numbers (seeded per CPU and run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Word `i` of the pattern `tag` (a CPU's write generation).
fn pattern(tag: u64, i: usize) -> u64 {
    (tag ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// A page (or block) of the worker, with the tag of its last write.
trait Words {
    fn len(&self) -> usize;
    fn put(&mut self, i: usize, v: u64);
    fn get(&self, i: usize) -> u64;

    fn write(&mut self, tag: u64) {
        for i in 0..self.len() {
            self.put(i, pattern(tag, i));
        }
    }

    /// Words that do not read back `tag`'s pattern.
    fn check(&self, tag: u64) -> u64 {
        (0..self.len()).filter(|&i| self.get(i) != pattern(tag, i)).count() as u64
    }
}

impl Words for OwnedPage {
    fn len(&self) -> usize {
        self.words()
    }
    fn put(&mut self, i: usize, v: u64) {
        self.store(i, v)
    }
    fn get(&self, i: usize) -> u64 {
        self.load(i)
    }
}

impl Words for Pages {
    fn len(&self) -> usize {
        self.words()
    }
    fn put(&mut self, i: usize, v: u64) {
        self.store(i, v)
    }
    fn get(&self, i: usize) -> u64 {
        self.load(i)
    }
}

/// The worker's holdings.
struct Worker {
    cpu: usize,
    rng: Rng,
    generation: u64,
    window: Vec<(OwnedPage, u64)>,
    kernel: Vec<(Pages, u64)>,
}

impl Worker {
    fn counters(&self) -> &'static Counters {
        &COUNTERS[self.cpu]
    }

    fn tag(&mut self) -> u64 {
        self.generation += 1;
        (self.cpu as u64) << 56 | self.generation
    }

    /// One random operation.
    fn step(&mut self) {
        match self.rng.below(8) {
            0 | 1 if self.window.len() < WINDOW_PAGES => match OwnedPage::alloc() {
                Ok(mut p) => {
                    let tag = self.tag();
                    p.write(tag);
                    self.counters().window_writes.fetch_add(1, Relaxed);
                    self.window.push((p, tag));
                }
                Err(_) => {
                    self.counters().alloc_failures.fetch_add(1, Relaxed);
                }
            },
            2..=4 if !self.window.is_empty() => {
                let i = self.rng.below(self.window.len());
                let tag = self.tag();
                let (p, old) = &mut self.window[i];
                let lost = p.check(*old);
                p.write(tag);
                *old = tag;
                let c = self.counters();
                c.lost_writes.fetch_add(lost, Relaxed);
                c.window_writes.fetch_add(1, Relaxed);
            }
            5 if !self.window.is_empty() => {
                let i = self.rng.below(self.window.len());
                let (p, tag) = self.window.swap_remove(i);
                self.counters().lost_writes.fetch_add(p.check(tag), Relaxed);
                p.free();
            }
            6 if self.kernel.len() < KERNEL_BLOCKS => {
                let order = self.rng.below(KERNEL_MAX_ORDER as usize + 1) as u32;
                match Pages::alloc(order) {
                    Some(mut p) => {
                        let tag = self.tag();
                        p.write(tag);
                        self.kernel.push((p, tag));
                    }
                    None => {
                        self.counters().alloc_failures.fetch_add(1, Relaxed);
                    }
                }
            }
            7 if !self.kernel.is_empty() => {
                let i = self.rng.below(self.kernel.len());
                let (p, tag) = self.kernel.swap_remove(i);
                self.counters().kernel_bad.fetch_add(p.check(tag), Relaxed);
                let _ = p.free();
            }
            _ => return,
        }
        self.counters().ops.fetch_add(1, Relaxed);
    }

    /// Verify and free everything.
    fn finish(self) {
        let c = &COUNTERS[self.cpu];
        for (p, tag) in self.window {
            c.lost_writes.fetch_add(p.check(tag), Relaxed);
            p.free();
        }
        for (p, tag) in self.kernel {
            c.kernel_bad.fetch_add(p.check(tag), Relaxed);
            let _ = p.free();
        }
    }
}

/// A secondary CPU's loop, until [`stop`].
fn worker(cpu: u64) -> u64 {
    let mut w = Worker {
        cpu: cpu as usize,
        rng: Rng(arch::cpu::counter() | 1 | cpu << 40),
        generation: 0,
        window: Vec::with_capacity(WINDOW_PAGES),
        kernel: Vec::with_capacity(KERNEL_BLOCKS),
    };
    while !STOP.load(Relaxed) {
        w.step();
    }
    w.finish();
    0
}
