"""The operator commands of ``arbpipe`` (typer): up, down, status, stat, tap, attach, record,
replay, backtest, clean, kill-switch, breaker, risk. ``procs.cli`` adds ``bench``, ``sim``
and ``feed`` and is the console script. Exit codes: 0 ok, 1 runtime failure, 2 bad usage/config.

Quick commands (status, down, clean, stat feeds/detector/strategy/persister/bridge, kill-switch,
breaker, risk) must start fast: what only a heavy command needs -- the ring classes (stat
rings, tap, up; the numba kernels only where a ring handle is made: tap, not up), the replay
tools, the terminal view -- is imported inside that command, each with the start-up time it
saves (``python -X importtime -m procs.cli``, measured on top of what every command loads).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import List, Optional

import typer

from arbpipe.bridge.stats import read_stats as read_bridge_stats, render_stats as \
    render_bridge_stats, status_line as bridge_line
from arbpipe.config import ConfigError, load_config
from arbpipe.detect.stats import read_stats, render_stats, top_of_book_legs
from arbpipe.feeds.stats import read_feed_stats, render_feed_stats
from arbpipe.books.segment import BooksSegment
from arbpipe.ops import control
from arbpipe.ops.book import book_rows, book_states, render as render_book, render_states
from arbpipe.persist.stats import BLOB_NAME, render_stats as render_persister_stats, status_line
from arbpipe.trading import params as R
from arbpipe.trading.control import Control
from arbpipe.trading.view import read_state, render_state, status_line as strategy_line
from arbpipe.transport import segments
from arbpipe.transport.stateblob import read_blob

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="arbpipe: cross-exchange arbitrage over shared-memory rings.")
stat_app = typer.Typer(no_args_is_help=True, help="Counters of a running pipeline.")
app.add_typer(stat_app, name="stat")

InstanceOpt = typer.Option(None, "--instance", "-i", envvar="ARBPIPE_INSTANCE",
                           help="pipeline instance name (default: 'default')")


@app.command()
def clean(ctx: typer.Context, instance: Optional[str] = InstanceOpt,
          all_: bool = typer.Option(False, "--all", help="every instance, even with "
                                    "ARBPIPE_INSTANCE set (--instance still picks one)")):
    """Remove shared-memory segments whose creator is gone, and orphan semaphores. A segment
    whose creator process is alive is never removed: it is listed as skipped, with why."""
    source = ctx.get_parameter_source("instance")          # click's ParameterSource
    if all_ and source is not None and source.name == "ENVIRONMENT":
        instance = None
    skipped: list = []
    removed = segments.clean(instance, skipped=skipped)
    for r in removed:
        typer.echo(f"removed {r}")
    for name, pid in skipped:
        typer.echo(f"skipped {name}: creator pid {pid} alive")
    typer.echo(f"{len(removed)} object(s) removed"
               + (f", {len(skipped)} skipped (creator alive)" if skipped else ""))


def _feed_table(instance) -> str:
    rows = read_feed_stats(instance=instance)
    return "\n\nfeeds\n" + render_feed_stats(rows) if rows else ""


@stat_app.command("rings")
def stat_rings(instance: Optional[str] = InstanceOpt,
               as_json: bool = typer.Option(False, "--json", help="one JSON list"),
               watch: bool = typer.Option(False, "--watch", help="refresh every second"),
               interval: float = typer.Option(0.5, help="seconds over which rates are measured")):
    """One row per ring: kind, capacity, published, rate, fill, drops, readers' lag and laps."""
    from arbpipe.ops import stat  # lazy: saves 15 ms (the ring classes) for other commands
    rows = stat.with_rates(instance, interval)
    if as_json and not watch:
        typer.echo(json.dumps(rows, indent=1))
        return
    while True:
        out = json.dumps(rows) if as_json else stat.render(rows) + _feed_table(instance)
        if watch and not as_json:
            sys.stdout.write("\x1b[2J\x1b[H")
        typer.echo(out)
        if not watch:
            return
        rows = stat.with_rates(instance, 1.0)


@stat_app.command("feeds")
def stat_feeds(instance: Optional[str] = InstanceOpt,
               as_json: bool = typer.Option(False, "--json")):
    """Per-venue feed counters: frames, updates, rejects by reason, reconnects, last message age."""
    rows = read_feed_stats(instance=instance)
    typer.echo(json.dumps(rows, indent=1, default=str) if as_json else render_feed_stats(rows))


