//! Checks that are seen to fail: each mutant (`arch::mutant::Mutant`) puts a known bug back
//! into the code. Running the named test with the mutant on must fail, and fail for the stated
//! reason; a check that passes with the bug in place is not a check.
//!
//! One build holds every mutant (the `mutants` feature); the mutant is chosen at run time:
//! `HOTMEM_MUTANT=<name>` for the host tests, `mutant=<name>` on the test kernel's command
//! line. So the host table costs one extra build of `mm`, and the guest table one test kernel
//! per granule, run once per entry in **every** granule.
//!
//! The nested builds use their own target directories (`target/mutants`,
//! `target/mutants-kernel`) so they never invalidate the normal build.
//! `HOTMEM_MUTANT_FILTER=<text>` runs only the mutants whose name contains `<text>` (for
//! development; CI runs them all).

use std::path::Path;
use std::process::Command;

struct Mutant {
    /// `arch::mutant::Mutant::name`.
    name: &'static str,
    /// Package whose tests must catch it (built with its `mutants` feature).
    package: &'static str,
    /// `cargo test` arguments selecting the check that must catch it.
    test_args: &'static [&'static str],
    /// Text the failing check must print (so the test fails for the right reason).
    expect: &'static str,
}

const MUTANTS: &[Mutant] = &[
    // Un-isolation cleared ISOLATED on the whole range before putting blocks back,
    // so the merge took parked neighbours off lists they were never on.
    Mutant {
        package: "hotmem-mm",
        name: "unisolate-early-clear",
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
        name: "unisolate-early-clear",
        test_args: &[
            "--release",
            "--lib",
            "buddy::tests::unisolate_merges_parked_buddies_back",
        ],
        expect: "after unisolate: broken link in the Movable order-0 free list",
    },
    // A DIMM block onlined into another zone than the DIMM's other blocks.
    Mutant {
        package: "hotmem-mm",
        name: "dimm-zone-split",
        test_args: &["--release", "--test", "hotplug", "cfg_4k_48::dimm_stays_in_one_zone"],
        // The accounting checker the double runs after every operation sees the split first.
        expect: "(static) is split across zones",
    },
    // The shell's remove took a DIMM's memory behind its driver.
    Mutant {
        package: "hotmem-mm",
        name: "dimm-remove-behind-driver",
        test_args: &[
            "--release",
            "--test",
            "hotplug",
            "cfg_64k_48::dimm_memory_is_not_removed_behind_its_driver",
        ],
        expect: "OwnedByGroup",
    },
    // The teardown order. Each mutant is caught by the teardown checker (which knows
    // live and pending entries, leaf vs table, and decodes every TLBI), by the per-CPU TLB
    // model, or by the barrier record, in the tests named here (docs/teardown.md).
    //
    // The memmap backing freed before its vmemmap mapping is torn down.
    Mutant {
        package: "hotmem-mm",
        name: "free-before-unmap",
        test_args: &[
            "--test",
            "vmemmap",
            "cfg_16k_47::populate_then_free_restores_everything",
        ],
        expect: "is still valid (freed before unmap)",
    },
    Mutant {
        package: "hotmem-mm",
        name: "free-before-unmap",
        test_args: &["--test", "hotplug", "cfg_4k_48::add_online_offline_remove_round_trip"],
        expect: "teardown order violated in vmemmap_free",
    },
    // An empty table page freed after a last-level (VAALE1IS/RVAALE1IS) flush only.
    Mutant {
        package: "hotmem-mm",
        name: "leaf-tlbi-for-table",
        test_args: &["--test", "vmemmap", "cfg_4k_48::populate_then_free_restores_everything"],
        expect: "the table entry for va=",
    },
    Mutant {
        package: "hotmem-mm",
        name: "leaf-tlbi-for-table",
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
        name: "no-leaf-tlbi",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_4k_48::base_page_window_removal_with_range_tlbi",
        ],
        expect: "can still translate removed va",
    },
    Mutant {
        package: "hotmem-mm",
        name: "no-leaf-tlbi",
        test_args: &["--test", "hotplug", "cfg_64k_48::add_online_offline_remove_round_trip"],
        expect: "was cleared but not yet invalidated",
    },
    // New entries used without DSB ISHST; ISB.
    Mutant {
        package: "hotmem-mm",
        name: "missing-map-barrier",
        test_args: &["--test", "tlb_model", "cfg_4k_48::map_publishes_new_entries_before_use"],
        expect: "map made entries valid without DSB ISHST; ISB",
    },
    Mutant {
        package: "hotmem-mm",
        name: "missing-map-barrier",
        test_args: &["--test", "hotplug", "cfg_16k_47::add_online_offline_remove_round_trip"],
        expect: "without DSB ISHST; ISB",
    },
    // Every planned leaf TLBI addressed one page too high.
    Mutant {
        package: "hotmem-mm",
        name: "tlbi-off-by-one-page",
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
        name: "local-tlbi",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_64k_48::base_page_window_removal_without_range_tlbi",
        ],
        expect: "TLB model: cpu 1 can still translate removed va",
    },
    Mutant {
        package: "hotmem-mm",
        name: "local-tlbi",
        test_args: &[
            "--test",
            "hotplug",
            "cfg_16k_47::tlb_model_flows_with_and_without_range_tlbi",
        ],
        // The first local flush in that flow is a migration's (the window model speaks).
        expect: "cpu 1 still translates migrated va",
    },
    // The O(1) "initialised?" test says yes everywhere, so the PFN walkers read
    // deferred struct pages; the poison checks of the test build must stop the first read.
    Mutant {
        package: "hotmem-mm",
        name: "deferred-walk-reads-uninit",
        test_args: &[
            "--test",
            "hotplug",
            "deferred_init::cfg_16k_47::deferred_untouched_memory_costs_no_per_page_work",
        ],
        expect: "read of the uninitialised struct page of pfn",
    },
    // Isolation that cuts no free block at its edges leaves a free max-order block reaching
    // into an unplugged device block: the checker sees it, in the unit test (the rule for the
    // pages inside a block) and in the sub-block property test.
    // A free list's lower bound left above a block pushed onto it.
    Mutant {
        package: "hotmem-mm",
        name: "free-list-low-stale",
        test_args: &["--lib", "buddy::tests::alloc_below_skips_only_lists_with_nothing_below"],
        expect: "free list below the list's lower bound",
    },
    Mutant {
        package: "hotmem-mm",
        name: "isolate-head-only-walk",
        test_args: &[
            "--lib",
            "buddy::tests::isolating_part_of_a_free_block_cuts_it_at_the_edges",
        ],
        expect: "is offline, reserved, self-hosted or in another zone",
    },
    Mutant {
        package: "hotmem-mm",
        name: "isolate-head-only-walk",
        test_args: &[
            "--release",
            "--test",
            "hotplug",
            "subblock::cfg_4k_48::subblock_plug_unplug_sequences",
        ],
        // The random sequences meet it through either rule: a page inside a free block that is
        // offline, or an online page in no block.
        expect: "page allocator invariant broken after offline_pages",
    },
    // Removal that leaves the deferred-memmap bits of the removed range set: the allocator's
    // checker counts deferred pages outside every populated section.
    Mutant {
        package: "hotmem-mm",
        name: "remove-leaves-deferred-bits",
        test_args: &[
            "--test",
            "hotplug",
            "deferred_mode::cfg_16k_47::add_online_offline_remove_round_trip",
        ],
        expect: "deferred memmap marked where there is no memmap",
    },
    // virtio-mem's policy against the fake device: plug state changed on the wrong side of
    // onlining or of the device's UNPLUG, and a stopped resize forgotten.
    Mutant {
        package: "hotmem-mm",
        name: "vmem-online-before-plugged",
        test_args: &["--test", "vmem", "cfg_4k_48::grow_and_shrink_in_every_mode"],
        expect: "plugged=true online=false",
    },
    Mutant {
        package: "hotmem-mm",
        name: "vmem-unplug-before-offline",
        test_args: &["--test", "vmem", "cfg_64k_48::grow_and_shrink_in_every_mode"],
        expect: "while it is online",
    },
    Mutant {
        package: "hotmem-mm",
        name: "vmem-forget-stopped",
        test_args: &["--test", "vmem", "cfg_16k_47::pinned_memory_stops_and_is_retried"],
        expect: "the timer retries",
    },
    Mutant {
        package: "hotmem-arch",
        name: "tlbi-off-by-one-page",
        test_args: &["--lib", "tlb::tests::planned_ops_cover_exactly_the_range"],
        expect: "missed",
    },
    // Migration through the movable window, in the host TLB model and the
    // hotplug double (which maps every movable allocation through a window).
    Mutant {
        package: "hotmem-mm",
        name: "migrate-no-tlbi",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_4k_48::window_migration_moves_every_translation",
        ],
        expect: "TLB model: cpu 0 still translates",
    },
    Mutant {
        package: "hotmem-mm",
        name: "migrate-no-tlbi",
        test_args: &["--test", "hotplug", "cfg_16k_47::offline_migrates_movable_pages"],
        expect: "still translates migrated va",
    },
    Mutant {
        package: "hotmem-mm",
        name: "migrate-no-remap",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_64k_42::window_migration_moves_every_translation",
        ],
        expect: "does not reach the new frame",
    },
    Mutant {
        package: "hotmem-mm",
        name: "migrate-no-remap",
        test_args: &["--test", "hotplug", "cfg_64k_48::offline_migrates_movable_pages"],
        expect: "does not map the new frame",
    },
    // Migration that looks for new frames from node 0 instead of the page's node: a page of
    // node 1 moves to node 0 although node 1 has room.
    Mutant {
        package: "hotmem-mm",
        name: "migrate-ignores-node",
        test_args: &[
            "--test",
            "numa",
            "cfg_4k_48::migration_targets_the_source_node_then_the_nearest",
        ],
        expect: "room on node 1: true",
    },
    // A migration batch whose single invalidation covers only its first block.
    Mutant {
        package: "hotmem-mm",
        name: "migrate-batch-flush-first",
        test_args: &[
            "--test",
            "tlb_model",
            "cfg_16k_47::window_batch_migration_moves_every_translation",
        ],
        expect: "still translates",
    },
    // The model-checked deferred hand-over: an offline that does not see a chunk in flight
    // completes under an idle CPU initialising it.
    Mutant {
        package: "hotmem-mm",
        name: "handover-no-inflight",
        test_args: &["--test", "model", "deferred_handover_model"],
        expect: "offline completed over a chunk in flight",
    },
    Mutant {
        package: "hotmem-mm",
        name: "busy-window-ignored",
        test_args: &["--test", "model", "hotplug_window_model"],
        expect: "an idle CPU took a chunk during a hotplug operation",
    },
    Mutant {
        package: "hotmem-mm",
        name: "irq-pending-cleared-late",
        test_args: &["--test", "model", "vmem_config_change_model"],
        expect: "a config change was lost",
    },
];

