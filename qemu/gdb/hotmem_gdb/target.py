"""Access to the halted QEMU guest: system registers, physical memory, kernel statics.

Physical memory is read through QEMU's gdbstub physical mode (`maint packet
Qqemu.PhyMemMode:1`; the query is the lower-case `qqemu.PhyMemMode`). Page tables are read
that way because table pages are not all reachable through one virtual mapping (the boot tables
live in the image, later ones in the linear map) and because it works with the MMU off. The
previous mode is restored afterwards. When the stub has no physical mode (not QEMU), reads fall
back to the linear map (`PAGE_OFFSET + PA`), which needs the MMU on and the linear map built.
"""

import re
import struct

import gdb

from . import symbols
from .arch import MASK64

GdbError = gdb.GdbError


# ---------------------------------------------------------------------------------------------
# Connection and registers


def require_target():
    """Raises a GdbError unless a live target (QEMU) is connected."""
    try:
        th = gdb.selected_thread()
    except gdb.error:
        th = None
    if th is None or not th.is_valid():
        raise GdbError(
            "not connected to QEMU: use `hm-connect PORT` (QEMU started by `cargo run -- --gdb`)"
        )


def register(*names):
    """The first of `names` the target describes, as an unsigned int; None if none is."""
    for n in names:
        try:
            v = gdb.parse_and_eval("$" + n)
        except gdb.error:
            continue
        if v.type.code == gdb.TYPE_CODE_VOID:
            continue
        try:
            return int(v) & MASK64
        except (gdb.error, ValueError):
            continue
    return None


# TG0/TG1 encodings differ (Arm ARM D19.2.163).
_TG0 = {0: 12, 1: 16, 2: 14}
_TG1 = {1: 14, 2: 12, 3: 16}


class CpuState:
    """The MMU registers of the selected CPU (gdb thread)."""

    def __init__(self):
        require_target()
        self.sctlr = register("SCTLR_EL1", "SCTLR")
        self.tcr = register("TCR_EL1")
        self.ttbr0 = register("TTBR0_EL1")
        self.ttbr1 = register("TTBR1_EL1")
        self.mair = register("MAIR_EL1")
        cpsr = register("cpsr", "CPSR")
        self.el = None if cpsr is None else (cpsr >> 2) & 3
        if None in (self.sctlr, self.tcr, self.ttbr1):
            raise GdbError(
                "QEMU does not expose SCTLR_EL1/TCR_EL1/TTBR1_EL1 to gdb (QEMU too old?): cannot walk"
            )
        if self.ttbr0 is None:
            self.ttbr0 = 0

    @property
    def mmu_on(self):
        return bool(self.sctlr & 1)

    @property
    def epd0(self):
        return bool((self.tcr >> 7) & 1)

    @property
    def epd1(self):
        return bool((self.tcr >> 23) & 1)

    @property
    def t0sz(self):
        return self.tcr & 0x3F

    @property
    def t1sz(self):
        return (self.tcr >> 16) & 0x3F

    @property
    def tg0_shift(self):
        return _TG0.get((self.tcr >> 14) & 3)

    @property
    def tg1_shift(self):
        return _TG1.get((self.tcr >> 30) & 3)

    @staticmethod
    def baddr(ttbr):
        """Table base address of a TTBR (ASID in [63:48] and CnP in [0] removed)."""
        return ttbr & 0x0000_FFFF_FFFF_FFFE

    def line(self):
        return (
            "cpu: el=%s mmu=%s SCTLR_EL1=%#x TCR_EL1=%#x (T0SZ=%d TG0=%s EPD0=%d T1SZ=%d TG1=%s EPD1=%d) "
            "TTBR0_EL1=%#x TTBR1_EL1=%#x MAIR_EL1=%s"
            % (
                "?" if self.el is None else self.el,
                "on" if self.mmu_on else "off",
                self.sctlr,
                self.tcr,
                self.t0sz,
                _granule(self.tg0_shift),
                self.epd0,
                self.t1sz,
                _granule(self.tg1_shift),
                self.epd1,
                self.ttbr0,
                self.ttbr1,
                "?" if self.mair is None else "%#x" % self.mair,
            )
        )

    def ttbr1_mismatch(self, cfg):
        """Why TCR_EL1 disagrees with the ELF's configuration, or None."""
        want_tsz = 64 - cfg.va_bits
        if self.t1sz != want_tsz or self.tg1_shift != cfg.page_shift:
            return "TCR_EL1 has T1SZ=%d TG1=%s but the ELF is %s (T1SZ=%d TG1=%s)" % (
                self.t1sz,
                _granule(self.tg1_shift),
                cfg.name,
                want_tsz,
                cfg.geom.granule,
            )
        return None


def _granule(shift):
    return {12: "4k", 14: "16k", 16: "64k"}.get(shift, "invalid")


# ---------------------------------------------------------------------------------------------
# Memory


