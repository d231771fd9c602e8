"""The detector: cross-venue arbitrage opportunities from the feeds' MarketUpdates.

    kernel.py    the numba kernel and the detection rules (its docstring)
    state.py     the kernel's state (named arrays, named columns) and its io words
    casts.py     bit casts used by the kernels
    hops.py      the hop histograms the kernels record
    detector.py  ``Detector``: the state of one config, collect or ring mode
    service.py   ``DetectorService``: the process loop (``pump``, idle wait, housekeeping)
    stats.py     the ``detector.stats`` segment (layout: ``shm_layouts.detector_stats``)

Nothing is imported here, so ``arbpipe.detect.stats`` stays free of numba for its readers.
"""
