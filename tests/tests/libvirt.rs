//! hotmem managed by libvirt (docs/runner.md#running-under-libvirt), every granule: a private
//! `libvirtd`/`virtlogd` pair started by hand (tests/src/libvirt.rs: session driver, its own
//! directories, stopped by pid at the end, also on failure), the domain of
//! `tests/libvirt/domain.xml` (TCG `virt`, the firmware as a read-only pflash image, `<acpi/>`,
//! one NUMA cell, `<maxMemory slots=...>`, the serial console on a unix socket, virtio-mem at
//! libvirt's default address behind a `pcie-root-port`), and hotmem driven only through
//! `virsh`:
//!
//! - `attach-device --live` of a 1 GiB DIMM, then `detach-device --live`, twice: the guest
//!   onlines it (`event=insert`, `dimms`, `meminfo check`), `virsh detach-device` returns only
//!   after the guest ejected it, and `virsh dumpxml` lists the DIMM exactly while it is plugged;
//! - `update-memory-device --requested-size` 1 GiB then 512 MiB: the guest's `vmem` follows and
//!   `dumpxml`'s `<current>` reaches the same size;
//! - `shutdown`: the guest powers off (`ged: powerdown`) and the domain is shut off.
//!
//! The console (the serial socket) shows every step; the typed commands are `dimms`, `blocks`,
//! `vmem` and `meminfo check`. Libvirt is installed like QEMU when missing (root with apt-get),
//! or the exact commands are printed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hotmem_qemu::config::Granule::{self, K16, K4, K64};
use hotmem_qemu::config::KernelConfig;
use hotmem_tests::cases;
use hotmem_tests::libvirt::{alive, Daemons, SerialConsole};
use hotmem_tests::parse::kv;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// How long the guest may take to answer a hotplug event on its console.
const GUEST: Duration = Duration::from_secs(30);

const DIMM_XML: &str = "<memory model='dimm'><target><size unit='GiB'>1</size><node>0</node></target></memory>\n";

/// The domain's private directory: short (unix socket paths are limited to 108 bytes, and
/// libvirt puts QEMU's monitor socket below it), fresh for each run.
fn private_dir(g: Granule) -> PathBuf {
    std::env::temp_dir().join(format!("hotmem-libvirt-{}-{g}", std::process::id()))
}

/// The test's state; every failure names the step, the console so far and the directory whose
/// logs (`cache/libvirt/qemu/log/`, `console.log`) tell the rest.
struct Case {
    name: String,
    lv: Daemons,
    console: SerialConsole,
    steps: Vec<String>,
}

