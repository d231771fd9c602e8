"""The ``arbpipe`` command line (typer). Exit codes: 0 ok, 1 runtime failure, 2 bad usage/config."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from arbpipe import segments

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="arbpipe: cross-exchange arbitrage over shared-memory rings.")
stat_app = typer.Typer(no_args_is_help=True, help="Counters of a running pipeline.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (figures and ratios vs peers).")
app.add_typer(stat_app, name="stat")
app.add_typer(bench_app, name="bench")

InstanceOpt = typer.Option(None, "--instance", "-i", envvar="ARBPIPE_INSTANCE",
                           help="pipeline instance name (default: 'default')")


@app.command()
def clean(instance: Optional[str] = InstanceOpt,
          all_: bool = typer.Option(False, "--all", help="also remove segments of live pipelines "
                                    "of this instance (all instances without --instance)")):
    """Remove stale shared-memory segments (creator gone) and orphan semaphores."""
    removed = segments.clean(instance, everything=all_)
    for r in removed:
        typer.echo(f"removed {r}")
    typer.echo(f"{len(removed)} object(s) removed")


def _feed_table(instance) -> str:
    from arbpipe.feed import read_feed_stats, render_feed_stats
    rows = read_feed_stats(instance=instance)
    return "\n\nfeeds\n" + render_feed_stats(rows) if rows else ""


@stat_app.command("rings")
def stat_rings(instance: Optional[str] = InstanceOpt,
               as_json: bool = typer.Option(False, "--json", help="one JSON list"),
               watch: bool = typer.Option(False, "--watch", help="refresh every second"),
               interval: float = typer.Option(0.5, help="seconds over which rates are measured")):
    """One row per ring: kind, capacity, published, rate, fill, drops, readers' lag and laps."""
    from arbpipe import stat
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


@bench_app.command("rings")
def bench_rings(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                records: int = typer.Option(2_000_000, help="records per throughput run"),
                latency_samples: int = typer.Option(20_000, help="records per latency run"),
                rate: int = typer.Option(20_000, help="records/s for the latency runs"),
                only: Optional[List[str]] = typer.Option(None, "--only", help="transports to run"),
                out: Optional[str] = typer.Option(None, "--out", help="write JSON here too")):
    """arbpipe rings vs multiprocessing.Queue/Pipe, faster-fifo, pyzmq, Redis Streams, one run."""
    from bench import rings as B
    result = B.run_all(records=records, latency_samples=latency_samples, rate=rate,
                       only=only or None, progress=not as_json)
    text = json.dumps(result, indent=1)
    if out:
        with open(out, "w") as f:
            f.write(text)
    typer.echo(text if as_json else B.render(result))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sim(ctx: typer.Context):
    """The venue simulator alone (all venues' protocols on local websockets). Options are
    those of `python -m procs.simulator --help` (--port, --seed, --rate, --venues, --fault ...)."""
    from procs import simulator
    raise SystemExit(simulator.main(list(ctx.args)))


@app.command()
def feed(venue: str = typer.Argument(..., help="binance, binance-usdm, bybit-spot, bybit-linear, "
                                     "okx, coinbase, kraken, gate"),
         url: Optional[str] = typer.Option(None, "--url", help="replaces scheme, host and port "
                                           "only; the adapter appends the venue's own paths"),
         symbol: Optional[List[str]] = typer.Option(None, "--symbol", "-s",
                                                    help="BASE/QUOTE or the venue's native symbol"),
         print_: bool = typer.Option(False, "--print", help="one JSON line per normalized "
                                     "update on stdout; no ring needed"),
         ring: Optional[str] = typer.Option(None, "--ring", help="ring name (feed.<venue>)"),
         config: Optional[str] = typer.Option(None, "--config", help="pipeline config (ids, url)"),
         verbose: bool = typer.Option(False, "--verbose", "-v"),
         instance: Optional[str] = InstanceOpt):
    """Run one feed handler alone."""
    from procs.feed import feed_command
    raise SystemExit(feed_command(venue, url=url, symbol=symbol, print_=print_, ring=ring,
                                  instance=instance, config=config, verbose=verbose))


