//! Checks that are seen to fail: each mutant is a cargo feature that puts a known bug back
//! into the code (see the `mutant-*` features in the crates' `Cargo.toml`). Building the named
//! test with the mutant on must fail, and fail for the stated reason; a check that passes
//! with the bug in place is not a check.
//!
//! The nested builds use their own target directory (`target/mutants`) so they never
//! invalidate the normal build. `HOTMEM_MUTANT_FILTER=<text>` runs only the mutants whose
//! feature contains `<text>` (for development; CI runs them all).

use std::path::Path;
use std::process::Command;

struct Mutant {
    /// Package and feature that plant the bug.
    package: &'static str,
    feature: &'static str,
    /// `cargo test` arguments selecting the check that must catch it.
    test_args: &'static [&'static str],
    /// Text the failing check must print (so the test fails for the right reason).
    expect: &'static str,
}

const MUTANTS: &[Mutant] = &[
    // Issue 16: un-isolation cleared ISOLATED on the whole range before putting blocks back,
    // so the merge took parked neighbours off lists they were never on.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-unisolate-early-clear",
        // Release (as the kernel is built): the damaged counters wrap instead of tripping an
        // overflow check, so the allocator's invariant checker is what must notice.
        test_args: &[
            "--release",
            "--test",
            "hotplug",
            "cfg_4k_48::failed_offline_rolls_back_cleanly",
        ],
        expect: "page allocator invariant broken after offline_pages",
    },
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-unisolate-early-clear",
        test_args: &[
            "--release",
            "--lib",
            "buddy::tests::unisolate_merges_parked_buddies_back",
        ],
        expect: "after unisolate: broken link in the Movable order-0 free list",
    },
    // Issue 14: a DIMM block onlined into another zone than the DIMM's other blocks.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-dimm-zone-split",
        test_args: &["--release", "--test", "hotplug", "cfg_4k_48::dimm_stays_in_one_zone"],
        // The accounting checker the double runs after every operation sees the split first.
        expect: "(static) is split across zones",
    },
    // Issue 14: the shell's remove took a DIMM's memory behind its driver.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-dimm-remove-behind-driver",
        test_args: &[
            "--release",
            "--test",
            "hotplug",
            "cfg_64k_48::dimm_memory_is_not_removed_behind_its_driver",
        ],
        expect: "OwnedByGroup",
    },
    // Issue 10: the teardown order. Each mutant is caught by the teardown checker (which knows
    // live and pending entries, leaf vs table, and decodes every TLBI), by the per-CPU TLB
    // model, or by the barrier record, in the tests named here (docs/teardown.md).
    //
    // The memmap backing freed before its vmemmap mapping is torn down.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-free-before-unmap",
        test_args: &[
            "--test",
            "vmemmap",
            "cfg_16k_47::populate_then_free_restores_everything",
        ],
        expect: "is still valid (freed before unmap)",
    },
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-free-before-unmap",
        test_args: &["--test", "hotplug", "cfg_4k_48::add_online_offline_remove_round_trip"],
        expect: "teardown order violated in vmemmap_free",
    },
    // An empty table page freed after a last-level (VAALE1IS/RVAALE1IS) flush only.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-leaf-tlbi-for-table",
        test_args: &["--test", "vmemmap", "cfg_4k_48::populate_then_free_restores_everything"],
        expect: "the table entry for va=",
    },
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-leaf-tlbi-for-table",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_16k_47::freed_tables_leave_no_walk_cache_entry",
        ],
        expect: "the table entry for va=",
    },
    // The leaf invalidation of an unmap (linear map and vmemmap) dropped.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-no-leaf-tlbi",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_4k_48::base_page_window_removal_with_range_tlbi",
        ],
        expect: "can still translate removed va",
    },
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-no-leaf-tlbi",
        test_args: &["--test", "hotplug", "cfg_64k_48::add_online_offline_remove_round_trip"],
        expect: "was cleared but not yet invalidated",
    },
    // New entries used without DSB ISHST; ISB.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-missing-map-barrier",
        test_args: &["--test", "tlb_model", "cfg_4k_48::map_publishes_new_entries_before_use"],
        expect: "map made entries valid without DSB ISHST; ISB",
    },
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-missing-map-barrier",
        test_args: &["--test", "hotplug", "cfg_16k_47::add_online_offline_remove_round_trip"],
        expect: "without DSB ISHST; ISB",
    },
    // Every planned leaf TLBI addressed one page too high.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-tlbi-off-by-one-page",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_16k_47::base_page_window_removal_without_range_tlbi",
        ],
        expect: "can still translate removed va",
    },
    // Per-leaf invalidations local (TLBI VAALE1) instead of broadcast (the path used without
    // FEAT_TLBIRANGE).
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-local-tlbi",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_64k_48::base_page_window_removal_without_range_tlbi",
        ],
        expect: "TLB model: cpu 1 can still translate removed va",
    },
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-local-tlbi",
        test_args: &[
            "--test",
            "hotplug",
            "cfg_16k_47::tlb_model_flows_with_and_without_range_tlbi",
        ],
        expect: "was cleared but not yet invalidated",
    },
    // Issue 12: the O(1) "initialised?" test says yes everywhere, so the PFN walkers read
    // deferred struct pages; the poison checks of the test build must stop the first read.
    Mutant {
        package: "hotmem-mm",
        feature: "mutant-deferred-walk-reads-uninit",
        test_args: &[
            "--test",
            "hotplug",
            "deferred_init::cfg_16k_47::deferred_untouched_memory_costs_no_per_page_work",
        ],
        expect: "read of the uninitialised struct page of pfn",
    },
    Mutant {
        package: "hotmem-arch",
        feature: "mutant-tlbi-off-by-one-page",
        test_args: &["--lib", "tlb::tests::planned_ops_cover_exactly_the_range"],
        expect: "missed",
    },
];

