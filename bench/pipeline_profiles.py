"""``arbpipe bench profiles``: `arbpipe bench pipeline`'s real tree under both ``[cpu]``
profiles, low rates included, in one artifact (bench/results/pipeline-profiles.json).

For each profile (default: the detector and the strategy sleep when idle; low-latency: they
busy-spin on cores of their own, or yield on a shared hot core) the tree setup of
bench/pipeline.py runs at the given rates, ``repeat`` times; the profiles run one after the
other in the same session (each run's host load is kept in the artifact). Figures only.
"""
from __future__ import annotations

import time

from arbpipe.transport.idle import PROFILES
from bench.harness import save_result
from bench.pipeline import parse_rates, run

DEFAULT_RATES = "200,1k,10k,100k"
HOPS = ("feed_to_detector", "detect", "publish_to_strategy")


def measure(rates: str = DEFAULT_RATES, repeat: int = 3, duration: float = 4.0,
            progress: bool = True) -> dict:
    out = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": f"arbpipe bench profiles --rates {rates} --repeat {repeat} "
                      f"--duration {duration:g}",
           "rates": parse_rates(rates), "profiles": {}}
    for p in PROFILES:
        res = run(rates, duration, 0.5, [], tree=True, progress=progress, repeat=repeat,
                  profile=p)
        out["profiles"][p] = {
            "host": res["host"], "pinning": res["pinning"], "repeat": res["repeat"],
            "notes": res["notes"],
            "runs": [{k: r.get(k) for k in ("rate", "achieved_rate", "sustained", "total",
                                            "spread", "hops", "drops", "repeats")}
                     for r in res["runs"] if r["setup"] == "tree"]}
    return out


def save(res: dict) -> str:
    return save_result(res, "pipeline-profiles.json")
