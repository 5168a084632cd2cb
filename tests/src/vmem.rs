//! virtio-mem scenarios on a [`DimmSession`] (any boot mode): resize through `:vmem`'s
//! machinery, parse the guest's `vmem:` lines, and check that QEMU's view
//! (`query-memory-devices`) and the guest's (`vmem`, `blocks`) agree.

use hotmem_qemu::config::{BootMode, Granule};
use hotmem_qemu::host_cmd::{vmem_devices, Resized, Size, VmemDevice, VmemResult};
use hotmem_qemu::run::VirtioMem;

use crate::dimm::{DimmCase, DimmSession, GIB};
use crate::parse::{parse_blocks, parse_dimms, parse_vmem, GuestBlock, GuestVmem};

/// A kernel boot (`-kernel`) with 1 GiB of RAM and one 4 GiB virtio-mem device `vmem0`.
pub fn vmem_case(g: Granule) -> DimmCase {
    let mut c = DimmCase::new(g, 2);
    c.boot = BootMode::Kernel;
    c.machine.mem = "1G".into();
    c.machine.virtio_mem = vec![VirtioMem::new(4 * GIB)];
    c
}

impl DimmSession {
    /// `:vmem ID SIZE` (no expectation on the outcome).
    pub fn vmem(&mut self, id: &str, size: u64) -> Resized {
        self.steps.push(format!("vmem {id} {}", Size(size)));
        match self.session().vmem(id, size) {
            Ok(r) => {
                self.steps.push(format!("  -> {}", r.line()));
                r
            }
            Err(e) => self.fail(&format!("vmem {id} {size:#x}: {e}")),
        }
    }

    /// `:vmem ID SIZE` → the guest reports `event=done` and QEMU's plugged size is SIZE.
    pub fn vmem_ok(&mut self, id: &str, size: u64) -> Resized {
        let r = self.vmem(id, size);
        if !r.done() || r.plugged_after != size {
            self.fail(&format!("vmem {id} {size:#x}: expected done, got {}", r.line()));
        }
        if r.result == VmemResult::Done && r.guest_line.is_none() {
            self.fail(&format!("vmem {id}: no guest line: {}", r.line()));
        }
        r
    }

    /// `:vmem ID SIZE` → the guest stops short with a reason containing `why`.
    pub fn vmem_stopped(&mut self, id: &str, size: u64, why: &str) -> Resized {
        let r = self.vmem(id, size);
        match &r.result {
            VmemResult::Stopped { reason } if reason.contains(why) => r,
            _ => self.fail(&format!(
                "vmem {id} {size:#x}: expected a stop mentioning {why:?}, got {}",
                r.line()
            )),
        }
    }

    pub fn qemu_vmems(&mut self) -> Vec<VmemDevice> {
        match vmem_devices(&mut self.session().qmp) {
            Ok(v) => v,
            Err(e) => self.fail(&format!("query-memory-devices: {e}")),
        }
    }

    /// QEMU and the guest agree on every virtio-mem device: same region, plugged and requested
    /// sizes; the device's hot-added blocks (its group) are online, inside its region and
    /// exactly `plugged` bytes (sub-block mode: their plugged device blocks are); a device the
    /// guest refused has nothing plugged or requested; no hot-added block outside a device;
    /// `meminfo check` is ok.
    /// Returns the guest's devices.
    pub fn check_vmem_agree(&mut self, when: &str) -> Vec<GuestVmem> {
        let qemu = self.qemu_vmems();
        let guest = parse_vmem(&self.guest("vmem"));
        let blocks = parse_blocks(&self.guest("blocks"));
        let mut errs = Vec::new();
        let mut owned: Vec<u64> = Vec::new();
        for g in &guest {
            if !qemu.iter().any(|q| q.memaddr == g.addr) {
                errs.push(format!("the guest drives a device at {:#x} QEMU does not list", g.addr));
            }
        }
        for q in &qemu {
            let Some(g) = guest.iter().find(|g| g.addr == q.memaddr) else {
                // A device the guest refused must be untouched.
                if q.size != 0 || q.requested != 0 {
                    errs.push(format!("{}: no guest device at {:#x}, yet {q:?}", q.id, q.memaddr));
                }
                continue;
            };
            if (g.region, g.block, g.plugged, g.requested) != (q.max_size, q.block_size, q.size, q.requested) {
                errs.push(format!(
                    "{}: QEMU region={:#x} block={:#x} plugged={:#x} requested={:#x}; guest {g:?}",
                    q.id, q.max_size, q.block_size, q.size, q.requested
                ));
            }
            let mine: Vec<&GuestBlock> = blocks.iter().filter(|b| !b.early && b.group == g.group).collect();
            // Sub-block mode: the plugged device blocks of the added memory blocks.
            let bytes: u64 = if g.mode == "sub-block" {
                let mut ids: Vec<u64> = g.sub_blocks.iter().map(|&(b, _)| b).collect();
                let mut have: Vec<u64> = mine.iter().map(|b| b.id).collect();
                ids.sort_unstable();
                have.sort_unstable();
                if ids != have {
                    errs.push(format!(
                        "{}: blocks of group {} are {have:?}, vmem lists {ids:?}",
                        q.id, g.group
                    ));
                }
                g.sub_blocks.iter().map(|&(_, n)| n * g.unit).sum()
            } else {
                mine.iter().map(|b| b.end - b.start).sum()
            };
            if bytes != q.size || g.units_plugged * g.unit != q.size {
                errs.push(format!(
                    "{}: plugged {:#x}, the guest has {bytes:#x} in blocks of group {} and {} units",
                    q.id, q.size, g.group, g.units_plugged
                ));
            }
            for b in &mine {
                if b.start < q.memaddr || b.end > q.memaddr + q.max_size || b.state != "online" {
                    errs.push(format!("{}: block {b:?} outside the region or not online", q.id));
                }
                owned.push(b.id);
            }
        }
        // DIMMs' blocks are theirs (checked by `check_agree`).
        let dimm_blocks: Vec<u64> = if self.boot_log.contains("ged: present") {
            parse_dimms(&self.guest("dimms"))
                .dimms
                .into_iter()
                .flat_map(|d| d.blocks)
                .collect()
        } else {
            Vec::new()
        };
        for b in blocks
            .iter()
            .filter(|b| !b.early && !owned.contains(&b.id) && !dimm_blocks.contains(&b.id))
        {
            errs.push(format!(
                "hot-added block {} belongs to no virtio-mem device or DIMM",
                b.id
            ));
        }
        let t = self.guest("meminfo check");
        if !t.contains("meminfo check: ok") {
            errs.push(format!("meminfo check: {t}"));
        }
        if !errs.is_empty() {
            self.fail(&format!("QEMU and the guest disagree {when}:\n  {}", errs.join("\n  ")));
        }
        self.steps.push(format!("vmem agree {when}"));
        guest
    }

    /// `poweroff` typed to the guest; QEMU exits 0 (kernel boots have no GED for
    /// `system_powerdown`).
    pub fn poweroff(mut self) {
        self.steps.push("poweroff".into());
        match self.session().guest_exit("poweroff") {
            Ok(st) if st.success() => {}
            Ok(st) => self.fail(&format!("QEMU exited with {st} after poweroff")),
            Err(e) => self.fail(&format!("poweroff: {e}")),
        }
    }
}
