"""Config fuzz: malformed TOML, wrong types, unknown keys and out-of-range values.

``load_config`` / ``parse_config`` / ``config_from_dict`` either return a Config or raise
``ConfigError`` whose message starts with the offending key path (or, for TOML that does
not parse, the file and the line); never another exception. A process given a bad config
exits 2 and leaves nothing in /dev/shm (``arbpipe up`` with the ``BAD`` configs:
tests/system/test_config_up.py).
"""
import copy
import datetime
import math
import os
import re
import subprocess
import sys
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbpipe.config import DEFAULT_PATH, Config, ConfigError, config_from_dict, load_config, \
    parse_config

TEXT = open(DEFAULT_PATH).read()
BASE = tomllib.loads(TEXT)
# "venues.okx.taker_fee_bps: ...", "instruments[3]: ...", "detector.max_exec_qty.BTC/USDT:"
KEY_PATH = re.compile(r"^(\(top level\)|[A-Za-z_][\w\-]*(\[\d+\])*(\.[^\s:]+?(\[\d+\])*)*): \S")
TOML_ERR = re.compile(r"^.+: invalid TOML: .+")
FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=True)


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


def _fmt(path):
    s = ""
    for k in path:
        s += f"[{k}]" if isinstance(k, int) else (f".{k}" if s else k)
    return s


WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, -1e308, 1e308, 2**63, 2**64, ""]),
    st.text(max_size=8), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["a", "capacity", "policy", "x"]), st.integers(), max_size=2),
    st.just(datetime.datetime(2024, 1, 1)), st.just(datetime.time(1, 2)),
)
MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
    st.tuples(st.just("set"), st.sampled_from(PATHS), WRONG),
    st.tuples(st.just("unknown"), st.sampled_from([p for p in PATHS if isinstance(
        _get(BASE, p), dict)] + [()]), st.from_regex(r"\A[a-z][a-z_0-9]{0,12}\Z"), WRONG),
)


def _apply(data, m):
    kind, path = m[0], m[1]
    try:
        if kind == "unknown":
            _get(data, path)[m[2]] = m[3]
            return
        parent = _get(data, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = m[2]
    except (KeyError, IndexError, TypeError):
        pass  # an earlier mutation removed or replaced the container


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_config_is_refused_by_key_path_or_accepted(mutations):
    data = copy.deepcopy(BASE)
    for m in mutations:
        _apply(data, m)
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        assert KEY_PATH.match(str(e)), f"{mutations}: message names no key path: {e}"
        return
    assert isinstance(cfg, Config)


@FUZZ
@given(st.sampled_from(PATHS), WRONG)
def test_a_wrong_value_names_its_own_key(path, value):
    """One replaced value: if refused, the message names that key (or, for a semantic
    rule over several keys, a key of the same table)."""
    data = copy.deepcopy(BASE)
    _get(data, path[:-1])[path[-1]] = value
    try:
        config_from_dict(data)
    except ConfigError as e:
        msg = str(e)
        assert KEY_PATH.match(msg), msg
        named = msg.split(": ", 1)[0]
        table = _fmt(path[:-1])
        assert named.startswith(_fmt(path)) or _fmt(path).startswith(named) or \
            (table and named.startswith(table)) or named.startswith("venues"), (path, msg)


@FUZZ
@given(st.data())
def test_malformed_toml_text_is_refused_with_the_file_named(data):
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
        cfg = parse_config(text, "fuzz.toml")
    except ConfigError as e:
        assert TOML_ERR.match(str(e)) or KEY_PATH.match(str(e)), str(e)
        return
    assert isinstance(cfg, Config)


def test_file_level_problems(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p.write_text(TEXT)
    assert isinstance(load_config(p), Config)


BAD = {
    "malformed": (TEXT + "\n[rings.feed\n", "invalid TOML"),
    "wrong_type": (TEXT.replace("taker_fee_bps = 10.0", 'taker_fee_bps = "ten"', 1),
                   "venues.binance.taker_fee_bps"),
    "unknown_key": (TEXT.replace("[detector]\n", "[detector]\nmin_nett_bps = 1.0\n", 1),
                    "detector.min_nett_bps: unknown key"),
    "out_of_range": (TEXT.replace("capacity = 65536", "capacity = 1000", 1),
                     "rings.feed.capacity"),
}


def test_a_process_given_a_bad_config_exits_2(tmp_path, instance):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(BAD["wrong_type"][0])
    r = subprocess.run([sys.executable, "-m", "procs.detector", "--config", str(cfg),
                        "--instance", instance], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "venues.binance.taker_fee_bps" in r.stderr, r.stderr
    assert not [e for e in os.listdir("/dev/shm") if f".{instance}." in e]
