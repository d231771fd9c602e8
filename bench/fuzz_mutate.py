"""The mutators of the venue fuzz (bench/fuzz.py, bench/fuzz_books.py): byte-level
(``mutate_bytes``: flips, inserted / deleted / duplicated bytes, truncation, splices, bad
UTF-8) and JSON-level (``mutate_object``: deleted fields, type swaps, huge numbers,
NaN/inf, unicode, nested junk, wrong symbols, empty / oversized lists), and the small
helpers both fuzzers share."""
from __future__ import annotations

import math
import random
import time

HUGE_NUMBERS = (1e308, -1e308, 10**30, -(10**30), 2**63, 2**64, -(2**63) - 1, 10**400, 0, -1, -0.0,
         1e-320, 5e-324, 9007199254740993)
ODD_NUMBER_STRINGS = ("NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "-inf", "1e999",
                "-1e999", "0", "-0", "-1", "0x10", " 1.5", "1.5 ", "1_000", "1e-400", "",
                "1.2.3", "٣", "１２", "+5", ".5", "5.", "1e", "e5", "9" * 400,
                "0." + "0" * 300 + "1")
ODD_UNICODE = ("\u0000", "\ud800", "\udfff", "\ufeff", "\u202e", "é", "漢字", "\U0001f600",
            "\\u0000", "\x7f", "BTC\u200bUSDT", "ＢＴＣＵＳＤＴ")
WRONG_SYMBOLS = ("BTCUSDT", "btcusdt", "BTC-USDT", "BTC_USDT", "BTC/USDT", "BTC-USDT-SWAP",
                  "XBT/USD", "ETHBTC", "", " ", "BTCUSDT ", "DOGE-XYZ", "A" * 300,
                  "orderbook.1.BTCUSDT", "tickers.", "\u0000")



def rfc3339(ms: int) -> str:
    s, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}000Z"


def show_frame(frame, limit=300):
    s = frame if isinstance(frame, str) else frame.decode("utf-8", "backslashreplace")
    return s[:limit] + ("..." if len(s) > limit else "")


# ------------------------------------------------------------------ mutators ------

def leaf_paths(obj, prefix=()):
    """Every (container, key) pair inside a JSON object."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((obj, k))
            out.extend(leaf_paths(v))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((obj, i))
            out.extend(leaf_paths(v))
    return out


def nested_junk(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice((None, True, False, 0, -1, 1.5, "", "x", [], {}, "0", "null",
                           rng.choice(HUGE_NUMBERS), rng.choice(ODD_NUMBER_STRINGS), rng.choice(ODD_UNICODE)))
    if r < 0.6:
        return [nested_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(("a", "b", "s", "u", "data", "", "e")): nested_junk(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def swap_type(rng, v):
    if isinstance(v, str):
        return rng.choice((None, 0, 1.5, [], {}, True, [v], rng.choice(ODD_NUMBER_STRINGS),
                           rng.choice(ODD_UNICODE), v * rng.randint(2, 50), v.upper(), v[::-1]))
    if isinstance(v, bool) or v is None:
        return rng.choice((0, 1, "true", "", [], {}, "null"))
    if isinstance(v, (int, float)):
        return rng.choice((str(v) if abs(v) < 10**300 else "1e999", None, [v], {},
                           rng.choice(HUGE_NUMBERS), -v, v * 10 + 1 if abs(v) < 10**300 else v,
                           rng.choice(ODD_NUMBER_STRINGS), True))
    if isinstance(v, list):
        return rng.choice(([], {}, None, "[]", v * rng.randint(2, 20), [v], v[:1] * 0,
                           [None] * 3, [[]]))
    if isinstance(v, dict):
        return rng.choice(([], None, "{}", [v], {}, {"": v}))
    return None


def mutate_object(obj, rng: random.Random, natives: list[str]):
    """Mutate a parsed JSON frame in place (1-3 edits); returns the object (or a new root)."""
    for _ in range(rng.randint(1, 3)):
        paths = leaf_paths(obj)
        if not paths:
            return nested_junk(rng)
        parent, key = rng.choice(paths)
        v = parent[key]
        op = rng.random()
        if op < 0.18 and isinstance(parent, dict):
            del parent[key]                                            # field deletion
        elif op < 0.40:
            parent[key] = swap_type(rng, v)                           # type swap
        elif op < 0.52:
            parent[key] = rng.choice(HUGE_NUMBERS)                            # huge numbers
        elif op < 0.62:
            parent[key] = rng.choice(ODD_NUMBER_STRINGS)                     # NaN / inf / odd
        elif op < 0.68:
            parent[key] = rng.choice((math.nan, math.inf, -math.inf))  # bare NaN tokens
        elif op < 0.74:
            parent[key] = (v if isinstance(v, str) else "") + rng.choice(ODD_UNICODE)
        elif op < 0.80:
            parent[key] = nested_junk(rng)                                   # nested junk
        elif op < 0.88:
            parent[key] = rng.choice(WRONG_SYMBOLS + tuple(n.lower() for n in natives[:3]))
        elif op < 0.93 and isinstance(parent, dict):
            parent[rng.choice(("extra", "data", "u", "s", "ts", "topic", "type", "event",
                               "channel", "arg", "result"))] = nested_junk(rng)
        elif op < 0.97:
            deep = nested_junk(rng)
            for _ in range(rng.randint(10, 200)):
                deep = [deep]
            parent[key] = deep
        else:
            return rng.choice(([obj], [], {}, "text", 42, None, [obj, obj]))
    return obj


def mutate_bytes(data: bytes, rng: random.Random, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            b = bytearray(rng.randbytes(rng.randint(0, 16)))
            continue
        op = rng.random()
        i = rng.randrange(len(b))
        if op < 0.3:
            b[i] ^= 1 << rng.randrange(8)                              # bit flip
        elif op < 0.45:
            b[i] = rng.choice(b'{}[]",:0-.eE\\ \x00\xff\x80nNtf')      # structural byte
        elif op < 0.6:
            del b[i:i + rng.randint(1, 8)]                             # deletion
        elif op < 0.7:
            b[i:i] = rng.randbytes(rng.randint(1, 8))                  # insertion
        elif op < 0.8:
            b = b[:i]                                                  # truncation
        elif op < 0.88:
            j = rng.randrange(len(b))
            lo, hi = min(i, j), max(i, j)
            b[hi:hi] = b[lo:hi]                                        # duplicated slice
        elif op < 0.95:
            j = rng.randrange(len(other) or 1)
            b = b[:i] + bytearray(other[j:])                           # splice
        else:
            b[i:i + 4] = rng.choice((b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                                     b"\\ud8", b"1e99"))               # bad utf-8 / escapes
    return bytes(b)

