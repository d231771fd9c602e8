"""Config fuzz: every key of the schema, wrong types, out-of-range values, unknown keys,
deleted keys and malformed TOML.

The oracle is ``RULES`` / ``LEAVES`` below, written from the documented rules (the
docstring and comments of arbpipe.config, config/arbpipe.toml), never from the validator:
for every key, what it accepts (``Rule.ok``), values that keep it (``good``) and break it
(``bad``), its default, and which key a refusal must name (``blame``: the key itself, an
element of it, or for a rule over two keys the key the documented message starts with).
Every value a rule refuses MUST raise ``ConfigError`` whose message starts with exactly that
key path and ": " (``venues.binance.taker_fee_bps: ...``); every value it accepts MUST be
accepted and read back equal from the ``Config``. Nothing passes by being skipped: no
``try`` around the call under test, no "either refused or accepted".

A process given a bad config exits 2 and leaves nothing in /dev/shm (``arbpipe up`` with the
``BAD`` configs: tests/system/test_config_up.py).
"""
import copy
import datetime
import math
import os
import re
import subprocess
import sys
import tomllib
import types
import typing

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.config import DEFAULT_PATH, ROLES, VENUE_IDS, Config, ConfigError, PerpMarket, \
    VenueConfig, config_from_dict, load_config, parse_config
from arbpipe.sim.config import FaultConfig

TEXT = open(DEFAULT_PATH).read()
BASE = tomllib.loads(TEXT)
CFG0 = config_from_dict(BASE)
INSTR = BASE["instruments"]
TOML_ERR = re.compile(r"^fuzz\.toml: invalid TOML: .+"
                      r"\((at line \d+, column \d+|at end of document)\)$")
FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=True)
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
REQUIRED = object()     # a key without a default
ABSENT = object()       # an entry of a table of entries: leaving it out is always fine


def _fmt(path):
    s = ""
    for k in path:
        s += f"[{k}]" if isinstance(k, int) else (f".{k}" if s else k)
    return s


def _paths(obj, prefix=()):
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


PATHS = _paths(BASE)


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _set(data, path, value):
    obj = data
    for k in path[:-1]:
        if isinstance(obj, dict) and k not in obj:
            obj[k] = {}                    # e.g. [simulator.faults.binance], [venues.x.symbols]
        obj = obj[k]
    if isinstance(obj, list) and path[-1] == len(obj):
        obj.append(value)
    else:
        obj[path[-1]] = value


def _read(cfg, path):
    obj = cfg
    for k in path:
        obj = getattr(obj, k) if isinstance(obj, msgspec.Struct) else obj[k]
    return obj


# ------------------------------------------------------------------ values -------------

def is_int(v):
    return type(v) is int and I64_MIN <= v <= I64_MAX


def is_num(v):
    """What a float key takes: a finite float, or an int (TOML ``5`` for 5.0) that a float
    can hold."""
    if type(v) is float:
        return math.isfinite(v)
    if type(v) is int:
        try:
            return math.isfinite(float(v))
        except OverflowError:
            return False
    return False


WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, -1e308, 1e308, 2**63, 2**64, 2**1100,
                     "", " ", "1", "true", "auto"]),
    st.text(max_size=8), st.lists(st.integers(-5, 2**65), max_size=3),
    st.dictionaries(st.sampled_from(["a", "capacity", "policy", "x"]), st.integers(), max_size=2),
    st.just(datetime.datetime(2024, 1, 1)), st.just(datetime.time(1, 2)),
    st.just(datetime.date(2024, 1, 1)),
)


class Rule:
    """One key. ``ok(v)``: the documented rule. ``good`` / ``bad``: edge values it accepts /
    refuses, every one checked for every key (``test_every_key_at_its_edges``), and
    ``more_good`` / ``more_bad`` strategies for the fuzz. ``default``: its value when left
    out (REQUIRED, ABSENT). ``blame(key, v)``: the key a refusal of v names. ``as_float``:
    read back as a float. ``tables``: whether a table (dict) is a plain wrong value here
    (False where a table is decoded in place and its own keys would be named)."""

    def __init__(self, ok, good, bad, default, blame=None, more_good=None, more_bad=None,
                 as_float=False, tables=True):
        self.ok, self.good, self.bad, self.default = ok, list(good), list(bad), default
        self._blame, self.as_float, self.tables = blame, as_float, tables
        more_good = [] if more_good is None else [more_good]
        more_bad = [] if more_bad is None else [more_bad.filter(lambda v: not ok(v))]
        self.good_st = st.one_of(st.sampled_from(self.good), *more_good) if good else None
        self.bad_st = st.one_of(st.sampled_from(self.bad), *more_bad)

    def blame(self, key, v):
        return self._blame(key, v) if self._blame else key

    def same(self, got, v):
        if self.as_float:
            return type(got) is float and got == float(v)
        return type(got) is type(v) and got == v


