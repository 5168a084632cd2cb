"""The memmap (`struct page`), the sparse sections and the buddy free lists, read from the
halted kernel.

- `struct page` is `mm::page::Page` (mm/src/page.rs), 64 bytes at VMEMMAP_START + 64 * pfn.
  It is read physically after a software walk of its vmemmap address, so an unpopulated
  memmap is reported (with the level of the translation fault) instead of a gdb memory error.
  Its flag names and bits are the kernel's table (`symbols.page_flags`).
- Sections are the static `SPARSE: spin::Once<mm::sparse::Sparse>` (mm/src/sparse.rs):
  one `AtomicU8` of state bits per section.
- Free lists are the static `PAGE_ALLOC: IrqSafeLock<Option<PageAlloc<..>>>`
  (mm/src/buddy.rs): per zone, per order a list head PFN and a length, linked through the
  `next`/`prev` PFNs of the head `struct page`s.
- Deferred struct page init is the allocator's `deferred: Option<Deferred>`
  (mm/src/buddy/deferred.rs): one bit per pageblock (set = not initialised), per zone a sorted
  `Vec<DeferredRange>`, the chunks in flight, and one byte per memory block whose self-hosted
  memmap (its first pageblock) is never initialised (0: none, 1: offline, 2 + zone id: online).
  A deferred struct page holds no data: it is reported as deferred, with where it stands, and
  a self-hosted memmap page as such, from its block's byte, as the shell's `page` does.
- Memory blocks are the static `HOTPLUG: spin::Mutex<Option<mm::hotplug::Hotplug>>`
  (mm/src/hotplug.rs): a `BTreeMap<BlockId, MemoryBlock>` with state, zone, group and the
  block's altmap (memmap on memory), and a `BTreeMap<GroupId, MemoryGroup>`.

Statics and types are found by name (`symbols`), field layouts and zone names come from DWARF,
page flags from the kernel's table. Only the section state bits below mirror a Rust source.
"""

import gdb

from . import pagetable, symbols
from .arch import size_str
from .target import (
    GdbError,
    PhysMem,
    btree_map_items,
    btree_map_values,
    descend,
    enum_names,
    enum_variant,
    find_field,
    option_some,
    scalar,
    short_type_name,
    read_static,
    type_name,
    vec_bytes,
    vec_elems,
)

NO_PFN = (1 << 64) - 1

# mm::sparse::state (mm/src/sparse.rs).
SECTION_STATES = [
    (1 << 0, "present"),
    (1 << 1, "memmap"),
    (1 << 2, "online"),
    (1 << 3, "early"),
    (1 << 4, "self-hosted"),
]
SECTION_PRESENT = 1 << 0
SECTION_HAS_MEMMAP = 1 << 1

SPARSE_SYMBOL = "SPARSE"
PAGE_ALLOC_SYMBOL = "PAGE_ALLOC"
HOTPLUG_SYMBOL = "HOTPLUG"
ONCE_COMPLETE = 2  # spin::once::Status::Complete


def page_type():
    """`mm::..::Page`, the struct page type."""
    return symbols.require_type("Page", "mm")


def page_flag_names(flags):
    """`buddy|head` for a struct page's flags word, in the kernel's order (`none` for 0)."""
    return flag_names(flags, symbols.page_flags(), "|")


def flag_names(flags, table, sep):
    names = [n for bit, n in table if flags & bit]
    return sep.join(names) if names else "none"


# ---------------------------------------------------------------------------------------------
# struct page


class PageInfo:
    FIELDS = ("flags", "order", "zone", "node", "refcount", "block", "next", "prev", "private")

    def __init__(self, pfn, va, pa, raw):
        self.pfn = pfn
        self.va = va
        self.pa = pa  # physical address of the struct page itself
        t = page_type()
        if t.sizeof != len(raw):
            raise GdbError("%s is %d bytes, HOTMEM_DEBUG_INFO says %d" % (t, t.sizeof, len(raw)))
        v = gdb.Value(raw, t)
        for f in self.FIELDS:
            setattr(self, f, int(v[f]))

    def line(self, cfg, zones):
        link = lambda v: "-" if v == NO_PFN else "%#x" % v
        return (
            "page: pfn=%#x pa=%#x struct_page=%#x flags=%#x (%s) order=%d zone=%s node=%d refcount=%d "
            "block=%d next=%s prev=%s private=%#x struct_page_pa=%#x"
            % (
                self.pfn,
                self.pfn << cfg.page_shift,
                self.va,
                self.flags,
                page_flag_names(self.flags),
                self.order,
                zones.get(self.zone, "?"),
                self.node,
                self.refcount,
                self.block,
                link(self.next),
                link(self.prev),
                self.private,
                self.pa,
            )
        )


