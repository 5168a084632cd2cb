"""The `hm-*` gdb commands. Each parses its arguments, reads through `target`, and prints
stable `key=value` lines (the same keys as the kernel's shell where one exists: `pt:` →
`walk:`, `page:`, `sections:`/`section:`, `meminfo: zone=` → `freelists: zone=`).

User errors (bad argument, not connected, nothing there yet) raise `gdb.GdbError`: gdb prints
the message, no traceback.
"""

import re

import gdb

from . import config, memmap, pagetable, symbols
from .arch import LEVEL_NAMES, MASK64, Geometry, decode, guess_level_text, size_str
from .target import CpuState, GdbError, PhysMem, require_target

COMMANDS = []


class HmCommand(gdb.Command):
    """Base: `name`, `usage`, one-line `summary`; subclasses implement `run(argv, arg)`."""

    name = None
    usage = None
    summary = None

    def __init__(self):
        super().__init__(self.name, gdb.COMMAND_USER)

    def usage_error(self, why=None):
        msg = "usage: %s" % self.usage
        if why:
            msg = "%s: %s\n%s" % (self.name, why, msg)
        raise GdbError(msg)

    def invoke(self, arg, from_tty):
        self.dont_repeat()
        try:
            argv = gdb.string_to_argv(arg)
        except (ValueError, gdb.error) as e:
            self.usage_error(str(e))
        try:
            self.run(argv, arg.strip())
        except gdb.GdbError:
            raise
        except gdb.error as e:
            # A gdb command we ran failed (no target, memory error...): report it as ours.
            raise GdbError("%s: %s" % (self.name, e))

    def number(self, expr, what):
        """Evaluates a gdb expression (`0x...`, `$x1`, `start`, `1 << 30`) to an unsigned int."""
        try:
            v = gdb.parse_and_eval(expr)
            n = int(v)
        except (gdb.error, ValueError, TypeError) as e:
            self.usage_error("%s `%s` is not a number or expression gdb can evaluate (%s)" % (what, expr, e))
        return n & MASK64


def command(cls):
    """Registers a command class (class decorator)."""
    COMMANDS.append(cls)
    return cls


def out(lines):
    for l in lines:
        gdb.write(l + "\n")


# ---------------------------------------------------------------------------------------------


@command
class Help(HmCommand):
    """List the hotmem commands."""

    name = "hm-help"
    usage = "hm-help"
    summary = "list the hotmem commands"

    def run(self, argv, arg):
        for c in COMMANDS:
            if len(c.usage) > 30:
                out([c.usage, "%-32s %s" % ("", c.summary)])
            else:
                out(["%-32s %s" % (c.usage, c.summary)])
        out(["(docs/gdb.md has a worked session; `help hm-walk` etc. for details)"])


@command
class Connect(HmCommand):
    """Connect to QEMU's gdbstub and show the kernel configuration.

Usage: hm-connect [PORT | HOST:PORT]   (default 127.0.0.1:1234)
QEMU listens on 127.0.0.1 only (the runner never binds the gdbstub elsewhere)."""

    name = "hm-connect"
    usage = "hm-connect [PORT | HOST:PORT]"
    summary = "target remote to QEMU (127.0.0.1), then show the configuration"

    def run(self, argv, arg):
        if len(argv) > 1:
            self.usage_error()
        where = argv[0] if argv else "1234"
        host, _, port = where.rpartition(":")
        host = host or "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.usage_error("`%s` is not a port" % where)
        cfg = config.load()
        gdb.execute("target remote %s:%s" % (host, port))
        out(
            [
                "hotmem: kernel %s (%s granule, %d-bit VA, %d levels from L%d) connected at %s:%s"
                % (cfg.name, cfg.geom.granule, cfg.va_bits, cfg.levels, cfg.start_level, host, port)
            ]
        )
        try:
            cpu = CpuState()
            out([cpu.line()])
            if not cpu.mmu_on:
                out(
                    [
                        "hotmem: the MMU is off (QEMU halted at reset?). Kernel symbols are at high-half VAs:",
                        "hotmem: `hm-hbreak populate` then `continue` stops in the boot memmap populate;",
                        "hotmem: `hm-help` lists the commands.",
                    ]
                )
        except GdbError as e:
            out(["hotmem: %s" % e])


