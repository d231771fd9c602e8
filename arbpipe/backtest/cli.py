"""``arbpipe backtest``: arguments, checks, the runs, the report directory.

Everything the user gives is checked before anything runs or is written: the config and
every ``--set`` / ``--sweep`` combination (``ConfigError`` names the key: exit 2), the
``--latency-ms`` list (exit 2), ``--out`` (exists and no ``--force``: exit 2), the recording
(``arbpipe.backtest.load``: truncated or corrupt names the byte offset, exit 1) and its
names against the config (exit 2). The report is written into a fresh directory beside
``--out`` and renamed into place at the end, so a failed run leaves nothing behind and
``--force`` replaces an old report only once the new one is complete.

Runs: the base run (config + ``--set``), one per ``--latency-ms`` value (the base with
``strategy.latency_ms`` set), one per ``--sweep`` combination (the cartesian product, in
the order given). Files: report.md, report.json (identical for the same input and
settings), journal.jsonl and equity.csv of the base run, PNGs (``arbpipe.backtest.plots``).
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import shutil
import sys
import tempfile
import tomllib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from arbpipe.backtest import engine as E
from arbpipe.backtest import load as LD
from arbpipe.backtest import plots as PL
from arbpipe.backtest import render as RD
from arbpipe.backtest import report as RP
from arbpipe.config import DEFAULT_PATH, Config, ConfigError, config_from_dict
from arbpipe.trading.journal import describe_entry

USAGE, FAILED = 2, 1


class Usage(ValueError):
    """Bad arguments: exit 2 with this message."""


def parse_value(text: str):
    """A --set value as TOML reads it (2 -> int, 2.5 -> float, true -> bool, [1, 2] ->
    array), else the text itself as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_assignment(arg: str, opt: str) -> tuple[str, str]:
    key, eq, value = arg.partition("=")
    key = key.strip()
    if not eq or not key or any(not p for p in key.split(".")):
        raise Usage(f"{opt} {arg!r}: expected section.key=value")
    return key, value.strip()


def set_key(data: dict, key: str, value) -> None:
    d = data
    parts = key.split(".")
    for k, p in enumerate(parts[:-1]):
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise Usage(f"{key}: {'.'.join(parts[:k + 1])} is not a table")
        d = nxt
    d[parts[-1]] = value


def make_config(base: dict, sets: dict, what: str) -> Config:
    data = copy.deepcopy(base)
    for k, v in sets.items():
        set_key(data, k, v)
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise Usage(f"{what}: {e}") from None