def Float(lo=None, hi=None, lo_open=False, default=REQUIRED, also=None, also_bad=(),
          blame=None):
    """Finite, ``lo <= v`` (``lo < v`` if lo_open), ``v <= hi``; ``also(x)``: a rule over
    two keys (``also_bad``: values it refuses; its refusals named by ``blame``)."""
    def in_range(x):
        return (lo is None or (x > lo if lo_open else x >= lo)) and (hi is None or x <= hi)

    def ok(v):
        return is_num(v) and in_range(float(v)) and (also is None or also(float(v)))
    good = [lo, hi, 0, 0.0, 1, 2**70, 1e300, -1e300]
    if lo is not None:
        good += [math.nextafter(lo, math.inf), math.ceil(lo) + 1]
    if hi is not None:
        good += [math.nextafter(hi, -math.inf), math.floor(hi)]
    bad = [math.nan, math.inf, -math.inf, 2**1100, -2**1100, True, False, "1.0", None, [1.0],
           {"x": 1.0}, datetime.time(1, 2), *also_bad]
    if lo is not None:
        bad += [lo - 1, -2**70, -1e300, lo if lo_open else math.nextafter(lo, -math.inf)]
    if hi is not None:
        bad += [math.nextafter(hi, math.inf), hi + 1, 2**70, 1e300]
    flo = -1e300 if lo is None else lo
    fhi = 1e300 if hi is None else hi
    ilo = -(2**62) if lo is None else (math.floor(lo) + 1 if lo_open else math.ceil(lo))
    ihi = 2**62 if hi is None else math.floor(hi)
    more_good = st.one_of(st.floats(flo, fhi, exclude_min=lo_open, allow_nan=False,
                                    allow_infinity=False), st.integers(ilo, ihi)).filter(ok)
    more_bad = [st.floats(-1e308, lo, exclude_max=not lo_open, allow_nan=False)] \
        if lo is not None else []
    if hi is not None:
        more_bad.append(st.floats(hi, 1e308, exclude_min=True, allow_nan=False))
    return Rule(ok, [x for x in good if x is not None and ok(x)], [x for x in bad if not ok(x)],
                default, blame, more_good, st.one_of(*more_bad) if more_bad else None,
                as_float=True)


def Int(lo=I64_MIN, hi=I64_MAX, default=REQUIRED, also=None, good=()):
    def ok(v):
        return is_int(v) and lo <= v <= hi and (also is None or also(v))
    edges = [lo, hi, lo + 1, hi - 1, 0, 1, *good]
    bad = [float(max(lo, 1)), 1.5, True, False, "1", None, [1], {"x": 1}, datetime.date(2024, 1, 1),
           I64_MAX + 1, I64_MIN - 1, 2**64, 2**70, -2**70, lo - 1, hi + 1, 3, 1000, 65537]
    more_good = None if also else st.integers(lo, hi)
    more_bad = [st.integers(max(lo - 2**40, I64_MIN - 10), lo - 1)] if lo > I64_MIN else []
    if hi < I64_MAX:
        more_bad.append(st.integers(hi + 1, hi + 2**40))
    if also is not None:
        more_bad.append(st.integers(lo, min(hi, 2**26)))
    return Rule(ok, [x for x in edges if ok(x)], [x for x in bad if not ok(x)], default,
                more_good=more_good, more_bad=st.one_of(*more_bad) if more_bad else None)


def Bool(default):
    return Rule(lambda v: type(v) is bool, [True, False],
                [0, 1, 0.0, "true", "false", "yes", None, [True]], default)


def Enum(*vals, default):
    def ok(v):
        return type(v) is str and v in vals
    bad = [x for v in vals for x in (v.upper(), v + " ", " " + v, v + "\n")] + \
        ["", "x", 1, None, True, list(vals)]
    return Rule(ok, vals, [x for x in bad if not ok(x)], default)


def Text(pred, good, bad, default, more_good=None):
    def ok(v):
        return type(v) is str and pred(v)
    return Rule(ok, good, [x for x in list(bad) + [1, None, True, ["x"]] if not ok(x)], default,
                more_good=more_good)


def Never(tables=True):
    """Every value is refused, naming the key (an unknown entry name)."""
    return Rule(lambda v: False, [], [{}, {"taker_fee_bps": 1.0, "maker_fee_bps": 1.0}, 1, "x",
                                      1.0, None, [], True], ABSENT, more_bad=WRONG,
                tables=tables)


HOST = re.compile(r"[A-Za-z0-9.:_-]+")
HOSTS_GOOD = ["127.0.0.1", "localhost", "::1", "0.0.0.0", "sim_1.lan"]
HOSTS_BAD = ["", "bad host", "127.0.0.1\n", "a/b", "h\x00", "ünï", "a b"]
WS_URLS = ["", "ws://127.0.0.1:9000", "wss://stream.binance.com:9443/ws"]
NOT_WS = ["http://x", "ws:/x", " ws://x", "WS://x", "x", "ws//x"]
HTTP_URLS = ["", "http://127.0.0.1:9000", "https://api.binance.com"]
NOT_HTTP = ["ws://x", "http:/x", " http://x", "HTTP://x", "x", "https//x"]
REDIS_URLS = ["", "redis://127.0.0.1:6379/0", "rediss://:pw@h/1", "unix:///tmp/r.sock?db=0"]
NOT_REDIS = ["http://x", "redis:/x", " redis://x", "REDIS://x", "x", "tcp://h:1"]
PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
CANON = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")
# a native symbol no venue derives (they are upper case): never clashes with another
FRESH_NATIVE = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
FRESH_CANON = st.from_regex(r"Z[0-9]{1,5}/(USDT|USDC|BTC|EUR)", fullmatch=True)


def _first(v, bad):
    return next((j for j, x in enumerate(v) if bad(x)), None)


def _elements(decodes, bad=None, empty_bad=False):
    """blame for a list key: the first element that does not decode, then the first
    integer beyond 64 bits, then (``empty_bad``) the key of an empty list, then the first
    element ``bad`` refuses."""
    def blame(key, v):
        if type(v) is not list:
            return key
        for test in (lambda x: not decodes(x), lambda x: type(x) is int and not is_int(x)):
            j = _first(v, test)
            if j is not None:
                return f"{key}[{j}]"
        if empty_bad and not v:
            return key
        j = _first(v, bad) if bad else None
        return key if j is None else f"{key}[{j}]"
    return blame