@command
class Config(HmCommand):
    """Show the kernel configuration exported in HOTMEM_DEBUG_INFO (and the CPU's MMU state).

Usage: hm-config
Granule, VA size, levels, section size, the linear map and vmemmap regions, and per level
the entries and what one entry maps. Read from the ELF file, so it works unconnected."""

    name = "hm-config"
    usage = "hm-config"
    summary = "the configuration in HOTMEM_DEBUG_INFO, the CPU's MMU registers"

    def run(self, argv, arg):
        if argv:
            self.usage_error()
        cfg = config.load()
        out(cfg.lines())
        try:
            cpu = CpuState()
        except GdbError:
            out(["cpu: not connected"])
            return
        out([cpu.line()])
        if cpu.mmu_on:
            bad = cpu.ttbr1_mismatch(cfg)
            out(["cpu: warning: %s: wrong ELF for this QEMU?" % bad if bad else "cpu: TCR_EL1 agrees with the ELF"])


def _ttbr_geometry(cfg, cpu, va):
    """(ttbr number, Geometry, root) for `va`, or a message why nothing is walked."""
    if va >> cfg.va_bits == (1 << (64 - cfg.va_bits)) - 1:
        if cpu.ttbr1 == 0:
            return None, "TTBR1_EL1 is 0: the kernel has not installed its page tables yet (MMU %s)" % (
                "on" if cpu.mmu_on else "off: QEMU halted before the early boot code ran?"
            )
        if cpu.epd1:
            return None, "TCR_EL1.EPD1=1: TTBR1 walks are disabled"
        return (1, cfg.geom, CpuState.baddr(cpu.ttbr1)), None
    if va >> 63 == 0:
        if cpu.epd0:
            return None, (
                "in the TTBR0 half; TTBR0 walks are disabled (TCR_EL1.EPD0=1): hotmem drops "
                "its identity map once it runs in the high half, so this address does not translate"
            )
        va_bits0 = 64 - cpu.t0sz
        if va >> va_bits0 != 0:
            return None, "above the TTBR0 range (T0SZ=%d: %d-bit VAs)" % (cpu.t0sz, va_bits0)
        if cpu.ttbr0 == 0 or cpu.tg0_shift is None:
            return None, "in the TTBR0 half, but TTBR0_EL1/TCR_EL1 hold no usable table"
        try:
            g = Geometry(cpu.tg0_shift, va_bits0)
        except ValueError as e:
            return None, "the TTBR0 geometry in TCR_EL1 is unusable: %s" % e
        return (0, g, CpuState.baddr(cpu.ttbr0)), None
    return None, "outside both halves: bits [63:%d] must be all ones for TTBR1" % cfg.va_bits


def walk_lines(cfg, cpu, va):
    """The walk of `va` as printed lines, and the WalkResult (None when not walked)."""
    lines = []
    sel, why = _ttbr_geometry(cfg, cpu, va)
    if sel is None:
        return ["walk: va=%#x: %s" % (va, why), "walk: -> not walked"], None
    ttbr, g, root = sel
    if ttbr == 1 and cpu.mmu_on:
        bad = cpu.ttbr1_mismatch(cfg)
        if bad:
            lines.append("walk: warning: %s; walking with the ELF's geometry" % bad)
    if not cpu.mmu_on:
        lines.append("walk: note: the MMU is off (SCTLR_EL1.M=0): walking the tables TTBR%d_EL1 points at" % ttbr)
    with PhysMem(cfg, cpu) as mem:
        lines.append(
            "walk: va=%#x ttbr=%d root=%#x granule=%s va_bits=%d levels=%d start_level=%d read=%s"
            % (va, ttbr, root, g.granule, g.va_bits, g.levels, g.start_level, "phys" if mem.mode == "phys" else "linear")
        )
        w = pagetable.walk(g, root, va, mem.u64s, cpu.mair)
    lines.extend(s.line() for s in w.steps)
    lines.append(w.result_line())
    lines.extend(region_lines(cfg, va, w))
    return lines, w