def zone_names():
    return enum_names("ZoneId", "mm")


def read_page(cfg, cpu, mem, pfn):
    """(PageInfo, None), or (None, WalkResult of the unmapped struct page)."""
    va = cfg.struct_page(pfn)
    w = pagetable.walk(cfg.geom, cpu.baddr(cpu.ttbr1), va, mem.u64s, cpu.mair)
    if not w.mapped:
        return None, w
    raw = mem.read(w.pa, cfg.struct_page_size)
    return PageInfo(pfn, va, w.pa, raw), w


# ---------------------------------------------------------------------------------------------
# Sections


class Sections:
    def __init__(self, cfg, states):
        self.cfg = cfg
        self.states = states  # one int per section

    def state(self, nr):
        return self.states[nr] if 0 <= nr < len(self.states) else 0

    def of_pfn(self, pfn):
        return pfn >> (self.cfg.section_shift - self.cfg.page_shift)

    def present(self):
        return [(nr, s) for nr, s in enumerate(self.states) if s & SECTION_PRESENT]

    def lines(self, blocks=None):
        """`blocks` (a `Blocks`, or None before the hotplug state exists) gives each section's
        node, as the shell's `sections` does."""
        cfg = self.cfg
        pres = self.present()
        out = [
            "sections: section_size=%s total=%d present=%d"
            % (size_str(cfg.section_size), len(self.states), len(pres))
        ]
        for nr, st in pres:
            pa = nr * cfg.section_size
            out.append(
                "section: nr=%d range=%#x-%#x node=%s state=%s memmap=%#x"
                % (
                    nr,
                    pa,
                    pa + cfg.section_size,
                    "-" if blocks is None else blocks.node_of(pa >> cfg.page_shift),
                    flag_names(st, SECTION_STATES, ","),
                    cfg.struct_page(pa >> cfg.page_shift),
                )
            )
        return out


def read_sections(cfg):
    """Sections, or None while `SPARSE` is not initialised (before `init_memmap`)."""
    once = read_static(SPARSE_SYMBOL)
    if once is None:
        raise GdbError("the ELF has no %s (a kernel without the sparse model?)" % SPARSE_SYMBOL)
    status = find_field(once, "status")
    if status is None or scalar(status) != ONCE_COMPLETE:
        return None
    sparse = descend(once, "Sparse")
    if sparse is None:
        raise GdbError("cannot find the Sparse inside %s" % symbols.static_path(SPARSE_SYMBOL))
    vec = find_field(sparse, "sections")
    raw = vec_bytes(vec, 1, "the section states")
    return Sections(cfg, list(raw))


# ---------------------------------------------------------------------------------------------
# Buddy free lists


class Zone:
    """One node's zone (`PageAlloc::zones[node][zone]`)."""

    def __init__(self, node, zid, name, v, nr_orders):
        self.node = node
        self.id = zid
        self.name = name
        fa = v["free_area"]
        self.heads = [int(fa[o]["head"]) for o in range(nr_orders)]
        self.lens = [int(fa[o]["len"]) for o in range(nr_orders)]
        c = v["counters"]
        self.managed = int(c["managed"])
        self.free = int(c["free"])
        self.isolated = int(c["isolated"])
        self.deferred = int(c["deferred"])


