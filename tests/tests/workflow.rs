//! The workflow's environment reaches the runner: `.ci/workflow` runs a cell of
//! `.github/workflows/ci.yml` as GitHub would (its `env:`, its steps, the real `.ci/cell`), in a
//! checkout of this working tree, with the test step limited to one quick QEMU test.
//!
//! - `workflow_env_boots_the_common_cell`: the common cell passes its quick test with the
//!   workflow's env applied.
//! - `apt_source_in_hotmem_qemu_fails_the_cell`: a copy of the workflow that puts the apt-source
//!   choice back into `HOTMEM_QEMU` (the QEMU binary's variable) fails the cell's test step with
//!   the runner's `$HOTMEM_QEMU` message: the local run sees what GitHub's would.
//!
//! One boot each; the checkouts share `target/workflow/target`, so after the first build a run
//! costs a few seconds of cargo and one QEMU boot.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `.ci/workflow --job test --matrix slice=common --quick --worktree [extra]`: (success, output).
fn run_common_cell(extra: &[&str]) -> (bool, String) {
    let root = root();
    let out = Command::new(root.join(".ci/workflow"))
        .current_dir(&root)
        .args(["--job", "test", "--matrix", "slice=common", "--quick", "--worktree"])
        .args(extra)
        // The cell's environment is the workflow's: nothing of this process's own choice of QEMU.
        .env_remove("HOTMEM_QEMU")
        .env_remove("HOTMEM_QEMU_APT")
        .output()
        .expect("run .ci/workflow");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn workflow_env_boots_the_common_cell() {
    let (ok, out) = run_common_cell(&[]);
    assert!(ok, ".ci/workflow failed on the common cell:\n{out}");
    for want in [
        "HOTMEM_QEMU_APT=backports",
        "HOTMEM_CELL_TEST=help_is_aligned_and_the_first_prompt_has_a_hint",
        "test help_is_aligned_and_the_first_prompt_has_a_hint ... ok",
        "QEMU selected by the cell's env: /",
        "QEMU run: ",
        "passed",
    ] {
        assert!(out.contains(want), "no `{want}` in the output of .ci/workflow:\n{out}");
    }
}

#[test]
fn apt_source_in_hotmem_qemu_fails_the_cell() {
    let root = root();
    let wf = std::fs::read_to_string(root.join(".github/workflows/ci.yml")).expect("read ci.yml");
    let right = "HOTMEM_QEMU_APT: ${{ matrix.qemu }}";
    assert!(
        wf.contains(right),
        "ci.yml has no `{right}` line to plant the conflict in"
    );
    let planted = wf.replace(right, "HOTMEM_QEMU: ${{ matrix.qemu }}");
    let dir = root.join("target/workflow-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ci-planted-conflict.yml");
    std::fs::write(&file, planted).unwrap();

    let (ok, out) = run_common_cell(&["--workflow", file.to_str().unwrap()]);
    assert!(!ok, "the planted HOTMEM_QEMU conflict passed .ci/workflow:\n{out}");
    for want in [
        "$HOTMEM_QEMU is `backports`, which is not an executable file",
        "HOTMEM_QEMU_APT, read by .ci/install",
        "FAILED: job test, cell test (common, QEMU backports), step 5 `Test slice common`",
    ] {
        assert!(out.contains(want), "no `{want}` in the output of .ci/workflow:\n{out}");
    }
}