@stat_app.command("feeds")
def stat_feeds(instance: Optional[str] = InstanceOpt,
               as_json: bool = typer.Option(False, "--json")):
    """Per-venue feed counters: frames, updates, rejects by reason, reconnects, last message age."""
    from arbpipe.feed import read_feed_stats, render_feed_stats
    rows = read_feed_stats(instance=instance)
    typer.echo(json.dumps(rows, indent=1, default=str) if as_json else render_feed_stats(rows))


@stat_app.command("detector")
def stat_detector(instance: Optional[str] = InstanceOpt,
                  as_json: bool = typer.Option(False, "--json")):
    """Detector counters: updates in, opportunities opened/updated/closed, filters by reason."""
    from arbpipe.detector import read_stats, render_stats
    d = read_stats(instance)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else render_stats(d))


@stat_app.command("strategy")
def stat_strategy(instance: Optional[str] = InstanceOpt,
                  as_json: bool = typer.Option(False, "--json")):
    """Strategy state: mode, kill switch, breaker, orders/fills/rejects by reason, positions, PnL."""
    from arbpipe.strategy import read_state, render_state
    d = read_state(instance)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else render_state(d))


@app.command("kill-switch")
def kill_switch(state: str = typer.Argument(..., help="on | off"),
                instance: Optional[str] = InstanceOpt):
    """Halt (on) or resume (off) new paper orders; takes effect on the strategy's next order."""
    from arbpipe.strategy import Control
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
    typer.echo(f"kill switch {state.upper()} (was {'ON' if prev else 'OFF'}) for pipeline {inst!r}")


@app.command("breaker")
def breaker(action: str = typer.Argument(..., help="reset"),
            instance: Optional[str] = InstanceOpt):
    """Reset a tripped circuit breaker (daily loss / drawdown); the kill switch resets its own."""
    from arbpipe.strategy import Control
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
    typer.echo(f"breaker reset requested for pipeline {inst!r}")


@bench_app.command("feeds")
def bench_feeds(as_json: bool = typer.Option(False, "--json"),
                seconds: float = typer.Option(5.0, help="seconds of the simulator throughput run")):
    """Frame -> record cost (msgspec adapters vs json.loads + dicts) and feed throughput."""
    from bench import feeds as B
    res = B.run(as_json=as_json, seconds=seconds)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else B.render(res))


@bench_app.command("detect")
def bench_detect(as_json: bool = typer.Option(False, "--json"),
                 instruments: int = typer.Option(1000, help="instruments (x 8 venues)"),
                 updates: int = typer.Option(2_000_000, help="updates in the stream")):
    """ns per update of the detector kernel, 8 venues x N instruments, batch mode."""
    from bench import detect as B
    res = B.run(n_instruments=instruments, updates=updates)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else B.render(res))


@bench_app.command("pipeline")
def bench_pipeline(rates: str = typer.Option("10k,100k,1m", help="fixed rates, updates/s"),
                   duration: float = typer.Option(3.0, help="measured seconds per rate"),
                   warmup: float = typer.Option(0.5, help="unmeasured seconds before each"),
                   transports: str = typer.Option("arbpipe,mp-queue,faster-fifo,pyzmq",
                                                  help="harness transports (comma list)"),
                   tree: bool = typer.Option(True, "--tree/--no-tree",
                                             help="also run the real process tree"),
                   reader: str = typer.Option("auto", help="tree reader: auto|strategy|bench"),
                   as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                   out_dir: Optional[str] = typer.Option(None, help="where pipeline.json/.md/"
                                                         ".png go (default bench/results)"),
                   instance: Optional[str] = typer.Option(None, "--instance", help="private "
                                                          "instance to run in (bench-<pid>)"),
                   nice: int = typer.Option(0, help="CPU priority of the measured processes "
                                            "(e.g. -10 on a busy host; root)"),
                   tick_us: float = typer.Option(200.0, "--tick-us", help="generator's "
                                                 "shortest sleep between sends (0: per record)")):
    """Feed ring -> detector -> strategy latency per hop at fixed rates, vs mp.Queue,
    faster-fifo and pyzmq carrying the same pipeline."""
    from bench import pipeline as B
    try:
        rate_list = B.parse_rates(rates)
        if reader not in ("auto", "strategy", "bench") or not duration > 0 or warmup < 0:
            raise ValueError("--reader auto|strategy|bench, --duration > 0, --warmup >= 0")
        res = B.run(rate_list, duration, warmup, [t for t in transports.split(",") if t],
                    tree=tree, reader=reader, progress=True, instance=instance, nice=nice,
                    tick_us=tick_us)
    except (ValueError, segments.SegmentError) as e:
        typer.echo(f"arbpipe bench pipeline: {e}", err=True)
        raise SystemExit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; bench processes stopped and segments removed", err=True)
        raise SystemExit(1)
    paths = B.save(res, out_dir or B.RESULTS_DIR)
    typer.echo(json.dumps(res, indent=1) if as_json else
               B.render(res) + "\n\nwritten: " + ", ".join(paths.values()))


