//! A toy third memory device type, kept as the test of the memory-device template: it registers
//! with `memory_device!` like the DIMM and virtio-mem policies and changes no generic file. It
//! "plugs" one held-back memory block (as `probe` would) in its own memory group, and its online
//! filter holds back one half of the block (fake-offline, as virtio-mem does with unplugged
//! sub-blocks); its checker rule says those pages stay offline. Its case drives it through the
//! generic hotplug code and shows that the generic paths use all three registrations: the
//! online filter (the held-back half never reaches the allocator), the checker (a rule the
//! allocator contradicts is reported, naming the device) and the shell view.

use crate::{
    boot::dtb::Platform,
    boot::layout::{G, PAGE_SHIFT},
    kernel::mem::device::{self, Buses, DeviceViolation, MemoryDevice, View},
    kernel::mem::hotplug::{self as hp, HELD_BACK},
    kernel::mem::page_alloc,
    memory_device, println,
};
use alloc::{format, string::String};
use mm::hotplug::{AddFlags, BlockState, Hotplug, OnlineType};

memory_device!(MemoryDevice {
    name: "toy",
    init,
    online_filter: Some(online_filter),
    check: Some(check),
    views: &[View {
        name: "toydev",
        help: "the toy memory device of the in-guest tests",
        show,
    }],
});

/// Which half of its block the toy holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    First,
    Second,
}

/// The toy's one "device": a block of pages and the half it holds back.
#[derive(Clone, Copy, Debug)]
struct Toy {
    start_pfn: u64,
    nr: u64,
    held: Half,
}

impl Toy {
    /// The pages held back: `[pfn, pfn + n)`.
    fn held_run(&self) -> (u64, u64) {
        let half = self.nr / 2;
        match self.held {
            Half::First => (self.start_pfn, half),
            Half::Second => (self.start_pfn + half, half),
        }
    }
}

static TOY: crate::kernel::sync::Mutex<Option<Toy>> = crate::kernel::sync::Mutex::new("toy device", None);
static INITIALISED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn init(_: &mut Buses) {
    INITIALISED.store(true, core::sync::atomic::Ordering::Relaxed);
}

fn online_filter(pfn: u64, nr: u64, keep: &mut dyn FnMut(u64, u64)) {
    let Some(toy) = *TOY.lock() else {
        keep(pfn, nr);
        return;
    };
    let (h, hn) = toy.held_run();
    let (end, hend) = (pfn + nr, h + hn);
    if pfn < h.min(end) {
        keep(pfn, h.min(end) - pfn);
    }
    if hend.max(pfn) < end {
        keep(hend.max(pfn), end - hend.max(pfn));
    }
}

fn check(hp: &Hotplug) -> Result<(), DeviceViolation> {
    let Some(toy) = *TOY.lock() else {
        return Ok(());
    };
    let online = hp
        .block(toy.start_pfn / G.pages_per_section())
        .is_some_and(|b| b.state == BlockState::Online);
    if !online {
        return Ok(());
    }
    let (h, hn) = toy.held_run();
    let bad = page_alloc::with_page_alloc(|a| (h..h + hn).find(|&pfn| a.is_online(pfn) == Some(true)));
    match bad {
        Some(pfn) => Err(DeviceViolation {
            device: "toy",
            pfn,
            rule: "of the toy's held-back half is online",
        }),
        None => Ok(()),
    }
}

fn show() {
    match *TOY.lock() {
        Some(t) => println!("toydev: start_pfn={:#x} nr={:#x} held={:?}", t.start_pfn, t.nr, t.held),
        None => println!("toydev: none"),
    }
}

/// The whole template, through the generic code only.
fn memory_device_template(_: &Platform) -> Result<(), String> {
    kassert!(
        INITIALISED.load(core::sync::atomic::Ordering::Relaxed),
        "the toy's init did not run at boot"
    );
    kassert!(device::view("toydev").is_some(), "the toy's view is not registered");
    let bs = G.section_size();
    let r = HELD_BACK
        .lock()
        .first()
        .copied()
        .ok_or_else(|| String::from("no RAM held back: boot with mem="))?;
    let start = r.base.next_multiple_of(bs);
    kassert!(start + bs <= r.end(), "no whole block held back");
    let nr = bs >> PAGE_SHIFT;
    let free0 = page_alloc::free_page_count();
    *TOY.lock() = Some(Toy {
        start_pfn: start >> PAGE_SHIFT,
        nr,
        held: Half::Second,
    });
    let result = drive(start, nr);
    *TOY.lock() = None;
    result?;
    hp::with_hotplug(|h, _| hp::check_invariants(h)).map_err(|e| format!("after the toy: {e}"))?;
    kassert!(
        page_alloc::free_page_count() == free0,
        "free pages {free0} before, {} after",
        page_alloc::free_page_count()
    );
    Ok(())
}
ktest!(memory_device_template);

/// Add and online the toy's block, check what the allocator got, catch a contradicted rule,
/// then offline and remove it.
fn drive(start: u64, nr: u64) -> Result<(), String> {
    let bs = nr << PAGE_SHIFT;
    let group = hp::with_hotplug(|h, ops| {
        let group = h.register_static_group(0, nr)?;
        let ids = h.add_memory(ops, 0, Some(group), start, bs, AddFlags { memmap_on_memory: true })?;
        h.online_block(ops, ids[0], OnlineType::Movable)?;
        Ok::<_, mm::hotplug::HotplugError>(group)
    })
    .map_err(|e| format!("add+online: {e}"))?;
    let pfn0 = start >> PAGE_SHIFT;
    let gained =
        page_alloc::with_page_alloc(|a| (pfn0..pfn0 + nr).filter(|&p| a.is_online(p) == Some(true)).count()) as u64;
    // The first half: the block's memmap pages (online, self-hosted) and the pages the filter
    // let through.
    let want = nr / 2;
    let checked = hp::with_hotplug(|h, _| hp::check_invariants(h)).map(|_| ());
    // The rule contradicted: the toy now says the first half is held back, which is online.
    TOY.lock().as_mut().expect("set by the caller").held = Half::First;
    let caught = hp::with_hotplug(|h, _| hp::check_invariants(h)).map(|_| ());
    TOY.lock().as_mut().expect("set by the caller").held = Half::Second;
    (device::view("toydev").expect("registered").show)();
    let removed = hp::with_hotplug(|h, ops| {
        h.offline_and_remove(ops, start, bs)?;
        h.unregister_group(group)
    })
    .map_err(|e| format!("offline+remove: {e}"));
    kassert!(
        gained == want,
        "{gained} pages of the block online, want {want} (the half the filter lets through)"
    );
    checked.map_err(|e| format!("after online: {e}"))?;
    match caught {
        Err(e) if format!("{e}").contains("toy invariant broken") => {}
        other => return Err(format!("the toy's rule was not consulted: {other:?}")),
    }
    removed
}
