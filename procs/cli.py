"""The ``arbpipe`` console script: the operator commands (``arbpipe.ops.cli``), the
benchmarks (``bench.cli``) and the two processes one can run alone (``sim``, ``feed``).
Exit codes: 0 ok, 1 runtime failure, 2 bad usage/config. What only ``sim`` or ``feed``
needs is imported inside them, so that every other command starts without it."""
from __future__ import annotations

from typing import List, Optional

import typer

from arbpipe.ops.cli import InstanceOpt, app
from arbpipe.transport import segments
from bench.cli import bench_app

app.add_typer(bench_app, name="bench")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sim(ctx: typer.Context):
    """The venue simulator alone (all venues' protocols on local websockets). Options are
    those of `python -m procs.simulator --help` (--port, --seed, --rate, --venues, --fault ...)."""
    from procs import simulator  # lazy: saves 35 ms (the simulator's venues) for other commands
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
         depth: Optional[int] = typer.Option(None, "--depth", help="L2 book: top N levels per "
                                             "side (0: BBO only; default: the config's)"),
         rest_url: Optional[str] = typer.Option(None, "--rest-url", help="replaces scheme, host "
                                                "and port of the venue's REST base (snapshots)"),
         verbose: bool = typer.Option(False, "--verbose", "-v"),
         instance: Optional[str] = InstanceOpt):
    """Run one feed handler alone."""
    from procs.feed import feed_command  # lazy: saves 30 ms (websocket client, adapters)
    raise SystemExit(feed_command(venue, url=url, symbol=symbol, print_=print_, ring=ring,
                                  instance=instance, config=config, verbose=verbose,
                                  depth=depth, rest_url=rest_url))


def main():  # console script
    try:
        app()
    except segments.SegmentError as e:
        typer.echo(f"arbpipe: {e}", err=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