def _maint_packet(payload):
    """Sends a raw remote packet; returns the reply text, or None when impossible."""
    try:
        out = gdb.execute("maint packet %s" % payload, to_string=True)
    except gdb.error:
        return None
    m = re.search(r'received: "(.*)"', out)
    return m.group(1) if m else None


def _flush_cache():
    try:
        gdb.execute("maint flush dcache", to_string=True)
    except gdb.error:
        pass


class PhysMem:
    """Context manager reading guest-physical memory; restores the previous gdbstub mode.

        with PhysMem(cfg, cpu) as m:
            descs = m.u64s(pa, 512)
    """

    def __init__(self, cfg, cpu=None):
        self.cfg = cfg
        self.cpu = cpu
        self.mode = None  # "phys" or "linear"
        self._restore = None

    def __enter__(self):
        require_target()
        cur = _maint_packet("qqemu.PhyMemMode")
        if cur in ("0", "1"):
            if cur == "1" or _maint_packet("Qqemu.PhyMemMode:1") == "OK":
                self.mode = "phys"
                self._restore = cur
                _flush_cache()
                return self
        self.mode = "linear"
        return self

    def __exit__(self, *exc):
        if self.mode == "phys" and self._restore == "0":
            _maint_packet("Qqemu.PhyMemMode:0")
            _flush_cache()
        return False

    @property
    def how(self):
        return (
            "QEMU physical-memory mode"
            if self.mode == "phys"
            else "the linear map (this gdbstub has no physical mode)"
        )

    def read(self, pa, size):
        addr = pa
        if self.mode == "linear":
            if pa + size > self.cfg.linear_size:
                raise GdbError("pa=%#x is outside the linear map and the stub has no physical mode" % pa)
            if self.cpu is not None and not self.cpu.mmu_on:
                raise GdbError("the MMU is off and the stub has no physical mode: cannot read pa=%#x" % pa)
            addr = self.cfg.page_offset + pa
        try:
            return bytes(gdb.selected_inferior().read_memory(addr, size))
        except gdb.MemoryError as e:
            raise GdbError("cannot read %d bytes at pa=%#x through %s: %s" % (size, pa, self.how, e))

    def u64s(self, pa, count):
        return list(struct.unpack("<%dQ" % count, self.read(pa, 8 * count)))


def read_virt(va, size, what):
    """Bytes at a kernel virtual address (current translation)."""
    try:
        return bytes(gdb.selected_inferior().read_memory(va, size))
    except gdb.MemoryError as e:
        raise GdbError(
            "cannot read %s at %#x: %s (is the MMU on? QEMU halted at reset has no kernel mapping yet)"
            % (what, va, e)
        )


# ---------------------------------------------------------------------------------------------
# Kernel statics and Rust values


def static_symbol(name):
    """gdb.Symbol of a Rust static by its full path, or None."""
    for lookup in (gdb.lookup_static_symbol, gdb.lookup_global_symbol):
        try:
            s = lookup(name)
        except gdb.error:
            s = None
        if s is not None:
            return s
    return None


def read_static(name):
    """The kernel's static called `name` (last path component: `SPARSE`, found by
    `symbols.static_path`) read from the target, or None when the ELF has no such static."""
    path = symbols.static_path(name)
    sym = None if path is None else static_symbol(path)
    if sym is None:
        return None
    name = path
    try:
        v = sym.value()
        v.fetch_lazy()
    except gdb.error as e:
        raise GdbError(
            "cannot read %s: %s (the kernel image is not mapped yet: QEMU halted at reset, MMU off?)"
            % (name, e)
        )
    return v


def type_name(v):
    return str(v.type.strip_typedefs())


def short_type_name(v):
    """The last path component of a value's type, without generics: `mm::hotplug::MemoryBlock`
    and `core::option::Option<u8>` give `MemoryBlock` and `Option`."""
    return type_name(v).split("<")[0].split("::")[-1]


def descend(v, short, depth=12):
    """The first value reached through struct/union fields whose type is called `short` (last
    path component, see `short_type_name`; through `UnsafeCell`, `MaybeUninit`,
    `ManuallyDrop`, newtypes...)."""
    if short_type_name(v) == short:
        return v
    if depth == 0:
        return None
    t = v.type.strip_typedefs()
    if t.code not in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        return None
    for f in t.fields():
        if f.name is None or f.artificial:
            continue
        try:
            r = descend(v[f.name], short, depth - 1)
        except gdb.error:
            r = None
        if r is not None:
            return r
    return None


def scalar(v):
    """The integer inside single-field wrappers (`AtomicU8 { v: UnsafeCell { value } }`...)."""
    for _ in range(8):
        t = v.type.strip_typedefs()
        if t.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            fs = [f for f in t.fields() if f.name is not None and not f.artificial]
            if not fs:
                break
            v = v[fs[0].name]
            continue
        return int(v)
    raise GdbError("%s is not an integer wrapper" % type_name(v))


