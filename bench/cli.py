"""``arbpipe bench ...``: the benchmark commands (figures and ratios against peers).

Every ``arbpipe`` command loads this module (``procs.cli``), so each benchmark module is
imported inside its own command, with the start-up time that saves the others."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from arbpipe.transport import segments

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (figures and ratios vs peers).")


@bench_app.command("rings")
def bench_rings(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                records: int = typer.Option(2_000_000, help="records per throughput run"),
                latency_samples: int = typer.Option(20_000, help="records per latency run"),
                rate: int = typer.Option(20_000, help="records/s for the latency runs"),
                only: Optional[List[str]] = typer.Option(None, "--only", help="transports to run"),
                out: Optional[str] = typer.Option(None, "--out", help="write JSON here too")):
    """arbpipe rings vs multiprocessing.Queue/Pipe, faster-fifo, pyzmq, Redis Streams, one run."""
    from bench import rings as B  # lazy: saves 195 ms for every other arbpipe command
    result = B.run_all(records=records, latency_samples=latency_samples, rate=rate,
                       only=only or None, progress=not as_json)
    text = json.dumps(result, indent=1)
    if out:
        with open(out, "w") as f:
            f.write(text)
    typer.echo(text if as_json else B.render(result))


@bench_app.command("feeds")
def bench_feeds(as_json: bool = typer.Option(False, "--json"),
                seconds: float = typer.Option(5.0, help="seconds of the simulator throughput run"),
                venue_frames: int = typer.Option(20_000, "--venue-frames",
                                                 help="frames per venue per pass (venues)"),
                repeats: int = typer.Option(5, help="timed passes per venue (venues)"),
                only: Optional[List[str]] = typer.Option(None, "--only", help="hot, venues, "
                                                         "sim, blaster (default: all)"),
                depth: int = typer.Option(0, "--depth", help="N > 0: instead, depth messages "
                                          "(frame -> L2 book of N levels -> ring) per venue"),
                depth_frames: int = typer.Option(20_000, "--depth-frames",
                                                 help="frames per venue (--depth)")):
    """Frame -> record cost (msgspec adapters vs json.loads + dicts; us/frame of every
    venue) and feed throughput."""
    if depth > 0:
        from bench import feeds_depth as FD  # lazy: saves 235 ms for every other command
        res = FD.run(depth, depth_frames)
        typer.echo(json.dumps(res, indent=1, default=str) if as_json else FD.render(res))
        return
    from bench import feeds as B  # lazy: saves 235 ms for every other arbpipe command
    parts = tuple(only) if only else B.PARTS
    bad = sorted(set(parts) - set(B.PARTS))
    if bad or venue_frames < 1 or repeats < 1 or not seconds > 0:
        typer.echo(f"arbpipe bench feeds: --only {', '.join(B.PARTS)}; --venue-frames, "
                   f"--repeats >= 1; --seconds > 0", err=True)
        raise SystemExit(2)
    res = B.run(as_json=as_json, seconds=seconds, venue_frames=venue_frames, repeats=repeats,
                parts=parts)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else B.render(res))


@bench_app.command("detect")
def bench_detect(as_json: bool = typer.Option(False, "--json"),
                 instruments: int = typer.Option(1000, help="instruments (x 8 venues)"),
                 updates: int = typer.Option(2_000_000, help="updates in the stream"),
                 depth: int = typer.Option(0, help="also L2 books of N levels: book "
                                                   "messages, stress, ns per candidate walk")):
    """ns per update of the detector kernel, 8 venues x N instruments, batch mode."""
    from bench import detect as B  # lazy: saves 210 ms for every other arbpipe command
    res = B.run(n_instruments=instruments, updates=updates, depth=depth)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else B.render(res))


@bench_app.command("bridge")
def bench_bridge(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                 rates: str = typer.Option("10k,100k", help="fixed rates, updates/s"),
                 duration: float = typer.Option(3.0, help="measured seconds per rate"),
                 records: int = typer.Option(200_000, help="records of the throughput run"),
                 url: Optional[str] = typer.Option(None, "--url", help="a Redis to use "
                                                   "(default: a private redis-server)")):
    """The bridge on this host: records/s through out -> Redis -> in, and the latency it
    adds at fixed rates against the same hop over a local ring (p50/p99/p99.9)."""
    from bench import bridge as B  # lazy: saves 200 ms for every other arbpipe command
    try:
        rs = [int(float(x.strip().lower().replace("k", "e3").replace("m", "e6")))
              for x in rates.split(",") if x.strip()]
    except ValueError:
        rs = []
    if not rs or min(rs) <= 0 or not duration > 0 or records < 1:
        typer.echo("arbpipe bench bridge: --rates like 10k,100k; --duration > 0; "
                   "--records >= 1", err=True)
        raise SystemExit(2)
    try:
        res = B.run(rates=rs, duration=duration, records=records, url=url,
                    progress=not as_json)
    except RuntimeError as e:
        typer.echo(f"arbpipe bench bridge: {e}", err=True)
        raise SystemExit(1)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else B.render(res))


@bench_app.command("idle")
def bench_idle(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
               idle_seconds: float = typer.Option(2.0, "--idle-seconds",
                                                  help="length of each idle window"),
               repeats: int = typer.Option(5, help="idle windows (the median is reported)"),
               samples: int = typer.Option(20, help="records pushed after an idle gap"),
               gap: float = typer.Option(0.3, help="idle seconds before each such record"),
               instance: Optional[str] = typer.Option(None, "--instance", help="private "
                                                      "instance to run in (bi<random>)")):
    """Detector process idle: CPU % of a core, loop passes/s, and a record after an idle
    gap -> detected (p50/p90/max), vs a bare SPSC doorbell consumer in the same run."""
    from bench import idle as B  # lazy: saves 200 ms for every other arbpipe command
    if not (idle_seconds > 0 and gap > 0) or repeats < 1 or samples < 1:
        typer.echo("arbpipe bench idle: --idle-seconds, --gap > 0; --repeats, --samples >= 1",
                   err=True)
        raise SystemExit(2)
    try:
        res = B.run(idle_s=idle_seconds, repeats=repeats, samples=samples, gap_s=gap,
                    instance=instance, progress=not as_json)
    except RuntimeError as e:      # the detector did not start
        typer.echo(f"arbpipe bench idle: {e}", err=True)
        raise SystemExit(1)
    typer.echo(json.dumps(res, indent=1) if as_json else B.render(res))


@bench_app.command("footprint")
def bench_footprint(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                    settle: float = typer.Option(10.0, "--settle", help="seconds every role "
                                                 "runs before the measurement"),
                    fork_server: str = typer.Option("config", "--fork-server",
                                                    help="on | off | config ([supervisor] "
                                                    "fork_server of config/arbpipe.toml)"),
                    idle: float = typer.Option(0.0, "--idle", help="then seconds of CPU "
                                               "measured with the simulator stopped (0: no)"),
                    repeat: int = typer.Option(1, "--repeat", help="trees measured (with "
                                               "--save: medians and min-max)"),
                    save: bool = typer.Option(False, "--save", help="write bench/results/"
                                              "footprint.json (needs --idle > 0; the "
                                              "config's fork server)"),
                    instance: Optional[str] = typer.Option(None, "--instance", help="private "
                                                           "instance to run in (fp<random>)")):
    """Memory of a default tree: USS and PSS per process (psutil), the fork server on/off;
    with --idle S, the CPU it takes at rest (simulator stopped) per process."""
    from bench import footprint as B  # lazy: keeps psutil work out of every other command
    if fork_server not in ("on", "off", "config") or not settle >= 0 or not idle >= 0 \
            or repeat < 1 or (save and (idle <= 0 or fork_server != "config")):
        typer.echo("arbpipe bench footprint: --fork-server on|off|config; --settle >= 0; "
                   "--idle >= 0; --repeat >= 1; --save needs --idle > 0 and the config's "
                   "fork server", err=True)
        raise SystemExit(2)
    try:
        res = B.repeated(repeat, settle, idle, progress=not as_json) if save else \
            B.run(settle_s=settle, fork_server={"on": True, "off": False}.get(fork_server),
                  instance=instance, progress=not as_json, idle_s=idle)
    except RuntimeError as e:      # a tree did not start
        typer.echo(f"arbpipe bench footprint: {e}", err=True)
        raise SystemExit(1)
    path = B.save(res) if save else None
    if as_json:
        typer.echo(json.dumps(res, indent=1))
    elif save:
        from bench.tables import footprint   # lazy: as above
        typer.echo(footprint(res) + f"\nwritten: {path}")
    else:
        typer.echo(B.render(res))


@bench_app.command("live")
def bench_live(as_json: bool = typer.Option(False, "--json", help="print JSON only"),
               variants: str = typer.Option("default,low-latency,realtime,feeds-hot",
                                            help="comma list of default, low-latency, "
                                                 "realtime, feeds-hot"),
               repeat: int = typer.Option(3, help="rounds (variants interleaved)"),
               settle: float = typer.Option(20.0, help="seconds every role runs first"),
               duration: float = typer.Option(60.0, help="measured seconds per run"),
               save: bool = typer.Option(True, "--save/--no-save",
                                         help="write bench/results/live.json")):
    """Hop latency of the default tree at the rate `make up` runs, per CPU variant, beside
    the host's wake-up floor measured in the same run."""
    from bench import live as B     # lazy: keeps tree work out of every other command
    from bench.tables import live   # lazy: as above
    names = [v.strip() for v in variants.split(",") if v.strip()]
    if not names or repeat < 1 or not settle >= 0 or not duration > 0:
        typer.echo("arbpipe bench live: --variants names; --repeat >= 1; --settle >= 0; "
                   "--duration > 0", err=True)
        raise SystemExit(2)
    try:
        res = B.run(tuple(names), repeat, settle, duration,
                    progress=None if as_json else typer.echo)
    except (ValueError, RuntimeError) as e:     # a variant name, or a tree that did not run
        typer.echo(f"arbpipe bench live: {e}", err=True)
        raise SystemExit(1)
    path = B.save(res) if save else None
    typer.echo(json.dumps(res, indent=1) if as_json else
               live(res) + (f"\nwritten: {path}" if path else ""))