class FreeLists:
    def __init__(self, cfg, locked, max_order, zones):
        self.cfg = cfg
        self.locked = locked
        self.max_order = max_order
        self.zones = zones

    def totals(self):
        """Per zone id, summed over the nodes: (name, managed, free, isolated, deferred, lens)."""
        out = {}
        for z in self.zones:
            t = out.setdefault(z.id, [z.name, 0, 0, 0, 0, [0] * len(z.lens)])
            t[1] += z.managed
            t[2] += z.free
            t[3] += z.isolated
            t[4] += z.deferred
            t[5] = [a + b for a, b in zip(t[5], z.lens)]
        return [out[k] for k in sorted(out)]

    def lines(self, node=None):
        """The shell's `meminfo: zone=` figures (all nodes), then per node, then the lists;
        `node`: only that node's."""
        n = self.max_order + 1
        out = []
        if self.locked:
            out.append(
                "freelists: warning: PAGE_ALLOC is locked (a CPU is inside the allocator): lists may be mid-update"
            )
        if node is None:
            for name, managed, free, isolated, deferred, lens in self.totals():
                out.append(
                    "freelists: zone=%s managed_pages=%d free_pages=%d isolated_pages=%d deferred_pages=%d free_blocks_by_order=[%s]"
                    % (name, managed, free, isolated, deferred, ", ".join(str(x) for x in lens[:n]))
                )
        shown = [z for z in self.zones if (z.managed or z.free or z.deferred) and node in (None, z.node)]
        for z in shown:
            out.append(
                "freelists: node=%d zone=%s managed_pages=%d free_pages=%d isolated_pages=%d deferred_pages=%d free_blocks_by_order=[%s]"
                % (z.node, z.name, z.managed, z.free, z.isolated, z.deferred, ", ".join(str(x) for x in z.lens[:n]))
            )
        for z in shown:
            if not any(z.lens[:n]):
                continue
            out.append("  node %d zone %s:  order  block size   blocks       pages  first pfn" % (z.node, z.name))
            for o in range(n):
                if z.lens[o]:
                    out.append(
                        "  %*s%5d  %10s  %6d  %10d  %#x"
                        % (len(z.name) + 14, "", o, size_str(self.cfg.page_size << o), z.lens[o], z.lens[o] << o, z.heads[o])
                    )
        return out


def _page_alloc():
    """(the PageAlloc value or None while it is not initialised, whether its lock is held)."""
    lock = read_static(PAGE_ALLOC_SYMBOL)
    if lock is None:
        raise GdbError("the ELF has no %s" % PAGE_ALLOC_SYMBOL)
    lockword = find_field(lock, "lock")
    locked = lockword is not None and scalar(lockword) != 0
    opt = descend(lock, "Option")
    if opt is None:
        raise GdbError("cannot find the Option<PageAlloc> inside %s" % symbols.static_path(PAGE_ALLOC_SYMBOL))
    return option_some(opt), locked


class Deferred:
    """The allocator's deferred-init state: which PFNs have no initialised struct page, and
    where they stand (mm::buddy::DeferredState)."""

    def __init__(self, pageblock_order, bits, lists, in_flight, block_shift, vmemmap):
        self.pageblock_order = pageblock_order
        self.bits = bits  # bytes of the Vec<u64> bitmap (little endian)
        self.lists = lists  # per zone id: [(start, end, isolated)]
        self.in_flight = in_flight  # [(zone id, start, end)]
        self.block_shift = block_shift
        self.vmemmap = vmemmap  # one state byte per memory block (mm VMEMMAP_OFFLINE/ONLINE)

    def self_hosted(self, pfn):
        """None if pfn is not a self-hosted memmap page answered from its block; else
        (online, zone id): O(1), as mm's `PageAlloc::lookup`."""
        if pfn & ((1 << self.block_shift) - 1) >= 1 << self.pageblock_order:
            return None
        i = pfn >> self.block_shift
        v = self.vmemmap[i] if i < len(self.vmemmap) else 0
        if v == 0:
            return None
        return (False, None) if v == 1 else (True, v - 2)

    def self_hosted_words(self, pfn, zones):
        """The words the shell's `page` prints for a self-hosted memmap page, or None."""
        sh = self.self_hosted(pfn)
        if sh is None:
            return None
        online, z = sh
        where = "online in zone %s" % zones.get(z, "?") if online else "offline"
        return "vmemmap_self_hosted, not initialised (self-hosted memmap page of a block %s)" % where

    def uninit(self, pfn):
        i = pfn >> self.pageblock_order
        return i // 8 < len(self.bits) and (self.bits[i // 8] >> (i % 8)) & 1 == 1

    def state(self, pfn, zones):
        """The words the shell's `page` prints in parentheses."""
        for z, s, e in self.in_flight:
            if s <= pfn < e:
                return "being initialised for zone %s" % zones.get(z, "?")
        for z, ranges in sorted(self.lists.items()):
            for s, e, isolated in ranges:
                if s <= pfn < e:
                    return "free in zone %s%s" % (zones.get(z, "?"), ", isolated" if isolated else "")
        return "offline"


