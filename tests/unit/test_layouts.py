"""The layout tables in the ``shm_layouts`` docstrings agree with the code, so the two cannot
drift (docs/design.md, "The byte contract").

Each table is parsed from the module docstring and checked:

* ``offset size type field`` tables (records, journal, feed_stats, detector_stats, recording,
  blocks, and any new module with such a table): every row against the dtype field of that
  name (offset, itemsize, kind, shape) or, for segments without a dtype, against the named
  offset constant; every dtype field has a row; the rows of a record tile it exactly;
* ``shm_layouts.ring``'s descriptor table: every byte offset against its ``OFF_*`` constant
  and every word against its ``W_*`` / ``D_*`` / ``R_*`` / ``P_*`` index;
* ``shm_layouts.kinds``: both registries against ``SegmentKind`` / ``RecordType`` and the
  layout or dtype each row names;
* ``shm_layouts.words``: every word and bit range against the dtype offsets, and the
  accessors against numpy's own packing.

A row is a table line whose first two columns are an offset and a size (integers, ``-``
for a variable part, or expressions of the module's constants such as ``8*HIST_BUCKETS``);
lines that do not parse that way continue the previous row's meaning.

The file is one unit (past 600 lines): each table shape's parser sits beside the checks
that use it, and the last tests feed the parsers drifted tables to show they fail.
"""
import dataclasses
import importlib
import os
import pkgutil
import re

import numpy as np
import pytest

import shm_layouts
from shm_layouts import kinds, records, ring, words


@dataclasses.dataclass
class Table:
    """How the rows of one docstring section map to code."""
    title: str                  # the section heading starts with this
    dtypes: tuple = ()          # the dtypes whose fields the rows are (the first: the record)
    prefix: str = ""            # rows that are no dtype field: the constant PREFIX + FIELD
    alias: dict = dataclasses.field(default_factory=dict)   # field -> constant, if named apart
    generic: bool = False       # a module not in SPECS: constants are found by suffix


SPECS = {
    "records": [Table("MarketUpdate", ("MARKET_UPDATE", "MARKET_UPDATE_FUNDING",
                                       "MARKET_UPDATE_STATUS", "MARKET_UPDATE_LEVEL")),
                Table("Opportunity", ("OPPORTUNITY",))],
    "journal": [Table("JournalEntry", ("JOURNAL",))],
    "feed_stats": [Table("FeedStats", ("FEED_STATS",))],
    "detector_stats": [Table("DetectorStats", ("DETECTOR_STATS",))],
    "recording": [Table("File layout", ("RECORDING_HEADER",), alias={"names": "NAMES_OFFSET"})],
    "blocks": [Table("State blob", prefix="BLOB_"),
               Table("Latency histogram", prefix="HIST_",
                     alias={"sum_ns": "HIST_SUM", "max_ns": "HIST_MAX", "min_ns": "HIST_MIN",
                            "buckets": "HIST_DATA"}),
               Table("Strategy control", prefix="CTL_", alias={"kill_switch": "CTL_KILL"})],
}
OWN_PARSER = {"ring", "kinds", "words", "books"}   # tables of another shape, checked below

OFFSET_HEADER = re.compile(r"^\s*offset\s+size\s+type\s+field\b")
TYPE = re.compile(r"^(?:[uif]\d+|S\d+)(?:\[[\w*]*\])?$")
TITLE_BYTES = re.compile(r"--\s*(\d+)\s*bytes")


def layout_modules():
    return sorted(m.name for m in pkgutil.iter_modules(shm_layouts.__path__))


def sections(doc):
    """[(title, lines)] of a docstring: a title is a line underlined with ``===``; the text
    before the first title is the section ""."""
    lines = doc.splitlines()
    out, title, body = [], "", []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and re.fullmatch(r"\s*={3,}\s*", lines[i + 1]) and lines[i].strip():
            out.append((title, body))
            title, body = lines[i].strip(), []
            i += 2
            continue
        body.append(lines[i])
        i += 1
    out.append((title, body))
    return [(t, b) for t, b in out if t or any(ln.strip() for ln in b)]


def _constants(mod):
    return {k: v for k, v in vars(mod).items()
            if k.isupper() and isinstance(v, int) and not isinstance(v, bool)}


