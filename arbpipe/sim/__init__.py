"""Local venue simulator: every venue's real websocket protocol, served offline.

    from arbpipe.sim.config import make_config
    from arbpipe.sim.server import SimulatorThread
    with SimulatorThread(make_config(["binance", "okx"], seed=7, rate_hz=50)) as sim:
        sim.urls["okx"]           # "ws://127.0.0.1:<port>"; connect to + "/ws/v5/public"

Modules: ``config`` (SimConfig), ``market`` (deterministic price model), ``session``
(connection machinery), one module per venue (``binance``, ``bybit``, ``okx``,
``coinbase``, ``kraken``, ``gate``), ``protocols`` (registry, path routing), ``server``
(Simulator, run_simulator, SimulatorThread, SimulatorProcess). Process entry point:
``python -m procs.simulator``.

This package module imports nothing: ``arbpipe.config`` reads ``arbpipe.sim.config``
without loading the server (about 130 ms of imports).
"""
