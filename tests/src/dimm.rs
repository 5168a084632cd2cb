//! DIMM hotplug scenarios: a [`DimmSession`] owns QEMU (firmware boot, so the ACPI GED exists),
//! its console and its QMP socket ([`hotmem_qemu::Session`]), so a test interleaves guest
//! commands and QMP actions, and checks after each step that QEMU's view
//! (`query-memory-devices`, `query-acpi-ospm-status`) and the guest's (`dimms`, `blocks`) agree.
//! Any failure panics with the configuration, the QEMU command line, the console tail, the host-command
//! output and the QMP transcript. The guest's lines are parsed by [`crate::parse`].

use std::time::{Duration, Instant};

use hotmem_qemu::config::{BootMode, GicVersion, Granule, KernelConfig};
use hotmem_qemu::host_cmd::dimm::protocol;
use hotmem_qemu::host_cmd::{PlugResult, Plugged, Size, UnplugResult, Unplugged};
use hotmem_qemu::qmp::{MemoryDevice, OspmStatus};
use hotmem_qemu::run::{Machine, QemuRun};
use hotmem_qemu::session::Session;
use hotmem_qemu::util::tail_lines;

use crate::parse::{
    parse_blocks, parse_dimms, parse_meminfo, parse_vmem, pt_not_mapped, region_start, DimmEvent, GuestBlock, Meminfo,
};
use crate::{kernel, qemu_path, run_timeout, QemuSlot, TAIL_LINES};

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// Memory block (= sparse section) size of a granule: 128 MiB on 4K/16K, 512 MiB on 64K.
pub fn block_size(g: Granule) -> u64 {
    match g {
        Granule::K64 => 512 * MIB,
        _ => 128 * MIB,
    }
}

/// One scenario configuration: a granule's default VA size, firmware boot, `-smp 2`.
#[derive(Clone, Debug)]
pub struct DimmCase {
    pub config: KernelConfig,
    pub machine: Machine,
    /// Cold-plugged DIMMs: `(id, size)`, backend `mem-<id>`.
    pub cold: Vec<(String, u64)>,
    pub append: Option<String>,
    pub timeout: Duration,
    /// Firmware (the default: the GED exists) or kernel/image (virtio-mem scenarios).
    pub boot: BootMode,
    /// Extra QEMU arguments.
    pub args: Vec<String>,
    /// A kernel other than `config`'s normal build (a mutants build).
    pub kernel: Option<hotmem_qemu::kernel::Kernel>,
    /// Fallback lines this scenario asks for (`crate::unexpected_fallbacks`).
    pub expected_fallbacks: Vec<String>,
}

/// How long the eject's `_OST` answer may trail `DEVICE_DELETED`.
pub const PROTOCOL_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Limit of one guest command in the scenarios.
pub const GUEST_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// RAM of the scenario machines and the DIMM room: `1G,slots=16,maxmem=17G`.
pub const DIMM_MEM: &str = "1G,slots=16,maxmem=17G";

impl DimmCase {
    pub fn new(g: Granule, gic: u32) -> DimmCase {
        DimmCase {
            config: KernelConfig::default_for(g),
            machine: Machine {
                smp: 2,
                mem: DIMM_MEM.into(),
                gic: if gic == 3 { GicVersion::V3 } else { GicVersion::V2 },
                ..Machine::default()
            },
            cold: Vec::new(),
            append: Some(crate::DEBUG_VM.into()),
            timeout: run_timeout(),
            boot: BootMode::Firmware,
            args: Vec::new(),
            kernel: None,
            expected_fallbacks: Vec::new(),
        }
    }

    /// The scenario asks for the fallback line containing `text`.
    pub fn expect_fallback(mut self, text: &str) -> Self {
        self.expected_fallbacks.push(text.into());
        self
    }

    pub fn cold(mut self, id: &str, size: u64) -> Self {
        self.cold.push((id.into(), size));
        self
    }

    /// Set the command line (`debug_vm` stays unless `cmdline` says `debug_vm=off`).
    pub fn append(mut self, cmdline: &str) -> Self {
        self.append = Some(format!("{} {cmdline}", crate::DEBUG_VM));
        self
    }

    pub fn block(&self) -> u64 {
        block_size(self.config.granule)
    }