def _value(token, consts):
    """An integer column: a literal or an expression of the module's constants; None if the
    token is not one (the line is then no row)."""
    if not re.fullmatch(r"[\w*+\-() ]+", token) or token == "-":
        return None
    try:
        v = eval(token, {"__builtins__": {}}, consts)   # noqa: S307 (docstring arithmetic)
    except Exception:
        return None
    return v if isinstance(v, int) else None


@dataclasses.dataclass
class Row:
    line: str
    offset: int
    size: int | None            # None: variable (``-``)
    type: str | None
    field: str | None           # None: reserved


def offset_rows(body, consts):
    """The rows of every ``offset size type field`` table in a section's lines."""
    rows, in_table = [], False
    for ln in body:
        if OFFSET_HEADER.match(ln):
            in_table = True
            continue
        if not in_table or not ln.strip() or set(ln.strip()) <= set("- "):
            continue
        tok = ln.split()
        if len(tok) < 3:
            continue
        off = _value(tok[0], consts)
        size = None if tok[1] == "-" else _value(tok[1], consts)
        if off is None or (size is None and tok[1] != "-"):
            continue
        rest = tok[2:]
        typ = rest.pop(0) if TYPE.match(rest[0]) else None
        field = None if not rest or rest[0].startswith("(") else rest[0]
        rows.append(Row(ln.strip(), off, size, typ, field))
    return rows


