"""Software page-table walk and ptdump over a physical-memory reader (pure python).

`read(pa, count)` returns `count` little-endian u64 descriptors starting at physical address
`pa`; the gdb side supplies it (QEMU physical-memory mode), the self-test a dict.
"""

from .arch import LEVEL_NAMES, MASK64, decode, size_str


class Step:
    """One descriptor read during a walk."""

    def __init__(self, level, index, table_pa, desc):
        self.level = level
        self.index = index
        self.table_pa = table_pa
        self.entry_pa = table_pa + 8 * index
        self.desc = desc  # arch.Decoded

    def line(self):
        return "walk: L%d (%s) idx=%d table=%#x entry=%#x desc=%#018x %s" % (
            self.level,
            LEVEL_NAMES[self.level],
            self.index,
            self.table_pa,
            self.entry_pa,
            self.desc.raw,
            self.desc.text(),
        )


class WalkResult:
    def __init__(self, va, geom, root):
        self.va = va
        self.geom = geom
        self.root = root
        self.steps = []
        self.pa = None  # translated address when mapped
        self.leaf = None  # the leaf arch.Decoded when mapped

    @property
    def mapped(self):
        return self.leaf is not None

    @property
    def fault_step(self):
        return None if self.mapped or not self.steps else self.steps[-1]

    def result_line(self):
        if self.mapped:
            return "walk: -> pa=%#x level=%d size=%s contiguous=%s" % (
                self.pa,
                self.leaf.level,
                size_str(self.leaf.size),
                "true" if self.leaf.contiguous else "false",
            )
        s = self.fault_step
        why = {
            "INVALID": "invalid descriptor",
            "RESERVED": "reserved descriptor encoding",
            "BADBLOCK": "block descriptor where the granule allows no block",
        }[s.desc.kind]
        return "walk: -> not mapped: translation fault at level %d (L%d %s idx=%d): %s %#x" % (
            s.level,
            s.level,
            LEVEL_NAMES[s.level],
            s.index,
            why,
            s.desc.raw,
        )


def walk(geom, root, va, read, mair=None):
    """Walks `va` from the start-level table at `root` the way the MMU does."""
    va &= MASK64
    r = WalkResult(va, geom, root)
    table = root
    for level in geom.level_range():
        idx = geom.index(va, level)
        (raw,) = read(table + 8 * idx, 1)
        d = decode(raw, level, geom, mair)
        r.steps.append(Step(level, idx, table, d))
        if d.is_fault:
            return r
        if d.kind == "TABLE":
            table = d.next_table
            continue
        r.leaf = d
        r.pa = d.oa | (va & (d.size - 1))
        return r
    raise AssertionError("a level-3 descriptor is always a leaf or a fault")


class Leaf:
    def __init__(self, va, desc):
        self.va = va
        self.desc = desc


class Row:
    """A run of adjacent leaves with equal level and attributes (one ptdump line)."""

    def __init__(self, leaf):
        self.start = leaf.va
        self.end = leaf.va + leaf.desc.size
        self.desc = leaf.desc
        self.count = 1
        self.pa_start = leaf.desc.oa
        self.pa_end = leaf.desc.oa + leaf.desc.size
        self.pa_contiguous = True

    def try_merge(self, leaf):
        if leaf.va != self.end or leaf.desc.attr_key() != self.desc.attr_key():
            return False
        if leaf.desc.oa != self.pa_end:
            self.pa_contiguous = False
        self.end += leaf.desc.size
        self.pa_end = leaf.desc.oa + leaf.desc.size
        self.count += 1
        return True

    def line(self):
        d = self.desc
        pa = "pa=%#x-%#x" % (self.pa_start, self.pa_end) if self.pa_contiguous else "pa=scattered"
        return "%#018x-%#018x %10s  L%d %-5s x%-6d %s  %s" % (
            self.start,
            self.end,
            size_str(self.end - self.start),
            d.level,
            d.kind,
            self.count,
            " ".join(d.attrs),
            pa,
        )


class Dump:
    """Result of `ptdump`: merged rows plus counts."""

    def __init__(self, start, end):
        self.start = start
        self.end = end
        self.rows = []
        self.tables = 0  # table pages below the root visited
        self.leaves = 0
        self.faults = []  # (va, Decoded) of RESERVED / BADBLOCK entries

    @property
    def mapped_bytes(self):
        return sum(r.end - r.start for r in self.rows)


def ptdump(geom, root, start, end, read, mair=None, base=None):
    """Leaves of the tree at `root` overlapping [start, end), merged into rows.

    `base` is the VA of entry 0 of the root table (TTBR1: `geom.ttbr1_base`, TTBR0: 0).
    """
    if base is None:
        base = geom.ttbr1_base
    out = Dump(start, end)

    def visit(table, level, table_va):
        size = geom.level_size(level)
        n = geom.entries(level)
        lo = max(0, (start - table_va) // size)
        hi = min(n, -(-(end - table_va) // size))
        if hi <= lo:
            return
        descs = read(table + 8 * lo, hi - lo)
        for i, raw in enumerate(descs, lo):
            va = table_va + i * size
            d = decode(raw, level, geom, mair)
            if d.kind == "TABLE":
                out.tables += 1
                visit(d.next_table, level + 1, va)
            elif d.is_leaf:
                out.leaves += 1
                leaf = Leaf(va, d)
                if not out.rows or not out.rows[-1].try_merge(leaf):
                    out.rows.append(Row(leaf))
            elif d.kind != "INVALID":
                out.faults.append((va, d))

    visit(root, geom.start_level, base)
    return out