@app.command()
def record(out: str = typer.Option(..., "--out", "-o", help="recording file to write"),
           rings: Optional[List[str]] = typer.Option(None, "--rings", help="rings to tap, "
                                                     "comma list (default: every feed.* ring)"),
           duration: Optional[float] = typer.Option(None, help="stop after S seconds"),
           count: Optional[int] = typer.Option(None, help="stop after N records"),
           config: Optional[str] = typer.Option(None, "--config", help="names of venues and "
                                                "instruments for the header"),
           instance: Optional[str] = InstanceOpt):
    """Append every MarketUpdate flowing into the detector to a file, new or an existing
    recording (a tap: never slows the producer). Layout: shm_layouts/recording.py."""
    from arbpipe.replay import record_command
    raise SystemExit(record_command(out, rings, duration, count, config, instance,
                                    echo=typer.echo))


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
    from arbpipe.replay import replay_command
    raise SystemExit(replay_command(file, speed, rate, loop, duration, create, on_full,
                                    instance, echo=typer.echo))


@bench_app.command("reliability")
def bench_reliability(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                      quick: bool = typer.Option(False, "--quick", help="short version (< 5 min)"),
                      kills: Optional[int] = typer.Option(None, help="kills per role (20; quick 3)"),
                      fuzz_frames: Optional[int] = typer.Option(None, help="frames per venue "
                                                                "(1M; quick 20K)"),
                      soak_minutes: Optional[float] = typer.Option(None, help="soak (5; quick "
                                                                   "0.5; 0: report the newest "
                                                                   "saved soak result)"),
                      only: Optional[List[str]] = typer.Option(None, "--only", help="chains, tree, "
                                                               "faults, fuzz, soak"),
                      soak_source: str = typer.Option("replay", "--soak-source", help="replay "
                                                      "(100K/s reachable) or sim"),
                      soak_rate: float = typer.Option(100_000.0, "--soak-rate",
                                                      help="soak updates/s"),
                      out: Optional[str] = typer.Option(None, "--out", help="write JSON here too")):
    """Kills of every role (sequence-checked rings), parser fuzzing, soak drift: the figures."""
    from bench import reliability as B
    parts = tuple(only) if only else ("chains", "tree", "faults", "fuzz", "soak")
    unknown = sorted(set(parts) - {"chains", "tree", "faults", "fuzz", "soak"})
    if unknown or soak_source not in ("replay", "sim"):
        typer.echo(f"arbpipe: --only {unknown[0]!r}: expected chains, tree, faults, fuzz, soak"
                   if unknown else f"arbpipe: --soak-source {soak_source!r}: expected replay "
                   f"or sim", err=True)
        raise SystemExit(2)
    res = B.run(quick=quick, kills=kills, fuzz_frames=fuzz_frames, soak_minutes=soak_minutes,
                parts=parts, soak_source=soak_source, soak_rate=soak_rate)
    text = json.dumps(res, indent=1, default=str)
    if out:
        with open(out, "w") as f:
            f.write(text)
    typer.echo(text if as_json else B.render(res))
    bad = res["records_lost"] or res["torn_records"] or res["crashes"] or \
        res.get("venue_faults_ok") is False
    raise SystemExit(1 if bad else 0)


