//! GICv2 and GICv3 (distributor, CPU interface / redistributors), found in the DTB.
//!
//! All SPIs are routed to the boot CPU; PPIs (the timer) are enabled on every CPU; SGI 0 is
//! the wake-up IPI. `configure_spi` sets the trigger: QEMU's GED pulses its line, so INTID 41
//! must be edge-triggered or the event is lost.

use crate::boot::dtb::GicVersion;
use arch::sysreg::{
    ICC_BPR1_EL1, ICC_EOIR1_EL1, ICC_IAR1_EL1, ICC_IGRPEN1_EL1, ICC_PMR_EL1, ICC_SGI1R_EL1, ICC_SRE_EL1,
};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use tock_registers::{
    interfaces::{Readable, Writeable},
    register_structs,
    registers::{ReadOnly, ReadWrite, WriteOnly},
};

register_structs! {
    /// Distributor (common layout of v2 and v3 for what we use).
    pub GicdRegs {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => typer: ReadOnly<u32>),
        (0x0008 => _r0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _r1),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x0800 => itargetsr: [ReadWrite<u8>; 1024]),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => _r2),
        (0x0f00 => sgir: WriteOnly<u32>),
        (0x0f04 => _r3),
        (0x6000 => irouter: [ReadWrite<u64>; 1020]),
        (0x7fe0 => _r4),
        (0x10000 => @END),
    }
}

register_structs! {
    /// GICv2 CPU interface.
    pub GiccRegs {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => pmr: ReadWrite<u32>),
        (0x08 => bpr: ReadWrite<u32>),
        (0x0c => iar: ReadOnly<u32>),
        (0x10 => eoir: WriteOnly<u32>),
        (0x14 => @END),
    }
}

register_structs! {
    /// GICv3 redistributor: RD_base frame then SGI_base frame (64 KiB each).
    pub GicrRegs {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => _iidr),
        (0x0008 => typer: ReadOnly<u64>),
        (0x0010 => _r0),
        (0x0014 => waker: ReadWrite<u32>),
        (0x0018 => _r1),
        (0x10080 => igroupr0: ReadWrite<u32>),
        (0x10084 => _r2),
        (0x10100 => isenabler0: ReadWrite<u32>),
        (0x10104 => _r3),
        (0x10400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x10420 => _r4),
        (0x20000 => @END),
    }
}

const GICR_STRIDE: u64 = 0x20000;
pub const SPURIOUS: u32 = 1020;
/// The IPI used to wake a CPU.
pub const SGI_WAKE: u32 = 0;

static VERSION: AtomicU8 = AtomicU8::new(0);
static GICD_VA: AtomicU64 = AtomicU64::new(0);
static GICC_VA: AtomicU64 = AtomicU64::new(0);
static GICR_VA: AtomicU64 = AtomicU64::new(0);
static GICR_SIZE: AtomicU64 = AtomicU64::new(0);

fn gicd() -> &'static GicdRegs {
    // SAFETY: set once in `init_distributor` to a device mapping of the distributor.
    unsafe { &*(GICD_VA.load(Ordering::Relaxed) as *const GicdRegs) }
}

fn gicc() -> &'static GiccRegs {
    // SAFETY: set once in `init_distributor` to a device mapping of the v2 CPU interface.
    unsafe { &*(GICC_VA.load(Ordering::Relaxed) as *const GiccRegs) }
}

pub fn version() -> GicVersion {
    if VERSION.load(Ordering::Relaxed) == 3 {
        GicVersion::V3
    } else {
        GicVersion::V2
    }
}

/// Set up the distributor (boot CPU, once). `gicd_va`/`cpu_va` are device mappings of the
/// distributor and of the v2 CPU interface or v3 redistributor region.
pub fn init_distributor(v: GicVersion, gicd_va: u64, cpu_va: u64, cpu_size: u64) {
    VERSION.store(if v == GicVersion::V3 { 3 } else { 2 }, Ordering::Relaxed);
    GICD_VA.store(gicd_va, Ordering::Relaxed);
    match v {
        GicVersion::V2 => GICC_VA.store(cpu_va, Ordering::Relaxed),
        GicVersion::V3 => {
            GICR_VA.store(cpu_va, Ordering::Relaxed);
            GICR_SIZE.store(cpu_size, Ordering::Relaxed);
        }
    }
    let d = gicd();
    d.ctlr.set(0);
    let lines = ((d.typer.get() & 0x1f) as usize + 1) * 32;
    for i in 1..lines / 32 {
        d.icenabler[i].set(!0);
        d.igroupr[i].set(if v == GicVersion::V3 { !0 } else { 0 });
    }
    for i in 32..lines {
        d.ipriorityr[i].set(0xa0);
        match v {
            GicVersion::V2 => d.itargetsr[i].set(1),
            GicVersion::V3 => d.irouter[i].set(0), // affinity 0.0.0.0: the boot CPU
        }
    }
    match v {
        // GICv2 without security extensions: bit 0 enables forwarding.
        GicVersion::V2 => d.ctlr.set(1),
        // ARE (affinity routing) + EnableGrp1 (+ Grp0), single security state.
        GicVersion::V3 => d.ctlr.set((1 << 4) | (1 << 1) | 1),
    }
}

