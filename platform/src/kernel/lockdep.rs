//! Lock classes and the lock-order checker of the test builds (a small lockdep).
//!
//! Every kernel lock ([`crate::kernel::sync::Mutex`], [`crate::kernel::sync::IrqSafeLock`])
//! names its class: a static name shared by every lock with the same job (the per-CPU mailboxes
//! are one class). With the `lockdep` feature (on in the `ktest`, `mutants` and `shell-mutants`
//! builds) each acquisition is checked before the lock is spun on:
//!
//! - each CPU keeps the classes it holds on a small stack ([`MAX_HELD`]); taking class `b`
//!   while holding `a` records `a → b` in one global, fixed-size graph ([`graph`]); an edge that
//!   closes a cycle stops the kernel with both chains, `lockdep: lock order inversion: a -> b
//!   here, b -> a earlier` (two CPUs taking them in those orders can deadlock);
//! - a plain spin lock (not IRQ-safe) taken in interrupt context stops the kernel naming its
//!   class: the interrupted code on that CPU may hold it.
//!
//! Interrupt context ([`IrqContext`]) is its own context: the classes the interrupted code
//! holds are not "held" for the handler's order (Linux's per-context chains). A try-lock
//! cannot wait, so it records no order, but what is taken while holding it does. Two locks
//! of one class held together record nothing (their order is not a class order).
//!
//! The checker allocates nothing and takes no checked lock: it runs inside other locks, the
//! heap's among them. Its own graph lock is a plain `spin::Mutex`, taken with interrupts
//! masked. Without the feature every hook is empty and the lock types are plain spin locks.
//!
//! This file sits below the console (whose locks it checks): it stops the kernel through the
//! fatal path `main` hands it at boot ([`stop_with`]); before that, through a panic.

#[cfg(feature = "lockdep")]
mod graph;

/// CPUs with a held stack: `smp::MAX_CPUS` (checked there).
#[cfg_attr(not(feature = "lockdep"), allow(dead_code))]
pub const CPUS: usize = 8;

/// Most classes one CPU holds at once, in one context.
#[cfg_attr(not(feature = "lockdep"), allow(dead_code))]
pub const MAX_HELD: usize = 16;

/// How a lock is being taken.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain spin lock: interrupts may stay unmasked while it is held.
    Plain,
    /// An IRQ-safe lock: interrupts are masked on this CPU while it is held.
    IrqSafe,
    /// A successful try-lock (of either kind): held, but it never waited.
    Try,
}

/// A lock's class: its name, and in checked builds its id in the order graph (given on first
/// use; every lock of the same name gets the same id).
pub struct Class {
    #[cfg(feature = "lockdep")]
    name: &'static str,
    /// Graph id + 1; 0 until the first acquisition.
    #[cfg(feature = "lockdep")]
    id: core::sync::atomic::AtomicU8,
}

impl Class {
    pub const fn new(name: &'static str) -> Self {
        #[cfg(not(feature = "lockdep"))]
        let _ = name;
        Class {
            #[cfg(feature = "lockdep")]
            name,
            #[cfg(feature = "lockdep")]
            id: core::sync::atomic::AtomicU8::new(0),
        }
    }
}

/// One held lock on this CPU's stack; dropping it (with the lock's guard) pops its class.
pub struct Held {
    #[cfg(feature = "lockdep")]
    id: Option<u8>,
}

/// Record the acquisition of a lock of `class` (before it is spun on, so an inversion is
/// reported rather than deadlocked on). Stops the kernel on a broken rule.
#[inline(always)]
pub fn acquire(class: &Class, kind: Kind) -> Held {
    #[cfg(feature = "lockdep")]
    {
        Held {
            id: checker::acquire(class, kind),
        }
    }
    #[cfg(not(feature = "lockdep"))]
    {
        let _ = (class, kind);
        Held {}
    }
}

#[cfg(feature = "lockdep")]
impl Drop for Held {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            checker::release(id);
        }
    }
}

/// Interrupt context on this CPU while alive: created by the trap handler around the IRQ
/// dispatch.
pub struct IrqContext {
    #[cfg(feature = "lockdep")]
    outer_base: usize,
}