def find_field(v, name, depth=8):
    """Depth-first search for a field called `name`."""
    t = v.type.strip_typedefs()
    if t.code not in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION) or depth == 0:
        return None
    for f in t.fields():
        if f.name == name:
            return v[name]
    for f in t.fields():
        if f.name is None or f.artificial:
            continue
        r = find_field(v[f.name], name, depth - 1)
        if r is not None:
            return r
    return None


def pointer_value(v, depth=8):
    """The first raw pointer inside `v` (NonNull, Unique, ...) as a gdb.Value, or None."""
    t = v.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_PTR:
        return v
    if t.code not in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION) or depth == 0:
        return None
    for f in t.fields():
        if f.name is None or f.artificial:
            continue
        r = pointer_value(v[f.name], depth - 1)
        if r is not None:
            return r
    return None


def find_pointer(v, depth=8):
    """The first raw pointer inside `v` (e.g. a Vec's buffer) as an int, or None."""
    p = pointer_value(v, depth)
    return None if p is None else int(p)


def option_some(v):
    """The payload of a Rust `Option` value, or None when it is `None`."""
    names = [f.name for f in v.type.fields() if f.name]
    if "Some" in names:
        return v["Some"]["__0"]
    if "None" in names:
        return None
    # Otherwise tell the variants apart by the printed form.
    text = v.format_string(max_depth=1, max_elements=0)
    if "::None" in text.split("(")[0].split("{")[0]:
        return None
    try:
        return v["Some"]["__0"]
    except gdb.error:
        return None


def enum_variant(v):
    """Short variant name of a Rust enum value (`mm::hotplug::BlockState::Online` -> `Online`)."""
    t = v.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_ENUM:
        return str(v).split("::")[-1]
    names = [f.name for f in t.fields() if f.name and not f.artificial]
    if len(names) == 1:
        return names[0]
    return v.format_string(max_depth=0).split("::")[-1].split("(")[0].split(" ")[0]


def btree_map_values(m):
    """Values of a `BTreeMap<K, V>` in key order."""
    return [v for _, v in btree_map_items(m)]


def btree_map_items(m):
    """(key, value) pairs of a `BTreeMap<K, V>` in key order (the traversal of rustc's
    gdb_providers.py: a node holds `len` keys/vals; an internal node also `len + 1` edges)."""
    length = find_field(m, "length")
    if length is None or int(length) == 0:
        return []
    root = option_some(find_field(m, "root"))
    if root is None:
        return []
    height = int(root["height"])
    node = pointer_value(root["node"])

    def as_internal(ptr):
        name = str(ptr.type.target().strip_typedefs()).replace("LeafNode", "InternalNode", 1)
        return ptr.cast(gdb.lookup_type(name).pointer())

    out = []

    def visit(ptr, h):
        leaf = ptr.dereference()
        n = int(leaf["len"])
        edges = as_internal(ptr).dereference()["edges"] if h > 0 else None
        for i in range(n + 1):
            if h > 0:
                visit(pointer_value(edges[i]), h - 1)
            if i < n:
                out.append((leaf["keys"][i], leaf["vals"][i]))

    visit(node, height)
    if len(out) != int(length):
        raise GdbError("BTreeMap walk found %d values, length says %d" % (len(out), int(length)))
    return out


def vec_bytes(vec, elem_size, what):
    """Raw contents of a `Vec<T>` whose elements are `elem_size` bytes."""
    n = find_field(vec, "len")
    ptr = find_pointer(vec)
    if n is None or ptr is None:
        raise GdbError("cannot find the buffer of %s (type %s)" % (what, type_name(vec)))
    return read_virt(ptr, int(n) * elem_size, what) if int(n) else b""


def enum_names(name, crate):
    """{value: short name} of the C-like Rust enum `crate::..::name` from DWARF."""
    t = symbols.require_type(name, crate).strip_typedefs()
    if t.code != gdb.TYPE_CODE_ENUM:
        raise GdbError("%s is not a C-like enum in the debug info" % t)
    return {f.enumval: f.name.split("::")[-1] for f in t.fields()}


def vec_elems(vec, what):
    """The elements of a `Vec<T>` as gdb values of type `T`, the Vec's first generic argument
    (the buffer pointer itself is untyped: `Unique<u8>`)."""
    n = find_field(vec, "len")
    ptr = pointer_value(vec)
    if n is None or ptr is None:
        raise GdbError("cannot find the buffer of %s (type %s)" % (what, type_name(vec)))
    if int(n) == 0:
        return []
    try:
        elem = vec.type.strip_typedefs().template_argument(0)
    except (gdb.error, RuntimeError) as e:
        raise GdbError("the element type of %s (type %s) is not in the debug info: %s" % (what, type_name(vec), e))
    p = ptr.cast(elem.pointer())
    return [(p + i).dereference() for i in range(int(n))]