/// A mutant the in-guest suite must catch: the test kernel with every mutant compiled in
/// (`--features "granule-G mutants"`) is booted with `mutant=<name>` (kernel mode, 4 CPUs,
/// RAM held back for the hotplug cases); it must not pass, and its console must show `expect`
/// (the check that caught it). Every entry runs in every granule.
struct GuestMutant {
    name: &'static str,
    /// Granules to run it in (all but one entry: every granule).
    granules: &'static [&'static str],
    /// QEMU CPU models to run it on.
    cpus: &'static [&'static str],
    /// More kernel command line: `ktest.only=CASE` (the case that must catch it, so no other
    /// case's check speaks first), `teardown_check=off` (the run-time checker reports and goes
    /// on, so the named in-guest test alone must catch it).
    append: &'static str,
    expect: &'static str,
}

const ALL: &[&str] = &["4k", "16k", "64k"];
const MAX: &[&str] = &["max,lpa2=off"];
const BOTH: &[&str] = &["max,lpa2=off", "cortex-a76"];

const GUEST_MUTANTS: &[GuestMutant] = &[
    // An offline that does not see a deferred chunk in flight: only the case that holds one
    // itself meets it (idle CPUs keep off chunks during hotplug operations).
    GuestMutant {
        granules: ALL,
        name: "handover-no-inflight",
        cpus: MAX,
        append: "ktest.only=offline_refuses_chunk_in_flight",
        expect: "offline over a chunk in flight",
    },
    // The old un-isolation order, caught by `debug_vm` (on in the test build) after
    // `failed_offline_rolls_back_cleanly`'s failed offline.
    GuestMutant {
        granules: ALL,
        name: "unisolate-early-clear",
        cpus: MAX,
        append: "ktest.only=failed_offline_rolls_back_cleanly",
        expect: "hotmem: FATAL debug_vm: page allocator invariant broken",
    },
    GuestMutant {
        granules: ALL,
        name: "free-before-unmap",
        cpus: MAX,
        append: "",
        expect: "is still valid (freed before unmap)",
    },
    GuestMutant {
        granules: ALL,
        name: "leaf-tlbi-for-table",
        cpus: MAX,
        append: "",
        expect: "the table entry for va=",
    },
    // A dropped or mis-addressed leaf TLBI: the run-time checker stops a hot-remove when the
    // removed range's memmap goes back to its altmap ...
    GuestMutant {
        granules: ALL,
        name: "no-leaf-tlbi",
        cpus: BOTH,
        append: "ktest.only=removed_memory_faults_on_every_cpu",
        expect: "was cleared but not yet invalidated",
    },
    GuestMutant {
        granules: ALL,
        name: "tlbi-off-by-one-page",
        cpus: BOTH,
        append: "ktest.only=hotplug_cycles",
        expect: "was cleared but not yet invalidated",
    },
    // ... and with the checker only reporting, the base-page-window test fails on its own
    // (TCG really keeps the stale translations), with and without FEAT_TLBIRANGE.
    GuestMutant {
        granules: ALL,
        name: "no-leaf-tlbi",
        cpus: BOTH,
        append: "ktest.only=base_page_window_removal_faults_on_every_cpu teardown_check=off",
        expect: "still translating the removed window",
    },
    // A TLBI one page off is QEMU-visible only with 4K pages and per-page TLBIs: QEMU flushes
    // a vCPU's whole TLB for a range TLBI longer than its fast TLB's index span, and for any
    // TLBI ending in its large-page region, which holds every 16K/64K guest page
    // (docs/teardown.md). Elsewhere the checker (entry above) and the host TLB model catch it.
    GuestMutant {
        granules: &["4k"],
        name: "tlbi-off-by-one-page",
        cpus: &["cortex-a76"],
        append: "ktest.only=base_page_window_removal_faults_on_every_cpu teardown_check=off",
        expect: "still translating the removed window",
    },
    // Local instead of broadcast: only the path without FEAT_TLBIRANGE issues per-leaf TLBIs
    // (`max` uses range TLBIs, which the mutant leaves broadcast).
    GuestMutant {
        granules: ALL,
        name: "local-tlbi",
        cpus: &["cortex-a76"],
        append: "",
        expect: "was cleared but not yet invalidated",
    },
    GuestMutant {
        granules: ALL,
        name: "missing-map-barrier",
        cpus: MAX,
        append: "",
        expect: "never published with DSB ISHST; ISB",
    },
    // Migration through the movable window that forgets to map the new
    // frame (the other CPUs' window reads fault) or to invalidate the cleared PTE (the
    // teardown checker refuses the migrated-from free).
    GuestMutant {
        granules: ALL,
        name: "migrate-no-remap",
        cpus: MAX,
        append: "ktest.only=hotplug_cycles",
        expect: "name=hotplug_cycles msg=cycle 0: after offline",
    },
    GuestMutant {
        granules: ALL,
        name: "migrate-no-tlbi",
        cpus: &["cortex-a76"],
        append: "ktest.only=hotplug_cycles",
        expect: "the leaf for va=",
    },
    // A CPU writing a page under migration: a writer that does not wait takes its fault for a
    // real one; without the TLBI (checker reporting only) it goes on writing the old frame and
    // its last pass is not in the new one.
    GuestMutant {
        granules: ALL,
        name: "writer-does-not-wait",
        cpus: MAX,
        append: "ktest.only=writer_waits_for_migration",
        expect: "hotmem: FATAL exception",
    },
    GuestMutant {
        granules: ALL,
        name: "migrate-no-tlbi",
        cpus: MAX,
        append: "ktest.only=writer_waits_for_migration teardown_check=off",
        expect: "words of the writer's last pass lost",
    },
    // A PFN walker that skips the "initialised" test reads deferred memmap, which
    // the test build fills with Page::POISON; the allocator's poison assertion stops the boot.
    GuestMutant {
        granules: ALL,
        name: "deferred-walk-reads-uninit",
        cpus: MAX,
        append: "ktest.only=deferred_block_allocates_every_page",
        expect: "uninitialised struct page of pfn",
    },
    // Removal leaving its deferred-memmap bits: `debug_vm`'s allocator check after the remove
    // (the next add used to heal it with a console line no test read).
    GuestMutant {
        granules: ALL,
        name: "remove-leaves-deferred-bits",
        cpus: MAX,
        append: "ktest.only=hotplug_cycles",
        expect: "where there is no memmap",
    },
    // The switch itself: a misspelt mutant must not run the suite mutant-free and pass.
    GuestMutant {
        granules: ALL,
        name: "no-such-mutant",
        cpus: MAX,
        append: "",
        expect: "mutant=no-such-mutant: no such mutant",
    },
    // A failed add's memmap rollback that keeps the emptied page-table pages: the injected
    // backing failure after the first memmap page (a new PTE table on 16K/64K; 4K backs a
    // section's memmap with one block, so its rollback has no table to keep).
    GuestMutant {
        granules: &["16k", "64k"],
        name: "rollback-leaks-tables",
        cpus: MAX,
        append: "ktest.only=add_rolls_back_under_injected_faults",
        expect: "after the failed add",
    },
    // An altmap that runs dry and silently takes backing from the page allocator: the add
    // with a too-small altmap must fail.
    GuestMutant {
        granules: ALL,
        name: "altmap-falls-back",
        cpus: MAX,
        append: "ktest.only=add_rolls_back_under_injected_faults",
        expect: "backing taken from elsewhere",
    },
    // Two lock classes taken in the reverse of the kernel's order (the cycle test counting a
    // block's movable pages under the kernel page table's lock, where the movable window takes
    // `handles` then `kernel_pt`): the test build's lock checker stops the run with both chains.
    GuestMutant {
        granules: ALL,
        name: "lock-inversion",
        cpus: MAX,
        append: "ktest.only=hotplug_cycles",
        expect: "hotmem: FATAL lockdep: lock order inversion: kernel_pt -> handles here, handles -> kernel_pt earlier",
    },
    // An interrupt handler that allocates (the timer's): the heap's lock is a plain spin lock,
    // which the lock checker refuses in interrupt context.
    GuestMutant {
        granules: ALL,
        name: "irq-allocates",
        cpus: MAX,
        append: "ktest.only=timer_ticks_on_every_cpu",
        expect: "hotmem: FATAL lockdep: irq-unsafe lock heap taken in interrupt context",
    },
    // A contiguous vmemmap run past the end of the populated range: 16K/64K base pages (4K
    // backs a section's memmap with one PMD block).
    GuestMutant {
        granules: &["16k", "64k"],
        name: "cont-run-past-end",
        cpus: MAX,
        append: "ktest.only=memmap_from_the_page_allocator_round_trip",
        expect: "a run past the end",
    },
];