impl IrqContext {
    #[inline(always)]
    pub fn enter() -> Self {
        IrqContext {
            #[cfg(feature = "lockdep")]
            outer_base: checker::irq_enter(),
        }
    }
}

#[cfg(feature = "lockdep")]
impl Drop for IrqContext {
    fn drop(&mut self) {
        checker::irq_exit(self.outer_base);
    }
}

/// How the checker stops the kernel (`exit::fatal_stop`, which prints `hotmem: FATAL <what>`).
pub type Stop = fn(core::fmt::Arguments) -> !;

/// Hand the checker the kernel's fatal path (at boot, before anything can break a rule).
pub fn stop_with(stop: Stop) {
    #[cfg(feature = "lockdep")]
    checker::STOP.call_once(|| stop);
    #[cfg(not(feature = "lockdep"))]
    let _ = stop;
}

/// The lock order observed so far: `f(a, b)` for each recorded `a → b` (the test kernel
/// prints them at the end of its run). Nothing without the feature.
#[cfg_attr(not(feature = "ktest"), allow(dead_code))]
pub fn for_each_order(f: impl FnMut(&'static str, &'static str)) {
    #[cfg(feature = "lockdep")]
    checker::for_each_order(f);
    #[cfg(not(feature = "lockdep"))]
    let _ = f;
}

#[cfg(feature = "lockdep")]
mod checker {
    use super::{graph::Graph, Class, Kind, Stop, CPUS, MAX_HELD};
    use aarch64_cpu::registers::DAIF;
    use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
    use tock_registers::interfaces::{Readable, Writeable};

    /// One CPU's held classes: `ids[..depth]`, the current context's from `base` (interrupt
    /// context starts above what the interrupted code holds). Only its own CPU touches it, with
    /// interrupts masked.
    struct CpuHeld {
        depth: AtomicUsize,
        base: AtomicUsize,
        in_irq: AtomicUsize,
        ids: [AtomicU8; MAX_HELD],
    }

    static HELD: [CpuHeld; CPUS] = [const {
        CpuHeld {
            depth: AtomicUsize::new(0),
            base: AtomicUsize::new(0),
            in_irq: AtomicUsize::new(0),
            ids: [const { AtomicU8::new(0) }; MAX_HELD],
        }
    }; CPUS];

    // The checker's own lock: not a checked lock (it is taken inside the hooks).
    static GRAPH: spin::Mutex<Graph> = spin::Mutex::new(Graph::new());
    /// `KNOWN[a]` bit `b`: `a → b` is in the graph (read without the graph lock).
    static KNOWN: [AtomicU64; super::graph::MAX_CLASSES] = [const { AtomicU64::new(0) }; super::graph::MAX_CLASSES];
    /// The kernel's fatal path ([`super::stop_with`]).
    pub(super) static STOP: spin::Once<Stop> = spin::Once::new();
    /// Set once the checker stops the kernel: the stop path's own locking is not checked.
    static STOPPING: AtomicBool = AtomicBool::new(false);

    /// Run `f` with interrupts masked on this CPU (the held stack and the graph lock must not
    /// be re-entered by a handler).
    fn masked<R>(f: impl FnOnce() -> R) -> R {
        let daif = DAIF.get();
        DAIF.write(DAIF::I::Masked + DAIF::F::Masked);
        let r = f();
        DAIF.set(daif);
        r
    }

