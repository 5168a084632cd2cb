"""Translation geometry and VMSAv8-64 stage-1 descriptors (pure python, no gdb import).

Mirrors `mm/src/geometry.rs` and `arch/src/descriptor.rs`: levels are numbered
architecturally (the last level is 3, a walk with `n` levels starts at `4 - n`), one table
entry at level `l` maps 2^level_shift(l) bytes, every table has 2^(page_shift - 3) entries
except the start level (2^(va_bits - level_shift(start))). Blocks are allowed at L1/L2 with
4K and at L2 with 16K/64K (no FEAT_LPA/LPA2). The contiguous hint is bit 52.
"""

MASK64 = (1 << 64) - 1

# Descriptor bits (Arm ARM D8.3, the names of arch/src/descriptor.rs).
VALID = 1 << 0
TYPE_TABLE_OR_PAGE = 1 << 1
AF = 1 << 10
NG = 1 << 11
CONT = 1 << 52
PXN = 1 << 53
UXN = 1 << 54
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
AP_TABLE_SHIFT = 61
OA_HIGH_BIT = 48  # 48-bit output addresses (no LPA)

LEVEL_NAMES = {0: "pgd", 1: "pud", 2: "pmd", 3: "pte"}

# log2 of the entries in one contiguous run (CONT_PTE / CONT_PMD), as mm::Geometry::cont_shift.
_CONT_SHIFT = {
    (12, 3): 4,
    (12, 2): 4,
    (14, 3): 7,
    (14, 2): 5,
    (16, 3): 5,
    (16, 2): 5,
}


def size_str(n):
    """`1 GiB`, `64 KiB`, `12 B` like platform/src/boot/layout.rs `Size`."""
    for shift, name in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return "%d %s" % (n >> shift, name)
    return "%d B" % n


class Geometry:
    """Page size and VA width of one translation regime (TTBR1 of the kernel, or TTBR0)."""

    def __init__(self, page_shift, va_bits):
        if page_shift not in (12, 14, 16):
            raise ValueError("page_shift %d is not 12, 14 or 16" % page_shift)
        if not 25 <= va_bits <= 48:
            raise ValueError("va_bits %d is outside 25..48" % va_bits)
        self.page_shift = page_shift
        self.va_bits = va_bits

    def __eq__(self, other):
        return (self.page_shift, self.va_bits) == (other.page_shift, other.va_bits)

    def __repr__(self):
        return "Geometry(%s, %d-bit VA, %d levels)" % (self.granule, self.va_bits, self.levels)

    @property
    def granule(self):
        return {12: "4k", 14: "16k", 16: "64k"}[self.page_shift]

    @property
    def page_size(self):
        return 1 << self.page_shift

    @property
    def bits_per_level(self):
        return self.page_shift - 3

    @property
    def levels(self):
        return (self.va_bits - 4) // (self.page_shift - 3)

    @property
    def start_level(self):
        return 4 - self.levels

    def has_level(self, level):
        return self.start_level <= level <= 3

    def level_shift(self, level):
        return (self.page_shift - 3) * (4 - level) + 3

    def level_size(self, level):
        return 1 << self.level_shift(level)

    def entries(self, level):
        if level == self.start_level:
            return 1 << (self.va_bits - self.level_shift(level))
        return 1 << self.bits_per_level

    def index(self, va, level):
        return (va >> self.level_shift(level)) & (self.entries(level) - 1)

    def block_allowed(self, level):
        if not self.has_level(level):
            return False
        return level == 2 or (self.page_shift == 12 and level == 1)

    def cont_entries(self, level):
        s = _CONT_SHIFT.get((self.page_shift, level))
        return None if s is None else 1 << s

    @property
    def ttbr1_base(self):
        """Lowest TTBR1 address: all ones above `va_bits`."""
        return (MASK64 << self.va_bits) & MASK64

    @property
    def table_addr_mask(self):
        """Bits [47:page_shift] of a table descriptor: the next-level table address."""
        return ((1 << OA_HIGH_BIT) - 1) & ~(self.page_size - 1)

    def level_range(self):
        return range(self.start_level, 4)


def mair_attr_name(attr):
    """Name of one MAIR_EL1 attribute byte."""
    known = {
        0x00: "Device-nGnRnE",
        0x04: "Device-nGnRE",
        0x08: "Device-nGRE",
        0x0C: "Device-GRE",
        0x44: "Normal-NC",
        0xFF: "Normal",
        0xBB: "Normal-WT",
    }
    if attr in known:
        return known[attr]
    if attr >> 4 == 0:
        return "Device(%#04x)" % attr
    return "Normal(%#04x)" % attr


# What the kernel programs (arch/src/descriptor.rs: index 0 Device-nGnRE, index 1 Normal WB);
# used when MAIR_EL1 cannot be read from the CPU.
KERNEL_MAIR = 0xFF04


