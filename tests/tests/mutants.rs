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
    // Issue 10: the teardown order. Each mutant is caught by the teardown checker (which knows
    // live and pending entries, leaf vs table, and decodes every TLBI), by the per-CPU TLB
    // model, or by the barrier record, in the tests named here (README "Teardown contract").
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
    Mutant {
        package: "hotmem-arch",
        feature: "mutant-tlbi-off-by-one-page",
        test_args: &["--lib", "tlb::tests::planned_ops_cover_exactly_the_range"],
        expect: "missed",
    },
];

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