@bench_app.command("soak")
def bench_soak(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
               minutes: float = typer.Option(5.0, help="how long"),
               rate: float = typer.Option(100_000.0, help="updates/s over all venues"),
               interval: float = typer.Option(5.0, help="seconds between samples"),
               source: str = typer.Option("sim", "--source", help="sim: the simulator and the "
                                          "feed handlers; replay: one replay process looping "
                                          "a recording into the feed rings"),
               recording: Optional[str] = typer.Option(None, "--recording", help="with "
                                                       "--source replay: this file instead "
                                                       "of a synthesized one"),
               out: Optional[str] = typer.Option(None, "--out", help="write the JSON result "
                                                 "here (default bench/results/soak.json; '': "
                                                 "nowhere)")):
    """The tree at a fixed rate for N minutes: RSS, fds, ring lag and drops; drift report."""
    from bench import soak as B
    if source not in B.SOURCES or (recording and source != "replay"):
        typer.echo("arbpipe bench soak: --source sim|replay (--recording goes with replay)",
                   err=True)
        raise SystemExit(2)
    try:
        res = B.run(minutes=minutes, rate=rate, interval=interval, progress=not as_json,
                    source=source, recording=recording)
    except ValueError as e:        # bad numbers, or a recording the tree cannot take
        typer.echo(f"arbpipe bench soak: {e}", err=True)
        raise SystemExit(2)
    out = B.RESULTS_PATH if out is None else out
    if out:
        B.save(res, out)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else
               B.render(res) + (f"\nwritten: {out}" if out else ""))


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
    from arbpipe.dashboard_view import attach
    raise SystemExit(attach(instance or segments.default_instance(), once=once, width=width,
                            wait_s=wait))


@app.command()
def down(instance: Optional[str] = InstanceOpt,
         timeout: float = typer.Option(30.0, help="seconds to wait for a clean stop")):
    """Stop a running pipeline gracefully; its segments are unlinked."""
    from arbpipe import supervisor
    name = instance or segments.default_instance()
    if supervisor.down(name, timeout):
        typer.echo(f"pipeline {name!r} stopped")
    else:
        typer.echo(f"pipeline {name!r} is not running (stale segments, if any, removed)")


@app.command()
def tap(ring: str = typer.Argument(..., help="ring name, e.g. feed.binance or opportunities"),
        count: Optional[int] = typer.Option(None, "--count", "-n", help="stop after N records"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
        instance: Optional[str] = InstanceOpt):
    """Print records flowing through a ring without consuming them or slowing its producer."""
    from arbpipe import tap as T
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
        from arbpipe.replay import tree_source_args
        try:
            if live:
                raise ValueError("--live and --replay: give one of them")
            replay_args = tree_source_args(replay, rate, speed, loop)
        except ValueError as e:
            typer.echo(f"arbpipe: {e}", err=True)
            raise SystemExit(2)
    try:
        from arbpipe import supervisor
    except ImportError:
        typer.echo("arbpipe: the process tree (supervisor, detector) is not built yet in this "
                   "version.\nWhat works now: `arbpipe bench rings`, `arbpipe stat rings`, "
                   "`arbpipe clean`; see README.md.")
        removed = segments.clean(instance)
        if removed:
            typer.echo(f"reclaimed {len(removed)} stale segment(s) of a crashed run")
        return
    raise SystemExit(supervisor.main(config=config, live=live, detach=detach, instance=instance,
                                     replay=replay_args))


@app.command()
def status(instance: Optional[str] = InstanceOpt):
    """Processes (pids, cpus, restarts, uptime) and segments of a running pipeline."""
    from arbpipe import supervisor
    st = supervisor.read_status(instance or segments.default_instance())
    if st:
        typer.echo(f"pipeline {st['instance']!r}: supervisor pid {st['supervisor_pid']}, up "
                   f"{st['uptime_s']:.0f} s, logs in {st['run_dir']}")
        for p in st["processes"]:
            typer.echo(f"  {p['name']:<20} {p['state']:<10} pid {str(p['pid']):<8} cpus "
                       f"{str(p['cpus']):<8} restarts {p['restarts']:<3} up {p['uptime_s']:.0f} s")
        from arbpipe.persister import status_line
        typer.echo(status_line(st["instance"]))
        from arbpipe.strategy import read_state, status_line as strategy_line
        typer.echo(strategy_line(read_state(st["instance"])))
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
    from arbpipe.config import ConfigError, load_config
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
    from arbpipe import risk_params as R
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
    from arbpipe import risk_params as R
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
    from arbpipe import risk_params as R
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
    from arbpipe.persister import BLOB_NAME, render_stats
    from arbpipe.stateblob import read_blob
    d = read_blob(instance, BLOB_NAME)
    typer.echo(json.dumps(d, indent=1, default=str) if as_json else render_stats(d))


def main():  # console script
    try:
        app()
    except segments.SegmentError as e:
        typer.echo(f"arbpipe: {e}", err=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