class Decoded:
    """One descriptor decoded at a known level.

    kind: INVALID, TABLE, BLOCK, PAGE, RESERVED (0b01 at level 3: translation fault) or
    BADBLOCK (a block where the granule allows none: translation fault).
    """

    def __init__(self, raw, level, kind):
        self.raw = raw
        self.level = level
        self.kind = kind
        self.next_table = None  # TABLE: next-level table PA
        self.oa = None  # BLOCK/PAGE: output address
        self.size = None  # BLOCK/PAGE: bytes mapped
        self.contiguous = False
        self.attrs = []  # decoded attribute words
        self.notes = []  # oddities (RES0 bits set, ...)

    @property
    def is_leaf(self):
        return self.kind in ("BLOCK", "PAGE")

    @property
    def is_fault(self):
        return self.kind in ("INVALID", "RESERVED", "BADBLOCK")

    def attr_key(self):
        """What must match for two adjacent leaves to be summarised together (ptdump)."""
        return (self.kind, self.level, self.contiguous, tuple(self.attrs))

    def text(self):
        if self.kind == "INVALID":
            return "INVALID"
        if self.kind == "RESERVED":
            return "RESERVED (0b01 at level 3: translation fault)"
        if self.kind == "BADBLOCK":
            return "BLOCK not allowed at level %d for this granule (translation fault)" % self.level
        if self.kind == "TABLE":
            s = "TABLE next=%#x" % self.next_table
        else:
            s = "%s oa=%#x size=%s" % (self.kind, self.oa, size_str(self.size))
        if self.attrs:
            s += " " + " ".join(self.attrs)
        if self.notes:
            s += " [" + "; ".join(self.notes) + "]"
        return s


def decode(raw, level, geom, mair=None):
    """Decodes descriptor `raw` read from a table at `level` of `geom`.

    `mair` is MAIR_EL1 (to name the memory type of AttrIndx); None uses the kernel's value.
    """
    raw &= MASK64
    if mair is None:
        mair = KERNEL_MAIR
    last = level == 3
    if not raw & VALID:
        return Decoded(raw, level, "INVALID")
    is_type1 = bool(raw & TYPE_TABLE_OR_PAGE)
    if last and not is_type1:
        return Decoded(raw, level, "RESERVED")
    if not last and not is_type1 and not geom.block_allowed(level):
        return Decoded(raw, level, "BADBLOCK")
    if not last and is_type1:
        d = Decoded(raw, level, "TABLE")
        d.next_table = raw & geom.table_addr_mask
        if raw & PXN_TABLE:
            d.attrs.append("PXNTable")
        if raw & UXN_TABLE:
            d.attrs.append("UXNTable")
        ap = (raw >> AP_TABLE_SHIFT) & 3
        if ap:
            d.attrs.append("APTable=%s" % bin(ap))
        if raw & (1 << 63):
            d.attrs.append("NSTable")
        return d
    d = Decoded(raw, level, "PAGE" if last else "BLOCK")
    d.size = geom.level_size(level)
    oa_full = raw & ((1 << OA_HIGH_BIT) - 1) & ~(geom.page_size - 1)
    d.oa = oa_full & ~(d.size - 1)
    if oa_full != d.oa:
        d.notes.append("RES0 output-address bits set: %#x" % (oa_full & (d.size - 1)))
    idx = (raw >> 2) & 7
    d.attrs.append(mair_attr_name((mair >> (8 * idx)) & 0xFF))
    ap = (raw >> 6) & 3
    d.attrs.append({0: "RW", 1: "RW+EL0", 2: "RO", 3: "RO+EL0"}[ap])
    d.attrs.append("XN" if raw & PXN else "X")
    if not raw & UXN:
        d.attrs.append("UX")
    if raw & AF:
        d.attrs.append("AF")
    else:
        d.attrs.append("noAF")
    sh = (raw >> 8) & 3
    d.attrs.append("SH=" + {0: "non", 1: "reserved", 2: "outer", 3: "inner"}[sh])
    if raw & NG:
        d.attrs.append("nG")
    if raw & CONT:
        d.contiguous = True
        n = geom.cont_entries(level)
        d.attrs.append("CONT" if n is None else "CONT(x%d=%s)" % (n, size_str(n * d.size)))
    return d


def guess_level_text(raw, geom, mair=None):
    """Decoding of a descriptor whose level is unknown (pretty-printers): like the kernel's
    `Display`, a 0b11 descriptor with AF set is taken for a page, without AF for a table."""
    raw &= MASK64
    if not raw & VALID:
        return "%#018x INVALID" % raw
    if raw & TYPE_TABLE_OR_PAGE:
        level = 3 if raw & AF else 2
    else:
        level = 2 if geom.block_allowed(2) else 1
    return "%#018x %s (level guessed: %d)" % (raw, decode(raw, level, geom, mair).text(), level)
