"""Convenience functions for gdb expressions, like Linux's `$lx_*()`:

- `$hm_page(PFN)`: the struct page of a PFN, a `mm::..::Page` lvalue in the vmemmap
  (`print $hm_page(0x40000).flags`, `set var $hm_page(N).refcount = 1`);
- `$hm_pfn_to_page(PFN)`: its address, a `*mut Page` (Linux `pfn_to_page`);
- `$hm_pfn_to_virt(PFN)`: the linear-map address of the page's memory (Linux `pfn_to_virt`);
- `$hm_virt_to_phys(VA)`: the physical address a kernel VA translates to, by a software walk
  of the live page tables (so also for vmemmap and image addresses);
- `$hm_page_flags(PFN)`: the struct page's flag names (`movable|head`), as `hm-page` prints.

A PFN beyond the vmemmap, or whose struct page is not mapped, is an error (gdb prints it).
So is `$hm_page` of a self-hosted memmap page whose struct page is never written (its state is
its block's: `hm-page` prints it); `$hm_page_flags` answers `vmemmap_self_hosted` for it.
"""

import gdb

from . import config, memmap, pagetable
from .arch import MASK64
from .target import CpuState, GdbError, PhysMem

FUNCTIONS = []


def function(cls):
    """Registers a convenience-function class (class decorator)."""
    FUNCTIONS.append(cls)
    return cls


class HmFunction(gdb.Function):
    """Base: `name` (without `$`); subclasses implement `call(cfg, *ints)`."""

    name = None

    def __init__(self):
        super().__init__(self.name)

    def invoke(self, *args):
        try:
            nums = [int(a) & MASK64 for a in args]
        except (gdb.error, ValueError, TypeError) as e:
            raise GdbError("$%s: arguments must be integers (%s)" % (self.name, e))
        return self.call(config.load(), *nums)


def _self_hosted(pfn):
    """Whether pfn is a self-hosted memmap page answered from its block (never written)."""
    if memmap.read_sections(config.load()) is None:
        return False
    d = memmap.read_deferred()
    return d is not None and d.self_hosted(pfn) is not None


def _mapped_struct_page(cfg, pfn, what):
    """The vmemmap address of `pfn`'s struct page, checked to be mapped."""
    if pfn >= cfg.max_pfn:
        raise GdbError("%s: pfn %#x is beyond the vmemmap (PFNs below %#x)" % (what, pfn, cfg.max_pfn))
    cpu = CpuState()
    va = cfg.struct_page(pfn)
    with PhysMem(cfg, cpu) as mem:
        w = pagetable.walk(cfg.geom, cpu.baddr(cpu.ttbr1), va, mem.u64s, cpu.mair)
    if not w.mapped:
        raise GdbError("%s: the struct page of pfn %#x at %#x is not mapped: %s" % (what, pfn, va, w.result_line()))
    return va


@function
class PfnToPage(HmFunction):
    """$hm_pfn_to_page(PFN): the address of PFN's struct page, as a `*mut Page`."""

    name = "hm_pfn_to_page"

    def call(self, cfg, pfn):
        va = _mapped_struct_page(cfg, pfn, "$" + self.name)
        return gdb.Value(va).cast(memmap.page_type().pointer())


@function
class PageOf(HmFunction):
    """$hm_page(PFN): PFN's struct page (an lvalue in the vmemmap)."""

    name = "hm_page"

    def call(self, cfg, pfn):
        va = _mapped_struct_page(cfg, pfn, "$" + self.name)
        if _self_hosted(pfn):
            raise GdbError(
                "$%s: pfn %#x is a self-hosted memmap page: its struct page is never written (hm-page %#x)"
                % (self.name, pfn, pfn)
            )
        return gdb.Value(va).cast(memmap.page_type().pointer()).dereference()


@function
class PageFlags(HmFunction):
    """$hm_page_flags(PFN): the names of PFN's struct page flags, `a|b` (`none` for 0)."""

    name = "hm_page_flags"

    def call(self, cfg, pfn):
        va = _mapped_struct_page(cfg, pfn, "$" + self.name)
        if _self_hosted(pfn):
            return "vmemmap_self_hosted"
        page = gdb.Value(va).cast(memmap.page_type().pointer()).dereference()
        return memmap.page_flag_names(int(page["flags"]))


@function
class PfnToVirt(HmFunction):
    """$hm_pfn_to_virt(PFN): the linear-map address of PFN (PAGE_OFFSET + PFN * page size)."""

    name = "hm_pfn_to_virt"

    def call(self, cfg, pfn):
        pa = pfn << cfg.page_shift
        if pa >= cfg.linear_size:
            raise GdbError("$%s: pfn %#x is beyond the linear map" % (self.name, pfn))
        return gdb.Value(cfg.page_offset + pa).cast(gdb.lookup_type("u64"))


@function
class VirtToPhys(HmFunction):
    """$hm_virt_to_phys(VA): the physical address VA translates to through TTBR1_EL1."""

    name = "hm_virt_to_phys"

    def call(self, cfg, va):
        cpu = CpuState()
        if va < cfg.geom.ttbr1_base:
            raise GdbError("$%s: %#x is not a kernel (TTBR1) address" % (self.name, va))
        with PhysMem(cfg, cpu) as mem:
            w = pagetable.walk(cfg.geom, cpu.baddr(cpu.ttbr1), va, mem.u64s, cpu.mair)
        if not w.mapped:
            raise GdbError("$%s: %#x is not mapped: %s" % (self.name, va, w.result_line()))
        return gdb.Value(w.pa).cast(gdb.lookup_type("u64"))


def register_all():
    for f in FUNCTIONS:
        f()