def region_lines(cfg, va, w):
    """What the kernel layout says `va` is, and whether the walk agrees with it."""
    for name, s, e in cfg.regions():
        if not s <= va < e:
            continue
        if name == "linear":
            pa = va - cfg.page_offset
            agree = "" if not w.mapped else (" (agrees)" if w.pa == pa else " (MISMATCH: walk gives %#x)" % w.pa)
            return ["walk: region=linear expected_pa=%#x%s" % (pa, agree)]
        off = va - cfg.vmemmap_start
        pfn = off // cfg.struct_page_size
        return [
            "walk: region=vmemmap struct_page_of_pfn=%#x (pa=%#x, section %d) offset_in_struct_page=%d"
            % (pfn, pfn << cfg.page_shift, (pfn << cfg.page_shift) >> cfg.section_shift, off % cfg.struct_page_size)
        ]
    if va >= cfg.kimage_vaddr:
        return ["walk: region=kimage"]
    return []


@command
class Walk(HmCommand):
    """Walk the page tables for a virtual address, as the MMU would.

Usage: hm-walk VA
VA is any gdb expression (0xffff000040000000, $x1, start, ...). The table is chosen by the
address: TTBR1_EL1 for the kernel half (geometry from HOTMEM_DEBUG_INFO), TTBR0_EL1 for the
low half (geometry from TCR_EL1; hotmem disables TTBR0 walks with EPD0 after boot). Tables are
read physically (QEMU physical-memory mode). Prints every level's index, table, descriptor and
decoded attributes, then `walk: -> pa=... level=... size=... contiguous=...` or the level of
the translation fault."""

    name = "hm-walk"
    usage = "hm-walk VA"
    summary = "walk TTBR1/TTBR0 for a VA: each level, descriptor, attributes, PA"

    def run(self, argv, arg):
        if not arg:
            self.usage_error()
        va = self.number(arg, "VA")
        cfg = config.load()
        cpu = CpuState()
        lines, _ = walk_lines(cfg, cpu, va)
        out(lines)


@command
class PtDump(HmCommand):
    """Summarise the kernel's mappings like Linux's ptdump.

Usage: hm-ptdump [linear | vmemmap | all | START END]
Without arguments: the linear map and the vmemmap. `all` dumps the whole TTBR1 half.
Adjacent leaves with equal level and attributes are merged into one line:
  VA range, size, level, BLOCK/PAGE, number of leaves, attributes, PA range (or `scattered`).
A `ptdump: region=...` summary line follows each region."""

    name = "hm-ptdump"
    usage = "hm-ptdump [linear | vmemmap | all | START END]"
    summary = "summarised mappings of the linear map and vmemmap (or a range)"

    def run(self, argv, arg):
        cfg = config.load()
        regions = dict((n, (s, e)) for n, s, e in cfg.regions())
        regions["all"] = (cfg.geom.ttbr1_base, 1 << 64)
        if not argv:
            todo = [(n, regions[n]) for n in ("linear", "vmemmap")]
        elif len(argv) == 1 and argv[0] in regions:
            todo = [(argv[0], regions[argv[0]])]
        elif len(argv) == 2:
            s, e = self.number(argv[0], "START"), self.number(argv[1], "END")
            if e == 0:
                e = 1 << 64
            if s >= e:
                self.usage_error("START must be below END")
            if s < cfg.geom.ttbr1_base:
                self.usage_error("hm-ptdump dumps the TTBR1 half (from %#x)" % cfg.geom.ttbr1_base)
            todo = [("range", (s, e))]
        else:
            self.usage_error()
        cpu = CpuState()
        if cpu.ttbr1 == 0:
            raise GdbError("TTBR1_EL1 is 0: the kernel has not installed its page tables yet")
        root = CpuState.baddr(cpu.ttbr1)
        lines = []
        with PhysMem(cfg, cpu) as mem:
            for name, (s, e) in todo:
                d = pagetable.ptdump(cfg.geom, root, s, e, mem.u64s, cpu.mair)
                lines.append("---[ %s %#x-%#x ]---" % (name, s, e & MASK64 if e < 1 << 64 else MASK64))
                lines.extend(r.line() for r in d.rows)
                for va, dec in d.faults:
                    lines.append("%#018x  L%d %s" % (va, dec.level, dec.text()))
                lines.append(
                    "ptdump: region=%s start=%#x end=%#x mapped=%s mapped_bytes=%d rows=%d leaves=%d tables=%d faults=%d"
                    % (name, s, min(e, MASK64), size_str(d.mapped_bytes), d.mapped_bytes, len(d.rows), d.leaves, d.tables, len(d.faults))
                )
        out(lines)