def _detector_config(path: str | None, d: dict | None):
    """The config of ``arbpipe stat detector``: ``--config``, else the one the running
    detector was started with (its ``--config`` argument, read from /proc; none: the
    default config), else None. A bad ``--config`` exits 2 naming the key."""
    if path is not None:
        return _risk_cfg(path)
    if d is None or not d.get("alive") or not d.get("pid"):
        return None
    pid = d["pid"]
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0")]
        if not any(a.endswith("procs.detector") for a in argv):
            return None
        path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if path is None and "--config" in argv[:-1]:
            path = argv[argv.index("--config") + 1]
        if path is not None and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/{pid}/cwd"), path)
        return load_config(path)
    except (OSError, ValueError, UnicodeDecodeError, ConfigError):
        return None


@stat_app.command("detector")
def stat_detector(instance: Optional[str] = InstanceOpt,
                  as_json: bool = typer.Option(False, "--json"),
                  config: Optional[str] = typer.Option(
                      None, "--config", help="config naming the legs (default: the running "
                      "detector's)")):
    """Detector counters: updates in, opportunities opened/updated/closed, filters by reason,
    book walks; the legs sized on their top level (venues with depth = 0)."""
    d = read_stats(instance)
    cfg = _detector_config(config, d)
    if cfg is not None and d is not None:
        names = cfg.legs().names
        if len(names) == len(d.get("legs", {})):
            d["legs"] = dict(zip(names, d["legs"].values()))
        d["top_of_book_legs"] = top_of_book_legs(cfg)
    books = None
    try:
        seg = BooksSegment.attach(instance)
    except segments.SegmentNotFound:
        seg = None
    if seg is not None and d is not None:
        try:
            books = book_states(seg, list(d.get("legs", {})))
        finally:
            seg.close()
    if as_json:
        typer.echo(json.dumps(d if d is None else dict(d, books=books), indent=1, default=str))
    else:
        typer.echo(render_stats(d) + ("\n" + render_states(books) if books is not None else ""))


@stat_app.command("strategy")
def stat_strategy(instance: Optional[str] = InstanceOpt,
                  as_json: bool = typer.Option(False, "--json")):
    """Strategy state: mode, kill switch, breaker, orders/fills/rejects by reason, positions, PnL."""
    d = read_state(instance)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else render_state(d))


@app.command("book")
def book(instrument: str = typer.Argument(..., help="BASE/QUOTE, e.g. BTC/USDT"),
         venue: Optional[str] = typer.Option(None, "--venue", help="a venue or leg (okx: okx "
                                             "and okx-perp)"),
         depth: Optional[int] = typer.Option(None, "--depth", help="levels shown per side"),
         as_json: bool = typer.Option(False, "--json"),
         watch: bool = typer.Option(False, "--watch", help="redraw every second"),
         config: Optional[str] = typer.Option(None, "--config", help="the tree's config "
                                              "(instrument and leg names)"),
         instance: Optional[str] = InstanceOpt):
    """The live L2 ladder of an instrument on every leg (read-only), with each book's state
    (ready, resyncing and why) and age."""
    cfg = _risk_cfg(config)
    try:
        seg = BooksSegment.attach(instance)
    except segments.SegmentNotFound:
        typer.echo("arbpipe: no books segment: is the pipeline (its detector) running?",
                   err=True)
        raise SystemExit(1)
    try:
        while True:
            try:
                rows = book_rows(seg, cfg, instrument, venue, depth)
            except ValueError as e:
                typer.echo(f"arbpipe: {e}", err=True)
                raise SystemExit(2)
            typer.echo(json.dumps(rows) if as_json else render_book(rows))
            if not watch:
                break
            time.sleep(1.0)
            if not as_json:
                typer.echo("")
    except KeyboardInterrupt:
        pass
    finally:
        seg.close()


@app.command("kill-switch")
def kill_switch(state: str = typer.Argument(..., help="on | off"),
                instance: Optional[str] = InstanceOpt):
    """Halt (on) or resume (off) new paper orders; takes effect on the strategy's next order."""
    if state not in ("on", "off"):
        typer.echo(f"arbpipe: kill-switch takes 'on' or 'off', got {state!r}", err=True)
        raise SystemExit(2)
    inst = instance or segments.default_instance()
    try:
        ctl = Control.attach(inst)
    except segments.SegmentNotFound:
        typer.echo(f"arbpipe: no strategy control segment: is pipeline {inst!r} running?", err=True)
        raise SystemExit(1)
    try:
        prev = ctl.set_kill(state == "on")
    finally:
        ctl.close()
    control.audit(inst, via="cli", source=f"uid {os.getuid()} pid {os.getpid()}",
                  action="kill-switch", on=state == "on", was=prev, outcome="done")
    typer.echo(f"kill switch {state.upper()} (was {'ON' if prev else 'OFF'}) for pipeline {inst!r}")


