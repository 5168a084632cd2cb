//! GICv2 and GICv3 (distributor, CPU interface / redistributors), found in the DTB.
//!
//! All SPIs are routed to the boot CPU; PPIs (the timer) are enabled on every CPU; SGI 0 is
//! the wake-up IPI. `configure_spi` sets the trigger: QEMU's GED pulses its line, so INTID 41
//! must be edge-triggered or the event is lost.

use crate::boot::dtb::GicVersion;
use arch::cpu::Mpidr;
use arch::sysreg::{
    ICC_BPR1_EL1, ICC_EOIR1_EL1, ICC_IAR1_EL1, ICC_IGRPEN1_EL1, ICC_PMR_EL1, ICC_SGI1R_EL1, ICC_SRE_EL1,
};
use core::sync::atomic::{AtomicU8, Ordering};
use tock_registers::{
    fields::Field,
    interfaces::{ReadWriteable, Readable, Writeable},
    register_bitfields, register_structs,
    registers::{ReadOnly, ReadWrite, WriteOnly},
};

register_bitfields! {u32,
    /// GICD_CTLR (v2, and v3 with a single security state).
    GICD_CTLR [
        /// v3: affinity routing enabled.
        ARE OFFSET(4) NUMBITS(1) [],
        /// v3 only.
        EnableGrp1 OFFSET(1) NUMBITS(1) [],
        /// v2: forward interrupts to the CPU interfaces (its only bit without security
        /// extensions); v3: enable group 0.
        EnableGrp0 OFFSET(0) NUMBITS(1) []
    ],
    /// GICD_TYPER.
    GICD_TYPER [
        /// The distributor handles 32 * (ITLinesNumber + 1) INTIDs.
        ITLinesNumber OFFSET(0) NUMBITS(5) []
    ],
    /// GICD_SGIR (v2): send an SGI.
    GICD_SGIR [
        /// 0 = to the CPUs in CPUTargetList, 1 = to every CPU but the sender.
        TargetListFilter OFFSET(24) NUMBITS(2) [
            List = 0,
            AllButSelf = 1
        ],
        /// One bit per CPU interface 0..=7.
        CPUTargetList OFFSET(16) NUMBITS(8) [],
        SGIINTID OFFSET(0) NUMBITS(4) []
    ],
    /// GICC_CTLR (v2, without security extensions).
    GICC_CTLR [
        EnableGrp0 OFFSET(0) NUMBITS(1) []
    ],
    /// GICC_PMR (v2): priority mask.
    GICC_PMR [
        Priority OFFSET(0) NUMBITS(8) []
    ],
    /// GICC_BPR (v2): binary point.
    GICC_BPR [
        BinaryPoint OFFSET(0) NUMBITS(3) []
    ],
    /// GICC_IAR (v2; read: acknowledge) and GICC_EOIR (write: end of interrupt).
    GICC_IAR [
        /// For an SGI, the CPU that sent it; EOI must echo it.
        CPUID OFFSET(10) NUMBITS(3) [],
        InterruptID OFFSET(0) NUMBITS(10) []
    ],
    /// GICR_WAKER (v3).
    GICR_WAKER [
        /// Read-only: the redistributor's interfaces are quiescent.
        ChildrenAsleep OFFSET(2) NUMBITS(1) [],
        /// The CPU is asleep: the redistributor does not forward interrupts to it.
        ProcessorSleep OFFSET(1) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// GICR_TYPER (v3).
    GICR_TYPER [
        /// Affinity of the CPU this redistributor serves (Aff3.Aff2.Aff1.Aff0).
        Aff3 OFFSET(56) NUMBITS(8) [],
        Aff2 OFFSET(48) NUMBITS(8) [],
        Aff1 OFFSET(40) NUMBITS(8) [],
        Aff0 OFFSET(32) NUMBITS(8) [],
        /// The last redistributor of the region.
        Last OFFSET(4) NUMBITS(1) []
    ]
}

register_structs! {
    /// Distributor (common layout of v2 and v3 for what we use).
    pub GicdRegs {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32, GICD_TYPER::Register>),
        (0x0008 => _r0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _r1),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x0800 => itargetsr: [ReadWrite<u8>; 1024]),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => _r2),
        (0x0f00 => sgir: WriteOnly<u32, GICD_SGIR::Register>),
        (0x0f04 => _r3),
        (0x6000 => irouter: [ReadWrite<u64>; 1020]),
        (0x7fe0 => _r4),
        (0x10000 => @END),
    }
}