impl Case {
    fn fail(&mut self, why: &str) -> ! {
        let out = self.console.since(0);
        let tail: Vec<&str> = out.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "\n[libvirt {}] {why}\n  private dir (kept): {}\n--- steps ---\n{}\n--- console tail ---\n{}\n",
            self.name,
            self.lv.dir.display(),
            self.steps.join("\n"),
            tail.join("\n")
        );
    }

    fn virsh(&mut self, args: &[&str]) -> String {
        let t0 = Instant::now();
        match self.lv.virsh(args) {
            Ok(o) => {
                self.steps
                    .push(format!("virsh {} ({} ms)", args.join(" "), t0.elapsed().as_millis()));
                o
            }
            Err(e) => self.fail(&e),
        }
    }

    fn guest(&mut self, cmd: &str) -> String {
        self.steps.push(format!("guest: {cmd}"));
        match self.console.command(cmd) {
            Ok(o) => o,
            Err(e) => self.fail(&format!("{cmd}: {e}")),
        }
    }

    fn wait_console(&mut self, from: usize, needle: &str) -> String {
        match self.console.wait_for(from, needle, GUEST) {
            Ok(o) => o,
            Err(e) => self.fail(&e),
        }
    }

    fn meminfo_ok(&mut self, when: &str) {
        let t = self.guest("meminfo check");
        if !t.contains("meminfo check: ok") {
            self.fail(&format!("{when}: {t}"));
        }
    }

    /// The guest's DIMMs: `(base, size)` of each `dimm: slot=` line of `dimms`.
    fn dimms(&mut self) -> Vec<(String, String)> {
        let t = self.guest("dimms");
        if !t.contains("dimms: count=") {
            self.fail(&format!("dimms: {t}"));
        }
        t.lines()
            .filter(|l| l.trim().starts_with("dimm: slot="))
            .filter_map(|l| Some((kv(l, "base")?.to_string(), kv(l, "size")?.to_string())))
            .collect()
    }

    /// DIMMs in `virsh dumpxml`.
    fn xml_dimms(&mut self) -> usize {
        self.virsh(&["dumpxml", &self.name.clone()])
            .matches("<memory model='dimm'")
            .count()
    }

    /// `dumpxml`'s virtio-mem `<requested>` and `<current>` (KiB).
    fn xml_vmem(&mut self) -> (u64, u64) {
        let x = self.virsh(&["dumpxml", &self.name.clone()]);
        let kib = |tag: &str| -> Option<u64> {
            let at = x.find(&format!("<{tag} unit='KiB'>"))?;
            let rest = &x[at..];
            rest[rest.find('>')? + 1..rest.find("</")?].trim().parse().ok()
        };
        match (kib("requested"), kib("current")) {
            (Some(r), Some(c)) => (r, c),
            _ => self.fail(&format!("no virtio-mem <requested>/<current> in dumpxml:\n{x}")),
        }
    }

    fn dimm_cycle(&mut self, round: u32, dimm: &std::path::Path) {
        let dom = self.name.clone();
        let dimm = dimm.to_string_lossy().into_owned();
        let from = self.console.len();
        self.virsh(&["attach-device", &dom, &dimm, "--live"]);
        let out = self.wait_console(from, "event=insert");
        let line = out
            .lines()
            .find(|l| l.contains("event=insert"))
            .unwrap_or("")
            .to_string();
        if !line.contains(" ost=0x0") || kv(&line, "size") != Some("0x40000000") {
            self.fail(&format!(
                "round {round}: the guest did not online the 1 GiB DIMM: {line}"
            ));
        }
        let base = kv(&line, "base").unwrap_or_default().to_string();
        let dimms = self.dimms();
        if dimms != [(base.clone(), "0x40000000".to_string())] {
            self.fail(&format!("round {round}: dimms {dimms:?}, expected one at {base}"));
        }
        let blocks = self.guest("blocks");
        if !blocks.contains("online") {
            self.fail(&format!("round {round}: blocks: {blocks}"));
        }
        self.meminfo_ok(&format!("round {round}, DIMM plugged"));
        if self.xml_dimms() != 1 {
            self.fail(&format!("round {round}: dumpxml does not list the attached DIMM"));
        }
        let from = self.console.len();
        self.virsh(&["detach-device", &dom, &dimm, "--live"]);
        // detach-device returns once QEMU deleted the device: the guest ejected it already.
        if !self.console.since(from).contains("event=remove ejected") {
            self.fail(&format!(
                "round {round}: virsh detach-device returned before the guest's `event=remove ejected`"
            ));
        }
        if !self.dimms().is_empty() {
            self.fail(&format!(
                "round {round}: the guest still has a DIMM after detach-device"
            ));
        }
        self.meminfo_ok(&format!("round {round}, DIMM detached"));
        if self.xml_dimms() != 0 {
            self.fail(&format!("round {round}: dumpxml still lists the detached DIMM"));
        }
    }

    fn resize(&mut self, bytes: u64) {
        let dom = self.name.clone();
        let from = self.console.len();
        let size = format!("{}KiB", bytes / 1024);
        self.virsh(&[
            "update-memory-device",
            &dom,
            "--alias",
            "ua-vmem0",
            "--live",
            "--requested-size",
            &size,
        ]);
        let want = format!("requested={bytes:#x} plugged={bytes:#x}");
        let out = self.wait_console(from, &want);
        if !out.lines().any(|l| l.contains(&want) && l.contains("event=done")) {
            self.fail(&format!("resize to {size}: the guest did not report event=done: {out}"));
        }
        let v = self.guest("vmem");
        let line = v.lines().find(|l| l.contains(" pci=")).unwrap_or("").to_string();
        if kv(&line, "plugged") != Some(format!("{bytes:#x}").as_str()) {
            self.fail(&format!("resize to {size}: vmem says {line}"));
        }
        self.guest("blocks");
        self.meminfo_ok(&format!("at {size}"));
        // `<current>` follows QEMU's throttled size-change event (up to about 1 s late).
        let t0 = Instant::now();
        loop {
            let (req, cur) = self.xml_vmem();
            if req * 1024 == bytes && cur * 1024 == bytes {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                self.fail(&format!(
                    "resize to {size}: dumpxml requested={req} KiB current={cur} KiB"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn managed_by_libvirt(g: Granule) {
    let t0 = Instant::now();
    let kernel = hotmem_tests::kernel(KernelConfig::default_for(g));
    let dir = private_dir(g);
    let mut lv = Daemons::start(&dir).unwrap_or_else(|e| panic!("[libvirt {g}] {e}"));
    let pids = lv.pids();
    let name = format!("hotmem-{g}");
    // The daemons' user reads the firmware from its own directory.
    let pflash = dir.join("hotmem.pflash");
    if let Err(e) = std::fs::copy(kernel.pflash(), &pflash) {
        panic!("[libvirt {g}] {}: {e}", kernel.pflash().display());
    }
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/libvirt/domain.xml"))
        .expect("tests/libvirt/domain.xml");
    let xml = template
        .replace("@NAME@", &name)
        .replace("@QEMU@", &hotmem_tests::qemu_path().to_string_lossy())
        .replace("@PFLASH@", &pflash.to_string_lossy())
        .replace("@DIR@", &dir.to_string_lossy());
    let (dom_file, dimm_file) = match (lv.write_file("domain.xml", &xml), lv.write_file("dimm.xml", DIMM_XML)) {
        (Ok(d), Ok(m)) => (d, m),
        (Err(e), _) | (_, Err(e)) => panic!("[libvirt {g}] {e}"),
    };
    let start = |lv: &mut Daemons| -> Result<SerialConsole, String> {
        lv.virsh(&["define", &dom_file.to_string_lossy()])?;
        lv.virsh(&["start", "--paused", &name])?;
        // Connected before the guest runs, so the console holds the whole boot.
        let c = SerialConsole::connect(&dir.join("console.sock"))?;
        lv.virsh(&["resume", &name])?;
        Ok(c)
    };
    let console = match start(&mut lv) {
        Ok(c) => c,
        Err(e) => panic!("[libvirt {g}] {e} (private dir kept: {})", dir.display()),
    };
    let mut c = Case {
        name: name.clone(),
        lv,
        console,
        steps: vec![format!(
            "daemons up, domain {name} started in {} ms",
            t0.elapsed().as_millis()
        )],
    };
    let boot = c.wait_console(0, &format!("\n{}", hotmem_qemu::console::PROMPT));
    for want in ["ged: present", "virtio-mem: dev=0 pci=01:00.0 "] {
        if !boot.contains(want) {
            c.fail(&format!("boot log lacks {want:?}"));
        }
    }
    c.meminfo_ok("after boot");
    for round in 1..=2 {
        c.dimm_cycle(round, &dimm_file);
    }
    c.resize(GIB);
    c.resize(512 * MIB);
    let from = c.console.len();
    c.virsh(&["shutdown", &name]);
    c.wait_console(from, "ged: powerdown");
    let t1 = Instant::now();
    while c.virsh(&["domstate", &name]).trim() != "shut off" {
        if t1.elapsed() > GUEST {
            c.fail("the domain is not shut off after virsh shutdown");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.lv.stop();
    for (n, pid) in pids {
        if alive(pid) {
            c.fail(&format!("{n} (pid {pid}) still runs after stop"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("libvirt {g}: passed in {:.1} s", t0.elapsed().as_secs_f64());
}

cases! { managed_by_libvirt =>
    libvirt_4k: K4;
    libvirt_16k: K16;
    libvirt_64k: K64;
}
