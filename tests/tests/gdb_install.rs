//! `cargo test` installs `gdb-multiarch` when it is missing, exactly as it
//! does QEMU (root with apt-get: installed; otherwise the exact commands are printed).
//!
//! Its own test binary (one process) because it changes `PATH`: a directory holding only a
//! fake `apt-get`, which "installs" a fake `gdb-multiarch` next to itself. No real package is
//! touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use hotmem_qemu::discover::{ensure_gdb, find_gdb_or_howto, is_root, InstallPolicy};

const FAKE_APT: &str = r#"#!/bin/sh
dir=${0%/*}
echo "$*" >> "$dir/apt.log"
case "$*" in
  *"install -y gdb-multiarch"*) printf '#!/bin/sh\necho fake gdb\n' > "$dir/gdb-multiarch"; chmod +x "$dir/gdb-multiarch" ;;
esac
exit 0
"#;

#[test]
fn missing_gdb_is_installed_like_qemu() {
    let dir = std::env::temp_dir().join(format!("hotmem-gdb-install-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let apt = dir.join("apt-get");
    fs::write(&apt, FAKE_APT).unwrap();
    fs::set_permissions(&apt, fs::Permissions::from_mode(0o755)).unwrap();
    // Nothing but the fake apt-get (and the chmod it needs) can be found.
    std::os::unix::fs::symlink("/bin/chmod", dir.join("chmod")).unwrap();
    std::env::set_var("PATH", dir.as_os_str());
    std::env::remove_var("HOTMEM_GDB");
    assert!(!dir.join("gdb-multiarch").exists());

    // Without permission to install: the exact commands.
    let e = find_gdb_or_howto().unwrap_err();
    assert!(
        e.starts_with("gdb-multiarch not found on PATH (or set $HOTMEM_GDB); install it (as root):")
            && e.contains("\n  apt-get update\n  apt-get install -y gdb-multiarch"),
        "{e}"
    );
    let e = ensure_gdb(InstallPolicy::Never).unwrap_err();
    assert!(e.contains("apt-get install -y gdb-multiarch"), "{e}");

    let r = ensure_gdb(InstallPolicy::IfRoot);
    let log = fs::read_to_string(dir.join("apt.log")).unwrap_or_default();
    if is_root() {
        let p = r.unwrap_or_else(|e| panic!("not installed: {e}\napt log:\n{log}"));
        assert_eq!(p, dir.join("gdb-multiarch"));
        assert_eq!(log, "update\ninstall -y gdb-multiarch\n");
        // Found from now on without installing again.
        assert_eq!(ensure_gdb(InstallPolicy::IfRoot).unwrap(), p);
        assert_eq!(fs::read_to_string(dir.join("apt.log")).unwrap(), log);
    } else {
        let e = r.unwrap_err();
        assert!(
            e.contains("needs root") && e.contains("apt-get install -y gdb-multiarch"),
            "{e}"
        );
        assert!(log.is_empty(), "apt-get ran without root: {log}");
    }
    // $HOTMEM_GDB that is not there is named.
    std::env::set_var("HOTMEM_GDB", dir.join("nope"));
    let e = ensure_gdb(InstallPolicy::IfRoot).unwrap_err();
    assert!(
        e.contains("$HOTMEM_GDB is `") && e.contains("not an executable file"),
        "{e}"
    );
    let _ = fs::remove_dir_all(&dir);
}