    pub fn qemu_run(&self) -> QemuRun {
        let mut r = QemuRun::new(self.kernel.clone().unwrap_or_else(|| kernel(self.config)))
            .qemu(qemu_path())
            .machine(self.machine.clone())
            .boot(self.boot)
            .append(self.append.clone())
            .timeout(Some(self.timeout))
            .log_dir(Some(crate::test_log_dir()));
        for (id, size) in &self.cold {
            r = r
                .arg("-object")
                .arg(format!("memory-backend-ram,id=mem-{id},size={size}"))
                .arg("-device")
                .arg(format!("pc-dimm,id={id},memdev=mem-{id}"));
        }
        r.args(self.args.iter().cloned())
    }

    /// Boots to the prompt (holding a QEMU slot while it runs).
    pub fn start(&self) -> DimmSession {
        let run = self.qemu_run();
        let what = format!("{}{}", run.describe(), crate::logs_line(&run));
        let slot = QemuSlot::acquire();
        let mut s = Session::start(run).unwrap_or_else(|e| panic!("[{what}] {e}"));
        // No step takes long under TCG (the slowest, a 512 MiB stress, about 2 s): a hung
        // guest fails the test in 30 s, not at the run's deadline.
        s.guest_timeout = Some(GUEST_STEP_TIMEOUT);
        s.timeouts.plug = GUEST_STEP_TIMEOUT;
        s.timeouts.unplug = GUEST_STEP_TIMEOUT;
        let t0 = Instant::now();
        let boot_log = match s.boot() {
            Ok(b) => b,
            Err(e) => {
                let out = s.finish();
                panic!(
                    "[{what}] no prompt after boot: {e}\n--- console tail ---\n{}\n",
                    out.tail(TAIL_LINES)
                )
            }
        };
        let mut d = DimmSession {
            config: self.config,
            block: self.block(),
            page_offset: 0,
            vmemmap: 0,
            what,
            boot_log,
            s: Some(s),
            _slot: slot,
            steps: Vec::new(),
            boot_time: t0.elapsed(),
            expected_fallbacks: self.expected_fallbacks.clone(),
        };
        let Some(po) = region_start(&d.boot_log, "linear") else {
            d.fail("no `layout: region=linear start=` line in the boot log")
        };
        let Some(vm) = region_start(&d.boot_log, "vmemmap") else {
            d.fail("no `layout: region=vmemmap start=` line in the boot log")
        };
        d.page_offset = po;
        d.vmemmap = vm;
        if self.boot.is_firmware() && !d.boot_log.contains("ged: present") {
            d.fail("the kernel did not find the GED (`ged: present` missing)");
        }
        d
    }
}

/// A booted scenario machine. Every helper panics with a full report on failure.
pub struct DimmSession {
    pub config: KernelConfig,
    /// Memory block size.
    pub block: u64,
    /// Linear map: VA = `page_offset + PA`.
    pub page_offset: u64,
    /// `struct page` of PFN n at `vmemmap + 64 * n`.
    pub vmemmap: u64,
    pub what: String,
    /// Console output up to the first prompt.
    pub boot_log: String,
    s: Option<Session>,
    _slot: QemuSlot,
    /// What the test did, for failure reports.
    pub steps: Vec<String>,
    pub boot_time: Duration,
    /// [`DimmCase::expected_fallbacks`].
    pub expected_fallbacks: Vec<String>,
}

impl DimmSession {
    pub fn session(&mut self) -> &mut Session {
        self.s.as_mut().expect("session is running")
    }

    /// Panics with the configuration, the steps, the console tail, host output and QMP log.
    pub fn fail(&mut self, why: &str) -> ! {
        let (cmd, qmp) = match &self.s {
            Some(s) => (s.run.command_line(), s.qmp.transcript()),
            None => (String::new(), String::new()),
        };
        let out = self.s.take().map(Session::finish).unwrap_or_default();
        panic!(
            "\n[{}] {why}\n  qemu: {cmd}\n  outcome: {}\n--- steps ---\n{}\n--- console tail ---\n{}\n--- host commands ---\n{}\n--- QMP transcript (last) ---\n{}\n--- end ---\n",
            self.what,
            out.describe(),
            self.steps.join("\n"),
            out.tail(TAIL_LINES),
            tail_lines(&out.host, 30),
            tail_lines(&qmp, 40),
        )
    }