def read_deferred():
    """The deferred-init state, or None (allocator not up, or nothing ever deferred)."""
    alloc, _ = _page_alloc()
    if alloc is None:
        return None
    d = option_some(alloc["deferred"])
    if d is None:
        return None
    bits = vec_bytes(d["uninit"], 8, "the deferred-init bitmap")
    lists = {}
    lv = d["lists"]
    lo, hi = lv.type.strip_typedefs().range()
    for z in range(lo, hi + 1):
        lists[z] = [
            (int(r["start"]), int(r["end"]), bool(r["isolated"]))
            for r in vec_elems(lv[z], "a deferred list")
        ]
    in_flight = []
    try:
        for t in vec_elems(d["in_flight"], "the chunks in flight"):
            in_flight.append((int(t["__0"]), int(t["__1"]), int(t["__2"])))
    except GdbError:
        pass  # the tuple type is not in DWARF: chunks in flight read as on their list
    vmemmap = vec_bytes(d["vmemmap"], 1, "the self-hosted memmap states")
    return Deferred(int(d["pageblock_order"]), bits, lists, in_flight, int(d["block_shift"]), vmemmap)


def read_freelists(cfg):
    """Free lists, or None while the page allocator is not initialised."""
    alloc, locked = _page_alloc()
    if alloc is None:
        return None
    nodes_v = alloc["zones"]  # [[Zone; 2]; MAX_NUMNODES], indexed [node][zone]
    nlo, nhi = nodes_v.type.strip_typedefs().range()
    names = zone_names()
    nr_orders = None
    zones = []
    for node in range(nlo, nhi + 1):
        zones_v = nodes_v[node]
        lo, hi = zones_v.type.strip_typedefs().range()
        for i in range(lo, hi + 1):
            z = zones_v[i]
            if nr_orders is None:
                a, b = z["free_area"].type.strip_typedefs().range()
                nr_orders = b - a + 1
            zones.append(Zone(node, i, names.get(i, "zone%d" % i), z, nr_orders))
    return FreeLists(cfg, locked, int(alloc["max_order"]), zones)


def check_freelists(cfg, cpu, fl, limit=100000):
    """Follows every list through the struct pages: each head must say buddy, its order and
    zone, and `prev` must point back. Returns report lines (problems first)."""
    problems = []
    summary = []
    with PhysMem(cfg, cpu) as mem:
        for z in fl.zones:
            for o in range(fl.max_order + 1):
                pfn, prev, n = z.heads[o], NO_PFN, 0
                while pfn != NO_PFN and n < min(limit, z.lens[o] + 1):
                    p, w = read_page(cfg, cpu, mem, pfn)
                    if p is None:
                        problems.append(
                            "freelists: BAD node=%d zone=%s order=%d pfn=%#x: struct page not mapped (%s)"
                            % (z.node, z.name, o, pfn, w.result_line())
                        )
                        break
                    bad = []
                    if not p.flags & symbols.page_flag("buddy"):
                        bad.append("no buddy flag")
                    if p.order != o:
                        bad.append("order=%d" % p.order)
                    if p.zone != z.id:
                        bad.append("zone=%d" % p.zone)
                    if p.node != z.node:
                        bad.append("node=%d" % p.node)
                    if p.prev != prev:
                        bad.append("prev=%#x, expected %#x" % (p.prev, prev))
                    if pfn & ((1 << o) - 1):
                        bad.append("not aligned to its order")
                    if bad:
                        problems.append(
                            "freelists: BAD node=%d zone=%s order=%d pfn=%#x: %s"
                            % (z.node, z.name, o, pfn, ", ".join(bad))
                        )
                    prev, pfn, n = pfn, p.next, n + 1
                if n != z.lens[o]:
                    problems.append(
                        "freelists: BAD node=%d zone=%s order=%d: list has %d blocks, len says %d"
                        % (z.node, z.name, o, n, z.lens[o])
                    )
                summary.append(n)
    total = sum(summary)
    verdict = "ok" if not problems else "%d problem(s)" % len(problems)
    return problems + ["freelists: check %s: followed %d free blocks through their struct pages" % (verdict, total)]


# ---------------------------------------------------------------------------------------------
# Memory blocks (mm::hotplug, platform/src/kernel/mem/hotplug.rs)


def _kebab(name):
    """`GoingOnline` -> `going-online` (mm::hotplug::BlockState::name)."""
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i:
            out.append("-")
        out.append(c.lower())
    return "".join(out)