@bench_app.command("profiles")
def bench_profiles(rates: str = typer.Option("200,1k,10k,100k", help="fixed rates, updates/s"),
                   repeat: int = typer.Option(3, help="runs per profile and rate"),
                   duration: float = typer.Option(4.0, help="measured seconds per rate"),
                   save: bool = typer.Option(True, "--save/--no-save",
                                             help="write bench/results/pipeline-profiles.json")):
    """`bench pipeline`'s real tree under both [cpu] profiles (default, low-latency)."""
    from bench import pipeline_profiles as B   # lazy: keeps tree work out of other commands
    from bench.tables import profiles   # lazy: as above
    if repeat < 1 or not duration > 0:
        typer.echo("arbpipe bench profiles: --repeat >= 1; --duration > 0", err=True)
        raise SystemExit(2)
    try:
        res = B.measure(rates, repeat, duration)
    except ValueError as e:     # a rate that does not parse
        typer.echo(f"arbpipe bench profiles: {e}", err=True)
        raise SystemExit(2)
    path = B.save(res) if save else None
    typer.echo(profiles(res) + (f"\nwritten: {path}" if path else ""))


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
                                                 "shortest sleep between sends (0: per record)"),
                   repeat: int = typer.Option(1, help="run every setup N times, interleaved; "
                                              "report medians with min-max spread"),
                   profile: str = typer.Option("default", help="the cpu profile of the tree's "
                                               "detector and strategy: default (they sleep "
                                               "when idle) | low-latency (they spin/yield)"),
                   books: bool = typer.Option(False, "--books", help="the workload carries "
                                              "L2 LEVEL records too (3 records per quote)")):
    """Feed ring -> detector -> strategy latency per hop at fixed rates, vs mp.Queue,
    faster-fifo and pyzmq carrying the same pipeline."""
    from bench import pipeline as B  # lazy: saves 275 ms for every other arbpipe command
    try:
        rate_list = B.parse_rates(rates)
        if reader not in ("auto", "strategy", "bench") or not duration > 0 or warmup < 0:
            raise ValueError("--reader auto|strategy|bench, --duration > 0, --warmup >= 0")
        res = B.run(rate_list, duration, warmup, [t for t in transports.split(",") if t],
                    tree=tree, reader=reader, progress=True, instance=instance, nice=nice,
                    tick_us=tick_us, repeat=repeat, profile=profile, books=books)
    except (ValueError, segments.SegmentError) as e:
        typer.echo(f"arbpipe bench pipeline: {e}", err=True)
        raise SystemExit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; bench processes stopped and segments removed", err=True)
        raise SystemExit(1)
    paths = B.save(res, out_dir or B.RESULTS_DIR)
    typer.echo(json.dumps(res, indent=1) if as_json else
               B.render(res) + "\n\nwritten: " + ", ".join(paths.values()))


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
                                                               "faults, fuzz, soak; not by "
                                                               "default: fuzz-books, "
                                                               "book-faults"),
                      soak_source: str = typer.Option("replay", "--soak-source", help="replay "
                                                      "(100K/s reachable) or sim"),
                      soak_rate: float = typer.Option(100_000.0, "--soak-rate",
                                                      help="soak updates/s"),
                      out: Optional[str] = typer.Option(None, "--out", help="write JSON here too"),
                      merge: bool = typer.Option(False, "--merge", help="with --out: replace "
                                                 "only the parts run in the file there")):
    """Kills of every role (sequence-checked rings), parser fuzzing, soak drift: the figures."""
    from bench import reliability as B  # lazy: saves 320 ms for every other arbpipe command
    parts = tuple(only) if only else B.DEFAULT_PARTS
    unknown = sorted(set(parts) - set(B.PARTS))
    if unknown or soak_source not in ("replay", "sim") or (merge and not out):
        typer.echo(f"arbpipe: --only {unknown[0]!r}: expected {', '.join(B.PARTS)}"
                   if unknown else "arbpipe: --merge needs --out" if merge else
                   f"arbpipe: --soak-source {soak_source!r}: expected replay or sim", err=True)
        raise SystemExit(2)
    res = B.run(quick=quick, kills=kills, fuzz_frames=fuzz_frames, soak_minutes=soak_minutes,
                parts=parts, soak_source=soak_source, soak_rate=soak_rate)
    text = json.dumps(res, indent=1, default=str)
    if out:
        if merge:
            with open(out) as f:
                text = json.dumps(B.merge(json.load(f), res), indent=1, default=str)
        with open(out, "w") as f:
            f.write(text)
    typer.echo(json.dumps(res, indent=1, default=str) if as_json else B.render(res))
    bad = res["records_lost"] or res["torn_records"] or res["crashes"] or \
        res.get("venue_faults_ok") is False or res.get("fuzz_books_ok") is False or \
        res.get("book_faults_ok") is False
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
    from bench import soak as B  # lazy: saves 215 ms for every other arbpipe command
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
