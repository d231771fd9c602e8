"""Process entry point of the venue simulator.

    python -m procs.simulator [--host H] [--port P] [--seed S] [--rate R]
                              [--venues binance,okx,...] [--instruments BTC,ETH,...]
                              [--single-port] [--config FILE.json|FILE.toml]
                              [--fault VENUE:KEY=VALUE ...] [--timeout VENUE:KEY=VALUE ...]
                              [--dislocation-rate HZ] [--dislocation-bps BPS] [--dislocation-ms MS]

Once every port is bound it prints one JSON line on stdout:
``{"event":"ready","pid":..,"host":..,"seed":..,"single_port":..,"urls":{venue:url},
"ports":{venue:port},"paths":{venue:[path,..]}}``; SIGTERM / SIGINT stop it cleanly
(exit 0). Bad usage or config exits 2 naming the offending option or key.
``--port P`` gives venue i port P + i (in ``--venues`` order), or one port P with
``--single-port``; 0 (the default) picks free ports.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib

import msgspec

from arbpipe.sim.config import VENUES, FaultConfig, SimConfig, Timeouts, load_config
from arbpipe.sim.server import run_simulator


def _split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x for x in v.replace(",", " ").split() if x)
    return out


def _kv(items: list[str], what: str) -> dict[str, dict]:
    """``venue:key=value`` -> {venue: {key: value}} (value parsed as JSON when it can be)."""
    out: dict[str, dict] = {}
    for item in items or []:
        try:
            venue, rest = item.split(":", 1)
            key, raw = rest.split("=", 1)
        except ValueError:
            raise SystemExit(_usage(f"--{what} {item!r}: expected VENUE:KEY=VALUE"))
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(venue, {})[key] = value
    return out


def _usage(msg: str) -> int:
    print(f"simulator: {msg}", file=sys.stderr)
    return 2


def _load_file(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".toml"):
        doc = tomllib.loads(data.decode())
        return doc.get("sim", doc)
    return json.loads(data)


def build_config(argv: list[str] | None = None) -> SimConfig:
    p = argparse.ArgumentParser(prog="python -m procs.simulator", description="arbpipe venue simulator")
    p.add_argument("--config", help="JSON or TOML file (a [sim] table, or the top level) decoded into SimConfig")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--rate", type=float, default=None, help="quote updates/s per venue (0 = as fast as possible)")
    p.add_argument("--venues", nargs="+", help=f"subset of: {', '.join(VENUES)}")
    p.add_argument("--instruments", nargs="+", help="base assets (BTC ETH ...) or BASE/QUOTE")
    p.add_argument("--single-port", action="store_true", help="serve every venue on one port, routed by path")
    p.add_argument("--fault", action="append", default=[], metavar="VENUE:KEY=VALUE")
    p.add_argument("--timeout", action="append", default=[], metavar="VENUE:KEY=VALUE")
    p.add_argument("--dislocation-rate", type=float, default=None, help="per (venue, instrument) per second")
    p.add_argument("--dislocation-bps", type=float, default=None)
    p.add_argument("--dislocation-ms", type=float, default=None)
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    doc: dict = _load_file(a.config) if a.config else {}
    for key, val in (("host", a.host), ("port", a.port), ("seed", a.seed),
                     ("dislocation_rate_hz", a.dislocation_rate), ("dislocation_bps", a.dislocation_bps),
                     ("dislocation_ms", a.dislocation_ms)):
        if val is not None:
            doc[key] = val
    if a.single_port:
        doc["single_port"] = True
    if a.instruments:
        doc["bases"] = [s.split("/")[0].upper() for s in _split_list(a.instruments)]
    venues = doc.get("venues")
    names = _split_list(a.venues) if a.venues else (list(venues) if venues else list(VENUES))
    for n in names:
        if n not in VENUES:
            raise SystemExit(_usage(f"--venues: unknown venue {n!r}; known: {', '.join(VENUES)}"))
    venues = {n: dict((venues or {}).get(n, {})) for n in names}
    if a.rate is not None:
        for v in venues.values():
            v["rate_hz"] = a.rate
    for what, table, struct in (("fault", _kv(a.fault, "fault"), FaultConfig),
                                ("timeout", _kv(a.timeout, "timeout"), Timeouts)):
        for venue, fields in table.items():
            if venue not in venues:
                raise SystemExit(_usage(f"--{what}: venue {venue!r} is not served"))
            for k in fields:
                if k not in struct.__struct_fields__:
                    raise SystemExit(_usage(f"--{what} {venue}:{k}: unknown key; known: "
                                            f"{', '.join(struct.__struct_fields__)}"))
            key = "faults" if what == "fault" else "timeouts"
            venues[venue].setdefault(key, {}).update(fields)
    doc["venues"] = venues
    try:
        return load_config(doc)
    except (msgspec.ValidationError, ValueError) as e:
        raise SystemExit(_usage(f"bad config: {e}"))


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = build_config(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2

    def ready(sim) -> None:
        sys.stdout.write(json.dumps(sim.describe()) + "\n")
        sys.stdout.flush()

    try:
        run_simulator(cfg, ready=ready)
    except OSError as e:
        print(f"simulator: cannot listen: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
