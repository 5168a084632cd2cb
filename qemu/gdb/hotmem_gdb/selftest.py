"""`hm-selftest`: the walker, decoder and ptdump against synthetic page tables of all seven
configurations (no QEMU needed). `cargo test -p hotmem-tests --test gdb` runs it.

Each configuration gets tables built in a dict-backed "physical memory": a block at the
largest level that allows one, two adjacent blocks (ptdump must merge them), a run of
contiguous pages, a lone page, an invalid entry (fault level), and the two encodings that
fault although valid (a block where the granule has none, 0b01 at level 3).
"""

import gdb

from .arch import CONT, Geometry, decode
from .commands import HmCommand, command, out
from .pagetable import ptdump, walk

MATRIX = [(12, 39), (12, 48), (14, 36), (14, 47), (14, 48), (16, 42), (16, 48)]
LEAF_ATTRS = 0x0060_0000_0000_0705  # UXN PXN AF SH=inner AttrIndx=1 (kernel NORMAL_RW)


class FakeMem:
    def __init__(self, geom):
        self.g = geom
        self.words = {}
        self.next_table = 0x1000_0000

    def read(self, pa, count):
        return [self.words.get(pa + 8 * i, 0) for i in range(count)]

    def table(self):
        pa = self.next_table
        self.next_table += self.g.page_size
        return pa

    def set(self, table, level, va, raw):
        self.words[table + 8 * self.g.index(va, level)] = raw

    def descend(self, root, va, level):
        """Table at `level` for `va`, creating tables on the way."""
        t = root
        for lv in range(self.g.start_level, level):
            e = t + 8 * self.g.index(va, lv)
            raw = self.words.get(e, 0)
            if raw & 3 != 3:
                nt = self.table()
                self.words[e] = nt | 3 | (1 << 60)
                raw = self.words[e]
            t = raw & self.g.table_addr_mask
        return t

    def leaf(self, root, va, pa, level, cont=False):
        raw = pa | LEAF_ATTRS | (3 if level == 3 else 1) | (CONT if cont else 0)
        self.set(self.descend(root, va, level), level, va, raw)