@command
class Page(HmCommand):
    """Decode the struct page (mm::page::Page) of a PFN.

Usage: hm-page PFN
Prints the same keys as the shell's `page PFN` (pfn, pa, struct_page, flags, order, zone,
node, refcount, block, next, prev) plus private and the struct page's physical address.
A PFN whose section has no memmap, or whose struct page is not mapped, is reported as such;
a deferred (not yet initialised) struct page as `deferred, not initialised (<where>)`, and a
self-hosted memmap page (whose struct page is never written) as `vmemmap_self_hosted, not
initialised (<its block's state>)`, answered from its block, as the shell does."""

    name = "hm-page"
    usage = "hm-page PFN"
    summary = "decode the struct page of a PFN"

    def run(self, argv, arg):
        if not arg:
            self.usage_error()
        pfn = self.number(arg, "PFN")
        cfg = config.load()
        if pfn >= cfg.max_pfn:
            self.usage_error("pfn %#x is beyond the vmemmap (PFNs below %#x)" % (pfn, cfg.max_pfn))
        cpu = CpuState()
        secs = memmap.read_sections(cfg)
        if secs is not None:
            nr = secs.of_pfn(pfn)
            st = secs.state(nr)
            if not st & memmap.SECTION_HAS_MEMMAP:
                out(
                    [
                        "page: pfn=%#x has no memmap (pfn_valid is false: section %d state=%s)"
                        % (pfn, nr, memmap.flag_names(st, memmap.SECTION_STATES, ","))
                    ]
                )
                return
        deferred = memmap.read_deferred() if secs is not None else None
        words = deferred.self_hosted_words(pfn, memmap.zone_names()) if deferred is not None else None
        if words is not None:
            out(["page: pfn=%#x pa=%#x struct_page=%#x %s" % (pfn, pfn << cfg.page_shift, cfg.struct_page(pfn), words)])
            return
        if deferred is not None and deferred.uninit(pfn):
            out(
                [
                    "page: pfn=%#x pa=%#x struct_page=%#x deferred, not initialised (%s)"
                    % (pfn, pfn << cfg.page_shift, cfg.struct_page(pfn), deferred.state(pfn, memmap.zone_names()))
                ]
            )
            return
        with PhysMem(cfg, cpu) as mem:
            p, w = memmap.read_page(cfg, cpu, mem, pfn)
        if p is None:
            out(["page: pfn=%#x struct_page=%#x is not mapped: %s" % (pfn, cfg.struct_page(pfn), w.result_line())])
            return
        lines = [p.line(cfg, memmap.zone_names())]
        if secs is None:
            lines.append("page: note: the sparse model is not initialised yet: this struct page may be uninitialised")
        out(lines)


