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
        out = json.dumps(rows) if as_json else stat.render(rows)
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
       detach: bool = False, instance: Optional[str] = InstanceOpt):
    """Start the whole tree (supervisor)."""
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
    raise SystemExit(supervisor.main(config=config, live=live, detach=detach, instance=instance))


@app.command()
def status(instance: Optional[str] = InstanceOpt):
    """Segments of running pipelines and whether their creator is alive."""
    rows = segments.list_segments(instance)
    if not rows:
        typer.echo("no arbpipe segments")
        return
    for s in rows:
        h = s.header
        who = f"creator pid {h.creator_pid}" if h else "unreadable header"
        typer.echo(f"{s.instance:<12} {s.name:<28} {who:<22} {'STALE' if s.stale else 'live'}")


def main():  # console script
    try:
        app()
    except segments.SegmentError as e:
        typer.echo(f"arbpipe: {e}", err=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
