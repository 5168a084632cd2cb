"""The kernel's build configuration, read from `HOTMEM_DEBUG_INFO` in the ELF.

`platform/src/boot/layout.rs` exports `#[no_mangle] static HOTMEM_DEBUG_INFO: DebugInfo` (magic
`HOTMEMv1`, then u64 fields). It is read from the ELF *file* (its PT_LOAD segment), not from
target memory, so it works before the MMU maps the image (QEMU halted at reset) and without a
connection at all. Field offsets come from the DWARF type `hotmem::..::DebugInfo` (found by name,
wherever its module is) when present, else from the v1 order below.
"""

import os
import re
import struct

import gdb

from . import symbols
from .arch import Geometry, size_str

SYMBOL = "HOTMEM_DEBUG_INFO"
DWARF_TYPE = "DebugInfo"
MAGIC = struct.unpack("<Q", b"HOTMEMv1")[0]
V1_FIELDS = (
    "magic",
    "page_shift",
    "va_bits",
    "levels",
    "start_level",
    "section_shift",
    "struct_page_size",
    "page_offset",
    "linear_size",
    "vmemmap_start",
    "vmemmap_size",
    "kimage_vaddr",
    "max_order",
)


class ConfigError(gdb.GdbError):
    pass


def elf_read(path, vaddr, size):
    """Bytes of the loaded image at `vaddr` from the ELF64 little-endian file at `path`."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ConfigError("%s is not a little-endian ELF64 file" % path)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _flags, off, va, _pa, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1 and va <= vaddr and vaddr + size <= va + filesz:
            o = off + (vaddr - va)
            return data[o : o + size]
    raise ConfigError("%#x is in no loadable segment of %s" % (vaddr, path))


def symbol_address(name):
    """Address of a minimal (ELF) symbol, e.g. a `#[no_mangle]` static."""
    try:
        out = gdb.execute("info address %s" % name, to_string=True)
    except gdb.error:
        return None
    m = re.search(r"\bat (?:address )?(0x[0-9a-fA-F]+)", out)
    return int(m.group(1), 16) if m else None


def elf_path():
    pspace = gdb.current_progspace()
    path = pspace.filename if pspace is not None else None
    if not path:
        raise ConfigError(
            "no kernel ELF loaded: start gdb with target/kernel/out/hotmem-<config>.elf "
            "(the line `cargo run -- --gdb` prints) or use `file <elf>`"
        )
    return path


def _field_offsets():
    """(name, byte offset) of the u64 fields: from DWARF, else the v1 layout."""
    try:
        t = symbols.find_type(DWARF_TYPE, "hotmem")
        if t is None:
            raise gdb.error("no DebugInfo type")
        fields = [(f.name, f.bitpos // 8) for f in t.fields() if f.type.sizeof == 8]
        if fields and fields[0][0] == "magic":
            return fields, t.sizeof
    except gdb.error:
        pass
    return [(n, 8 * i) for i, n in enumerate(V1_FIELDS)], 8 * len(V1_FIELDS)


class KernelConfig:
    """HOTMEM_DEBUG_INFO decoded, plus the TTBR1 geometry it implies."""

    def __init__(self, path, address, values):
        self.path = path
        self.address = address
        self.values = values
        for k, v in values.items():
            setattr(self, k, v)
        missing = [f for f in V1_FIELDS if f not in values]
        if missing:
            raise ConfigError("%s lacks fields %s" % (SYMBOL, ", ".join(missing)))
        if self.magic != MAGIC:
            raise ConfigError(
                "%s in %s has magic %#x, not HOTMEMv1: not a hotmem kernel of this version"
                % (SYMBOL, path, self.magic)
            )
        try:
            self.geom = Geometry(self.page_shift, self.va_bits)
        except ValueError as e:
            raise ConfigError("%s: %s" % (SYMBOL, e))
        if (self.geom.levels, self.geom.start_level) != (self.levels, self.start_level):
            raise ConfigError(
                "%s says %d levels starting at L%d, but %s/%d-bit VA has %d levels"
                % (SYMBOL, self.levels, self.start_level, self.geom.granule, self.va_bits, self.geom.levels)
            )

    @property
    def name(self):
        return "%s-%d" % (self.geom.granule, self.va_bits)

    @property
    def page_size(self):
        return 1 << self.page_shift

    @property
    def section_size(self):
        return 1 << self.section_shift

    @property
    def pages_per_section(self):
        return 1 << (self.section_shift - self.page_shift)

    @property
    def max_pfn(self):
        """PFNs the linear map (and so the vmemmap) can describe."""
        return self.linear_size >> self.page_shift

    def struct_page(self, pfn):
        return self.vmemmap_start + self.struct_page_size * pfn

    def regions(self):
        """(name, start, end) of the regions the kernel exports."""
        return [
            ("linear", self.page_offset, self.page_offset + self.linear_size),
            ("vmemmap", self.vmemmap_start, self.vmemmap_start + self.vmemmap_size),
        ]

    def lines(self):
        g = self.geom
        out = [
            "config: elf=%s %s=%#x magic=HOTMEMv1" % (self.path, SYMBOL, self.address),
            "config: granule=%s page_size=%d va_bits=%d levels=%d start_level=%d section_size=%s "
            "struct_page_size=%d max_order=%d"
            % (
                g.granule,
                self.page_size,
                self.va_bits,
                self.levels,
                self.start_level,
                size_str(self.section_size),
                self.struct_page_size,
                self.max_order,
            ),
        ]
        for name, s, e in self.regions():
            out.append("layout: region=%-8s start=%#018x end=%#018x size=%s" % (name, s, e, size_str(e - s)))
        out.append("layout: region=kimage   start=%#018x" % self.kimage_vaddr)
        for lv in g.level_range():
            blk = "block=%s" % size_str(g.level_size(lv)) if g.block_allowed(lv) else "no-block"
            if lv == 3:
                blk = "page=%s" % size_str(g.page_size)
            cont = g.cont_entries(lv)
            out.append(
                "config: level=L%d entries=%d maps=%s %s%s"
                % (
                    lv,
                    g.entries(lv),
                    size_str(g.level_size(lv)),
                    blk,
                    "" if cont is None else " cont=x%d" % cont,
                )
            )
        return out


_cache = {}


def elf_key(path):
    """(path, modification time): what caches of ELF contents are keyed by."""
    try:
        return (path, os.stat(path).st_mtime_ns)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e))


def load():
    """The configuration of the loaded ELF (cached per file and modification time)."""
    path = elf_path()
    key = elf_key(path)
    if key in _cache:
        return _cache[key]
    addr = symbol_address(SYMBOL)
    if addr is None:
        raise ConfigError(
            "%s has no %s symbol: not a hotmem kernel (or one older than the GDB extension)" % (path, SYMBOL)
        )
    fields, size = _field_offsets()
    raw = elf_read(path, addr, size)
    values = {name: struct.unpack_from("<Q", raw, off)[0] for name, off in fields}
    cfg = KernelConfig(path, addr, values)
    _cache.clear()
    _cache[key] = cfg
    return cfg
