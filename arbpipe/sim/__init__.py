"""Local venue simulator: every venue's real websocket protocol, served offline.

    from arbpipe.sim import SimulatorThread, make_config
    with SimulatorThread(make_config(["binance", "okx"], seed=7, rate_hz=50)) as sim:
        sim.urls["okx"]           # "ws://127.0.0.1:<port>"; connect to + "/ws/v5/public"

Modules: ``config`` (SimConfig), ``market`` (deterministic price model), ``session``
(connection machinery), one module per venue (``binance``, ``bybit``, ``okx``,
``coinbase``, ``kraken``, ``gate``), ``protocols`` (registry, path routing), ``server``
(Simulator, run_simulator, SimulatorThread, SimulatorProcess). Process entry point:
``python -m procs.simulator``.
"""
from arbpipe.sim.config import (  # noqa: F401
    DEFAULT_BASES,
    VENUES,
    FaultConfig,
    InstrumentSpec,
    SimConfig,
    Timeouts,
    VenueSimConfig,
    default_instruments,
    instruments_for,
    load_config,
    make_config,
)
from arbpipe.sim.market import Market, Quote, VenueModel  # noqa: F401
from arbpipe.sim.protocols import PROTOCOLS, route, venue_paths  # noqa: F401
from arbpipe.sim.server import (  # noqa: F401
    Simulator,
    SimulatorProcess,
    SimulatorThread,
    run_simulator,
)