def subset_rule():
    """``venues.X.instruments`` (and ``.perp.instruments``): None or known instruments."""
    def ok(v):
        return v is None or (type(v) is list and all(type(x) is str and x in INSTR for x in v))
    good = [None, [], INSTR[:1], INSTR[2:5], [INSTR[1], INSTR[1]], list(INSTR)]
    bad = [["btc/usdt"], [INSTR[0], "ZZZ/USDT"], [INSTR[0], INSTR[1] + " "], [""], [5],
           [INSTR[0], None], [INSTR[0], "nope", 1], INSTR[0], 1, {"x": 1}]
    more_bad = st.builds(lambda a, x, b: a + [x] + b, st.lists(st.sampled_from(INSTR), max_size=2),
                         st.sampled_from(["btc/usdt", "ZZZ/USDT", "BTC/USDT ", "", 5, None, 1.5]),
                         st.lists(st.sampled_from(INSTR), max_size=2))
    return Rule(ok, good, bad, None, _elements(lambda x: type(x) is str, lambda x: x not in INSTR),
                st.none() | st.lists(st.sampled_from(INSTR), max_size=4), more_bad)


def symbol_rule(venue, canon, perp):
    """``venues.X[.perp].symbols.<canon>``: a known instrument -> a non-blank native symbol
    that no other instrument of the venue uses."""
    market = "perp" if perp or CFG0.venues[venue].market == "perp" else "spot"
    natives = [(vi.native, (vi.canonical, vi.market) == (canon, market))
               for vi in CFG0.symbol_map(venue)]
    mine = [n for n, own in natives if own]
    others = {n for n, own in natives if not own}

    def ok(v):
        return canon in INSTR and type(v) is str and v.strip() != "" and v not in others
    good = ["x1", "btc-usdt-x", " y "] + mine
    bad = ["", " ", "\t", 1, None, ["X"], {"a": "b"}, *sorted(others)[:3]]
    return Rule(ok, good if canon in INSTR else [], [x for x in good + bad if not ok(x)], ABSENT,
                more_good=FRESH_NATIVE, more_bad=None if canon in INSTR else FRESH_NATIVE)


def instrument_rule(k):
    """``instruments[k]`` (k == len: appended). Canonical BASE/QUOTE, unique, no native
    symbol clash (on binance-style venues BASE+QUOTE is the native symbol);
    instruments[0] (BTC/USDT) is what detector.max_exec_qty names."""
    others = [x for j, x in enumerate(INSTR) if j != k]
    concat = {x.replace("/", ""): j for j, x in enumerate(INSTR) if j != k}

    def ok(v):
        return (type(v) is str and CANON.fullmatch(v) is not None and v not in others
                and v.replace("/", "") not in concat and (k != 0 or v == INSTR[0]))

    def blame(key, v):
        if type(v) is str and CANON.fullmatch(v):
            j = concat.get(v.replace("/", ""))   # a duplicate, or a native symbol clash
            if j is not None:
                return f"instruments[{max(j, k)}]"
            if k == 0:
                return f"detector.max_exec_qty.{INSTR[0]}"
        return key
    good = [INSTR[0]] if k == 0 else ["Z1/USDT", "A" * 20 + "/" + "B" * 20, "1/2", "BTC/EUR"]
    if 0 < k < len(INSTR):
        good.append(INSTR[k])
    bad = ["btc/usdt", "BTC/USDT\n", "BTCUSDT", "/USDT", "BTC/", "A" * 21 + "/USDT", "BTC/USDT/X",
           "", " ETH/USDT", "BTCU/SDT", "ETH/USDT", "DOT/USDT", 5, None, ["BTC/USDT"], "Z1/USDT"]
    return Rule(ok, good, [x for x in bad if not ok(x)], ABSENT, blame,
                None if k == 0 else FRESH_CANON)


def cpu_rule(role):
    """``cpu.<role>``: a known role -> "auto" or a non-empty list of cores >= 0."""
    elements = _elements(lambda x: type(x) is int, lambda x: x < 0, empty_bad=True)

    def decodes(v):
        return v == "auto" or (type(v) is list and all(is_int(x) for x in v))

    def ok(v):
        return role in ROLES and (v == "auto" or (decodes(v) and len(v) > 0 and min(v) >= 0))

    def blame(key, v):
        if not decodes(v) or role in ROLES:
            return elements(key, v)
        return key                         # an unknown role, once its value decodes
    good = ["auto", [0], [0, 1, 2], [3, 3], [2**40]]
    bad = [[], [-1], [0, -3], [True], ["0"], [0.0], "all", "AUTO", 0, None, {"x": 1}, [2**64],
           [1, 2**63], [-1, 2**64], [-1, "x"]]
    return Rule(ok, good if role in ROLES else [], [x for x in good + bad if not ok(x)], ABSENT,
                blame, st.lists(st.integers(0, 2**40), min_size=1, max_size=4))


def perp_table_rule(venue):
    """``venues.X.perp`` on a venue that is not okx: only left out (None) is fine; a perp
    table is refused naming it (spot-only venue, or a perp venue's second perp market)."""
    return Rule(lambda v: v is None, [None],
                [{"taker_fee_bps": 5.0, "maker_fee_bps": 2.0},
                 {"taker_fee_bps": 5.0, "maker_fee_bps": 2.0, "funding_interval_s": 28800},
                 1, "x", []], None, tables=False)


def market_rule(venue):
    cur = BASE["venues"][venue].get("market", "spot")

    def blame(key, v):
        # the other market: a spot venue turned perp has no funding interval; a perp venue
        # turned spot lists no spot symbols
        return f"venues.{venue}.funding_interval_s" if v == "perp" and cur == "spot" else key
    r = Enum("spot", "perp", default="spot")
    return Rule(lambda v: v == cur, [cur], [x for x in r.bad + ["spot", "perp"] if x != cur],
                "spot", blame)


def fault_rule(field):
    default = getattr(FaultConfig(), field)
    if type(default) is bool:
        return Bool(default)
    if type(default) is float:
        r = Float(0.0, 1.0 if field.endswith("_p") else None, default=default)
        r.as_float = False               # faults are kept raw; the simulator decodes them
        return r
    return Rule(lambda v: type(v) is list and all(type(x) is str and x for x in v),
                [[], ["BTCUSDT"], ["BTC-USDT", "x"]],
                [[""], ["BTCUSDT", ""], [1], ["A", None], "BTCUSDT", None], [],
                _elements(lambda x: type(x) is str),
                st.lists(st.from_regex(r"[A-Z]{1,6}-?[A-Z]{0,5}", fullmatch=True), max_size=3))


INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,100}")
ENABLED = [v for v, t in BASE["venues"].items() if t.get("enabled", True)]


def ring_list_rule(allowed, more=()):
    """``bridge.out_rings`` / ``remote_venues`` / ``in_streams``: a list of unique names out
    of ``allowed`` (over the default config). A refusal names the first element that does
    not decode, else the first one not allowed or repeating an earlier one."""
    allowed = list(allowed)

    def ok(v):
        return (type(v) is list and all(type(x) is str for x in v)
                and all(x in allowed for x in v) and len(set(v)) == len(v))

    def blame(key, v):
        if type(v) is not list:
            return key
        j = _first(v, lambda x: type(x) is not str)
        if j is None:
            j = next((i for i, x in enumerate(v) if x not in allowed or x in v[:i]), None)
        return key if j is None else f"{key}[{j}]"
    good = [[], allowed[:1], allowed[-2:], list(allowed)]
    bad = [[allowed[0], allowed[0]], ["nope"], [allowed[0], "x"], [""], [1], [allowed[0], None],
           [allowed[0] + " "], [allowed[0].upper()], allowed[0], None, 1, {"x": 1}, *more]
    return Rule(ok, good, [x for x in bad if not ok(x)], [], blame,
                st.lists(st.sampled_from(allowed), max_size=len(allowed), unique=True),
                st.lists(st.sampled_from(allowed + ["x", "feed.", "feed.nowhere", ""]),
                         min_size=1, max_size=4))


def bridge_rules():
    """``[bridge]`` (arbpipe.config.BridgeConfig; disabled in the default config, so its
    lists are checked against every enabled venue being local)."""
    k = "bridge"
    out = [f"feed.{v}" for v in ENABLED] + ["opportunities", "journal"]
    return [((k, "enabled"), Bool(False)),
            ((k, "url"), Text(lambda x: x == "" or x.startswith(("redis://", "rediss://",
                                                                   "unix://")),
                              REDIS_URLS, NOT_REDIS, "",
                              st.text(max_size=12).map(lambda t: "rediss://" + t))),
            ((k, "out_rings"), ring_list_rule(out, (["feed.binance-perp"], ["trades"]))),
            ((k, "remote_instance"), Text(lambda x: x == "" or INSTANCE.fullmatch(x) is not None,
                                          ["", "feeds", "a-b_C9", "x" * 100],
                                          ["a.b", "a b", "x" * 101, "ä", "a\n", "a/b"], "",
                                          st.from_regex(INSTANCE, fullmatch=True))),
            ((k, "remote_venues"), ring_list_rule(ENABLED, (["Binance"], ["feed.okx"]))),
            # no remote venue in the default config: feed.<venue> cannot be read in
            ((k, "in_streams"), ring_list_rule(["opportunities", "journal"],
                                               (["feed.okx"], ["feed.binance"]))),
            ((k, "maxlen"), Int(1, default=100_000)),
            ((k, "batch"), Int(1, 65536, default=512)),
            # max_lag_ms > heartbeat_ms (250 by default); the refusal names max_lag_ms
            ((k, "max_lag_ms"), Float(0.0, lo_open=True, default=1000.0,
                                      also=lambda x: x > 250.0,
                                      also_bad=[250.0, 100.0, math.nextafter(250.0, 0)])),
            ((k, "heartbeat_ms"),
             Float(0.0, 60_000.0, lo_open=True, default=250.0, also=lambda x: x < 1000.0,
                   also_bad=[1000.0, 5000.0, 60_000.0],
                   blame=lambda key, v: "bridge.max_lag_ms"
                   if is_num(v) and 1000.0 <= float(v) <= 60_000.0 else key)),
            ((k, "block_ms"), Int(1, 1000, default=100)),
            ((k, "idle_poll_ms"), Float(0.0, 1000.0, lo_open=True, default=1.0)),
            ((k, "start"), Enum("newest", "oldest", default="newest"))]


