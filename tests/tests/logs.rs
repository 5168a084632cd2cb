//! A failing QEMU test leaves its logs where its failure message says: a boot that must fail
//! (the 16K build on `cortex-a57`, which has no 16K granule) is checked as if it should pass.

use hotmem_qemu::config::BootMode::Kernel;
use hotmem_qemu::config::Granule::K16;
use hotmem_tests::BootCase;

#[test]
fn failing_boot_keeps_its_logs_16k() {
    let case = BootCase::new(K16, 47, Kernel).cpu("cortex-a57");
    let panic = std::panic::catch_unwind(|| case.expect_ktest_pass()).expect_err("the boot must fail");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    let dir = msg
        .lines()
        .find_map(|l| l.trim().strip_prefix("logs: "))
        .unwrap_or_else(|| panic!("the failure message names no log folder:\n{msg}"));
    let dir = std::path::Path::new(dir);
    assert!(
        dir.ends_with("test-logs/logs/failing_boot_keeps_its_logs_16k"),
        "log folder {dir:?}"
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f} in {dir:?}: {e}"));
    assert!(
        read("serial.log").contains("hotmem: FATAL"),
        "serial.log lacks the FATAL line"
    );
    assert!(
        read("command.txt").contains("qemu-system-aarch64"),
        "command.txt lacks the command"
    );
    assert!(
        msg.contains("hotmem: FATAL"),
        "the message shows the console tail:\n{msg}"
    );
}