def check_config(ps, vb):
    g = Geometry(ps, vb)
    m = FakeMem(g)
    root = m.table()
    fails = []
    n = 0

    def expect(cond, what):
        nonlocal n
        n += 1
        if not cond:
            fails.append(what)

    base = g.ttbr1_base
    blk_level = 1 if g.block_allowed(1) else 2
    bsz = g.level_size(blk_level)
    # Two adjacent blocks with equal attributes, then a page table region further on.
    va_b = base + 4 * bsz
    m.leaf(root, va_b, 0x4000_0000 // bsz * bsz + bsz, blk_level)
    m.leaf(root, va_b + bsz, 0x4000_0000 // bsz * bsz + 2 * bsz, blk_level)
    w = walk(g, root, va_b + 0x1234, m.read)
    expect(w.mapped and w.leaf.level == blk_level, "block walk leaf level")
    expect(w.pa == 0x4000_0000 // bsz * bsz + bsz + 0x1234, "block walk pa %s" % (w.pa and hex(w.pa)))
    expect(len(w.steps) == blk_level - g.start_level + 1, "block walk steps")

    cont = g.cont_entries(3)
    va_p = base + 8 * bsz + 5 * g.level_size(2)
    pa_p = 0x8000_0000
    for i in range(cont):
        m.leaf(root, va_p + i * g.page_size, pa_p + i * g.page_size, 3, cont=True)
    lone = va_p + (cont + 1) * g.page_size
    m.leaf(root, lone, 0x9000_0000, 3)
    w = walk(g, root, va_p + g.page_size + 8, m.read)
    expect(w.mapped and w.leaf.level == 3 and w.leaf.contiguous, "cont page walk")
    expect(w.pa == pa_p + g.page_size + 8, "cont page pa")
    expect(len(w.steps) == g.levels, "page walk takes every level")
    # The gap between the run and the lone page faults at level 3.
    w = walk(g, root, va_p + cont * g.page_size, m.read)
    expect(not w.mapped and w.fault_step.level == 3 and w.fault_step.desc.kind == "INVALID", "fault at L3")
    # An untouched region faults at the start level.
    w = walk(g, root, base + g.level_size(g.start_level) * (g.entries(g.start_level) - 1), m.read)
    expect(not w.mapped and w.fault_step.level == g.start_level, "fault at start level")

    # Valid but faulting encodings.
    bad = [lv for lv in g.level_range() if lv < 3 and not g.block_allowed(lv)]
    if bad:
        va_bad = base + 3 * g.level_size(bad[0])
        m.set(m.descend(root, va_bad, bad[0]), bad[0], va_bad, 0x4000_0000 | LEAF_ATTRS | 1)
        w = walk(g, root, va_bad, m.read)
        expect(not w.mapped and w.fault_step.desc.kind == "BADBLOCK", "block at a level without blocks")
    va_res = lone + 2 * g.page_size
    m.set(m.descend(root, va_res, 3), 3, va_res, 0x9100_0000 | LEAF_ATTRS | 1)
    w = walk(g, root, va_res, m.read)
    expect(not w.mapped and w.fault_step.desc.kind == "RESERVED", "0b01 at level 3")

    d = ptdump(g, root, base, 1 << 64, m.read)
    kinds = [(r.desc.level, r.count) for r in d.rows]
    expect(kinds[0] == (blk_level, 2), "ptdump merges the two blocks: %s" % kinds)
    expect((3, cont) in kinds and (3, 1) in kinds, "ptdump rows for the run and the lone page: %s" % kinds)
    expect(d.mapped_bytes == 2 * bsz + (cont + 1) * g.page_size, "ptdump mapped bytes")
    expect(any(f.kind == "RESERVED" for _, f in d.faults), "ptdump lists the reserved entry")
    return n, fails


def check_decode():
    g4, g64 = Geometry(12, 48), Geometry(16, 42)
    cases = [
        (decode(0x0060_0000_4020_0705, 2, g4).text(), "BLOCK oa=0x40200000 size=2 MiB Normal RW XN AF SH=inner"),
        (decode(0x0040_0000_4000_2787, 3, g4).text(), "PAGE oa=0x40002000 size=4 KiB Normal RO X AF SH=inner"),
        (decode(0x0060_0000_0900_0403, 3, g4).text(), "PAGE oa=0x9000000 size=4 KiB Device-nGnRE RW XN AF SH=non"),
        (decode((1 << 60) | 0x4123_4003, 1, g4).text(), "TABLE next=0x41234000 UXNTable"),
        (decode(0x0070_0000_4000_0705 | 2, 3, g64).text(), "PAGE oa=0x40000000 size=64 KiB Normal RW XN AF SH=inner CONT(x32=2 MiB)"),
        (decode(0x4000_0701, 1, g64).kind, "BADBLOCK"),
        (decode(0, 2, g64).kind, "INVALID"),
    ]
    fails = ["decode: got %r, expected %r" % (got, want) for got, want in cases if got != want]
    return len(cases), fails


@command
class SelfTest(HmCommand):
    """Check the walker, decoder and ptdump on synthetic tables of all 7 configurations.

Usage: hm-selftest"""

    name = "hm-selftest"
    usage = "hm-selftest"
    summary = "offline check of walker/decoder/ptdump for all 7 configurations"

    def run(self, argv, arg):
        if argv:
            self.usage_error()
        passed = failed = 0
        results = [("decode", check_decode())]
        for ps, vb in MATRIX:
            results.append(("%s-%d" % (Geometry(ps, vb).granule, vb), check_config(ps, vb)))
        for name, (n, fails) in results:
            if fails:
                failed += 1
                out(["selftest: FAIL config=%s %s" % (name, "; ".join(fails))])
            else:
                passed += 1
                out(["selftest: ok config=%s checks=%d" % (name, n)])
        out(["selftest: summary passed=%d failed=%d" % (passed, failed)])
        if failed:
            raise gdb.GdbError("hm-selftest: %d configuration(s) failed" % failed)