def _leaves():
    """Every key of the schema over the default config: [(path, Rule)]."""
    out = [(("instruments", k), instrument_rule(k)) for k in range(len(INSTR) + 1)]
    for venue, table in BASE["venues"].items():
        perp_market = table.get("market") == "perp"
        v = ("venues", venue)
        out += [(v + ("enabled",), Bool(True)), (v + ("market",), market_rule(venue)),
                (v + ("taker_fee_bps",), Float(0.0, 1000.0)),
                (v + ("maker_fee_bps",), Float(-1000.0, 1000.0)),
                (v + ("funding_interval_s",), Int(1 if perp_market else 0, default=0)),
                (v + ("url",), Text(lambda x: x == "" or x.startswith(("ws://", "wss://")),
                                    WS_URLS, NOT_WS, "",
                                    st.text(max_size=12).map(lambda t: "wss://" + t))),
                (v + ("rest_url",), Text(lambda x: x == "" or x.startswith(("http://",
                                                                             "https://")),
                                         HTTP_URLS, NOT_HTTP, "",
                                         st.text(max_size=12).map(lambda t: "https://" + t))),
                (v + ("depth",), Int(0, 1000, default=20)),
                (v + ("watchdog_s",), Float(0.0, lo_open=True, default=30.0)),
                (v + ("probe_idle_s",), Float(0.0, default=10.0)),
                (v + ("probe_timeout_s",), Float(0.0, lo_open=True, default=10.0)),
                (v + ("instruments",), subset_rule())]
        out += [(v + ("symbols", c), symbol_rule(venue, c, False))
                for c in (INSTR[0], INSTR[4], "ZZZ/USDT", "btc/usdt")]
        out += [(v + ("lot_size", INSTR[0]), Float(0.0, lo_open=True, default=ABSENT)),
                (v + ("min_notional", INSTR[0]), Float(0.0, default=ABSENT)),
                (v + ("lot_size", "ZZZ/USDT"), Never()),
                (v + ("min_notional", "btc/usdt"), Never())]
        if "perp" in table:
            p = v + ("perp",)
            out += [(p + ("taker_fee_bps",), Float(0.0, 1000.0)),
                    (p + ("maker_fee_bps",), Float(-1000.0, 1000.0)),
                    (p + ("funding_interval_s",), Int(1, default=28800)),
                    (p + ("instruments",), subset_rule())]
            out += [(p + ("symbols", c), symbol_rule(venue, c, True))
                    for c in (INSTR[1], "ZZZ/USDT")]
        else:
            out.append((v + ("perp",), perp_table_rule(venue)))
    out += [(("venues", name), Never(tables=True)) for name in ("foo", "Binance", "okx-perp", "")]
    d = "detector"
    max_call_min = BASE[d]["batch"]
    out += [((d, "min_net_bps"), Float(-1000.0, 10_000.0, default=1.0)),
            ((d, "max_quote_age_ms"), Float(0.0, lo_open=True, default=1000.0)),
            ((d, "max_plausible_spread_bps"), Float(0.0, lo_open=True, default=300.0)),
            ((d, "confidence_floor"), Float(0.0, 100.0, default=20.0)),
            ((d, "max_notional"), Float(0.0, lo_open=True, default=50_000.0)),
            ((d, "slippage_base_bps"), Float(0.0, default=0.0)),
            ((d, "slippage_depth_bps"), Float(0.0, default=2.0)),
            ((d, "funding_horizon_s"), Float(0.0, 366 * 86400.0, default=0.0)),
            ((d, "usd_rates", "EUR"), Float(0.0, lo_open=True, default=ABSENT)),
            ((d, "usd_rates", "eur"), Never()),
            ((d, "update_threshold_bps"), Float(0.0, default=0.5)),
            ((d, "persist_updates"), Int(0, default=1)),
            ((d, "persist_ms"), Float(0.0, default=0.0)),
            ((d, "confidence_spread_bps"), Float(0.0, lo_open=True, default=10.0)),
            ((d, "confidence_notional"), Float(0.0, lo_open=True, default=10_000.0)),
            ((d, "confidence_funding_bps"), Float(0.0, lo_open=True, default=5.0)),
            ((d, "sweep_ms"), Float(0.0, lo_open=True, default=100.0)),
            # every batch allowed (<= 65536) is <= the default max_records_per_call (65536)
            ((d, "batch"), Int(1, 65536, default=256)),
            ((d, "max_records_per_call"), Int(max_call_min, default=65_536)),
            ((d, "idle_poll_ms"), Float(0.0, 10_000.0, lo_open=True, default=250.0))]
    for c in (INSTR[0], INSTR[3]):
        out.append(((d, "max_exec_qty", c), Float(0.0, lo_open=True, default=ABSENT)))
    out += [((d, "max_exec_qty", c), Never()) for c in ("ZZZ/USDT", "btc")]
    s = "strategy"
    order, position = BASE[s]["max_order_notional"], BASE[s]["max_position_notional"]
    out += [((s, "mode"), Enum("trade", "observe", default="trade")),
            ((s, "kill_switch"), Bool(False)), ((s, "partial_fills"), Bool(True)),
            ((s, "min_net_bps"), Float(-1000.0, 10_000.0, default=2.0)),
            ((s, "min_confidence"), Float(0.0, 100.0, default=40.0)),
            ((s, "leverage"), Float(0.0, 1000.0, lo_open=True, default=5.0)),
            ((s, "max_order_notional"), Float(0.0, position, default=10_000.0)),
            # 0 disables the position limit; otherwise it must be >= max_order_notional, and
            # the documented message is "strategy.max_order_notional: must be <= ..."
            ((s, "max_position_notional"),
             Float(0.0, default=50_000.0, also=lambda x: x == 0 or x >= order,
                   also_bad=[order / 2, math.nextafter(order, 0), math.nextafter(0, 1)],
                   blame=lambda key, v: "strategy.max_order_notional"
                   if is_num(v) and 0 < float(v) < order else key))]
    for f in ("max_venue_notional", "max_gross_notional", "daily_loss_limit", "max_drawdown",
              "cooldown_ms", "starting_balance", "max_quote_age_ms", "fat_finger_bps",
              "latency_ms", "slippage_bps"):
        out.append(((s, f), Float(0.0, default=getattr(CFG0.strategy.__class__(), f))))
    out += [((s, f), Int(0, default=getattr(CFG0.strategy.__class__(), f)))
            for f in ("max_orders_per_s", "max_orders_per_min", "max_open_orders")]
    out += [((s, "base_balances", a), Float(0.0, default=ABSENT)) for a in ("BTC", "ZZZ9")]
    out += [((s, "base_balances", a), Never()) for a in ("btc", "A" * 21, "BTC/USDT", "")]
    # the trade's life (arbpipe.trading.depth / exits / inventory)
    for f in ("limit_tolerance_bps", "max_hold_s", "stop_basis_bps", "transfer_delay_s",
              "equity_sample_s"):
        out.append(((s, f), Float(0.0, default=getattr(CFG0.strategy.__class__(), f))))
    out += [((s, "exit_net_bps"), Float(-10_000.0, 10_000.0, default=0.0)),
            ((s, "kill_switch_flatten"), Bool(False)), ((s, "flatten_on_stop"), Bool(False))]

    def band(v):
        return type(v) is list and len(v) == 3 and all(is_num(x) and float(x) >= 0 for x in v) \
            and v[0] <= v[1] <= v[2]
    out.append(((s, "inventory_bands", "ETH"),
                Rule(band, [[19.0, 20.0, 21.0], [0.0, 0.0, 0.0], [1.0, 1.0, 2.0]],
                     [[3.0, 2.0, 1.0], [1.0, 2.0], [-1.0, 0.0, 1.0], [], "x", 1.0,
                      [0.0, 2.0, 1.0]], ABSENT)))
    out += [((s, "inventory_bands", a), Never()) for a in ("eth", "A" * 21, "")]
    out.append(((s, "withdrawal_fee", "binance", "ETH"), Float(0.0, default=ABSENT)))
    out += [((s, "withdrawal_fee", "binance", a), Never()) for a in ("eth", "")]
    out += [((s, "withdrawal_fee", v), Never()) for v in ("nowhere", "okx-perp")]
    for ring in ("feed", "opportunities", "trades", "events"):
        out += [(("rings", ring, "capacity"),
                 Int(2, 1 << 24, also=lambda x: x & (x - 1) == 0,
                     good=[1 << k for k in range(1, 25)])),
                (("rings", ring, "policy"), Enum("overwrite", default="drop") if
                 ring == "opportunities" else Enum("block", "drop", default="drop"))]
    out += [(("cpu", role), cpu_rule(role)) for role in ROLES + ("gpu",)]
    r = "redis"
    out += [((r, "url"), Text(lambda x: x == "" or x.startswith(("redis://", "rediss://",
                                                                    "unix://")),
                              REDIS_URLS, NOT_REDIS, "",
                              st.text(max_size=12).map(lambda t: "redis://" + t))),
            ((r, "stream_prefix"), Text(lambda x: PREFIX.fullmatch(x) is not None,
                                        ["arbpipe", "a", "A-b_c.9", "x" * 64],
                                        ["", "a b", "arbpipe\n", "a:b", "x" * 65, "ä"], "arbpipe",
                                        st.from_regex(PREFIX, fullmatch=True))),
            ((r, "stream_maxlen"), Int(1, default=100_000)),
            ((r, "snapshot_interval_ms"), Float(0.0, lo_open=True, default=1000.0)),
            ((r, "buffer_records"), Int(1, 1 << 24, default=100_000)),
            ((r, "batch"), Int(1, 65536, default=512)),
            ((r, "risk_poll_ms"), Float(0.0, lo_open=True, default=1000.0)),
            ((r, "embedded_persist"), Bool(False))]
    m = "simulator"
    out += [((m, "enabled"), Bool(True)),
            ((m, "host"), Text(lambda x: HOST.fullmatch(x) is not None, HOSTS_GOOD, HOSTS_BAD,
                               "127.0.0.1", st.from_regex(HOST, fullmatch=True))),
            ((m, "port"), Int(0, 65535, default=0)), ((m, "seed"), Int(default=1)),
            ((m, "rate_hz"), Float(0.0, default=20.0)),
            ((m, "dislocation_rate_hz"), Float(0.0, default=0.005)),
            ((m, "dislocation_bps"), Float(0.0, default=40.0)),
            ((m, "dislocation_ms"), Float(0.0, default=1500.0))]
    out += [((m, "faults", "binance", f), fault_rule(f)) for f in FaultConfig.__struct_fields__]
    out += [((m, "faults", name), Never()) for name in ("nowhere", "okx-perp")]
    b = "dashboard"
    out += [((b, "metrics_enabled"), Bool(True)),
            ((b, "metrics_host"), Text(lambda x: HOST.fullmatch(x) is not None, HOSTS_GOOD,
                                       HOSTS_BAD, "127.0.0.1",
                                       st.from_regex(HOST, fullmatch=True))),
            ((b, "metrics_port"), Int(0, 65535, default=9464)),
            ((b, "control_token_file"), Text(lambda x: True, ["", "/run/arbpipe/control.token",
                                                             "token"], [], "")),
            ((b, "health_grace_s"), Float(0.0, 3600.0, default=10.0)),
            ((b, "refresh_hz"), Float(1.0, 100.0, default=10.0)),
            ((b, "closed_keep"), Int(1, 5000, default=200))]
    # [supervisor] fork_server: fork the Python roles from a preloaded process (issue 18)
    out.append((("supervisor", "fork_server"), Bool(True)))
    return out + bridge_rules()