class Block:
    def __init__(self, v, zones):
        self.id = int(v["id"])
        self.start_pfn = int(v["start_pfn"])
        self.nr_pages = int(v["nr_pages"])
        self.node = int(v["node"])
        self.state = _kebab(enum_variant(v["state"]))
        z = option_some(v["zone"])
        self.zone = "-" if z is None else zones.get(int(z), "?")
        g = option_some(v["group"])
        self.group = "-" if g is None else str(int(g))
        a = option_some(v["altmap"])
        self.altmap = None if a is None else {f.name: int(a[f.name]) for f in a.type.strip_typedefs().fields() if f.name}
        self.early = bool(int(v["early"]))

    @property
    def nr_vmemmap_pages(self):
        """MemoryBlock::nr_vmemmap_pages: the altmap's `free` PFNs."""
        return 0 if self.altmap is None else self.altmap.get("free", 0)

    def lines(self, cfg):
        start = self.start_pfn << cfg.page_shift
        out = [
            "block: id=%d range=%#x-%#x node=%d state=%s zone=%s group=%s vmemmap_pages=%d early=%s"
            % (
                self.id,
                start,
                start + (self.nr_pages << cfg.page_shift),
                self.node,
                self.state,
                self.zone,
                self.group,
                self.nr_vmemmap_pages,
                "true" if self.early else "false",
            )
        ]
        if self.altmap is not None:
            a = self.altmap
            memmap_end = a.get("base_pfn", 0) + a.get("reserve", 0) + a.get("free", 0)
            out.append(
                "altmap: block=%d %s memmap_pfns=%#x-%#x"
                % (self.id, " ".join("%s=%#x" % kv for kv in a.items()), a.get("base_pfn", 0) + a.get("reserve", 0), memmap_end)
            )
        return out


def value_fields(v):
    """`key=value` words of a struct value, generically: integers in decimal, booleans as
    true/false, `Option`s as `-` or their payload, C-like enums by variant, enums with data
    as `name=<variant>` followed by the variant's own fields (`kind=static max_pages=..`)."""
    t = v.type.strip_typedefs()
    words = []
    for f in t.fields():
        if f.name is None or f.artificial:
            continue
        words.extend(_field_words(f.name, v[f.name]))
    return words


def _field_words(name, x):
    t = x.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_BOOL:
        return ["%s=%s" % (name, "true" if bool(x) else "false")]
    if t.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR):
        return ["%s=%d" % (name, int(x))]
    if t.code == gdb.TYPE_CODE_ENUM:
        return ["%s=%s" % (name, _kebab(enum_variant(x)))]
    if short_type_name(x) == "Option":
        inner = option_some(x)
        return ["%s=-" % name] if inner is None else _field_words(name, inner)
    variant = enum_variant(x)
    try:
        payload = x[variant]
    except gdb.error:
        return ["%s=%s" % (name, x.format_string(max_depth=1).replace(" ", ""))]
    return ["%s=%s" % (name, _kebab(variant))] + value_fields(payload)


class Blocks:
    def __init__(self, cfg, locked, blocks, groups):
        self.cfg = cfg
        self.locked = locked
        self.blocks = blocks
        self.groups = groups  # [(id, [key=value words])]

    def node_of(self, pfn):
        """The node of the block holding `pfn`, as text ("-": no block)."""
        for b in self.blocks:
            if b.start_pfn <= pfn < b.start_pfn + b.nr_pages:
                return str(b.node)
        return "-"

    def lines(self, node=None):
        """`node`: only that node's blocks (the header still counts them all)."""
        out = []
        if self.locked:
            out.append("blocks: warning: the hotplug lock is held (a hotplug operation is in progress)")
        out.append("blocks: block_size=%s count=%d" % (size_str(self.cfg.section_size), len(self.blocks)))
        for b in self.blocks:
            if node is None or b.node == node:
                out.extend(b.lines(self.cfg))
        for gid, words in self.groups:
            out.append("group: id=%d %s" % (gid, " ".join(words)))
        return out


def read_blocks(cfg):
    """Memory blocks, or None while the hotplug state is not set up; raises GdbError when the
    kernel has no memory blocks at all."""
    hp = read_static(HOTPLUG_SYMBOL)
    if hp is None:
        raise GdbError(
            "memory blocks are not implemented in this kernel (no %s in the ELF); "
            "hm-sections shows the sparse sections" % HOTPLUG_SYMBOL
        )
    lockword = find_field(hp, "lock")
    locked = lockword is not None and scalar(lockword) != 0
    opt = descend(hp, "Option")
    state = None if opt is None else option_some(opt)
    if state is None:
        return None
    zones = zone_names()
    blocks = []
    for v in btree_map_values(state["blocks"]):
        b = descend(v, "MemoryBlock")
        if b is None:
            raise GdbError("cannot find a MemoryBlock in %s" % type_name(v))
        blocks.append(Block(b, zones))
    groups = []
    gm = find_field(state, "groups")
    if gm is not None:
        for k, v in btree_map_items(gm):
            g = descend(v, "MemoryGroup")
            groups.append((scalar(k), value_fields(g if g is not None else v)))
    return Blocks(cfg, locked, blocks, groups)