@command
class Sections(HmCommand):
    """List the present memory sections and their state (mm::sparse::Sparse).

Usage: hm-sections
The same lines as the shell's `sections`: section size, count, then per present section its
number, physical range, state (present, memmap, online, early, self-hosted) and memmap VA."""

    name = "hm-sections"
    usage = "hm-sections"
    summary = "the sparse sections and their state bits"

    def run(self, argv, arg):
        if argv:
            self.usage_error()
        cfg = config.load()
        require_target()
        secs = memmap.read_sections(cfg)
        if secs is None:
            out(
                [
                    "sections: the sparse model is not initialised yet (%s is set in init_memmap)"
                    % symbols.static_path(memmap.SPARSE_SYMBOL)
                ]
            )
            return
        try:
            blocks = memmap.read_blocks(cfg)
        except GdbError:
            blocks = None
        out(secs.lines(blocks))


def node_filter(cmd, argv):
    """(the node of a `node=N` word or None, the other words); a bad N is a usage error."""
    rest, node = [], None
    for w in argv:
        if w.startswith("node="):
            try:
                node = int(w[5:], 0)
            except ValueError:
                cmd.usage_error("'%s' is not a node number" % w)
        else:
            rest.append(w)
    return node, rest


@command
class FreeLists(HmCommand):
    """Free blocks per order per zone of the buddy allocator (mm::buddy::PageAlloc).

Usage: hm-freelists [--check] [node=N]
The per-zone lines have the keys of the shell's `meminfo: zone=` lines (all nodes), the
per-node ones those of its `meminfo: node=N zone=` lines. node=N shows only that node's zones.
--check follows every list through the struct pages and verifies flags, order, zone, node,
alignment and back links."""

    name = "hm-freelists"
    usage = "hm-freelists [--check] [node=N]"
    summary = "buddy free blocks per order per node and zone (--check: follow the lists)"

    def run(self, argv, arg):
        node, argv = node_filter(self, argv)
        if argv not in ([], ["--check"], ["-c"]):
            self.usage_error()
        cfg = config.load()
        require_target()
        fl = memmap.read_freelists(cfg)
        if fl is None:
            out(["freelists: the page allocator is not initialised yet (PAGE_ALLOC is None until init_page_allocator)"])
            return
        out(fl.lines(node))
        if argv:
            out(memmap.check_freelists(cfg, CpuState(), fl))


@command
class Blocks(HmCommand):
    """List the memory blocks: range, state, zone, group, self-hosted memmap and altmap.

Usage: hm-blocks [node=N]
The `block:` lines have the keys of the shell's `blocks` (id, range, node, state, zone, group,
vmemmap_pages, early); node=N lists only that node's blocks; a block whose memmap lives on its own memory gets an `altmap:` line
(base_pfn, end_pfn, reserve, free, align, alloc and the PFNs backing the memmap). Memory
groups follow as `group: id=N` and their fields as key=value (`kind=static max_pages=..`).
Read from the kernel's HOTPLUG static; a kernel without it says so."""

    name = "hm-blocks"
    usage = "hm-blocks [node=N]"
    summary = "memory blocks with node/state/zone/group/vmemmap pages and their altmap"

    def run(self, argv, arg):
        node, argv = node_filter(self, argv)
        if argv:
            self.usage_error()
        cfg = config.load()
        require_target()
        blocks = memmap.read_blocks(cfg)
        if blocks is None:
            out(["blocks: the hotplug state is not set up yet (HOTPLUG is None until hotplug::init at boot)"])
            return
        out(blocks.lines(node))