LEAVES = _leaves()
RULES = dict(LEAVES)


# ------------------------------------------------------------------ the schema ---------

def _unwrap(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        structs = [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        return structs[0] if structs else tp
    return tp


def _is_struct(tp):
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _field_at(path):
    """(index in path, struct, field) of every struct field along path (the other steps are
    entries of a table of entries or list elements; simulator.faults.<venue> is a
    FaultConfig table)."""
    tp, out = Config, []
    for i, k in enumerate(path):
        tp = _unwrap(tp)
        if path[:i] == ("simulator", "faults") and i == 2:
            tp = FaultConfig
            continue
        if _is_struct(tp):
            out.append((i, tp, k))
            tp = typing.get_type_hints(tp)[k]
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return out
    return out


def _all_fields():
    seen, todo, out = set(), [Config, FaultConfig], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f, tp in typing.get_type_hints(cls).items():
            if f in cls.__struct_fields__:
                out.add((cls, f))
                for a in [_unwrap(tp)] + list(typing.get_args(tp)):
                    todo += [x for x in [a] + list(typing.get_args(a)) if _is_struct(x)]
    return out


def test_every_key_of_the_schema_has_a_rule():
    """A key added to the schema without a rule here would never be fuzzed."""
    covered = {(cls, f) for path, _ in LEAVES for _, cls, f in _field_at(path)}
    missing = sorted(f"{cls.__name__}.{f}" for cls, f in _all_fields() - covered)
    assert not missing, f"keys without a fuzz rule: {missing}"
    assert {(VenueConfig, "perp"), (PerpMarket, "symbols")} <= covered


# ------------------------------------------------------------------ the checks ---------

def _accepted(data, changes):
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise AssertionError(f"{changes}: a valid config was refused: {e}") from None
    for path, value, rule in changes:
        got = _read(cfg, path)
        assert rule.same(got, value), f"{_fmt(path)} = {value!r} read back as {got!r}"
    return cfg


def _refused(data, changes, named):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    msg = str(e.value)
    assert any(msg.startswith(k + ": ") for k in named), \
        f"{changes}: the error does not name {sorted(named)}: {msg}"


def _draw_value(data, rule):
    sources = ["bad", "wrong"] + (["good"] if rule.good_st is not None else [])
    source = data.draw(st.sampled_from(sources), label="source")
    wrong = WRONG if rule.tables else WRONG.filter(lambda v: type(v) is not dict)
    value = data.draw({"good": rule.good_st, "bad": rule.bad_st, "wrong": wrong}[source],
                      label="value")
    if source != "wrong":     # the rule's own examples agree with it
        assert rule.ok(value) == (source == "good"), (source, value)
    return value


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=_fmt)
def test_every_key_at_its_edges(path):
    """Each edge value of each key: a good one is accepted and read back, a bad one is
    refused naming the key (the boundaries of every range, every type, the formats)."""
    rule = RULES[path]
    assert rule.bad, "a key without bad values is not tested"
    for ok, value in [(True, v) for v in rule.good] + [(False, v) for v in rule.bad]:
        assert bool(rule.ok(value)) == ok, f"the rule itself disagrees on {value!r}"
        cfg = copy.deepcopy(BASE)
        _set(cfg, path, value)
        change = [(path, value, rule)]
        if ok:
            _accepted(cfg, change)
        else:
            _refused(cfg, change, {rule.blame(_fmt(path), value)})


@FUZZ
@given(st.data())
def test_one_key_bad_is_refused_naming_it_and_good_is_read_back(data):
    path, rule = data.draw(st.sampled_from(LEAVES), label="key")
    value = _draw_value(data, rule)
    cfg = copy.deepcopy(BASE)
    _set(cfg, path, value)
    change = [(path, value, rule)]
    if rule.ok(value):
        _accepted(cfg, change)
    else:
        _refused(cfg, change, {rule.blame(_fmt(path), value)})


def _group(path):
    """Keys whose rules depend on each other share a group (one change per group)."""
    if path[0] == "instruments" or path[-1] == "instruments" or "symbols" in path \
            or "lot_size" in path or "min_notional" in path \
            or path[:2] == ("detector", "max_exec_qty"):
        return "instrument references"
    if path[0] in ("venues", "bridge") or path[:2] == ("simulator", "faults"):
        return "venues"            # enabled venues decide which faults and bridge rings may be set
    if path in (("detector", "batch"), ("detector", "max_records_per_call")):
        return "detector.batch"
    if path in (("strategy", "max_order_notional"), ("strategy", "max_position_notional")):
        return "strategy.notional"
    return _fmt(path)


@FUZZ
@given(st.data())
def test_several_keys_changed_at_once(data):
    """2-4 changes to independent keys: all good -> accepted, each read back; otherwise
    refused, naming one of the bad keys."""
    n = data.draw(st.integers(2, 4), label="n")
    changes, groups = [], set()
    while len(changes) < n:
        path, rule = data.draw(st.sampled_from(LEAVES), label="key")
        if _group(path) in groups:
            continue
        groups.add(_group(path))
        changes.append((path, _draw_value(data, rule), rule))
    cfg = copy.deepcopy(BASE)
    for path, value, _ in changes:
        _set(cfg, path, value)
    named = {rule.blame(_fmt(path), v) for path, v, rule in changes if not rule.ok(v)}
    if named:
        _refused(cfg, changes, named)
    else:
        _accepted(cfg, changes)


def _default_of(path):
    i, cls, f = _field_at(path)[-1]
    if i == len(path) - 1:
        info = next(x for x in msgspec.structs.fields(cls) if x.name == f)
        if info.default_factory is not msgspec.NODEFAULT:
            return info.default_factory()
        return REQUIRED if info.default is msgspec.NODEFAULT else info.default
    return ABSENT                      # an entry of a table of entries, or a list element


# deleting these is refused, naming (the key, or what now refers to nothing)
DELETE_REFUSED = {"instruments": "instruments", "venues": "venues",
                  "instruments[0]": "detector.max_exec_qty.BTC/USDT"}


@pytest.mark.parametrize("path", PATHS, ids=_fmt)
def test_a_deleted_key_takes_its_default_or_is_refused_naming_it(path):
    data = copy.deepcopy(BASE)
    parent = _get(data, path[:-1])
    del parent[path[-1]]
    key = _fmt(path)
    rule = RULES.get(path)
    default = _default_of(path)
    if key in DELETE_REFUSED:
        _refused(data, [key], {DELETE_REFUSED[key]})
    elif default is REQUIRED:
        _refused(data, [key], {key})
        with pytest.raises(ConfigError, match=f"^{re.escape(key)}: required key missing$"):
            config_from_dict(data)
    elif rule is not None and default is not ABSENT and not rule.ok(default):
        _refused(data, [key], {rule.blame(key, default)})
    else:
        cfg = _accepted(data, [])
        if default is ABSENT and isinstance(path[-1], int):
            assert _read(cfg, path[:-1]) == parent
        elif default is ABSENT:
            assert path[-1] not in _read(cfg, path[:-1])
        else:
            assert _read(cfg, path) == default, key


TABLES = [p for p in [()] + PATHS if isinstance(_get(BASE, p), dict) and p != ("cpu",)]


def _known_names(table):
    if table == ("venues",):
        return set(VENUE_IDS)
    tp = Config
    if table:
        i, cls, f = _field_at(table)[-1]
        tp = _unwrap(typing.get_type_hints(cls)[f])
        if i < len(table) - 1:               # venues.<name>
            tp = _unwrap(typing.get_args(tp)[-1])
    return set(tp.__struct_fields__) if _is_struct(tp) else set()


@FUZZ
@given(st.data())
def test_an_unknown_key_is_refused_naming_it(data):
    """A key the schema does not have, in any table: ``<table>.<key>: unknown key`` (for the
    tables of named entries - venues, detector.max_exec_qty, strategy.base_balances - an
    entry name that is not a venue, instrument or upper-case asset). cpu roles: the
    ``cpu.gpu`` rule above."""
    table = data.draw(st.sampled_from(TABLES), label="table")
    name = data.draw(st.from_regex(r"[a-z][a-z_0-9]{0,12}", fullmatch=True)
                     .filter(lambda x: x not in _known_names(table)), label="name")
    value = data.draw(st.one_of(WRONG, st.just({}),
                                st.just({"taker_fee_bps": 1.0, "maker_fee_bps": 1.0})))
    cfg = copy.deepcopy(BASE)
    _set(cfg, table + (name,), value)
    _refused(cfg, [(table + (name,), value)], {_fmt(table + (name,))})


@pytest.mark.parametrize("change,named", [
    # two instruments of one venue with one native symbol: the override, or the later one
    ({("venues", "binance", "symbols", "BTC/USDT"): "ETHUSDT"}, "venues.binance.symbols.BTC/USDT"),
    ({("venues", "okx", "perp", "symbols", "BTC/USDT"): "ETH-USDT"},
     "venues.okx.perp.symbols.BTC/USDT"),
    ({("venues", "okx", "symbols", "ETH/USDT"): "BTC-USDT-SWAP"}, "venues.okx.symbols.ETH/USDT"),
    ({("venues", "kraken", "symbols", "ETH/USDT"): "x1", ("venues", "kraken", "symbols",
                                                           "SOL/USDT"): "x1"},
     "venues.kraken.symbols.SOL/USDT"),
    ({("instruments", 10): "BTCU/SDT"}, "instruments[10]"),
    # the documented rules over two keys
    ({("venues", "coinbase", "market"): "perp", ("venues", "coinbase", "funding_interval_s"): 3600,
      ("venues", "coinbase", "perp"): {"taker_fee_bps": 1.0, "maker_fee_bps": 1.0}},
     "venues.coinbase.perp"),
    ({("venues", "okx", "market"): "perp", ("venues", "okx", "funding_interval_s"): 3600},
     "venues.okx.perp"),
    ({("detector", "batch"): 4096, ("detector", "max_records_per_call"): 4095},
     "detector.max_records_per_call"),
    ({("strategy", "max_order_notional"): 60_000.0, ("strategy", "max_position_notional"): 0},
     None),
    ({("simulator", "faults", "gate", "malformed_p"): 0.1, ("venues", "gate", "enabled"): False},
     "simulator.faults.gate"),
    ({("venues", v, "enabled"): False for v in BASE["venues"]}, "venues"),
    ({("rings", "opportunities"): {"capacity": 64}}, "rings.opportunities.policy"),
])
def test_rules_over_several_keys_name_the_documented_key(change, named):
    data = copy.deepcopy(BASE)
    for path, value in change.items():
        _set(data, path, value)
    if named is None:
        cfg = config_from_dict(data)
        assert cfg.strategy.max_order_notional == 60_000.0
        assert cfg.strategy.max_position_notional == 0.0
    else:
        _refused(data, list(change.items()), {named})


@FUZZ
@given(st.data())
def test_malformed_toml_text_is_refused_with_the_file_and_line_named(data):
    """tomllib is the oracle for the text: what it refuses, parse_config refuses naming the
    file and the line; what it reads, parse_config treats exactly like config_from_dict."""
    text = TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        junk = data.draw(st.sampled_from(["[", "]", "=", '"', "'", "\n", "[[x]]", "= =", "\x00",
                                          "[venues.okx]\n", "rate_hz = 1\n", "nan", "\\u",
                                          "}", "{", "é", "\ud800"]))
        if op == "insert":
            text = text[:i] + junk + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + data.draw(st.integers(1, 40)):]
        elif op == "replace":
            text = text[:i] + junk + text[i + 1:]
        else:
            text = text[:i]
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        with pytest.raises(ConfigError) as e:
            parse_config(text, "fuzz.toml")
        assert TOML_ERR.match(str(e.value)), str(e.value)
        return
    try:
        want = config_from_dict(parsed)
    except ConfigError as e:
        with pytest.raises(ConfigError, match=f"^{re.escape(str(e))}$"):
            parse_config(text, "fuzz.toml")
        return
    assert parse_config(text, "fuzz.toml") == want