/// Build the test kernel with every mutant for `granule`; its ELF.
fn build_mutants_kernel(root: &Path, granule: &str) -> std::path::PathBuf {
    build_kernel_with(root, granule, "mutants")
}

/// Build the kernel for `granule` with `feature` (`mutants`: the test kernel; `shell-mutants`:
/// the shell kernel) in its own target directory; its ELF.
fn build_kernel_with(root: &Path, granule: &str, feature: &str) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = root.join("target").join(format!("{feature}-kernel")).join(granule);
    let out = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "-q", "--release", "-p", "hotmem-platform", "--bin", "hotmem"])
        .args(["--target", "aarch64-unknown-none", "--target-dir"])
        .arg(&target)
        .args(["--features", &format!("granule-{granule} {feature}")])
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the {feature} kernel ({granule}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("aarch64-unknown-none/release/hotmem")
}

/// Boot the mutants kernel with `mutant=<name>`; returns (passed, console).
fn run_guest_mutant(elf: &Path, m: &GuestMutant, cpu: &str) -> (bool, String) {
    let mut child = Command::new(hotmem_tests::qemu_path())
        .args([
            "-M",
            "virt,gic-version=2",
            "-cpu",
            cpu,
            "-smp",
            "4",
            "-m",
            "3G",
            "-semihosting",
        ])
        .args([
            "-nic", "none", "-display", "none", "-monitor", "none", "-serial", "stdio", "-kernel",
        ])
        .arg(elf)
        .arg("-append")
        .arg(format!("mem=1G ktest.hotplug_cycles=4 mutant={} {}", m.name, m.append))
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

/// Every guest mutant, on every CPU model of its entry, in `granule`.
fn guest_mutants_are_caught(granule: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let filter = std::env::var("HOTMEM_MUTANT_FILTER").unwrap_or_default();
    let elf = build_mutants_kernel(root, granule);
    let mut escaped = Vec::new();
    let chosen = GUEST_MUTANTS
        .iter()
        .filter(|m| m.name.contains(filter.as_str()) && m.granules.contains(&granule));
    for m in chosen {
        for cpu in m.cpus {
            let t0 = std::time::Instant::now();
            let (passed, console) = run_guest_mutant(&elf, m, cpu);
            let caught = !passed && console.contains(m.expect);
            eprintln!(
                "mutant {} ({granule}, {cpu}, {:?}): {} in {:.1} s",
                m.name,
                m.append,
                if caught { "caught" } else { "ESCAPED" },
                t0.elapsed().as_secs_f64()
            );
            if !caught {
                escaped.push(format!(
                    "{} ({granule}, {cpu}, {:?}): passed={passed}, expected {:?} in:\n{}",
                    m.name,
                    m.append,
                    m.expect,
                    console.lines().rev().take(15).collect::<Vec<_>>().join("\n")
                ));
            }
        }
    }
    assert!(
        escaped.is_empty(),
        "guest mutants not caught:\n{}",
        escaped.join("\n\n")
    );
}

#[test]
fn guest_mutants_are_caught_4k() {
    guest_mutants_are_caught("4k");
}

#[test]
fn guest_mutants_are_caught_16k() {
    guest_mutants_are_caught("16k");
}

#[test]
fn guest_mutants_are_caught_64k() {
    guest_mutants_are_caught("64k");
}

#[test]
fn every_mutant_is_caught() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let filter = std::env::var("HOTMEM_MUTANT_FILTER").unwrap_or_default();
    let mut escaped = Vec::new();
    for m in MUTANTS.iter().filter(|m| m.name.contains(filter.as_str())) {
        let out = Command::new(&cargo)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target/mutants"))
            .env("HOTMEM_MUTANT", m.name)
            .args(["test", "-q", "-p", m.package, "--features", "mutants"])
            .args(m.test_args)
            .output()
            .expect("run cargo");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        let ran = text.contains("test result:") || text.contains("panicked");
        if out.status.success() || !ran || !text.contains(m.expect) {
            escaped.push(format!(
                "{} {:?}: status {}, expected {:?} in:\n{}",
                m.name,
                m.test_args,
                out.status,
                m.expect,
                text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(escaped.is_empty(), "mutants not caught:\n{}", escaped.join("\n\n"));
}

/// Without a mutant the mutants build passes the very tests that must catch them (so a catch
/// is the mutant's doing, not a broken build), and every mutant has a host entry.
#[test]
fn mutants_build_passes_without_a_mutant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for m in MUTANTS {
        let out = Command::new(&cargo)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target/mutants"))
            .env_remove("HOTMEM_MUTANT")
            .args(["test", "-q", "-p", m.package, "--features", "mutants"])
            .args(m.test_args)
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "{:?} fails without a mutant:\n{}",
            m.test_args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A mutant of a device path the host drives (virtio-mem over QMP): the shell kernel with every
/// mutant is booted with `mutant=<name> debug_vm`, the host runs `sizes` through `:vmem`, and
/// the console must show `expect` (the `debug_vm` check that stopped the kernel).
struct VmemMutant {
    name: &'static str,
    sizes: &'static [u64],
    expect: &'static str,
}

const MIB: u64 = 1 << 20;

const VMEM_MUTANTS: &[VmemMutant] = &[
    // Growth into a memory block already added and partly plugged (128M + 38M, then 256M):
    // onlined before marked plugged, the online filter hands over nothing.
    VmemMutant {
        name: "vmem-online-before-plugged",
        sizes: &[128 * MIB + 38 * MIB, 256 * MIB],
        expect: "of a plugged device block of an online memory block is offline",
    },
    // A shrink inside a memory block that tells the device before the pages are offline.
    VmemMutant {
        name: "vmem-unplug-before-offline",
        sizes: &[256 * MIB, 128 * MIB + 38 * MIB],
        expect: "UNPLUG of 0x",
    },
];

/// The virtio-mem mutants, in the 4K granule (the sub-block paths are the same code in every
/// granule; the guest and host tables above cover the granule-specific parts).
#[test]
fn vmem_mutants_are_caught_4k() {
    use hotmem_qemu::config::Granule;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let filter = std::env::var("HOTMEM_MUTANT_FILTER").unwrap_or_default();
    let elf = build_kernel_with(root, "4k", "shell-mutants");
    let mut escaped = Vec::new();
    for m in VMEM_MUTANTS.iter().filter(|m| m.name.contains(filter.as_str())) {
        let mut c = hotmem_tests::vmem::vmem_case(Granule::K4).append(&format!("mutant={}", m.name));
        let config = c.config;
        c.kernel = Some(hotmem_qemu::kernel::Kernel {
            config,
            elf: elf.clone(),
            bin: elf.with_extension("bin"),
        });
        let mut d = c.start();
        for &size in m.sizes {
            // The mutant stops the kernel at some step: the rest fail, which is expected.
            let _ = d.session().vmem("vmem0", size);
        }
        let console = d.session().console.output();
        let caught = console.contains(&format!("boot: mutant={}", m.name)) && console.contains(m.expect);
        eprintln!("mutant {} (4k): {}", m.name, if caught { "caught" } else { "ESCAPED" });
        if !caught {
            escaped.push(format!("{}: no {:?} in\n{console}", m.name, m.expect));
        }
        drop(d);
    }
    assert!(
        escaped.is_empty(),
        "virtio-mem mutants escaped:\n{}",
        escaped.join("\n")
    );
}

/// A mutant of a path the host drives over QMP (DIMMs, NUMA placement): the shell kernel with
/// every mutant boots the scenario's machine (`case`) with `mutant=<name>`, the host runs the
/// scenario (`run`, the helpers of `hotmem_tests`), and it must fail with `expect`.
struct ScenarioMutant {
    name: &'static str,
    case: fn(hotmem_qemu::config::Granule) -> hotmem_tests::dimm::DimmCase,
    run: fn(&hotmem_tests::dimm::DimmCase),
    expect: &'static str,
}

/// A firmware machine with DIMM slots.
fn dimm_case(g: hotmem_qemu::config::Granule) -> hotmem_tests::dimm::DimmCase {
    hotmem_tests::dimm::DimmCase::new(g, 2)
}

/// A one-block DIMM plugged and unplugged, the mutant checked to be on.
fn dimm_plug_unplug(c: &hotmem_tests::dimm::DimmCase) {
    let name = c
        .append
        .as_deref()
        .and_then(|a| a.split_whitespace().find_map(|w| w.strip_prefix("mutant=")));
    let mut d = c.start();
    assert!(
        name.is_some_and(|n| d.boot_log.contains(&format!("boot: mutant={n}"))),
        "the kernel did not turn the mutant on"
    );
    d.plug_ok(c.block(), "dimm0");
    d.unplug_ok("dimm0");
    d.powerdown();
}

const DIMM_MUTANTS: &[ScenarioMutant] = &[
    // An eject answered before the memory is offline and removed: the outcome is the same
    // (the DIMM goes, nothing stays mapped), only the QMP protocol check sees the early answer.
    ScenarioMutant {
        name: "dimm-ost-before-remove",
        case: dimm_case,
        run: dimm_plug_unplug,
        expect: "before DEVICE_DELETED",
    },
    // A fallback no scenario asked for (the DIMM's memmap initialised at once after a failed
    // deferral): the memory works, only the harness's fallback-line check sees it.
    ScenarioMutant {
        name: "defer-memmap-falls-back",
        case: dimm_case,
        run: dimm_plug_unplug,
        expect: "the kernel took a fallback the test did not ask for",
    },
];

const NUMA_MUTANTS: &[ScenarioMutant] = &[
    // Allocations from node 0 whatever CPU asks: CPU 2 (node 2) allocates on node 0.
    ScenarioMutant {
        name: "numa-node-ignored",
        case: hotmem_tests::numa::four_nodes_case,
        run: hotmem_tests::numa::locality,
        expect: "numa locality: got",
    },
    // A DIMM plugged on node 1 lands on node 0 (its insert line names node 0).
    ScenarioMutant {
        name: "dimm-node-ignored",
        case: hotmem_tests::numa::acceptance_case,
        run: hotmem_tests::numa::acceptance,
        expect: "on node 1 online in one zone",
    },
];

/// Every mutant of `table` (those `HOTMEM_MUTANT_FILTER` names), in the 4K granule.
fn scenario_mutants_are_caught(what: &str, table: &[ScenarioMutant]) {
    use hotmem_qemu::config::Granule;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let filter = std::env::var("HOTMEM_MUTANT_FILTER").unwrap_or_default();
    let elf = build_kernel_with(root, "4k", "shell-mutants");
    // Firmware boots load the flat image.
    let flat = hotmem_qemu::elf::elf_to_flat(&std::fs::read(&elf).expect("read the kernel")).expect("flat image");
    std::fs::write(elf.with_extension("bin"), &flat.bytes).expect("write the flat image");
    let mut escaped = Vec::new();
    for m in table.iter().filter(|m| m.name.contains(filter.as_str())) {
        let mut c = (m.case)(Granule::K4).append(&format!("mutant={}", m.name));
        c.kernel = Some(hotmem_qemu::kernel::Kernel {
            config: c.config,
            elf: elf.clone(),
            bin: elf.with_extension("bin"),
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (m.run)(&c)));
        let why = panic_text(&r);
        let caught = r.is_err() && why.contains(m.expect);
        eprintln!("mutant {} (4k): {}", m.name, if caught { "caught" } else { "ESCAPED" });
        if !caught {
            escaped.push(format!("{}: expected {:?}, got: {why}", m.name, m.expect));
        }
    }
    assert!(escaped.is_empty(), "{what} mutants escaped:\n{}", escaped.join("\n"));
}

/// The DIMM mutants, in the 4K granule.
#[test]
fn dimm_mutants_are_caught_4k() {
    scenario_mutants_are_caught("DIMM", DIMM_MUTANTS);
}

/// The NUMA mutants, in the 4K granule.
#[test]
fn numa_mutants_are_caught_4k() {
    scenario_mutants_are_caught("NUMA", NUMA_MUTANTS);
}

/// The message of a scenario's panic ("the scenario passed" when it did not panic).
fn panic_text(r: &std::thread::Result<()>) -> String {
    match r {
        Ok(()) => String::from("the scenario passed"),
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    }
}