@app.command("breaker")
def breaker(action: str = typer.Argument(..., help="reset"),
            instance: Optional[str] = InstanceOpt):
    """Reset a tripped circuit breaker (daily loss / drawdown); the kill switch resets its own."""
    if action != "reset":
        typer.echo(f"arbpipe: breaker takes 'reset', got {action!r}", err=True)
        raise SystemExit(2)
    inst = instance or segments.default_instance()
    try:
        ctl = Control.attach(inst)
    except segments.SegmentNotFound:
        typer.echo(f"arbpipe: no strategy control segment: is pipeline {inst!r} running?", err=True)
        raise SystemExit(1)
    try:
        if ctl.kill:
            typer.echo("arbpipe: the kill switch is on; `arbpipe kill-switch off` first", err=True)
            raise SystemExit(1)
        ctl.request_reset()
    finally:
        ctl.close()
    control.audit(inst, via="cli", source=f"uid {os.getuid()} pid {os.getpid()}",
                  action="breaker/reset", outcome="done")
    typer.echo(f"breaker reset requested for pipeline {inst!r}")


@app.command()
def record(out: str = typer.Option(..., "--out", "-o", help="recording file to write"),
           rings: Optional[List[str]] = typer.Option(None, "--rings", help="rings to tap, "
                                                     "comma list (default: every feed.* ring)"),
           duration: Optional[float] = typer.Option(None, help="stop after S seconds"),
           count: Optional[int] = typer.Option(None, help="stop after N records"),
           config: Optional[str] = typer.Option(None, "--config", help="names of venues and "
                                                "instruments for the header"),
           from_start: bool = typer.Option(False, "--from-start", help="begin at the oldest "
                                           "record each ring still holds (default: its head)"),
           instance: Optional[str] = InstanceOpt):
    """Append every MarketUpdate flowing into the detector to a file, new or an existing
    recording (a tap: never slows the producer). Layout: shm_layouts/recording.py."""
    from arbpipe.replay.commands import record_command  # lazy: saves 190 ms (numba kernels)
    raise SystemExit(record_command(out, rings, duration, count, config, instance,
                                    echo=typer.echo, from_start=from_start))


@app.command()
def replay(file: str = typer.Argument(..., help="a recording made by `arbpipe record`"),
           speed: str = typer.Option("1x", help="1x, 10x, ... or max"),
           rate: Optional[float] = typer.Option(None, help="records/s, evenly spaced "
                                                "(instead of the recorded timing)"),
           loop: bool = typer.Option(False, help="start over at the end"),
           duration: Optional[float] = typer.Option(None, help="stop after S seconds"),
           create: bool = typer.Option(False, help="create missing feed rings"),
           on_full: Optional[str] = typer.Option(None, "--on-full", help="drop | wait "
                                                 "(default: wait at max speed, else drop)"),
           instance: Optional[str] = InstanceOpt):
    """Publish a recording into the feed.<venue> rings as if from the venues (timestamps
    rebased, REPLAYED flag). Stop the feed handlers first: a feed ring has one producer."""
    from arbpipe.replay.commands import replay_command  # lazy: saves 190 ms (numba kernels)
    raise SystemExit(replay_command(file, speed, rate, loop, duration, create, on_full,
                                    instance, echo=typer.echo))


@app.command()
def backtest(recording: str = typer.Argument(..., help="a recording made by `arbpipe record`"),
             config: Optional[str] = typer.Option(None, "--config", help="config file "
                                                  "(default config/arbpipe.toml)"),
             set_: Optional[List[str]] = typer.Option(None, "--set", help="section.key=value "
                                                      "over the config (repeatable)"),
             sweep: Optional[List[str]] = typer.Option(None, "--sweep", help="section.key="
                                                       "v1,v2,... : one run per combination"),
             latency_ms: Optional[str] = typer.Option(None, "--latency-ms", help="a,b,c: one "
                                                      "run per strategy.latency_ms value"),
             out: str = typer.Option("backtest-out", "--out", help="report directory"),
             force: bool = typer.Option(False, "--force", help="replace an existing --out"),
             as_json: bool = typer.Option(False, "--json", help="print report.json")):
    """Run a recording through the detector and paper strategy on a simulated clock; write
    report.md, report.json and PNGs into --out. Exit 1: bad recording; 2: bad arguments."""
    from arbpipe.backtest.cli import backtest_command  # lazy: numba kernels, matplotlib
    raise SystemExit(backtest_command(recording, config, set_, sweep, latency_ms, out, force,
                                      as_json, echo=typer.echo,
                                      err=lambda s: typer.echo(s, err=True)))