register_structs! {
    /// GICv2 CPU interface.
    pub GiccRegs {
        (0x00 => ctlr: ReadWrite<u32, GICC_CTLR::Register>),
        (0x04 => pmr: ReadWrite<u32, GICC_PMR::Register>),
        (0x08 => bpr: ReadWrite<u32, GICC_BPR::Register>),
        (0x0c => iar: ReadOnly<u32, GICC_IAR::Register>),
        (0x10 => eoir: WriteOnly<u32, GICC_IAR::Register>),
        (0x14 => @END),
    }
}

register_structs! {
    /// GICv3 redistributor: RD_base frame then SGI_base frame (64 KiB each).
    pub GicrRegs {
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => _iidr),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => _r0),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
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
/// The register blocks' addresses, set once by [`init_distributor`]: there is no reference to
/// a block before its mapping exists (a use before the distributor is set up is a panic, not a
/// read of address 0).
static GICD_VA: spin::Once<u64> = spin::Once::new();
static GICC_VA: spin::Once<u64> = spin::Once::new();
/// The v3 redistributor region: its base and size.
static GICR: spin::Once<(u64, u64)> = spin::Once::new();

fn gicd() -> &'static GicdRegs {
    let va = *GICD_VA.get().expect("GIC distributor set up at boot");
    // SAFETY: `init_distributor`'s caller promised a permanent device mapping there.
    unsafe { &*(va as *const GicdRegs) }
}

fn gicc() -> &'static GiccRegs {
    let va = *GICC_VA.get().expect("GICv2 CPU interface set up at boot");
    // SAFETY: as for the distributor, for the v2 CPU interface.
    unsafe { &*(va as *const GiccRegs) }
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
///
/// # Safety
/// `gicd_va` maps the GIC distributor and `[cpu_va, cpu_va + cpu_size)` the v2 CPU interface
/// or the v3 redistributors, as device memory, for the life of the kernel; called once, before
/// any other function of this module.
pub unsafe fn init_distributor(v: GicVersion, gicd_va: u64, cpu_va: u64, cpu_size: u64) {
    VERSION.store(if v == GicVersion::V3 { 3 } else { 2 }, Ordering::Relaxed);
    GICD_VA.call_once(|| gicd_va);
    match v {
        GicVersion::V2 => {
            GICC_VA.call_once(|| cpu_va);
        }
        GicVersion::V3 => {
            GICR.call_once(|| (cpu_va, cpu_size));
        }
    }
    let d = gicd();
    d.ctlr.set(0);
    let lines = (d.typer.read(GICD_TYPER::ITLinesNumber) as usize + 1) * 32;
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
        // GICv2 without security extensions: forwarding on.
        GicVersion::V2 => d.ctlr.write(GICD_CTLR::EnableGrp0::SET),
        // Affinity routing + group 1 (+ group 0), single security state.
        GicVersion::V3 => d
            .ctlr
            .write(GICD_CTLR::ARE::SET + GICD_CTLR::EnableGrp1::SET + GICD_CTLR::EnableGrp0::SET),
    }
}

/// This CPU's redistributor (v3), found by matching GICR_TYPER affinity with MPIDR.
fn my_gicr() -> Option<&'static GicrRegs> {
    let &(base, size) = GICR.get()?;
    let me = Mpidr::new(arch::cpu::mpidr_affinity());
    let mut off = 0;
    while off < size {
        // SAFETY: within the redistributor region `init_distributor`'s caller promised mapped.
        let r = unsafe { &*((base + off) as *const GicrRegs) };
        let typer = r.typer.extract();
        if typer.read(GICR_TYPER::Aff3) == u64::from(me.aff3())
            && typer.read(GICR_TYPER::Aff2) == u64::from(me.aff2())
            && typer.read(GICR_TYPER::Aff1) == u64::from(me.aff1())
            && typer.read(GICR_TYPER::Aff0) == u64::from(me.aff0())
        {
            return Some(r);
        }
        if typer.is_set(GICR_TYPER::Last) {
            break;
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
                let (i, bit) = per_intid(p, 1);
                d.isenabler[i].write(bit.val(1));
            }
            let c = gicc();
            c.pmr.write(GICC_PMR::Priority.val(0xff));
            c.bpr.write(GICC_BPR::BinaryPoint.val(0));
            c.ctlr.write(GICC_CTLR::EnableGrp0::SET);
        }
        GicVersion::V3 => {
            if let Some(r) = my_gicr() {
                // Wake the redistributor: clear ProcessorSleep, wait for ChildrenAsleep to clear.
                r.waker.modify(GICR_WAKER::ProcessorSleep::CLEAR);
                while r.waker.is_set(GICR_WAKER::ChildrenAsleep) {
                    core::hint::spin_loop();
                }
                r.igroupr0.set(!0);
                for &p in ppis.iter().chain(&[SGI_WAKE]) {
                    r.ipriorityr[p as usize].set(0xa0);
                    r.isenabler0.write(per_intid(p, 1).1.val(1));
                }
            }
            use arch::sysreg::{
                ICC_BPR1_EL1 as BPR, ICC_IGRPEN1_EL1 as IGRPEN, ICC_PMR_EL1 as PMR, ICC_SRE_EL1 as SRE,
            };
            ICC_SRE_EL1.modify(SRE::SRE::SET + SRE::DFB::SET + SRE::DIB::SET);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
            ICC_PMR_EL1.write(PMR::Priority.val(0xff));
            ICC_BPR1_EL1.write(BPR::BinaryPoint.val(0));
            ICC_IGRPEN1_EL1.write(IGRPEN::Enable::SET);
            aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        }
    }
}