    fn this_cpu() -> Option<&'static CpuHeld> {
        if STOPPING.load(Relaxed) {
            return None;
        }
        HELD.get(arch::cpu::cpu_index())
    }

    pub(super) fn acquire(class: &Class, kind: Kind) -> Option<u8> {
        masked(|| {
            let held = this_cpu()?;
            let id = class_id(class);
            if kind == Kind::Plain && held.in_irq.load(Relaxed) > 0 {
                stop(format_args!(
                    "lockdep: irq-unsafe lock {} taken in interrupt context (cpu {})",
                    class.name,
                    arch::cpu::cpu_index()
                ));
            }
            if kind != Kind::Try {
                let (base, depth) = (held.base.load(Relaxed), held.depth.load(Relaxed));
                for h in &held.ids[base..depth] {
                    let h = h.load(Relaxed);
                    if h != id && KNOWN[usize::from(h)].load(Relaxed) & (1 << id) == 0 {
                        record(h, id, held);
                    }
                }
            }
            push(held, id, class.name);
            Some(id)
        })
    }

    pub(super) fn release(id: u8) {
        masked(|| {
            let Some(held) = HELD.get(arch::cpu::cpu_index()) else {
                return;
            };
            let depth = held.depth.load(Relaxed);
            let Some(i) = (0..depth).rev().find(|&i| held.ids[i].load(Relaxed) == id) else {
                return;
            };
            for j in i..depth - 1 {
                held.ids[j].store(held.ids[j + 1].load(Relaxed), Relaxed);
            }
            held.depth.store(depth - 1, Relaxed);
        });
    }

    /// Interrupt context starts here on this CPU; returns the outer context's base.
    pub(super) fn irq_enter() -> usize {
        let Some(held) = HELD.get(arch::cpu::cpu_index()) else {
            return 0;
        };
        held.in_irq.fetch_add(1, Relaxed);
        held.base.swap(held.depth.load(Relaxed), Relaxed)
    }

    pub(super) fn irq_exit(outer_base: usize) {
        let Some(held) = HELD.get(arch::cpu::cpu_index()) else {
            return;
        };
        held.base.store(outer_base, Relaxed);
        held.in_irq.fetch_sub(1, Relaxed);
    }

    fn push(held: &CpuHeld, id: u8, name: &str) {
        let depth = held.depth.load(Relaxed);
        if depth == MAX_HELD {
            stop(format_args!(
                "lockdep: more than {MAX_HELD} locks held on cpu {} (taking {name})",
                arch::cpu::cpu_index()
            ));
        }
        held.ids[depth].store(id, Relaxed);
        held.depth.store(depth + 1, Relaxed);
    }

    /// The class's graph id, given on its first acquisition.
    fn class_id(class: &Class) -> u8 {
        match class.id.load(Relaxed) {
            0 => {
                let Some(id) = GRAPH.lock().intern(class.name) else {
                    stop(format_args!(
                        "lockdep: more than {} lock classes (at {})",
                        super::graph::MAX_CLASSES,
                        class.name
                    ));
                };
                class.id.store(id + 1, Relaxed);
                id
            }
            v => v - 1,
        }
    }

    /// Record `a → b` (this CPU, holding `a`, takes `b`), unless `b` already leads to `a`.
    fn record(a: u8, b: u8, held: &CpuHeld) {
        let mut g = GRAPH.lock();
        if g.row(a) & (1 << b) != 0 {
            return;
        }
        if let Some(earlier) = g.path(b, a) {
            STOPPING.store(true, Relaxed);
            let held_ids: [u8; MAX_HELD] = core::array::from_fn(|i| held.ids[i].load(Relaxed));
            let depth = held.depth.load(Relaxed);
            let g = &*g;
            let chains = Show(|f| {
                write!(f, "{} -> {} here, ", g.name(a), g.name(b))?;
                g.write_chain(f, earlier.ids())?;
                f.write_str(" earlier")
            });
            let holds = Show(|f| g.write_chain(f, &held_ids[..depth]));
            stop(format_args!(
                "lockdep: lock order inversion: {chains}\nlockdep: cpu {} holds {holds}",
                arch::cpu::cpu_index()
            ));
        }
        g.add(a, b);
        KNOWN[usize::from(a)].fetch_or(1 << b, Relaxed);
    }

    /// A closure shown with `{}`.
    struct Show<F: Fn(&mut core::fmt::Formatter<'_>) -> core::fmt::Result>(F);

    impl<F: Fn(&mut core::fmt::Formatter<'_>) -> core::fmt::Result> core::fmt::Display for Show<F> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            (self.0)(f)
        }
    }

    fn stop(what: core::fmt::Arguments) -> ! {
        STOPPING.store(true, Relaxed);
        match STOP.get() {
            Some(stop) => stop(what),
            None => panic!("{what}"),
        }
    }

    pub(super) fn for_each_order(mut f: impl FnMut(&'static str, &'static str)) {
        // A copy: `f` may print, and the console's lock check may need the graph lock.
        let g = masked(|| GRAPH.lock().clone());
        for (a, b) in g.edges() {
            f(g.name(a), g.name(b));
        }
    }
}
