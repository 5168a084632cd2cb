"""Kernel symbols, types and tables found by a stable name, never by a module path.

Rust module paths change when code moves between files, so nothing here spells one out:
- statics (`SPARSE`, `PAGE_ALLOC`, `HOTPLUG`) are found by their last path component in the
  ELF symbol table (legacy-mangled `_ZN...E` names, demangled here), restricted to a crate;
- types (`Page`, `ZoneId`, `DebugInfo`) are found by crate and last path component with
  `info types`;
- the `struct page` flag names and bits are the kernel's own table, the `#[no_mangle]` static
  `HOTMEM_PAGE_FLAGS` (mm/src/page.rs), read from the ELF file like HOTMEM_DEBUG_INFO, so it
  is there at reset with the MMU off and without a connection.
Every answer is cached per ELF file and modification time.
"""

import re
import struct

import gdb

from . import config

PAGE_FLAGS_SYMBOL = "HOTMEM_PAGE_FLAGS"

_cache = {}


def _cached(key, compute):
    """`compute()` once per (ELF, mtime, key)."""
    path = config.elf_path()
    full = (config.elf_key(path), key)
    if full not in _cache:
        _cache[full] = compute(path)
    return _cache[full]


def _section_headers(data):
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    heads = []
    for i in range(shnum):
        _name, sh_type, _fl, _addr, off, size, link, _info, _al, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize
        )
        heads.append((sh_type, off, size, link, entsize))
    return heads


def demangle(name):
    """`_ZN6hotmem6kernel3mem6memmap6SPARSE17h0123456789abcdefE.llvm.1` ->
    `hotmem::kernel::mem::memmap::SPARSE` (Rust legacy mangling; None for other names)."""
    if not name.startswith("_ZN"):
        return None
    i, parts = 3, []
    while i < len(name) and name[i].isdigit():
        j = i
        while name[j].isdigit():
            j += 1
        n = int(name[i:j])
        parts.append(name[j : j + n])
        i = j + n
    if not parts or name[i : i + 1] != "E":
        return None
    if re.match(r"^h[0-9a-f]{16}$", parts[-1]):
        parts.pop()
    return "::".join(parts)


def elf_objects():
    """{name: (address, size)} of the data objects in the ELF's symbol table, under the raw
    symbol name and, for Rust (legacy-mangled) names, the demangled path too."""
    return _cached(("objects",), _read_objects)