@command
class Flags(HmCommand):
    """List the struct page flags, or decode a flags word, with the kernel's own table.

Usage: hm-flags [VALUE]
Without VALUE: one `page_flag: bit=0x.. name=..` line per flag, in the order the kernel prints
them (the table is HOTMEM_PAGE_FLAGS in the ELF, mm/src/page.rs). With VALUE: `flags: value=0x..
names=a|b` as `hm-page` and the shell's `page` print it. Read from the ELF file: works
unconnected."""

    name = "hm-flags"
    usage = "hm-flags [VALUE]"
    summary = "the struct page flag bits and names (the kernel's table), or decode a value"

    def run(self, argv, arg):
        if len(argv) > 1:
            self.usage_error()
        config.load()
        if argv:
            v = self.number(arg, "VALUE")
            out(["flags: value=%#x names=%s" % (v, memmap.page_flag_names(v))])
            return
        out(["page_flag: bit=%#x name=%s" % (bit, name) for bit, name in symbols.page_flags()])


@command
class Devices(HmCommand):
    """List the memory device types the kernel registered, as the generic code knows them.

Usage: hm-devices
One `memdev: name=.. online_filter=yes|no check=yes|no views=a,b` line per type registered with
`memory_device!` (the `.memdevs` section between __memdevs_start and __memdevs_end,
kernel/mem/device/mod.rs): its online filter, its checker rule, its shell views. Read from the
ELF file: works unconnected."""

    name = "hm-devices"
    usage = "hm-devices"
    summary = "the registered memory device types: filter, checker rule, shell views"

    def run(self, argv, arg):
        if argv:
            self.usage_error()
        config.load()
        yn = lambda b: "yes" if b else "no"
        out(
            [
                "memdev: name=%s online_filter=%s check=%s views=%s" % (n, yn(f), yn(c), ",".join(v) or "-")
                for n, f, c, v in symbols.memory_devices()
            ]
        )


@command
class Desc(HmCommand):
    """Decode a raw stage-1 descriptor value.

Usage: hm-desc VALUE [LEVEL]
With LEVEL (0..3) the decoding is exact; without, a 0b11 descriptor is taken for a page when
AF is set (as the kernel's Display does). The granule comes from HOTMEM_DEBUG_INFO."""

    name = "hm-desc"
    usage = "hm-desc VALUE [LEVEL]"
    summary = "decode a raw descriptor (granule from the ELF)"

    def run(self, argv, arg):
        if len(argv) not in (1, 2):
            self.usage_error()
        raw = self.number(argv[0], "VALUE")
        cfg = config.load()
        if len(argv) == 1:
            out(["desc: " + guess_level_text(raw, cfg.geom)])
            return
        if argv[1] not in ("0", "1", "2", "3") or not cfg.geom.has_level(int(argv[1])):
            self.usage_error(
                "LEVEL must be one of %s for %s" % (", ".join(str(l) for l in cfg.geom.level_range()), cfg.name)
            )
        lv = int(argv[1])
        out(["desc: %#018x L%d (%s) %s" % (raw, lv, LEVEL_NAMES[lv], decode(raw, lv, cfg.geom).text())])


# ---------------------------------------------------------------------------------------------
# Breakpoints

# The kernel's memmap populate: `mm::..::Vmemmap<C,T,S,L>::populate`, one instance per
# page source (boot: MemblockSource; hot-add: BuddySource or the altmap path).
# Each alias is a crate, a type and a method, wherever the type's module is: (regex for
# `info functions -n`, which uses basic regular expressions; python regex that the full name
# must match).
def _method(crate, ty, method, generic):
    args = "<.*>" if generic else ""
    return (
        r"%s::.*%s%s::%s" % (crate, ty, args, method),
        r"^%s::(\w+::)*%s%s::%s(<.*>)?$" % (crate, ty, args, method),
    )


ALIASES = {
    "populate": _method("mm", "Vmemmap", "populate", True),
    "vmemmap_free": _method("mm", "Vmemmap", "free", True),
    "add_memory": _method("mm", "Hotplug", "add_memory", False),
    "remove_memory": _method("mm", "Hotplug", "remove_memory", False),
}


