"""Pretty-printers for kernel types whose default gdb printing says little.

- `arch::descriptor::Descriptor` (a u64 newtype): raw value plus decoding (level guessed
  as the kernel's `Display` does: a 0b11 descriptor with AF is a page).
- `mm::page::Page`: flags by name, zone by name, free-list links as PFNs, and the PFN when
  the value lives in the vmemmap.
- `mm::geometry::Geometry`: granule, VA size, levels.
- `mm::pgtable::PageTable<C>`: its root table's physical address.
"""

import gdb
import gdb.printing

from . import config, memmap
from .arch import Geometry, guess_level_text
from .target import scalar


def _geometry():
    try:
        return config.load().geom
    except gdb.GdbError:
        return Geometry(12, 48)


class DescriptorPrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        raw = scalar(self.val)
        return "Descriptor(%s)" % guess_level_text(raw, _geometry())


class PagePrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        f = int(v["flags"])
        link = lambda x: "-" if int(x) == memmap.NO_PFN else "%#x" % int(x)
        pfn = ""
        try:
            cfg = config.load()
            addr = int(v.address) if v.address is not None else None
            if addr is not None and cfg.vmemmap_start <= addr < cfg.vmemmap_start + cfg.vmemmap_size:
                pfn = "pfn=%#x " % ((addr - cfg.vmemmap_start) // cfg.struct_page_size)
        except gdb.GdbError:
            pass
        return "struct page %sflags=%#x (%s) order=%d zone=%s node=%d refcount=%d block=%d next=%s prev=%s" % (
            pfn,
            f,
            memmap.page_flag_names(f),
            int(v["order"]),
            memmap.zone_names().get(int(v["zone"]), "?"),
            int(v["node"]),
            int(v["refcount"]),
            int(v["block"]),
            link(v["next"]),
            link(v["prev"]),
        )


class GeometryPrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        try:
            g = Geometry(int(self.val["page_shift"]), int(self.val["va_bits"]))
        except ValueError as e:
            return "Geometry(invalid: %s)" % e
        return "Geometry(%s granule, %d-bit VA, %d levels from L%d)" % (
            g.granule,
            g.va_bits,
            g.levels,
            g.start_level,
        )


class PageTablePrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "PageTable(root=%#x)" % int(self.val["root"])


def build():
    pp = gdb.printing.RegexpCollectionPrettyPrinter("hotmem")
    # By crate and type name, wherever the type's module is; module names are lower case, so
    # an enum variant such as `mm::..::PageLookup::Page` is not taken for a struct page.
    pp.add_printer("Descriptor", r"^arch::([a-z0-9_]+::)+Descriptor$", DescriptorPrinter)
    pp.add_printer("Page", r"^mm::([a-z0-9_]+::)+Page$", PagePrinter)
    pp.add_printer("Geometry", r"^mm::([a-z0-9_]+::)+Geometry$", GeometryPrinter)
    pp.add_printer("PageTable", r"^mm::([a-z0-9_]+::)+PageTable<.*>$", PageTablePrinter)
    return pp


def register():
    gdb.printing.register_pretty_printer(None, build(), replace=True)