attach_app = typer.Typer(no_args_is_help=True, help="Live views of a running pipeline.")
app.add_typer(attach_app, name="attach")


@attach_app.command("dashboard")
def attach_dashboard(instance: Optional[str] = InstanceOpt,
                     once: bool = typer.Option(False, "--once", help="print one frame as "
                                               "plain text and exit (scripts, tests)"),
                     width: Optional[int] = typer.Option(None, "--width", help="columns "
                                                         "(--once default 160)"),
                     wait: float = typer.Option(5.0, "--wait", help="seconds to wait for a "
                                                "starting dashboard")):
    """Live terminal view: opportunities, venues, rings, latency, strategy. q quits (the
    tree keeps running); any number of attaches; state accumulated since start."""
    from arbpipe.ui.terminal import attach  # lazy: saves 25 ms (rich) for other commands
    raise SystemExit(attach(instance or segments.default_instance(), control.read_status,
                            once=once, width=width, wait_s=wait))


@app.command()
def down(instance: Optional[str] = InstanceOpt,
         timeout: float = typer.Option(30.0, help="seconds to wait for a clean stop")):
    """Stop a running pipeline gracefully; its segments are unlinked."""
    name = instance or segments.default_instance()
    if control.down(name, timeout):
        typer.echo(f"pipeline {name!r} stopped")
    else:
        typer.echo(f"pipeline {name!r} is not running (stale segments, if any, removed)")