def plan(config: str | None, sets: list[str], sweeps: list[str], latency: str | None):
    """(base Config, its --set dict, [(latency_ms, Config)], sweep keys,
    [(values, Config)]); Usage on any bad argument, before anything runs."""
    path = config or DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            base = tomllib.load(f)
    except OSError as e:
        raise Usage(f"--config {path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise Usage(f"--config {path}: invalid TOML: {e}") from None
    given = {}
    for arg in sets or []:
        k, v = split_assignment(arg, "--set")
        given[k] = parse_value(v)
    cfg = make_config(base, given, "--set" if given else path)
    lat = []
    if latency:
        for x in latency.split(","):
            try:
                ms = float(x)
            except ValueError:
                raise Usage(f"--latency-ms: {x.strip()!r} is not a number of ms") from None
            lat.append((ms, make_config(base, {**given, "strategy.latency_ms": ms},
                                        f"--latency-ms {x.strip()}")))
    axes = []
    for arg in sweeps or []:
        k, v = split_assignment(arg, "--sweep")
        if any(k == a for a, _ in axes):
            raise Usage(f"--sweep {k}: given twice")
        axes.append((k, [parse_value(x.strip()) for x in v.split(",") if x.strip()]))
    keys = [k for k, _ in axes]
    rows = []
    for values in itertools.product(*[vs for _, vs in axes]) if axes else []:
        combo = dict(zip(keys, values))
        rows.append((combo, make_config(base, {**given, **combo},
                                        "--sweep " + ", ".join(f"{k}={v}" for k, v in
                                                                combo.items()))))
    return cfg, given, lat, keys, rows


def check_out(out: str, force: bool) -> None:
    if os.path.lexists(out) and not force:
        raise Usage(f"--out {out}: exists; give --force to replace it (nothing was written)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise Usage(f"--out {out}: {parent} is not a directory")


def _progress(total: int, quiet: bool):
    """A rich progress bar on stderr (a no-op when quiet)."""
    if quiet:
        return contextlib.nullcontext(lambda n: None)

    @contextlib.contextmanager
    def bar():
        with Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as p:
            task = p.add_task("updates", total=total)
            yield lambda n: p.advance(task, n)
    return bar()


def backtest_command(recording: str, config: str | None = None, sets=None, sweeps=None,
                     latency: str | None = None, out: str = "backtest-out",
                     force: bool = False, as_json: bool = False, echo=print,
                     err=None, quiet: bool = False) -> int:
    """``arbpipe backtest``; returns the exit code (0, 1: bad recording, 2: bad usage)."""
    err = err or (lambda s: print(s, file=sys.stderr))
    try:
        cfg, given, lat, keys, rows = plan(config, sets, sweeps, latency)
        check_out(out, force)
    except Usage as e:
        err(f"arbpipe backtest: {e}")
        return USAGE
    try:
        data = LD.load(recording)
    except LD.BadRecording as e:
        err(f"arbpipe backtest: {e}")
        return FAILED
    problems = LD.check_config(data, cfg)
    if problems:
        err(f"arbpipe backtest: {recording} does not match the config: " + "; ".join(problems))
        return USAGE
    runs = 1 + len(lat) + len(rows)
    warm = E.warm_up(cfg, data)
    with _progress(len(data) * runs, quiet or as_json) as tick:
        base = E.run(cfg, data, tick)
        lat_runs = [(ms, E.run(c, data, tick)) for ms, c in lat]
        sweep_runs = [(combo, E.run(c, data, tick)) for combo, c in rows]
    m = RP.metrics(base)
    s = cfg.strategy
    h = data.header
    doc = {"recording": {"path": recording, "records": len(data),
                         "span_s": (h["last_recv_ns"] - h["first_recv_ns"]) / 1e9
                         if h["first_recv_ns"] else m["span_s"],
                         "first_recv_ns": int(data.recv[0]) if len(data) else 0,
                         "last_recv_ns": int(data.recv[-1]) if len(data) else 0,
                         "missed": h["missed"], "source": data.names.get("source", "")},
           "config": {"file": config or "config/arbpipe.toml (default)", "set": given},
           "settings": {"mode": s.mode, "latency_ms": s.latency_ms,
                        "slippage_bps": s.slippage_bps, "min_net_bps": s.min_net_bps,
                        "detector_min_net_bps": cfg.detector.min_net_bps},
           "run": m,
           "latency": [{"latency_ms": ms, **RP.headline(RP.metrics(r))} for ms, r in lat_runs],
           "sweep": {"keys": keys, "rows": [{**combo, **RP.headline(RP.metrics(r))}
                                            for combo, r in sweep_runs]},
           "plots": [], "plots_note": ""}
    every = [base] + [r for _, r in lat_runs + sweep_runs]
    seconds = sum(r.elapsed_s for r in every)
    det_s = sum(r.detect_s for r in every)
    opps = sum(int(r.state["counters"]["opportunities_read"]) for r in every)
    cpu = sum(r.cpu_s for r in every)
    tp = {"updates": len(data) * runs, "seconds": seconds, "runs": runs, "detector_s": det_s,
          "warm_up_s": warm,
          "opportunities": opps, "cpu_s": cpu,
          "updates_per_cpu_s": len(data) * runs / cpu if cpu > 0 else float("inf"),
          "updates_per_s": len(data) * runs / seconds if seconds > 0 else float("inf"),
          "detector_updates_per_s": len(data) * runs / det_s if det_s > 0 else float("inf"),
          "opportunities_per_s": opps / (seconds - det_s) if seconds > det_s else float("inf")}
    tmp = tempfile.mkdtemp(prefix=".backtest-", dir=os.path.dirname(os.path.abspath(out)))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)         # mkdtemp's 0700 -> an ordinary directory
        _write(tmp, doc, base, cfg, tp)
        if os.path.lexists(out):
            shutil.rmtree(out) if os.path.isdir(out) and not os.path.islink(out) \
                else os.unlink(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if as_json:
        with open(os.path.join(out, "report.json")) as f:
            echo(f.read().rstrip("\n"))
        err(RD.summary(doc, tp, out))
    else:
        echo(RD.summary(doc, tp, out))
    return 0


def _write(d: str, doc: dict, base, cfg: Config, tp: dict) -> None:
    try:
        eq = RP.equity(base)
        doc["plots"] = PL.write_plots(d, doc, base.eq_t, base.eq_net, eq["dd"])
    except PL.NoPlots as e:
        doc["plots_note"] = str(e)
    RP.write_json(os.path.join(d, "report.json"), doc)
    with open(os.path.join(d, "report.md"), "w") as f:
        f.write(RD.render_md(doc, tp))
    describe = describe_entry(cfg)
    with open(os.path.join(d, "journal.jsonl"), "w") as f:
        for e in base.entries:
            f.write(json.dumps(describe(dict(e))) + "\n")
    with open(os.path.join(d, "equity.csv"), "w") as f:
        f.write("recv_ts_ns,net_pnl\n")
        for t, v in zip(base.eq_t.tolist(), base.eq_net.tolist()):
            f.write(f"{t},{v!r}\n")
