"""hotmem's GDB extension: `hm-*` commands and pretty-printers that understand the kernel's
page tables, memmap, sections and allocator in every granule and VA size.

Loaded by `qemu/gdb/gdbinit`. Modules:
- `arch`: geometry and descriptor decoding (pure python)
- `pagetable`: software walk and ptdump over a physical reader (pure python)
- `config`: HOTMEM_DEBUG_INFO from the ELF
- `symbols`: statics, types and the page-flag table found by name (no module paths)
- `target`: registers, physical memory through QEMU, Rust statics
- `memmap`: struct page, sections, free lists, the memory-blocks extension point
- `commands`: the gdb commands; `functions`: the `$hm_*()` convenience functions;
  `printers`: pretty-printers; `selftest`: `hm-selftest`
"""

import importlib

_MODULES = (
    "arch",
    "pagetable",
    "config",
    "symbols",
    "target",
    "memmap",
    "printers",
    "commands",
    "functions",
    "selftest",
)


def load(reload=False):
    """Registers every command and printer (re-sourcing the gdbinit reloads the modules)."""
    mods = [importlib.import_module("%s.%s" % (__name__, m)) for m in _MODULES]
    if reload:
        mods = [importlib.reload(m) for m in mods]
    by_name = dict(zip(_MODULES, mods))
    by_name["commands"].register_all()
    by_name["functions"].register_all()
    by_name["printers"].register()
