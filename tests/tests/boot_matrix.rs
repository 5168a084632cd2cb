//! Boots the in-guest test kernel (`ktest` build) across the configuration matrix
//! (docs/design.md#configuration-matrix; docs/testing.md). Every case expects QEMU to exit 0 with `ktest: summary passed=N failed=0`, N > 0,
//! except the 16K build on cortex-a57 (no 16K granule), which must stop with `hotmem: FATAL`.
//!
//! One `#[test]` per case. Kernels are built once per configuration (serialised); QEMU runs
//! in parallel up to the number of cores, each under a deadline (SIGKILL when it hangs).
//! Run one: `cargo test -p hotmem-tests --test boot_matrix boot_16k_47_kernel`.

use hotmem_qemu::config::BootMode::{Firmware, Image, Kernel, Pflash};
use hotmem_qemu::config::Granule::{K16, K4, K64};
use hotmem_qemu::config::{BootMode, Granule};
use hotmem_tests::{cases, BootCase};

/// A ktest boot; each row adds its options (`.cpu(..)`, `.gic(..)`).
fn boot(g: Granule, va: u32, b: BootMode) -> BootCase {
    BootCase::new(g, va, b)
}

/// Every in-guest test of the boot passes.
fn ktest_passes(case: BootCase) {
    case.expect_ktest_pass();
}

/// The shell kernel boots with `-m mem` (and `append` instead of the default command line),
/// uses `ram_bytes` of it, and powers off with status 0.
fn ram_size(g: Granule, va: u32, b: BootMode, mem: &str, append: Option<&str>, ram_bytes: u64) {
    let case = BootCase::new(g, va, b).mem(mem).no_append();
    let case = match append {
        Some(a) => case.append(a),
        None => case,
    };
    case.expect_shell_boot(ram_bytes);
}

// Every granule/VA build in both main boot modes, on the default CPU (max,lpa2=off).
cases! { ktest_passes =>
    boot_4k_39_firmware: boot(K4, 39, Firmware);
    boot_4k_39_kernel: boot(K4, 39, Kernel);
    boot_4k_48_firmware: boot(K4, 48, Firmware);
    boot_4k_48_kernel: boot(K4, 48, Kernel);
    boot_16k_36_firmware: boot(K16, 36, Firmware);
    boot_16k_36_kernel: boot(K16, 36, Kernel);
    boot_16k_47_firmware: boot(K16, 47, Firmware);
    boot_16k_47_kernel: boot(K16, 47, Kernel);
    boot_16k_48_firmware: boot(K16, 48, Firmware);
    boot_16k_48_kernel: boot(K16, 48, Kernel);
    boot_64k_42_firmware: boot(K64, 42, Firmware);
    boot_64k_42_kernel: boot(K64, 42, Kernel);
    boot_64k_48_firmware: boot(K64, 48, Firmware);
    boot_64k_48_kernel: boot(K64, 48, Kernel);
}

// The arm64 Image form (`-kernel hotmem.bin`, DTB in x0), one configuration per granule.
cases! { ktest_passes =>
    boot_4k_48_image: boot(K4, 48, Image);
    boot_16k_47_image: boot(K16, 47, Image);
    boot_64k_48_image: boot(K64, 48, Image);
}

// The firmware as a read-only pflash drive (`hotmem-<config>.pflash`, libvirt's
// `<loader type='pflash'>`), one configuration per granule.
cases! { ktest_passes =>
    boot_4k_48_pflash: boot(K4, 48, Pflash);
    boot_16k_47_pflash: boot(K16, 47, Pflash);
    boot_64k_48_pflash: boot(K64, 48, Pflash);
}

// GICv3, each granule's default VA size.
cases! { ktest_passes =>
    boot_4k_48_gicv3: boot(K4, 48, Firmware).gic(3);
    boot_16k_47_gicv3: boot(K16, 47, Firmware).gic(3);
    boot_64k_48_gicv3: boot(K64, 48, Kernel).gic(3);
}

// 1 and 4 CPUs.
cases! { ktest_passes =>
    boot_4k_48_smp1: boot(K4, 48, Firmware).smp(1);
    boot_4k_48_smp4: boot(K4, 48, Firmware).smp(4);
    boot_16k_47_smp4: boot(K16, 47, Kernel).smp(4);
    boot_64k_48_smp4_gicv3: boot(K64, 48, Firmware).smp(4).gic(3);
}

// virtualization=on: the CPUs start at EL2 and the kernel drops to EL1.
cases! { ktest_passes =>
    boot_4k_48_el2_firmware: boot(K4, 48, Firmware).el2(true);
    boot_4k_48_el2_kernel: boot(K4, 48, Kernel).el2(true);
    boot_16k_47_el2_firmware: boot(K16, 47, Firmware).el2(true);
    boot_16k_47_el2_kernel: boot(K16, 47, Kernel).el2(true);
    boot_64k_48_el2_firmware: boot(K64, 48, Firmware).el2(true);
    boot_64k_48_el2_kernel: boot(K64, 48, Kernel).el2(true);
}

// Real CPU models: cortex-a76 has all three granules, cortex-a57 has 4K and 64K only.
cases! { ktest_passes =>
    boot_4k_48_cortex_a76: boot(K4, 48, Firmware).cpu("cortex-a76");
    boot_16k_47_cortex_a76: boot(K16, 47, Firmware).cpu("cortex-a76");
    boot_64k_48_cortex_a76: boot(K64, 48, Kernel).cpu("cortex-a76");
    boot_4k_48_cortex_a57: boot(K4, 48, Firmware).cpu("cortex-a57");
    boot_64k_48_cortex_a57: boot(K64, 48, Kernel).cpu("cortex-a57");
}

const M: u64 = 1 << 20;

// RAM sizes that are not whole GiB (the 4K linear map needs a PMD table for them, which the
// early table pool must hold): every granule with 512M, 1536M and 2G+64M, plus odd
// sizes and a `mem=` limit on 4K.
cases! { ram_size =>
    ram_4k_48_512m: K4, 48, Firmware, "512M", None, 512 * M;
    ram_4k_48_1536m: K4, 48, Kernel, "1536M", None, 1536 * M;
    ram_4k_48_2112m: K4, 48, Firmware, "2112M", None, 2112 * M;
    ram_4k_39_128m: K4, 39, Kernel, "128M", None, 128 * M;
    ram_4k_48_1025m: K4, 48, Image, "1025M", None, 1025 * M;
    ram_4k_48_2g_mem512m: K4, 48, Firmware, "2G", Some("mem=512M"), 512 * M;
    ram_16k_47_512m: K16, 47, Kernel, "512M", None, 512 * M;
    ram_16k_47_1536m: K16, 47, Firmware, "1536M", None, 1536 * M;
    ram_16k_36_2112m: K16, 36, Kernel, "2112M", None, 2112 * M;
    ram_64k_48_512m: K64, 48, Firmware, "512M", None, 512 * M;
    ram_64k_48_1536m: K64, 48, Kernel, "1536M", None, 1536 * M;
    ram_64k_42_2112m: K64, 42, Firmware, "2112M", None, 2112 * M;
}

// Expected failure: QEMU would silently fall back to 4K; the kernel must refuse with a clear
// message and a non-zero status.
#[test]
fn boot_16k_47_cortex_a57_refused_firmware() {
    BootCase::new(K16, 47, Firmware).cpu("cortex-a57").expect_fatal("16K");
}

#[test]
fn boot_16k_47_cortex_a57_refused_kernel() {
    BootCase::new(K16, 47, Kernel).cpu("cortex-a57").expect_fatal("16K");
}