def test_file_level_problems(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p.write_text(TEXT)
    assert load_config(p) == CFG0
    assert CFG0.venues["okx"].perp.taker_fee_bps == 5.0 and CFG0.rings.feed.capacity == 65536


BAD = {
    "malformed": (TEXT + "\n[rings.feed\n", "invalid TOML"),
    "wrong_type": (TEXT.replace("taker_fee_bps = 10.0", 'taker_fee_bps = "ten"', 1),
                   "venues.binance.taker_fee_bps"),
    "unknown_key": (TEXT.replace("[detector]\n", "[detector]\nmin_nett_bps = 1.0\n", 1),
                    "detector.min_nett_bps: unknown key"),
    "out_of_range": (TEXT.replace("capacity = 65536", "capacity = 1000", 1),
                     "rings.feed.capacity"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_bad_configs_are_refused_naming_their_key(case):
    text, named = BAD[case]
    assert text != TEXT
    with pytest.raises(ConfigError) as e:
        parse_config(text, "bad.toml")
    assert named in str(e.value)


def test_a_process_given_a_bad_config_exits_2(tmp_path, instance):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(BAD["wrong_type"][0])
    r = subprocess.run([sys.executable, "-m", "procs.detector", "--config", str(cfg),
                        "--instance", instance], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "venues.binance.taker_fee_bps" in r.stderr, r.stderr
    assert not [e for e in os.listdir("/dev/shm") if f".{instance}." in e]