    fn step(&mut self, s: String) {
        self.steps.push(s);
    }

    /// Types a guest command and returns its output.
    pub fn guest(&mut self, cmd: &str) -> String {
        self.step(format!("guest: {cmd}"));
        match self.session().guest(cmd) {
            Ok(t) => {
                if t.contains("hotmem: FATAL") {
                    self.fail(&format!("`{cmd}`: the kernel stopped"));
                }
                t
            }
            Err(e) => self.fail(&format!("`{cmd}`: {e}")),
        }
    }

    /// Hot-plugs a DIMM (no expectation on the guest's answer).
    pub fn plug(&mut self, size: u64, id: &str) -> Plugged {
        self.plug_node(size, id, None)
    }

    /// [`plug`](Self::plug) on NUMA node `node`.
    pub fn plug_node(&mut self, size: u64, id: &str, node: Option<u32>) -> Plugged {
        self.step(format!("plug {} {id} node={node:?}", Size(size)));
        match self.session().plug_node(size, Some(id), node) {
            Ok(p) => {
                self.step(format!("  -> {}", p.line()));
                self.check_protocol();
                p
            }
            Err(e) => self.fail(&format!("plug {id}: {e}")),
        }
    }

    /// The console so far shows no fallback the scenario did not ask for.
    pub fn check_no_fallback(&mut self) {
        let console = self.session().console.output();
        if let Err(why) = crate::check_no_fallback(&console, &self.expected_fallbacks) {
            self.fail(&why);
        }
    }