/// A mutant the in-guest suite must catch: the `ktest` kernel is built with the feature and
/// booted (kernel mode, 4 CPUs, RAM held back for the hotplug cases); it must not pass, and its
/// console must show `expect` (the check that caught it).
struct GuestMutant {
    /// A `hotmem-mm` feature, or `package/feature` for another crate's (the kernel's).
    feature: &'static str,
    granule: &'static str,
    cpu: &'static str,
    /// `ktest.only=` (the case that must catch it, so no other case's check speaks first);
    /// empty: every case.
    only: &'static str,
    expect: &'static str,
}

/// One granule each keeps this cheap (one kernel build per entry); docs/teardown.md lists the
/// granule × CPU runs done by hand.
const GUEST_MUTANTS: &[GuestMutant] = &[
    // Issue 16: the old un-isolation order, caught by `debug_vm` (on in the test build) after
    // `failed_offline_rolls_back_cleanly`'s failed offline.
    GuestMutant {
        feature: "mutant-unisolate-early-clear",
        granule: "16k",
        cpu: "max,lpa2=off",
        only: "failed_offline_rolls_back_cleanly",
        expect: "hotmem: FATAL debug_vm: page allocator invariant broken",
    },
    GuestMutant {
        feature: "mutant-free-before-unmap",
        granule: "16k",
        cpu: "max,lpa2=off",
        only: "",
        expect: "is still valid (freed before unmap)",
    },
    GuestMutant {
        feature: "mutant-leaf-tlbi-for-table",
        granule: "64k",
        cpu: "max,lpa2=off",
        only: "",
        expect: "the table entry for va=",
    },
    GuestMutant {
        feature: "mutant-no-leaf-tlbi",
        granule: "4k",
        cpu: "cortex-a76",
        only: "base_page_window_removal_faults_on_every_cpu",
        // The movable window's boot-time table set-up (map, then unmap without freeing tables)
        // already leaves an uninvalidated leaf, so the checker stops the boot before the window
        // test runs (docs/teardown.md has the by-hand runs where the window test speaks).
        expect: "was cleared but not yet invalidated",
    },
    GuestMutant {
        feature: "mutant-tlbi-off-by-one-page",
        granule: "4k",
        cpu: "cortex-a76",
        only: "base_page_window_removal_faults_on_every_cpu",
        // As for mutant-no-leaf-tlbi: the movable window's boot-time set-up is caught first.
        expect: "was cleared but not yet invalidated",
    },
    GuestMutant {
        feature: "mutant-local-tlbi",
        granule: "64k",
        cpu: "cortex-a76",
        only: "",
        expect: "was cleared but not yet invalidated",
    },
    GuestMutant {
        feature: "mutant-missing-map-barrier",
        granule: "4k",
        cpu: "max,lpa2=off",
        only: "",
        expect: "never published with DSB ISHST; ISB",
    },
    // Issue 10 item 6: migration through the movable window that forgets to map the new
    // frame (the other CPUs' window reads fault) or to invalidate the cleared PTE (the
    // teardown checker refuses the migrated-from free).
    GuestMutant {
        feature: "hotmem-platform/mutant-migrate-no-remap",
        granule: "16k",
        cpu: "max,lpa2=off",
        only: "hotplug_cycles",
        expect: "name=hotplug_cycles msg=cycle 0: after offline",
    },
    GuestMutant {
        feature: "hotmem-platform/mutant-migrate-no-tlbi",
        granule: "4k",
        cpu: "cortex-a76",
        only: "hotplug_cycles",
        // A movable-window VA (4K/48: the window starts at 0xffff820040000000).
        expect: "the leaf for va=0xffff82004",
    },
];