def _type_dtype(typ, size, consts):
    """(base dtype, shape) a table type names; ``i8[]`` takes its count from the size."""
    m = re.fullmatch(r"(\w+?\d+)(?:\[([\w*]*)\])?", typ)
    base = np.dtype(m.group(1)).newbyteorder("<") if m.group(1)[0] != "S" else np.dtype(m.group(1))
    if m.group(2) is None:
        return base, ()
    n = _value(m.group(2), consts) if m.group(2) else (size // base.itemsize if size else None)
    return base, (n,)


def _specs_for(name, mod, titles):
    if name in SPECS:
        return SPECS[name]
    dts = tuple(k for k, v in vars(mod).items() if isinstance(v, np.dtype) and v.names)
    return [Table(t, dts, generic=True) for t in titles]


def check_offset_tables(name):
    """Every break between ``shm_layouts.<name>``'s offset tables and its code, as text."""
    mod = importlib.import_module(f"shm_layouts.{name}")
    consts = _constants(mod)
    secs = [(t, offset_rows(b, consts)) for t, b in sections(mod.__doc__ or "")]
    secs = [(t, rows) for t, rows in secs if rows]
    errors = []
    specs = _specs_for(name, mod, [t for t, _ in secs])
    for spec in specs:
        found = [(t, rows) for t, rows in secs if t.startswith(spec.title)]
        if len(found) != 1:
            errors.append(f"{name}: expected one table under a heading {spec.title!r}, "
                          f"found {len(found)}")
            continue
        errors += _check_section(name, mod, consts, spec, *found[0])
    for t, _ in secs:
        if not any(t.startswith(s.title) for s in specs):
            errors.append(f"{name}: the table under {t!r} is not in SPECS of test_layouts.py")
    return errors


def _check_section(name, mod, consts, spec, title, rows):
    where = f"shm_layouts/{name}.py, {title.split(' -- ')[0]!r}"
    errors = []
    dts = [getattr(mod, d) for d in spec.dtypes]
    rec = dts[0] if dts else None
    m = TITLE_BYTES.search(title)
    if m and rec is not None and int(m.group(1)) != rec.itemsize:
        errors.append(f"{where}: the title says {m.group(1)} bytes, {spec.dtypes[0]} has "
                      f"{rec.itemsize}")
    record_rows = []
    for r in rows:
        err = None
        if r.type and r.size is not None:
            base, shape = _type_dtype(r.type, r.size, consts)
            n = shape[0] if shape else 1
            if n is None or base.itemsize * n != r.size:
                err = f"type {r.type} is not {r.size} bytes"
        if err is None and r.field is None:                  # reserved bytes
            if r.size is None:
                err = "reserved bytes need a size"
            elif rec is not None:
                hit = [f for f, (dt, off, *_) in rec.fields.items()
                       if off < r.offset + r.size and r.offset < off + dt.itemsize]
                if hit or r.offset + r.size > rec.itemsize:
                    err = f"reserved bytes overlap {hit or 'the end of the record'}"
                record_rows.append(r)
        elif err is None and any(r.field in (d.names or ()) for d in dts):
            err = _check_field(r, dts, consts)
            if err is None and r.field in rec.names and rec.fields[r.field][1] == r.offset:
                record_rows.append(r)
        elif err is None:
            const = spec.alias.get(r.field, spec.prefix + r.field.upper())
            if spec.generic:                                # a new module: find by suffix
                cands = [k for k, v in consts.items()
                         if (k == r.field.upper() or k.endswith("_" + r.field.upper()))
                         and v == r.offset]
                const = cands[0] if cands else f"*_{r.field.upper()}"
            if const not in consts:
                err = f"no dtype field {r.field!r} and no constant {const}"
            elif consts[const] != r.offset:
                err = f"{const} = {consts[const]}, the table says {r.offset}"
            elif rec is not None and r.size is None and r.offset < rec.itemsize:
                err = f"a variable part inside the {rec.itemsize}-byte record"
        if err:
            errors.append(f"{where}: row `{r.line}`: {err}")
    for dname, d in zip(spec.dtypes, dts):
        documented = {(r.field, r.offset) for r in rows}
        for f, (dt, off, *_) in d.fields.items():
            if (f, off) not in documented:
                errors.append(f"{where}: {dname}.{f} (offset {off}) has no row")
    if rec is not None:
        end = 0
        for r in sorted(record_rows, key=lambda r: r.offset):
            if r.offset > end:
                errors.append(f"{where}: bytes {end}..{r.offset - 1} of {spec.dtypes[0]} are "
                              "in no row")
            elif r.offset < end:
                errors.append(f"{where}: row `{r.line}` overlaps the row before it")
            end = r.offset + r.size
        if end != rec.itemsize:
            errors.append(f"{where}: the rows end at byte {end}, the record at {rec.itemsize}")
    else:
        fixed = sorted((r for r in rows if r.size is not None), key=lambda r: r.offset)
        for a, b in zip(fixed, fixed[1:]):
            if a.offset + a.size > b.offset:
                errors.append(f"{where}: row `{a.line}` overlaps `{b.line}`")
    return errors


def _check_field(r, dts, consts):
    """Why row ``r`` does not describe its field in one of ``dts`` (None: it does)."""
    d = next((d for d in dts if r.field in d.names and d.fields[r.field][1] == r.offset), None)
    if d is None:
        offs = sorted({d.fields[r.field][1] for d in dts if r.field in d.names})
        return f"{r.field} is at offset {offs[0] if len(offs) == 1 else offs}, not {r.offset}"
    dt = d.fields[r.field][0]
    if r.size is None or dt.itemsize != r.size:
        return f"{r.field} is {dt.itemsize} bytes, the table says {r.size}"
    if r.type is None:
        return f"{r.field} has no type in the table (dtype {dt})"
    base, shape = _type_dtype(r.type, r.size, consts)
    if dt.base.kind != base.kind or dt.base.itemsize != base.itemsize or dt.shape != shape:
        return f"{r.field} is {dt.base.str}{list(dt.shape) or ''}, the table says {r.type}"
    return None


@pytest.mark.parametrize("name", [m for m in layout_modules() if m not in OWN_PARSER])
def test_offset_tables_match_the_code(name):
    errors = check_offset_tables(name)
    assert not errors, "\n".join(errors)


def test_every_layout_module_is_checked():
    mods = set(layout_modules())
    assert set(SPECS) | OWN_PARSER <= mods, sorted(set(SPECS) | OWN_PARSER - mods)
    for name in sorted(mods - set(SPECS) - OWN_PARSER):      # checked by the generic rules
        doc = importlib.import_module(f"shm_layouts.{name}").__doc__ or ""
        assert any(OFFSET_HEADER.match(ln) for ln in doc.splitlines()), (
            f"shm_layouts/{name}.py: a layout module documents its bytes in an "
            "`offset size type field meaning` table (or add it to SPECS / OWN_PARSER)")


# -- shm_layouts.ring -------------------------------------------------------------------

# section -> (its byte offset: a constant or None, how row offsets count, field -> constant)
# "byte": the row offset is the constant; "word": the row (section offset + row) // 8 is the
# constant; "slot": the row offset // 8 is the constant (a word inside one block or slot).
RING = {
    "HEADER": (0, "byte", {
        "magic": "OFF_MAGIC", "layout_version": "OFF_VERSION", "ring_kind": "OFF_KIND",
        "record_size": "OFF_RECORD_SIZE", "capacity": "OFF_CAPACITY",
        "creator_pid": "OFF_CREATOR_PID", "full_policy": "OFF_POLICY",
        "created_ns": "OFF_CREATED_NS", "creator_start_ticks": "OFF_CREATOR_START",
        "max_readers": "OFF_MAX_READERS", "record_type": "OFF_RECORD_TYPE",
        "seq_offset": "OFF_SEQ_OFFSET", "data_offset": "OFF_DATA_OFFSET", "name": "OFF_NAME"}),
    "PRODUCER_CURSOR": ("OFF_HEAD", "word", {"head": "W_HEAD", "claim": "W_CLAIM"}),
    "CONSUMER_CURSOR": ("OFF_TAIL", "word", {"tail": "W_TAIL"}),
    "PRODUCER_STATS": ("OFF_PSTATS", "word", {
        "dropped": "W_DROPPED", "full_events": "W_FULL_EVENTS", "batches": "W_BATCHES",
        "abandoned": "W_ABANDONED", "orphaned": "W_ORPHANED"}),
    "CONSUMER_DOORBELL": ("OFF_CDOOR", "slot", {
        "sleepers": "D_SLEEPERS", "sleeps": "D_SLEEPS", "wakes": "D_WAKES", "armed": "D_ARMED",
        "posts": "D_POSTS", "sleeper": "D_SLEEPER", "sleepers_reclaimed": "D_RECLAIMED",
        "bell": "D_BELL", "bell_name": "D_BELL_NAME_OFF"}),
    "PRODUCER_DOORBELL": ("OFF_PDOOR", "slot", {}),
    "READER_SLOTS": ("OFF_READERS", "slot", {
        "position": "R_POSITION", "owner_pid": "R_OWNER_PID", "received": "R_RECEIVED",
        "lost": "R_LOST", "laps": "R_LAPS", "armed": "R_ARMED", "sleeps": "R_SLEEPS",
        "wakes": "R_WAKES", "reader": "READER_NAME_OFF", "claim_pos": "R_CLAIM_POS",
        "claim_n": "R_CLAIM_N", "owner_start": "R_OWNER_START", "sleeper": "R_SLEEPER"}),
    "PRODUCERS": (None, "slot", {
        "pid": "P_PID", "start": "P_START", "claim_pos": "P_CLAIM_POS", "claim_n": "P_CLAIM_N",
        "sleeper": "P_SLEEPER"}),
    "SEQ": (None, "slot", {}),
    "DATA": (None, "slot", {}),
}
RING_BYTE_FIELDS = {"READER_NAME_OFF": "READER_NAME_LEN", "OFF_NAME": "NAME_LEN",
                    "D_BELL_NAME_OFF": "BELL_NAME_LEN"}
RING_SECTION = re.compile(r"^ {4}([A-Z_]+) \(([^)]*)\)?(.*)$")
RING_ROW = re.compile(r"^ {4,}(\+?\d+)\s+(\d+)\s+([A-Za-z_]\w*)")


def ring_table():
    """{section: (offset in the title or None, [(row offset, size, field)])}."""
    out, cur = {}, None
    for ln in ring.__doc__.splitlines():
        m = RING_SECTION.match(ln)
        if m:
            cur = m.group(1)
            first = re.match(r"\s*(\d+)", m.group(2))
            out[cur] = (int(first.group(1)) if first else None, [])
            inline = re.match(r"\s+(\d+)\s+([A-Za-z_]\w*)", m.group(3) or "")
            if inline:                      # "PRODUCER_CURSOR (128)   8  head: ..."
                out[cur][1].append((0, int(inline.group(1)), inline.group(2)))
            continue
        m = RING_ROW.match(ln)
        if m and cur:
            out[cur][1].append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def test_ring_descriptor_table_matches_the_constants():
    table = ring_table()
    assert list(table) == list(RING), f"sections {list(table)}, expected {list(RING)}"
    c = vars(ring)
    errors = []
    for sec, (const, mode, fields) in RING.items():
        title_off, rows = table[sec]
        base = c[const] if isinstance(const, str) else const
        if base is not None and title_off != base:
            errors.append(f"{sec}: the table says ({title_off}), {const} = {base}")
        seen = set()
        for off, size, field in rows:
            name = fields.get(field)
            if name is None:
                errors.append(f"{sec}: row {field} at {off} has no constant in test_layouts.RING")
                continue
            seen.add(field)
            if name in RING_BYTE_FIELDS or mode == "byte":
                want = c[name]
                if name in RING_BYTE_FIELDS and size != c[RING_BYTE_FIELDS[name]]:
                    errors.append(f"{sec}: {field} is {size} bytes, "
                                  f"{RING_BYTE_FIELDS[name]} = {c[RING_BYTE_FIELDS[name]]}")
            elif mode == "word":
                want = (c[name] * 8) - base
            else:
                want = c[name] * 8
            if mode != "byte" and name not in RING_BYTE_FIELDS and size != 8:
                errors.append(f"{sec}: word {field} is {size} bytes in the table")
            if off != want:
                errors.append(f"{sec}: {field} at +{off} in the table, {name} puts it at +{want}")
        errors += [f"{sec}: {f} ({n}) has no row" for f, n in fields.items() if f not in seen]
    header = sorted(table["HEADER"][1])
    end = 0
    for off, size, field in header:
        if off != end:
            errors.append(f"HEADER: {field} at {off}, the row before ends at {end}")
        end = off + size
    if end != ring.BLOCK:
        errors.append(f"HEADER ends at {end}, not at BLOCK = {ring.BLOCK}")
    for sec, size in (("READER_SLOTS", ring.READER_SLOT_SIZE),
                      ("PRODUCERS", ring.PRODUCER_SLOT_SIZE)):
        last = max(off + n for off, n, _ in table[sec][1])
        if last > size:
            errors.append(f"{sec}: the rows end at +{last}, past the {size}-byte slot")
    assert not errors, "\n".join(errors)


def test_ring_text_names_the_slot_sizes():
    doc = ring.__doc__
    assert f"READER_SLOT_SIZE ({ring.READER_SLOT_SIZE})" in doc
    assert f"PRODUCER_SLOTS x {ring.PRODUCER_SLOT_SIZE} bytes" in doc
    # kernels read the u32 pairs as one word: record_size | capacity << 32, ...
    for lo, hi, word in (("OFF_RECORD_SIZE", "OFF_CAPACITY", "W_GEOM"),
                         ("OFF_CREATOR_PID", "OFF_POLICY", "W_POLICY"),
                         ("OFF_SEQ_OFFSET", "OFF_DATA_OFFSET", "W_OFFSETS")):
        c = vars(ring)
        assert c[lo] % 8 == 0 and c[hi] == c[lo] + 4 and c[word] == c[lo] // 8, (lo, hi, word)


# -- shm_layouts.kinds -----------------------------------------------------------------

def kinds_tables():
    """{"kind": [(id, name, layout)], "record_type": [(id, name, dtype)]}."""
    out, cur = {}, None
    for ln in kinds.__doc__.splitlines():
        m = re.match(r"^\s+(kind|record_type)\s+name\s+(layout|dtype)\s*$", ln)
        if m:
            cur = m.group(1)
            out[cur] = []
            continue
        m = re.match(r"^\s+(\d+)\s+([A-Z_][A-Z0-9_]*)\s+(.*?)\s*$", ln)
        if m and cur:
            out[cur].append((int(m.group(1)), m.group(2), m.group(3)))
        elif cur and not ln.strip():
            cur = None if out[cur] else cur
    return out


def test_kinds_tables_match_the_enums():
    t = kinds_tables()
    assert {(n, i) for i, n, _ in t["kind"]} == {(k.name, int(k)) for k in kinds.SegmentKind}
    assert ({(n, i) for i, n, _ in t["record_type"]}
            == {(k.name, int(k)) for k in kinds.RecordType})
    for i, name, layout in t["kind"]:
        mod = layout.split()[0]
        if mod.startswith("shm_layouts."):
            importlib.import_module(mod)           # the layout the row names exists
        else:
            assert layout.startswith("header only"), (name, layout)
    for i, name, dtype in t["record_type"]:
        if dtype.startswith("none"):
            assert records.RECORD_TYPES[i] is None, name
            continue
        if dtype.startswith("retired"):
            assert i in records.RETIRED_RECORD_TYPES and i not in records.RECORD_TYPES, name
            continue
        mod, attr = dtype.split()[0].rsplit(".", 1)
        assert records.RECORD_TYPES[i] is getattr(importlib.import_module(mod), attr), name
    ring_kinds = {int(k) for k in ring.RingKind}
    assert ring_kinds == {i for i, _, lay in t["kind"] if lay == "shm_layouts.ring"}


def test_kinds_text_names_the_header_words():
    for field, const in (("kind", "OFF_KIND"), ("record_type", "OFF_RECORD_TYPE")):
        m = re.search(rf"``{field}`` \(u4 at \+(\d+)", kinds.__doc__)
        assert m and int(m.group(1)) == getattr(ring, const), field


# -- shm_layouts.words ------------------------------------------------------------------

KIND_DTYPE = {"all": records.MARKET_UPDATE, "QUOTE": records.MARKET_UPDATE,
              "FUNDING": records.MARKET_UPDATE_FUNDING, "STATUS": records.MARKET_UPDATE_STATUS,
              "LEVEL": records.MARKET_UPDATE_LEVEL}


def words_tables():
    """{"MarketUpdate": (words in the title, rows), "Opportunity": ...}; a row is
    (word text, bits, field text, kinds text), cut at the header's column starts."""
    out, title, cols = {}, None, None
    for ln in words.__doc__.splitlines():
        m = re.match(r"^(MarketUpdate|Opportunity), (\d+) words", ln)
        if m:
            title = m.group(1)
            out[title] = (int(m.group(2)), [])
            continue
        if re.match(r"^\s+word\s+bits\s+field", ln):
            cols = [ln.index("bits"), ln.index("field")] + (
                [ln.index("kinds")] if "kinds" in ln else [])
            continue
        if title and cols and re.match(r"^\s+\d", ln):
            cuts = [0] + cols + [None]
            parts = [ln[a:b].strip() for a, b in zip(cuts, cuts[1:])]
            out[title][1].append(tuple(parts) + ("all",) * (4 - len(parts)))
    return out


def _word_errors(dtypes_by_kind, rows, n_words):
    errors, covered = [], set()
    for word, bits, field, kind_text in rows:
        if "-" in word:                                       # reserved words
            lo, hi = map(int, word.split("-"))
            d = dtypes_by_kind["all"]
            end = max(off + dt.itemsize for dt, off, *_ in d.fields.values())
            if field != "reserved, zero" or lo * 8 < end or hi != n_words - 1:
                errors.append(f"reserved words {word}: the fields end at byte {end}")
            continue
        fields = [f.split()[0] for f in field.split("|")]
        kinds_ = [k.strip() for k in kind_text.split("|")]
        bitss = bits.split("/")
        for i, f in enumerate(fields):
            k = kinds_[i] if len(kinds_) > 1 else kinds_[0]
            b = bitss[i] if len(bitss) > 1 else bitss[0]
            d = dtypes_by_kind[k]
            if f not in d.names:
                errors.append(f"word {word}: no field {f} in the {k} view")
                continue
            dt, off = d.fields[f][:2]
            covered.add((k, f))
            if k == "all":                                    # the same bytes in every view
                for k2, d2 in dtypes_by_kind.items():
                    if f in d2.names and d2.fields[f][1] != off:
                        errors.append(f"{f}: offset {off}, but {d2.fields[f][1]} in {k2}")
            if off // 8 != int(word):
                errors.append(f"{f}: word {word} in the table, offset {off} is word {off // 8}")
            m = re.fullmatch(r"(\d+)\.\.(\d+)", b)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if (off % 8) * 8 != lo or dt.itemsize * 8 != hi - lo + 1:
                    errors.append(f"{f}: bits {b} in the table, the dtype puts it at bits "
                                  f"{(off % 8) * 8}..{(off % 8) * 8 + dt.itemsize * 8 - 1}")
            elif off % 8 or dt.itemsize != 8 or dt.kind != b[0]:
                errors.append(f"{f}: {b} in the table, the dtype has {dt.str} at {off}")
    for k, d in dtypes_by_kind.items():
        same = {k2 for k2, d2 in dtypes_by_kind.items() if d2 is d} | {"all"}
        for f in d.names:
            if not any((k2, f) in covered for k2 in same):
                errors.append(f"{k}: field {f} has no row")
    return errors


def test_words_tables_match_the_dtypes():
    t = words_tables()
    assert set(t) == {"MarketUpdate", "Opportunity"}
    n, rows = t["MarketUpdate"]
    assert n == words.MU_WORDS == records.MARKET_UPDATE.itemsize // 8
    errors = _word_errors(KIND_DTYPE, rows, n)
    n, rows = t["Opportunity"]
    assert n == words.OP_WORDS == records.OPPORTUNITY.itemsize // 8
    errors += _word_errors({"all": records.OPPORTUNITY}, rows, n)
    end = max(off + dt.itemsize for dt, off, *_ in records.OPPORTUNITY.fields.values())
    assert words.OP_RESERVED == (end + 7) // 8        # the first word no field touches
    assert not errors, "\n".join(errors)


def test_word_accessors_agree_with_numpy():
    mu = np.zeros(1, records.MARKET_UPDATE)
    mu[0] = (0xFEDCBA98, 0xBEEF, 3, 0xA5, 1.5, 2.5, 3.0, 4.0, 5, 6, 7)
    w = mu.view(np.uint64)
    w0 = int(w[words.MU_HEAD])
    assert words.mu_head(0xFEDCBA98, 0xBEEF, 3, 0xA5) == w0
    assert (words.mu_instrument(w0), words.mu_venue(w0), words.mu_kind(w0),
            words.mu_flags(w0)) == (0xFEDCBA98, 0xBEEF, 3, 0xA5)
    assert mu.view(np.float64)[words.MU_ASK] == 2.5
    assert mu.view(np.int64)[words.MU_RECV_TS] == 6 and int(w[words.MU_SEQ]) == 7

    st = np.zeros(1, records.MARKET_UPDATE_STATUS)
    st[0]["status"], st[0]["status_reason"] = 3, 0x01020304
    w1 = int(st.view(np.uint64)[words.MU_STATUS])
    assert (words.mu_status(w1), words.mu_status_reason(w1)) == (3, 0x01020304)
    fu = np.zeros(1, records.MARKET_UPDATE_FUNDING)
    fu[0]["funding_interval_s"], fu[0]["mark_price"] = 28800, 101.25
    w3 = int(fu.view(np.uint64)[words.MU_FUNDING_INTERVAL])
    assert words.mu_funding_interval(w3) == 28800
    mark_bits = (w3 >> words.MU_MARK_PRICE_SHIFT) & 0xFFFFFFFF
    assert np.uint32(mark_bits).view(np.float32) == np.float32(101.25)

    op = np.zeros(1, records.OPPORTUNITY)
    op[0]["instrument_id"], op[0]["buy_venue"], op[0]["sell_venue"] = 77, 5, 0xFFFF
    op[0]["state"], op[0]["close_reason"], op[0]["flags"], op[0]["confidence"] = 3, 4, 2, 87.5
    ow = op.view(np.uint64)
    assert words.op_head(77, 5, 0xFFFF) == int(ow[words.OP_HEAD])
    conf_bits = int(np.float32(87.5).view(np.uint32))
    assert words.op_state_word(3, 4, 2, conf_bits) == int(ow[words.OP_STATE_WORD])


# -- the parsers can fail -------------------------------------------------------------------

def test_offset_parser_reads_rows_and_skips_continuations():
    body = """
    offset size type     field        meaning
    ------ ---- -------  -----------  -------------------------
         0    8 u8       gen          seqlock
         8    4 u4       count        0 while recording (or after a crash):
                                      1 when done
        12    4          (reserved, zero)
        16  8*N i8[]     buckets      per bucket
        48    -          data         the rest
    """.splitlines()
    rows = offset_rows(body, {"N": 4})
    assert [(r.offset, r.size, r.type, r.field) for r in rows] == [
        (0, 8, "u8", "gen"), (8, 4, "u4", "count"), (12, 4, None, None),
        (16, 32, "i8[]", "buckets"), (48, None, None, "data")]
    assert _type_dtype("i8[]", 32, {}) == (np.dtype("<i8"), (4,))
    assert _type_dtype("u8[N]", 0, {"N": 24}) == (np.dtype("<u8"), (24,))


def test_section_checker_reports_drift():
    rec = np.dtype({"names": ["a", "b"], "formats": ["<u4", "<f8"], "offsets": [0, 8],
                    "itemsize": 24})

    class Mod:
        REC = rec
        X_DATA = 32
    body = """
    offset size type  field
    ------ ---- ----  -----
         0    4 u4    a
         4    4       (reserved, zero)
         8    4 f8    b
        20    4       (reserved, zero)
        30    -       data
    """.splitlines()
    errs = _check_section("m", Mod, {"X_DATA": 32}, Table("T -- 16 bytes", ("REC",), "X_"),
                          "T -- 16 bytes", offset_rows(body, {}))
    text = "\n".join(errs)
    assert "the title says 16 bytes, REC has 24" in text
    assert "type f8 is not 4 bytes" in text
    assert "X_DATA = 32, the table says 30" in text
    assert "bytes 8..19 of REC are in no row" in text
    assert "REC.b (offset 8) has no row" not in text     # the row exists, its size is wrong


def test_a_module_without_spec_is_checked_by_suffix():
    body = """
    offset size type  field
    ------ ---- ----  -----
       128    8 i8    count
       136    8 i8    other
    """.splitlines()
    consts = {"Y_COUNT": 128, "Y_OTHER": 144}
    errs = _check_section("new", object, consts, Table("T", generic=True), "T",
                          offset_rows(body, consts))
    assert errs == ["shm_layouts/new.py, 'T': row `136    8 i8    other`: no dtype field "
                    "'other' and no constant *_OTHER"], errs


@pytest.mark.parametrize("name,old,new,expect", [
    ("records", "    16    8 f8    ask ", "    16    8 i8    ask ", "the table says i8"),
    ("records", "   156   36 ", "   156   28 ", "the rows end at byte 184"),
    ("journal", "    22    2 u2    (reserved", "    22    2 u2    venue_id  (reserved",
     "venue_id is at offset 20, not 22"),
    ("feed_stats", "   408   32 u8[4] ", "   408   32 i8[4] ", "the table says i8[4]"),
    ("recording", "    40    8 i8    first_recv_ns", "    40    8 i8    first_recv",
     "RECORDING_HEADER.first_recv_ns (offset 40) has no row"),
    ("blocks", "   144    8 i8    reset_requests", "   148    8 i8    reset_requests",
     "CTL_RESET_REQUESTS = 144, the table says 148"),
])
def test_real_tables_with_a_drift_fail(monkeypatch, name, old, new, expect):
    mod = importlib.import_module(f"shm_layouts.{name}")
    assert old in mod.__doc__
    monkeypatch.setattr(mod, "__doc__", mod.__doc__.replace(old, new, 1))
    assert any(expect in e for e in check_offset_tables(name)), check_offset_tables(name)


def _drift(monkeypatch, mod, old, new):
    assert old in mod.__doc__
    monkeypatch.setattr(mod, "__doc__", mod.__doc__.replace(old, new, 1))


def test_ring_words_tables_with_a_drift_fail(monkeypatch):
    _drift(monkeypatch, ring, "+24                    8  abandoned",
           "+32                    8  abandoned")
    with pytest.raises(AssertionError, match="abandoned at \\+32 in the table"):
        test_ring_descriptor_table_matches_the_constants()
    _drift(monkeypatch, words, "1  32..63  status_reason", "1  40..63  status_reason")
    with pytest.raises(AssertionError, match="status_reason: bits 40..63"):
        test_words_tables_match_the_dtypes()


def test_books_word_table_matches_the_constants():
    """shm_layouts/books.py: each numbered row of the block table is the B_* word of that
    field, and the level arrays start at B_LEVELS."""
    from shm_layouts import books as BK
    rows = [ln.split() for ln in BK.__doc__.splitlines()
            if re.match(r"^\s*\d+\s+[uif]8\s+\w+", ln)]
    assert len(rows) == 9
    for word, _, field, *_ in rows:
        assert getattr(BK, f"B_{field.upper()}") == int(word), field
    assert BK.B_LEVELS == 9 and BK.bid_px(20) == slice(9, 29) and BK.ask_qty(20).stop == 89
    assert BK.block_words(20) % 8 == 0 and BK.block_words(20) >= 89

