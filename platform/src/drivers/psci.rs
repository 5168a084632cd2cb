//! PSCI 0.2+ through the conduit the DTB names (`/psci/method`): HVC at EL1, SMC when QEMU
//! started us at EL2 and PSCI sits at EL3.

use arch::cpu::Conduit;
use core::sync::atomic::{AtomicBool, Ordering};

const PSCI_VERSION: u32 = 0x8400_0000;
const CPU_ON_64: u32 = 0xc400_0003;
const SYSTEM_OFF: u32 = 0x8400_0008;
const SYSTEM_RESET: u32 = 0x8400_0009;

static USE_SMC: AtomicBool = AtomicBool::new(false);

/// PSCI return codes (negative values of x0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    NotSupported,
    InvalidParameters,
    Denied,
    AlreadyOn,
    OnPending,
    InternalFailure,
    NotPresent,
    Disabled,
    InvalidAddress,
    Unknown(i64),
}

fn result(v: i64) -> Result<(), PsciError> {
    match v {
        0 => Ok(()),
        -1 => Err(PsciError::NotSupported),
        -2 => Err(PsciError::InvalidParameters),
        -3 => Err(PsciError::Denied),
        -4 => Err(PsciError::AlreadyOn),
        -5 => Err(PsciError::OnPending),
        -6 => Err(PsciError::InternalFailure),
        -7 => Err(PsciError::NotPresent),
        -8 => Err(PsciError::Disabled),
        -9 => Err(PsciError::InvalidAddress),
        v => Err(PsciError::Unknown(v)),
    }
}

pub fn init(method: Option<&str>) {
    USE_SMC.store(method == Some("smc"), Ordering::Relaxed);
}

fn conduit() -> Conduit {
    if USE_SMC.load(Ordering::Relaxed) {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

pub fn conduit_name() -> &'static str {
    match conduit() {
        Conduit::Smc => "smc",
        Conduit::Hvc => "hvc",
    }
}

/// (major, minor).
pub fn version() -> (u16, u16) {
    let v = arch::cpu::smccc(conduit(), PSCI_VERSION, 0, 0, 0) as u32;
    ((v >> 16) as u16, v as u16)
}

pub fn cpu_on(mpidr: u64, entry_pa: u64, context: u64) -> Result<(), PsciError> {
    result(arch::cpu::smccc(conduit(), CPU_ON_64, mpidr, entry_pa, context))
}

pub fn system_off() -> ! {
    arch::cpu::smccc(conduit(), SYSTEM_OFF, 0, 0, 0);
    loop {
        arch::cpu::wfi();
    }
}

pub fn system_reset() -> ! {
    arch::cpu::smccc(conduit(), SYSTEM_RESET, 0, 0, 0);
    loop {
        arch::cpu::wfi();
    }
}
