//! Checks that are seen to fail: each mutant is a cargo feature that puts a known bug back
//! into the code (see the `mutant-*` features in the crates' `Cargo.toml`). Building the named
//! test with the mutant on must fail, and fail for the stated reason; a check that passes
//! with the bug in place is not a check.
//!
//! The nested builds use their own target directory (`target/mutants`) so they never
//! invalidate the normal build.

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
        expect: "GroupSplit",
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
];

#[test]
fn every_mutant_is_caught() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut escaped = Vec::new();
    for m in MUTANTS {
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
