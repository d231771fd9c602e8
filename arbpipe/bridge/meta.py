"""What the out side announces about itself (the hash ``<prefix>:<instance>:bridge:meta``)
and the in side's check of it against its own configuration.

Fields (all strings; JSON where the value is structured):

    field             value
    ----------------  ---------------------------------------------------------------------
    layout_version    shm_layouts.ring.LAYOUT_VERSION of the sender
    record_sizes      {"MarketUpdate": 64, "Opportunity": 192, "JournalEntry": 128}
    instruments       {"1": "BTC/USDT", ...}: canonical id -> name (the config's order)
    venues            {"1": "binance", ...}: id -> name of the sender's enabled venues
    rings             ["feed.okx", "opportunities", ...]: the rings it sends
    instance, host    who sends
    pid, started_ns   the out process and when it connected
    heartbeat         a counter raised every ``[bridge] heartbeat_ms``
    caught_up_age_ms  ms since the out side last had nothing left to send (0: caught up)
    behind            records published in its rings and not yet sent

The in side refuses (``MetaMismatch``, the process exits 2) a sender whose layout version,
record sizes, instrument table or venue names differ from its own configuration, or that
does not send a ring it is configured to read; the message names each difference. It reads
the heartbeat fields again while running (clock-free: it notes when the counter moved).
"""
from __future__ import annotations

import json
import os
import socket
import time

from arbpipe.config import VENUE_IDS, VENUE_NAMES
from shm_layouts import JOURNAL, MARKET_UPDATE, OPPORTUNITY
from shm_layouts.ring import LAYOUT_VERSION

RECORD_SIZES = {"MarketUpdate": MARKET_UPDATE.itemsize, "Opportunity": OPPORTUNITY.itemsize,
                "JournalEntry": JOURNAL.itemsize}
# the record type each ring name carries
RING_RECORDS = {"opportunities": "Opportunity", "journal": "JournalEntry"}
HEARTBEAT_FIELDS = ("heartbeat", "caught_up_age_ms", "behind", "pid", "started_ns")


class MetaMismatch(ValueError):
    """The remote's announcement disagrees with the local configuration."""


def record_of(ring: str) -> str:
    """The record type of a bridged ring (``feed.<venue>``: MarketUpdate)."""
    return RING_RECORDS.get(ring, "MarketUpdate")


def host_name() -> str:
    return os.environ.get("ARBPIPE_HOST") or socket.gethostname()


def local_meta(cfg, instance: str, rings: list[str], host: str) -> dict[str, str]:
    """The meta hash the out side writes on every (re)connect."""
    return {"layout_version": str(LAYOUT_VERSION),
            "record_sizes": json.dumps(RECORD_SIZES),
            "instruments": json.dumps({str(i): n for n, i in cfg.instrument_ids().items()}),
            "venues": json.dumps({str(VENUE_IDS[v]): v for v in cfg.enabled_venues()}),
            "rings": json.dumps(list(rings)), "instance": instance, "host": host,
            "pid": str(os.getpid()), "started_ns": str(time.time_ns())}


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def decode_meta(raw: dict) -> dict:
    """An HGETALL reply (bytes or str) as {field: str}."""
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def _json(meta: dict, field: str, problems: list[str], kind):
    try:
        v = json.loads(meta[field])
    except (KeyError, ValueError):
        problems.append(f"{field}: missing or not JSON in the remote's meta")
        return None
    if not isinstance(v, kind):
        problems.append(f"{field}: not a {kind.__name__} in the remote's meta")
        return None
    return v


def check_meta(meta: dict, cfg, remote_instance: str, rings: list[str]) -> dict:
    """Check the remote's meta (``decode_meta``) against the local config and the remote
    rings to read. Returns {venue id: name} the remote announced; raises ``MetaMismatch``
    naming every difference."""
    problems: list[str] = []
    who = f"remote instance {remote_instance!r}"
    lv = meta.get("layout_version")
    if lv != str(LAYOUT_VERSION):
        problems.append(f"layout version: {who} has {lv}, this build {LAYOUT_VERSION}")
    sizes = _json(meta, "record_sizes", problems, dict)
    if sizes is not None:
        for name, size in RECORD_SIZES.items():
            if sizes.get(name) != size:
                problems.append(f"record size of {name}: {who} has {sizes.get(name)}, this "
                                f"build {size}")
    inst = _json(meta, "instruments", problems, dict)
    if inst is not None:
        local = {str(i): n for n, i in cfg.instrument_ids().items()}
        for i, name in local.items():
            if inst.get(i) != name:
                problems.append(f"instrument id {i}: {who} has {inst.get(i)!r}, the local "
                                f"config {name!r} (instruments[{int(i) - 1}])")
        for i, name in inst.items():
            if i not in local:
                problems.append(f"instrument id {i}: {who} has {name!r}, the local config "
                                f"has no such id (instruments)")
    venues = _json(meta, "venues", problems, dict) or {}
    announced: dict[int, str] = {}
    for i, name in venues.items():
        try:
            vid = int(i)
        except ValueError:
            problems.append(f"venue id {i!r}: not a number in the {who}'s meta")
            continue
        if VENUE_NAMES.get(vid) != name:
            problems.append(f"venue id {vid}: {who} calls it {name!r}, this build "
                            f"{VENUE_NAMES.get(vid)!r}")
        else:
            announced[vid] = name
    sent = _json(meta, "rings", problems, list)
    if sent is not None:
        for r in rings:
            if r not in sent:
                problems.append(f"ring {r}: {who} does not send it (its [bridge] out_rings: "
                                f"{', '.join(sent) or 'none'})")
    for r in rings:
        if r.startswith("feed.") and r[5:] not in announced.values():
            problems.append(f"venue {r[5:]}: {who} does not announce it (not an enabled venue "
                            f"there)")
    if problems:
        raise MetaMismatch("; ".join(problems))
    return announced
