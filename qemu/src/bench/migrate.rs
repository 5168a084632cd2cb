//! Migration of used memory (`--migrate-sizes`): the kernel's `bench migrate` per granule, with
//! batches (the default) and block by block (`batch=1`, one invalidation per page), printed
//! side by side. The numbers are printed, not recorded: `offline` of memory filled with
//! movable pages is the path DIMM unplug and virtio-mem shrink take too.

use crate::config::{BootMode, Granule, KernelConfig};
use crate::kernel::build_kernel_once;
use mm::size::Size;
use std::path::Path;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

/// Boot `granule` on `cpu` with twice the largest size held back (the filled range and the
/// target), run `bench migrate` over `sizes` batched and block by block; print the rows.
pub fn migrate_bench(qemu: &Path, granule: Granule, cpu: &str, sizes: &[u64]) -> Result<(), String> {
    let cfg = KernelConfig::default_for(granule);
    let kernel = build_kernel_once(cfg).map_err(|e| e.to_string())?;
    let max = sizes.iter().copied().max().unwrap_or(GIB);
    // Whole GiBs per range: each range is rounded up to memory blocks (512 MiB on 64K).
    let run = super::machines::lazy_ram_run(qemu, kernel, cpu, GIB + 2 * max.next_multiple_of(GIB))
        .boot(BootMode::Firmware)
        .append(Some("mem=1G".to_string()))
        .timeout(Some(Duration::from_secs(900)));
    let list: Vec<String> = sizes.iter().map(|&s| Size(s).to_string()).collect();
    let batched = format!("bench migrate {}", list.join(" "));
    let smallest = sizes.iter().copied().min().unwrap_or(GIB);
    let per_page = format!("bench migrate batch=1 {}", Size(smallest));
    let t0 = Instant::now();
    let out = run
        .run(&[batched.as_str(), per_page.as_str(), "poweroff"])
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("migrate bench failed: {}\n{}", out.describe(), out.tail(20)));
    }
    println!(
        "\n## {} {} migration of used memory (offline; cycles from CNTVCT; host wall {:.1} s)",
        cfg,
        cpu,
        t0.elapsed().as_secs_f64()
    );
    let rows: Vec<&str> = out
        .console
        .lines()
        .filter(|l| l.starts_with("bench-migrate: "))
        .map(str::trim_end)
        .collect();
    if rows.iter().any(|l| l.contains("error") || l.contains("skipped")) || !rows.iter().any(|l| l.contains(" warm ")) {
        return Err(format!("bench migrate: no figures\n{}", out.tail(20)));
    }
    for l in rows {
        println!("{l}");
    }
    Ok(())
}