/// This CPU's redistributor (v3), found by matching GICR_TYPER affinity with MPIDR.
fn my_gicr() -> Option<&'static GicrRegs> {
    let base = GICR_VA.load(Ordering::Relaxed);
    let size = GICR_SIZE.load(Ordering::Relaxed);
    let mpidr = arch::cpu::mpidr_affinity();
    let aff = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
    let mut off = 0;
    while off < size {
        // SAFETY: within the redistributor region mapped by the caller of init_distributor.
        let r = unsafe { &*((base + off) as *const GicrRegs) };
        let typer = r.typer.get();
        if typer >> 32 == aff {
            return Some(r);
        }
        if typer & (1 << 4) != 0 {
            break; // Last
        }
        off += GICR_STRIDE;
    }
    None
}

/// Per-CPU setup: CPU interface (and redistributor on v3), priorities, and enable `ppis`.
pub fn init_cpu(ppis: &[u32]) {
    match version() {
        GicVersion::V2 => {
            let d = gicd();
            for &p in ppis.iter().chain(&[SGI_WAKE]) {
                d.ipriorityr[p as usize].set(0xa0);
                d.isenabler[0].set(1 << p);
            }
            let c = gicc();
            c.pmr.set(0xff);
            c.bpr.set(0);
            c.ctlr.set(1);
        }
        GicVersion::V3 => {
            if let Some(r) = my_gicr() {
                // Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep to clear.
                r.waker.set(r.waker.get() & !(1 << 1));
                while r.waker.get() & (1 << 2) != 0 {
                    core::hint::spin_loop();
                }
                r.igroupr0.set(!0);
                for &p in ppis.iter().chain(&[SGI_WAKE]) {
                    r.ipriorityr[p as usize].set(0xa0);
                    r.isenabler0.set(1 << p);
                }
            }
            ICC_SRE_EL1.set(ICC_SRE_EL1.get() | 0x7); // SRE, DFB, DIB
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            ICC_PMR_EL1.set(0xff);
            ICC_BPR1_EL1.set(0);
            ICC_IGRPEN1_EL1.set(1);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        }
    }
}

/// Trigger mode of an SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Level,
    Edge,
}

/// Configure and enable an SPI (routed to the boot CPU).
pub fn enable_spi(intid: u32, trigger: Trigger) {
    let d = gicd();
    let (reg, shift) = ((intid / 16) as usize, (intid % 16) * 2 + 1);
    let v = d.icfgr[reg].get() & !(1 << shift);
    d.icfgr[reg].set(v | if trigger == Trigger::Edge { 1 << shift } else { 0 });
    d.isenabler[(intid / 32) as usize].set(1 << (intid % 32));
}

/// Disable an SPI (a level-triggered line whose device is serviced later, in thread context).
pub fn disable_spi(intid: u32) {
    gicd().icenabler[(intid / 32) as usize].set(1 << (intid % 32));
}

/// An acknowledged interrupt: its INTID and the raw IAR value EOI must echo (on GICv2 an SGI's
/// IAR also carries the source CPU).
#[derive(Clone, Copy, Debug)]
pub struct Acked {
    pub intid: u32,
    raw: u32,
}

/// Acknowledge the highest-priority pending interrupt; `None` if spurious.
pub fn ack() -> Option<Acked> {
    let raw = match version() {
        GicVersion::V2 => gicc().iar.get() & 0x1fff,
        GicVersion::V3 => ICC_IAR1_EL1.get() as u32 & 0xff_ffff,
    };
    let intid = raw & 0x3ff;
    (intid < SPURIOUS).then_some(Acked { intid, raw })
}

pub fn eoi(irq: Acked) {
    match version() {
        GicVersion::V2 => gicc().eoir.set(irq.raw),
        GicVersion::V3 => ICC_EOIR1_EL1.set(irq.raw as u64),
    }
}

/// Send SGI `intid` to the CPU with MPIDR affinity `mpidr` (and index `cpu` for v2 targets).
pub fn send_sgi(intid: u32, cpu: usize, mpidr: u64) {
    match version() {
        GicVersion::V2 => gicd().sgir.set((1 << (16 + cpu)) | intid),
        GicVersion::V3 => {
            let aff1 = (mpidr >> 8) & 0xff;
            let aff2 = (mpidr >> 16) & 0xff;
            let aff3 = (mpidr >> 32) & 0xff;
            let target = 1u64 << (mpidr & 0xf);
            ICC_SGI1R_EL1.set(aff3 << 48 | aff2 << 32 | (intid as u64) << 24 | aff1 << 16 | target);
        }
    }
}