def alias(word):
    """(gdb regex, python regex or None) for a `hm-hbreak` argument. `cmd:NAME` is the shell
    command handler `hotmem::..::cmd_NAME` (called through a fn pointer: never
    inlined)."""
    if word in ALIASES:
        return ALIASES[word]
    if word.startswith("cmd:") and re.match(r"^[a-z_]+$", word[4:]):
        return ("hotmem::.*::cmd_%s" % word[4:], r"^hotmem::(\w+::)+cmd_%s$" % word[4:])
    return (word, None)


def _fn_name(decl):
    """Function name in an `info functions` line (generic arguments may contain parens)."""
    i = decl.find("fn ")
    if i < 0:
        return None
    s = decl[i + 3 :]
    depth = 0
    for j, c in enumerate(s):
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "(" and depth == 0:
            return s[:j].strip()
    return None


def functions(regex, exact=None):
    """[(name, file, line)] of the functions with debug info matching `regex` (and the python
    regex `exact` when given)."""
    text = gdb.execute("info functions -q -n %s" % regex, to_string=True)
    res, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^File (.*):$", line)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"^(\d+):\s+(.*)$", line)
        if m and cur:
            name = _fn_name(m.group(2))
            if name and (exact is None or re.search(exact, name)):
                res.append((name, cur, int(m.group(1))))
    return res


def _short(name):
    """`a::B<x, y>::f<x>` -> `a::B<..>::f<..>`."""
    out, depth = [], 0
    for c in name:
        if c == "<":
            if depth == 0:
                out.append("<..>")
            depth += 1
        elif c == ">":
            depth -= 1
        elif depth == 0:
            out.append(c)
    return "".join(out)


@command
class HBreak(HmCommand):
    """Set hardware breakpoints on kernel functions found by name.

Usage: hm-hbreak populate | vmemmap_free | add_memory | remove_memory | cmd:NAME | REGEX
`populate` is the memmap populate (mm::..::Vmemmap<..>::populate, called at boot for
every boot section, later for every hot-added one); `cmd:probe` is the shell's `probe`
handler (hotmem::shell::hotplug::cmd_probe: stops when that command is typed). Otherwise REGEX is
matched like `info functions -n` (a basic regular expression). Rust
generic names are awkward to type, so each match is resolved to its entry address
(`hbreak *ADDR`, registers still hold the arguments: x1=start, x2=end for populate), or to
its source line when it was inlined everywhere. Hardware breakpoints work at high-half
addresses before the MMU maps them and need no writes to kernel text."""

    name = "hm-hbreak"
    usage = "hm-hbreak populate | vmemmap_free | add_memory | remove_memory | cmd:NAME | REGEX"
    summary = "hardware breakpoints on kernel functions by (Rust) name"

    def run(self, argv, arg):
        if len(argv) != 1:
            self.usage_error()
        regex, exact = alias(argv[0])
        config.load()
        require_target()
        found = functions(regex, exact)
        if not found:
            raise GdbError("hm-hbreak: no function with debug info matches %s" % regex)
        seen = set()
        for name, path, line in found:
            addr = None
            for lookup in (gdb.lookup_static_symbol, gdb.lookup_global_symbol):
                try:
                    s = lookup(name)
                except gdb.error:
                    s = None
                if s is not None and s.type is not None and s.type.code == gdb.TYPE_CODE_FUNC:
                    try:
                        addr = int(s.value().address)
                    except (gdb.error, TypeError):
                        addr = None  # inlined everywhere: use the source line
                    break
            loc = "*%#x" % addr if addr is not None else "%s:%d" % (path, line)
            if loc in seen:
                continue
            seen.add(loc)
            before = {b.number for b in gdb.breakpoints()}
            gdb.execute("hbreak %s" % loc, to_string=True)
            new = [b for b in gdb.breakpoints() if b.number not in before]
            num = new[0].number if new else "?"
            out(["hm-hbreak: breakpoint %s at %s: %s (%s:%d)" % (num, loc, _short(name), path, line)])


def register_all():
    for c in COMMANDS:
        c()