/// Interrupt `intid`'s field in a distributor register array with `bits` bits per interrupt
/// (ISENABLER/ICENABLER: 1, ICFGR: 2): the array index and the field.
fn per_intid(intid: u32, bits: u32) -> (usize, Field<u32, ()>) {
    let per_reg = 32 / bits;
    let field = Field::new((1 << bits) - 1, ((intid % per_reg) * bits) as usize);
    ((intid / per_reg) as usize, field)
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
    // Int_config: the upper bit of the interrupt's two, 1 = edge-triggered (the lower one is
    // reserved and left as it is).
    let (i, cfg) = per_intid(intid, 2);
    let edge = Field::<u32, ()>::new(1, cfg.shift + 1);
    d.icfgr[i].modify(edge.val(u32::from(trigger == Trigger::Edge)));
    let (i, bit) = per_intid(intid, 1);
    d.isenabler[i].write(bit.val(1));
}

/// Disable an SPI (a level-triggered line whose device is serviced later, in thread context).
pub fn disable_spi(intid: u32) {
    let (i, bit) = per_intid(intid, 1);
    gicd().icenabler[i].write(bit.val(1));
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
    let (intid, raw) = match version() {
        GicVersion::V2 => {
            let iar = gicc().iar.extract();
            let id = iar.read(GICC_IAR::InterruptID);
            (
                id,
                (GICC_IAR::InterruptID.val(id) + GICC_IAR::CPUID.val(iar.read(GICC_IAR::CPUID))).value,
            )
        }
        // No LPIs are enabled, so an INTID is below 1024.
        GicVersion::V3 => {
            let id = ICC_IAR1_EL1.read(arch::sysreg::ICC_IAR1_EL1::INTID) as u32;
            (id, id)
        }
    };
    (intid < SPURIOUS).then_some(Acked { intid, raw })
}

pub fn eoi(irq: Acked) {
    match version() {
        GicVersion::V2 => gicc().eoir.set(irq.raw),
        GicVersion::V3 => ICC_EOIR1_EL1.write(arch::sysreg::ICC_IAR1_EL1::INTID.val(irq.raw.into())),
    }
}

/// Send SGI `intid` to the CPU with MPIDR affinity `mpidr` (and index `cpu` for v2 targets).
/// Send SGI `intid` to every CPU but this one (GICv2 target filter "all but self", GICv3
/// `IRM` = 1). Before the distributor is set up no other CPU runs: nothing to do.
pub fn send_sgi_to_others(intid: u32) {
    if GICD_VA.get().is_none() {
        return;
    }
    match version() {
        GicVersion::V2 => gicd()
            .sgir
            .write(GICD_SGIR::TargetListFilter::AllButSelf + GICD_SGIR::SGIINTID.val(intid)),
        GicVersion::V3 => {
            use arch::sysreg::ICC_SGI1R_EL1 as SGI1R;
            ICC_SGI1R_EL1.write(SGI1R::IRM.val(1) + SGI1R::INTID.val(intid.into()));
        }
    }
}

pub fn send_sgi(intid: u32, cpu: usize, mpidr: u64) {
    match version() {
        GicVersion::V2 => gicd().sgir.write(
            GICD_SGIR::TargetListFilter::List + GICD_SGIR::CPUTargetList.val(1 << cpu) + GICD_SGIR::SGIINTID.val(intid),
        ),
        GicVersion::V3 => {
            use arch::sysreg::ICC_SGI1R_EL1 as SGI1R;
            let m = Mpidr::new(mpidr);
            // TargetList has one bit per Aff0 value 0..=15 (QEMU's clusters have at most 16 CPUs).
            let target = 1u64 << (m.aff0() % 16);
            ICC_SGI1R_EL1.write(
                SGI1R::Aff3.val(m.aff3().into())
                    + SGI1R::Aff2.val(m.aff2().into())
                    + SGI1R::Aff1.val(m.aff1().into())
                    + SGI1R::INTID.val(intid.into())
                    + SGI1R::TargetList.val(target),
            );
        }
    }
}