@app.command()
def tap(ring: str = typer.Argument(..., help="ring name, e.g. feed.binance or opportunities"),
        count: Optional[int] = typer.Option(None, "--count", "-n", help="stop after N records"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
        instance: Optional[str] = InstanceOpt):
    """Print records flowing through a ring without consuming them or slowing its producer."""
    from arbpipe.ops import tap as T  # lazy: saves 12 ms (the ring classes; tap() loads numba)
    try:
        res = T.tap(ring, instance=instance, count=count, as_json=as_json,
                    emit=lambda line: typer.echo(line))
    except KeyboardInterrupt:
        return
    if res["missed"]:
        typer.echo(f"(tap skipped {res['missed']} records it could not print in time)", err=True)


@app.command()
def up(config: Optional[str] = typer.Option(None, "--config"), live: bool = False,
       detach: bool = False, instance: Optional[str] = InstanceOpt,
       replay: Optional[str] = typer.Option(None, "--replay", help="feed every feed.<venue> "
                                            "ring from this recording (one replay process "
                                            "instead of the simulator and the feed handlers)"),
       rate: Optional[float] = typer.Option(None, "--rate", help="with --replay: records/s, "
                                            "evenly spaced"),
       speed: Optional[str] = typer.Option(None, "--speed", help="with --replay: 1x (default), "
                                           "10x, ... or max"),
       loop: bool = typer.Option(False, "--loop", help="with --replay: start over at the end "
                                 "(timestamps keep moving forward)")):
    """Start the whole tree (supervisor)."""
    replay_args = None
    if replay is None and (rate is not None or speed is not None or loop):
        typer.echo("arbpipe: --rate, --speed and --loop go with --replay FILE", err=True)
        raise SystemExit(2)
    if replay is not None:
        from arbpipe.replay.source import tree_source_args  # lazy: saves 7 ms (recording reader)
        try:
            if live:
                raise ValueError("--live and --replay: give one of them")
            replay_args = tree_source_args(replay, rate, speed, loop)
        except ValueError as e:
            typer.echo(f"arbpipe: {e}", err=True)
            raise SystemExit(2)
    from arbpipe.ops import tree  # lazy: saves 70 ms (the tree's modules)
    raise SystemExit(tree.main(config=config, live=live, detach=detach, instance=instance,
                               replay=replay_args))


@app.command()
def status(instance: Optional[str] = InstanceOpt,
           as_json: bool = typer.Option(False, "--json", help="the status document (what GET "
                                        "/status serves)")):
    """Processes (pids, cpus, restarts, uptime) and segments of a running pipeline."""
    if as_json:
        typer.echo(json.dumps(control.status_document(instance or segments.default_instance()),
                              indent=1, default=str))
        return
    st = control.read_status(instance or segments.default_instance())
    if st:
        typer.echo(f"pipeline {st['instance']!r}: supervisor pid {st['supervisor_pid']}, up "
                   f"{st['uptime_s']:.0f} s, logs in {st['run_dir']}")
        for p in st["processes"]:
            typer.echo(f"  {p['name']:<20} {p['state']:<10} pid {str(p['pid']):<8} cpus "
                       f"{str(p['cpus']):<8} restarts {p['restarts']:<3} up {p['uptime_s']:.0f} s")
        typer.echo(status_line(st["instance"]))
        typer.echo(strategy_line(read_state(st["instance"])))
        line = bridge_line(st["instance"])
        if line:
            typer.echo(line)
    rows = segments.list_segments(instance)
    if not rows:
        typer.echo("no arbpipe segments")
        return
    for s in rows:
        h = s.header
        who = f"creator pid {h.creator_pid}" if h else "unreadable header"
        typer.echo(f"{s.instance:<12} {s.name:<28} {who:<22} {'STALE' if s.stale else 'live'}")


risk_app = typer.Typer(no_args_is_help=True, help="Strategy risk limits changed at runtime "
                       "(Redis hash <prefix>:<instance>:risk).")
app.add_typer(risk_app, name="risk")
ConfigOpt = typer.Option(None, "--config", help="pipeline config (default config/arbpipe.toml)")


def _risk_cfg(config):
    try:
        return load_config(config)
    except ConfigError as e:
        typer.echo(f"arbpipe: bad config: {e}", err=True)
        raise SystemExit(2)


@risk_app.command("set")
def risk_set(key: str = typer.Argument(..., help="a key of arbpipe.config.RISK_KEYS"),
             value: str = typer.Argument(..., help="number (int keys: an integer)"),
             config: Optional[str] = ConfigOpt, instance: Optional[str] = InstanceOpt):
    """Validate (the config's rules) and write one limit; the strategy applies it within
    redis.risk_poll_ms. Exit 2 naming the key when invalid, 1 when Redis is unreachable."""
    cfg = _risk_cfg(config)
    inst = instance or segments.default_instance()
    try:
        v = R.set_risk(cfg, inst, key, value)
    except (R.RiskError, R.RedisUnavailable) as e:
        typer.echo(f"arbpipe: risk {e}", err=True)
        raise SystemExit(e.code)
    typer.echo(f"{key} = {v!r} (config {getattr(cfg.strategy, key)!r}) written for pipeline "
               f"{inst!r}")


@risk_app.command("unset")
def risk_unset(key: str = typer.Argument(...), config: Optional[str] = ConfigOpt,
               instance: Optional[str] = InstanceOpt):
    """Remove a runtime override: the strategy goes back to the config value."""
    cfg = _risk_cfg(config)
    inst = instance or segments.default_instance()
    try:
        had = R.unset_risk(cfg, inst, key)
    except (R.RiskError, R.RedisUnavailable) as e:
        typer.echo(f"arbpipe: risk {e}", err=True)
        raise SystemExit(e.code)
    typer.echo(f"{key}: {'override removed' if had else 'no override'}; config value "
               f"{getattr(cfg.strategy, key)!r}")


@risk_app.command("show")
def risk_show(config: Optional[str] = ConfigOpt, instance: Optional[str] = InstanceOpt,
              as_json: bool = typer.Option(False, "--json")):
    """Each risk key: config value, Redis override, the running strategy's value."""
    cfg = _risk_cfg(config)
    try:
        d = R.show_risk(cfg, instance or segments.default_instance())
    except R.RedisUnavailable as e:
        typer.echo(f"arbpipe: risk {e}", err=True)
        raise SystemExit(1)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else R.render_risk(d))


@stat_app.command("persister")
def stat_persister(instance: Optional[str] = InstanceOpt,
                   as_json: bool = typer.Option(False, "--json")):
    """Persister: Redis connection (URL redacted), backlog, written/dropped per stream."""
    d = read_blob(instance, BLOB_NAME)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else render_persister_stats(d))


@stat_app.command("bridge")
def stat_bridge(instance: Optional[str] = InstanceOpt,
                as_json: bool = typer.Option(False, "--json")):
    """Bridge: each side's Redis link (URL redacted), the link's verdict and lag, latency
    p50/p99, per ring sent / behind / missed and per stream received / published /
    duplicates / gaps / skipped by reason."""
    d = read_bridge_stats(instance)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else render_bridge_stats(d))