def _read_objects(path):
    with open(path, "rb") as f:
        data = f.read()
    heads = _section_headers(data)
    out = {}
    for sh_type, off, size, link, entsize in heads:
        if sh_type != 2 or not entsize:  # SHT_SYMTAB
            continue
        str_off = heads[link][1]
        for k in range(size // entsize):
            st_name, st_info, _other, _shndx, value, st_size = struct.unpack_from("<IBBHQQ", data, off + k * entsize)
            if st_info & 0xF != 1:  # STT_OBJECT
                continue
            end = data.index(b"\0", str_off + st_name)
            raw = data[str_off + st_name : end].decode(errors="replace")
            out[raw] = (value, st_size)
            rust = demangle(raw)
            if rust is not None:
                out[rust] = (value, st_size)
    return out


def static_path(name, crate="hotmem"):
    """The Rust path of the static `name` of `crate` (e.g. `SPARSE` ->
    `hotmem::kernel::mem::memmap::SPARSE`), or None when the ELF has none; a GdbError when
    several statics share that name."""

    found = sorted(p for p in elf_objects() if p.startswith(crate + "::") and p.endswith("::" + name))
    if len(found) > 1:
        raise gdb.GdbError("several statics are called %s: %s" % (name, ", ".join(found)))
    return found[0] if found else None


def find_type(name, crate):
    """The gdb.Type `crate::...::name` (e.g. `find_type("Page", "mm")` is `mm::page::Page`),
    or None when the debug info has no such type."""

    def compute(_path):
        text = gdb.execute("info types -q ^%s::.*::%s$" % (crate, name), to_string=True)
        # Module names are lower case: `mm::..::PageLookup::Page` (a variant) is not `Page`.
        pat = re.compile(r"^%s::([a-z0-9_]+::)*%s$" % (re.escape(crate), re.escape(name)))
        for line in text.splitlines():
            cand = re.sub(r"^\d*:?\s*", "", line.strip()).rstrip(";")
            if pat.match(cand):
                try:
                    return gdb.lookup_type(cand)
                except gdb.error:
                    continue
        return None

    return _cached(("type", crate, name), compute)


def require_type(name, crate):
    t = find_type(name, crate)
    if t is None:
        raise gdb.GdbError("the ELF's debug info has no type %s::..::%s" % (crate, name))
    return t


def _page_flags(path):
    found = elf_objects().get(PAGE_FLAGS_SYMBOL)
    if found is None:
        raise gdb.GdbError(
            "%s has no %s symbol: a kernel older than the GDB extension" % (path, PAGE_FLAGS_SYMBOL)
        )
    addr, size = found
    entry = gdb.lookup_type("(u32, &str)")
    bit_f, name_f = entry.fields()[0], entry.fields()[1]
    ptr_f, len_f = name_f.type.fields()[0], name_f.type.fields()[1]
    count = size // entry.sizeof
    raw = config.elf_read(path, addr, count * entry.sizeof)
    table = []
    for i in range(count):
        base = i * entry.sizeof
        (bit,) = struct.unpack_from("<I", raw, base + bit_f.bitpos // 8)
        (ptr,) = struct.unpack_from("<Q", raw, base + name_f.bitpos // 8 + ptr_f.bitpos // 8)
        (n,) = struct.unpack_from("<Q", raw, base + name_f.bitpos // 8 + len_f.bitpos // 8)
        table.append((bit, config.elf_read(path, ptr, n).decode()))
    return table


def page_flags():
    """[(bit, name)] of `struct page` flags, in the kernel's print order."""
    return _cached(("page_flags",), _page_flags)


def page_flag(name):
    """The bit of the page flag called `name` (e.g. `buddy`)."""
    for bit, n in page_flags():
        if n == name:
            return bit
    raise gdb.GdbError("the kernel has no page flag called %s" % name)


def _str_at(path, raw, base, field):
    """The Rust `&str` field `field` (a gdb.Field) of a struct whose bytes start at `raw[base]`."""
    ptr_f, len_f = field.type.fields()[0], field.type.fields()[1]
    (ptr,) = struct.unpack_from("<Q", raw, base + field.bitpos // 8 + ptr_f.bitpos // 8)
    (n,) = struct.unpack_from("<Q", raw, base + field.bitpos // 8 + len_f.bitpos // 8)
    return config.elf_read(path, ptr, n).decode()


def _memory_devices(path):
    try:
        start = int(gdb.parse_and_eval("(unsigned long)&__memdevs_start"))
        end = int(gdb.parse_and_eval("(unsigned long)&__memdevs_end"))
    except gdb.error:
        raise gdb.GdbError("%s has no __memdevs_start/__memdevs_end: a kernel without memory device registration" % path)
    dev = require_type("MemoryDevice", "hotmem")
    view = require_type("View", "hotmem")
    fields = {f.name: f for f in dev.fields()}
    vfields = {f.name: f for f in view.fields()}
    raw = config.elf_read(path, start, end - start)
    found = []
    for i in range((end - start) // dev.sizeof):
        base = i * dev.sizeof
        name = _str_at(path, raw, base, fields["name"])
        views_f = fields["views"]
        ptr_f, len_f = views_f.type.fields()[0], views_f.type.fields()[1]
        (vptr,) = struct.unpack_from("<Q", raw, base + views_f.bitpos // 8 + ptr_f.bitpos // 8)
        (vn,) = struct.unpack_from("<Q", raw, base + views_f.bitpos // 8 + len_f.bitpos // 8)
        vraw = config.elf_read(path, vptr, vn * view.sizeof)
        views = [_str_at(path, vraw, k * view.sizeof, vfields["name"]) for k in range(vn)]

        def has(field):
            (word,) = struct.unpack_from("<Q", raw, base + fields[field].bitpos // 8)
            return word != 0

        found.append((name, has("online_filter"), has("check"), views))
    return sorted(found)


def memory_devices():
    """[(name, has an online filter, has a checker rule, [view names])] of the memory device
    types the kernel registered (its `.memdevs` section), in name order."""
    return _cached(("memory_devices",), _memory_devices)