    /// Every DIMM request so far kept the protocol (`hotmem_qemu::dimm_protocol`): one answer
    /// per request, an eject's success only after `DEVICE_DELETED`, a refusal only for a DIMM
    /// QEMU still has.
    pub fn check_protocol(&mut self) {
        self.check_no_fallback();
        let v = protocol(&mut self.session().qmp).check();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|v| format!("  {v}")).collect();
            self.fail(&format!("DIMM protocol broken:\n{}", list.join("\n")));
        }
    }

    /// Hot-plugs a DIMM and checks: _OST success, the guest's `event=insert` line with
    /// `ost=0x0`, one block per block size, all online in one zone (static group).
    pub fn plug_ok(&mut self, size: u64, id: &str) -> Plugged {
        self.plug_node_ok(size, id, None)
    }

    /// [`plug_ok`](Self::plug_ok) on NUMA node `node`; the guest's line names that node.
    pub fn plug_node_ok(&mut self, size: u64, id: &str, node: Option<u32>) -> Plugged {
        let p = self.plug_node(size, id, node);
        if p.result != PlugResult::Ok {
            self.fail(&format!("plug {id}: expected _OST success, got {}", p.line()));
        }
        let Some(line) = p.guest_line.clone() else {
            self.fail(&format!(
                "plug {id}: no `dimm: slot=.. event=insert` line from the guest"
            ))
        };
        let Some(ev) = DimmEvent::parse(&line) else {
            self.fail(&format!("plug {id}: cannot parse {line:?}"))
        };
        let want_blocks = (size / self.block) as usize;
        let ok = ev.event == "insert"
            && ev.refused.is_none()
            && ev.ost == Some(0)
            && ev.base == p.addr
            && ev.size == Some(size)
            && ev.blocks.len() == want_blocks
            && ev.zones.len() == want_blocks
            && ev.zones.iter().all(|z| *z == ev.zones[0] && z != "offline")
            && crate::parse::kv(&line, "node").and_then(|n| n.parse::<u32>().ok()) == Some(node.unwrap_or(0));
        if !ok {
            self.fail(&format!(
                "plug {id}: expected an insert of {want_blocks} block(s) at {:?} on node {} online in one zone with ost=0x0, got {line:?}",
                p.addr,
                node.unwrap_or(0)
            ));
        }
        p
    }

    /// Hot-plugs a DIMM the guest must refuse: _OST source 1 with a failure status, a
    /// `refused:` line.
    pub fn plug_refused(&mut self, size: u64, id: &str) -> Plugged {
        let p = self.plug(size, id);
        let status = match p.result {
            PlugResult::Refused { status } => status,
            _ => self.fail(&format!("plug {id}: expected the guest to refuse it, got {}", p.line())),
        };
        let o = p.ost.clone().unwrap_or_else(|| unreachable!());
        if o.source != 1 || status == 0 {
            self.fail(&format!(
                "plug {id}: expected _OST source 1 with a failure status, got {o:?}"
            ));
        }
        match p.guest_line.as_deref().and_then(DimmEvent::parse) {
            Some(ev) if ev.refused.is_some() && ev.ost == Some(status) => {}
            other => self.fail(&format!(
                "plug {id}: expected a `dimm: ... refused: ... ost={status:#x}` line, got {other:?}"
            )),
        }
        p
    }

    /// `device_del` (no expectation on the outcome).
    pub fn unplug(&mut self, id: &str) -> Unplugged {
        self.step(format!("unplug {id}"));
        match self.session().unplug(id) {
            Ok(u) => {
                let l = u.lines().join(" / ");
                self.step(format!("  -> {l}"));
                if u.result == UnplugResult::Deleted {
                    // The guest answers after the eject: its _OST follows DEVICE_DELETED.
                    let until = Instant::now() + PROTOCOL_ANSWER_WAIT;
                    while !protocol(&mut self.session().qmp).last_unplug_answered() && Instant::now() < until {
                        let _ = self.session().qmp.wait_event_since(
                            u64::MAX,
                            Duration::from_millis(20),
                            "the eject answer",
                            |_| false,
                        );
                    }
                }
                if let UnplugResult::Refused { status } = u.result {
                    if !self.qemu_dimms().iter().any(|d| d.id.as_deref() == Some(id)) {
                        self.fail(&format!(
                            "unplug {id}: refused (_OST status {status:#x}), yet QEMU no longer lists it"
                        ));
                    }
                }
                self.check_protocol();
                u
            }
            Err(e) => self.fail(&format!("unplug {id}: {e}")),
        }
    }

    /// Unplugs a DIMM and checks: `DEVICE_DELETED`, the guest's `event=remove ejected` line,
    /// the backend deleted, QEMU no longer lists it, and the guest's page tables map neither
    /// its linear map nor its memmap (`pt` of the first and last page of every block, and of
    /// the `struct page` of each block's first PFN).
    pub fn unplug_ok(&mut self, id: &str) -> Unplugged {
        let u = self.unplug(id);
        if u.result != UnplugResult::Deleted {
            self.fail(&format!("unplug {id}: expected DEVICE_DELETED, got {:?}", u.lines()));
        }
        if let Some(Err(e)) = &u.object_del {
            self.fail(&format!("unplug {id}: object-del of the backend failed: {e}"));
        }
        match u.guest_line.as_deref().and_then(DimmEvent::parse) {
            Some(ev) if ev.ejected => {}
            other => self.fail(&format!(
                "unplug {id}: expected a `dimm: slot=.. event=remove ejected` line, got {other:?}"
            )),
        }
        let listed = self.qemu_dimms().into_iter().any(|d| d.id.as_deref() == Some(id));
        if listed {
            self.fail(&format!("unplug {id}: QEMU still lists it after DEVICE_DELETED"));
        }
        if let Some(d) = u.device.clone() {
            self.check_unmapped(d.addr, d.size);
        }
        u
    }

    /// Unplugs a DIMM the guest must refuse: _OST source 3 with a failure status, a
    /// `refused:` remove line; the DIMM stays plugged in QEMU and in use in the guest.
    pub fn unplug_refused(&mut self, id: &str) -> Unplugged {
        let u = self.unplug(id);
        let UnplugResult::Refused { status } = u.result else {
            self.fail(&format!(
                "unplug {id}: expected the guest to refuse, got {:?}",
                u.lines()
            ))
        };
        if status == 0 {
            self.fail(&format!("unplug {id}: refusal with status 0"));
        }
        match u.guest_line.as_deref().and_then(DimmEvent::parse) {
            Some(ev) if ev.event == "remove" && ev.refused.is_some() && ev.ost == Some(status) => {}
            other => self.fail(&format!(
                "unplug {id}: expected `dimm: slot=.. event=remove refused: .. ost={status:#x}`, got {other:?}"
            )),
        }
        if !self.qemu_dimms().iter().any(|d| d.id.as_deref() == Some(id)) {
            self.fail(&format!("unplug {id}: refused, yet QEMU no longer lists it"));
        }
        u
    }

    pub fn qemu_dimms(&mut self) -> Vec<MemoryDevice> {
        match self.session().qmp.query_memory_devices() {
            Ok(v) => v.into_iter().filter(|d| d.kind == "dimm").collect(),
            Err(e) => self.fail(&format!("query-memory-devices: {e}")),
        }
    }

    pub fn ospm(&mut self) -> Vec<OspmStatus> {
        match self.session().qmp.query_acpi_ospm_status() {
            Ok(v) => v,
            Err(e) => self.fail(&format!("query-acpi-ospm-status: {e}")),
        }
    }

    pub fn meminfo(&mut self) -> Meminfo {
        let t = self.guest("meminfo");
        match parse_meminfo(&t) {
            Some(m) => m,
            None => self.fail(&format!("cannot parse meminfo: {t:?}")),
        }
    }

    /// `pt` of the linear-map VA of the first and last page of every block of
    /// `[addr, addr + size)` and of the vmemmap VA of each block's first `struct page`: all
    /// `not mapped`.
    pub fn check_unmapped(&mut self, addr: u64, size: u64) {
        let page = 1u64 << self.config.granule.page_shift();
        let mut vas = Vec::new();
        let mut b = addr;
        while b < addr + size {
            vas.push(("linear", self.page_offset + b));
            vas.push(("linear", self.page_offset + b + self.block - page));
            vas.push(("vmemmap", self.vmemmap + 64 * (b / page)));
            b += self.block;
        }
        for (what, va) in vas {
            let t = self.guest(&format!("pt {va:#x}"));
            if !pt_not_mapped(&t) {
                self.fail(&format!(
                    "after the eject of {addr:#x}+{size:#x}, {what} VA {va:#x} is still mapped:\n{t}"
                ));
            }
        }
    }

    /// QEMU and the guest agree: every DIMM QEMU lists is either in use by the guest (same
    /// slot, base and size; its blocks listed online, in one zone, tiling the range; OSPM
    /// status success) or refused by it (its slot in `refused_slots`, OSPM failure status);
    /// the guest uses no DIMM QEMU does not list; no hot-added block outside the DIMMs;
    /// every OSPM entry naming a device names a DIMM QEMU lists. Returns QEMU's DIMMs.
    pub fn check_agree(&mut self, when: &str) -> Vec<MemoryDevice> {
        let qemu = self.qemu_dimms();
        let ospm = self.ospm();
        let g = parse_dimms(&self.guest("dimms"));
        let blocks = parse_blocks(&self.guest("blocks"));
        let mut errs = Vec::new();
        for d in &qemu {
            let id = d.id.clone().unwrap_or_default();
            let Some(slot) = d.slot else {
                errs.push(format!("{id}: QEMU reports no slot"));
                continue;
            };
            let o = ospm.iter().find(|o| o.slot_number() == Some(slot));
            if o.and_then(|o| o.device.as_deref()) != Some(id.as_str()) {
                errs.push(format!("{id}: OSPM status of slot {slot} names {o:?}"));
            }
            let refused = g.refused_slots.contains(&slot);
            match (g.dimms.iter().find(|x| x.slot == slot), refused) {
                (Some(_), true) => errs.push(format!("{id}: slot {slot} both in use and refused")),
                (None, false) => errs.push(format!("{id}: slot {slot} unknown to the guest")),
                (None, true) => {
                    if o.is_some_and(|o| o.status == 0) {
                        errs.push(format!("{id}: refused by the guest, OSPM says success: {o:?}"));
                    }
                }
                (Some(gd), false) => {
                    if (gd.base, gd.size) != (d.addr, d.size) {
                        errs.push(format!(
                            "{id}: QEMU {:#x}+{:#x}, guest {:#x}+{:#x}",
                            d.addr, d.size, gd.base, gd.size
                        ));
                    }
                    if o.is_some_and(|o| o.status != 0 && o.source == 1) {
                        errs.push(format!("{id}: in use by the guest, OSPM says {o:?}"));
                    }
                    let mut bl: Vec<&GuestBlock> = blocks.iter().filter(|b| gd.blocks.contains(&b.id)).collect();
                    bl.sort_by_key(|b| b.start);
                    let tiles = bl.len() == gd.blocks.len()
                        && bl.first().map(|b| b.start) == Some(d.addr)
                        && bl.last().map(|b| b.end) == Some(d.addr + d.size)
                        && bl.windows(2).all(|w| w[0].end == w[1].start);
                    if !tiles {
                        errs.push(format!(
                            "{id}: blocks {:?} do not tile {:#x}+{:#x}",
                            gd.blocks, d.addr, d.size
                        ));
                    }
                    if !bl
                        .iter()
                        .all(|b| b.state == "online" && b.zone == bl[0].zone && !b.early)
                    {
                        errs.push(format!("{id}: blocks not all online in one zone: {bl:?}"));
                    }
                }
            }
        }
        for gd in &g.dimms {
            if !qemu.iter().any(|d| d.slot == Some(gd.slot)) {
                errs.push(format!(
                    "the guest uses slot {} ({:#x}+{:#x}), QEMU has no DIMM there",
                    gd.slot, gd.base, gd.size
                ));
            }
        }
        for s in &g.refused_slots {
            if !qemu.iter().any(|d| d.slot == Some(*s)) {
                errs.push(format!("the guest lists refused slot {s}, QEMU has no DIMM there"));
            }
        }
        let used: Vec<u64> = g.dimms.iter().flat_map(|d| d.blocks.clone()).collect();
        // Blocks of virtio-mem devices' groups are theirs (checked by `check_vmem_agree`).
        let vmem_groups: Vec<String> = if self.boot_log.contains("virtio-mem: dev=") {
            parse_vmem(&self.guest("vmem")).into_iter().map(|v| v.group).collect()
        } else {
            Vec::new()
        };
        for b in blocks.iter().filter(|b| !b.early && !vmem_groups.contains(&b.group)) {
            if !used.contains(&b.id) {
                errs.push(format!(
                    "hot-added block {} ({:#x}-{:#x}) belongs to no DIMM",
                    b.id, b.start, b.end
                ));
            }
        }
        for o in &ospm {
            if let Some(dev) = &o.device {
                if !qemu.iter().any(|d| d.id.as_deref() == Some(dev.as_str())) {
                    errs.push(format!("OSPM names {dev} in slot {}, QEMU does not list it", o.slot));
                }
            }
        }
        if g.count.is_some_and(|c| c as usize != g.dimms.len()) {
            errs.push(format!("`dimms: count=` says {:?}, {} listed", g.count, g.dimms.len()));
        }
        if !errs.is_empty() {
            self.fail(&format!("QEMU and the guest disagree {when}:\n  {}", errs.join("\n  ")));
        }
        self.step(format!("agree {when}: {} DIMM(s)", qemu.len()));
        qemu
    }

    /// `stress <size>` → `result=ok`.
    pub fn stress(&mut self, size: u64) -> String {
        let t = self.guest(&format!("stress {size:#x}"));
        if !t.contains("result=ok") {
            self.fail(&format!("stress {size:#x} failed: {t}"));
        }
        t
    }

    /// `stress verify` → `result=ok` with `bad=0`.
    pub fn stress_verify(&mut self) {
        let t = self.guest("stress verify");
        if !(t.contains("result=ok") && t.contains("bad=0")) {
            self.fail(&format!("stress verify failed: {t}"));
        }
    }

    /// `system_powerdown`: the guest prints `ged: powerdown` and QEMU exits 0.
    pub fn powerdown(mut self) {
        self.check_protocol();
        self.step("system_powerdown".into());
        let r = self.session().powerdown();
        match r {
            Ok(st) if st.success() => {}
            Ok(st) => self.fail(&format!("QEMU exited with {st} after system_powerdown")),
            Err(e) => self.fail(&format!("system_powerdown: {e}")),
        }
        let out = self.s.take().map(Session::finish).unwrap_or_default();
        if !out.console.contains("ged: powerdown") {
            self.s = None;
            panic!("[{}] no `ged: powerdown` line:\n{}", self.what, out.tail(TAIL_LINES));
        }
    }

    /// `system_reset`, then the new boot log (up to the prompt).
    pub fn reset(&mut self) -> String {
        self.step("system_reset".into());
        match self.session().reset() {
            Ok(b) => b,
            Err(e) => self.fail(&format!("system_reset: {e}")),
        }
    }
}