/// Build the mutant test kernel and boot it; returns (passed, console).
fn run_guest_mutant(root: &Path, m: &GuestMutant) -> (bool, String) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = root.join("target/mutants-kernel");
    let out = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "-q", "--release", "-p", "hotmem-platform", "--bin", "hotmem"])
        .args(["--target", "aarch64-unknown-none", "--target-dir"])
        .arg(&target)
        .args([
            "--features",
            &if m.feature.contains('/') {
                format!("granule-{} ktest {}", m.granule, m.feature)
            } else {
                format!("granule-{} ktest hotmem-mm/{}", m.granule, m.feature)
            },
        ])
        .output()
        .expect("run cargo");
    if !out.status.success() {
        return (
            false,
            format!("build failed:\n{}", String::from_utf8_lossy(&out.stderr)),
        );
    }
    let elf = target.join("aarch64-unknown-none/release/hotmem");
    let mut child = Command::new(hotmem_tests::qemu_path())
        .args([
            "-M",
            "virt,gic-version=2",
            "-cpu",
            m.cpu,
            "-smp",
            "4",
            "-m",
            "3G",
            "-semihosting",
        ])
        .args([
            "-nic", "none", "-display", "none", "-monitor", "none", "-serial", "stdio", "-kernel",
        ])
        .arg(&elf)
        .arg("-append")
        .arg(match m.only {
            "" => String::from("mem=1G ktest.hotplug_cycles=4"),
            only => format!("mem=1G ktest.hotplug_cycles=4 ktest.only={only}"),
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start QEMU");
    // Drain the console on a thread so QEMU never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("QEMU stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + hotmem_tests::run_timeout();
    let passed = loop {
        match child.try_wait().expect("wait for QEMU") {
            Some(st) => break st.success(),
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    (passed, reader.join().unwrap_or_default())
}

#[test]
fn every_guest_mutant_is_caught() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let filter = std::env::var("HOTMEM_MUTANT_FILTER").unwrap_or_default();
    let mut escaped = Vec::new();
    for m in GUEST_MUTANTS.iter().filter(|m| m.feature.contains(filter.as_str())) {
        let (passed, console) = run_guest_mutant(root, m);
        if passed || !console.contains(m.expect) {
            escaped.push(format!(
                "{} ({}, {}): passed={passed}, expected {:?} in:\n{}",
                m.feature,
                m.granule,
                m.cpu,
                m.expect,
                console.lines().rev().take(15).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(
        escaped.is_empty(),
        "guest mutants not caught:\n{}",
        escaped.join("\n\n")
    );
}

#[test]
fn every_mutant_is_caught() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let filter = std::env::var("HOTMEM_MUTANT_FILTER").unwrap_or_default();
    let mut escaped = Vec::new();
    for m in MUTANTS.iter().filter(|m| m.feature.contains(filter.as_str())) {
        let out = Command::new(&cargo)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target/mutants"))
            .args(["test", "-q", "-p", m.package, "--features", m.feature])
            .args(m.test_args)
            .output()
            .expect("run cargo");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        let ran = text.contains("test result:") || text.contains("panicked");
        if out.status.success() || !ran || !text.contains(m.expect) {
            escaped.push(format!(
                "{} {:?}: status {}, expected {:?} in:\n{}",
                m.feature,
                m.test_args,
                out.status,
                m.expect,
                text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(escaped.is_empty(), "mutants not caught:\n{}", escaped.join("\n\n"));
}
