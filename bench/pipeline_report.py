"""The report of ``arbpipe bench pipeline``: the result document as markdown (``render``),
the latency percentile spectrum per transport as a figure (``plot``, when matplotlib is
installed), and all three written to a directory (``save``: bench/results by default)."""
from __future__ import annotations

import json
import os

import numpy as np

from bench.pipeline_runs import BACKLOG_OK, HOPS, TRANSPORTS


RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def find_run(runs, setup, transport, rate):
    for r in runs:
        if r["setup"] == setup and r["transport"] == transport and r["rate"] == rate:
            return r
    return None


# ------------------------------------------------------------------ output ----

def _us(v) -> str:
    if v is None or v != v:
        return "-"
    return f"{v / 1000:.1f} µs" if v < 100_000 else f"{v / 1e6:.2f} ms"


def _rate(v) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def _qs(r: dict, q: str) -> str:
    """A total-latency quantile: the value, and with repeats the min-max of the runs."""
    sp = (r.get("spread") or {}).get("total", {}).get(q)
    if not sp or r.get("repeats", 1) < 2:
        return _us(r["total"][q])
    return f"{_us(r['total'][q])} ({_us(sp[0])}–{_us(sp[1])})"


def render(res: dict) -> str:
    h = res["host"]
    w = res["workload"]
    L = [f"# arbpipe bench pipeline ({h['time']})", "",
         f"Host: {h['cpu']}, {h['cores']} cores, Python {h['python']}. {res['pinning']['note']}.",
         f"Workload: {w['updates']:,} synthetic updates ({w['venues']} venues, {w['legs']} legs, "
         f"{w['instruments']} instruments), replayed in a loop; {w['opportunity_share']:.2%} of "
         f"updates produce an OPEN/UPDATE opportunity. {res['warmup_s']} s warm-up + "
         f"{res['duration_s']} s measured per rate; the generator sends what is due at least "
         f"every {res['generator_tick_us']:g} µs (stamped when sent)"
         + (f"; measured processes at nice {res['nice']}" if res.get("nice") else "")
         + (f". Each setup ran {res['repeat']} times, interleaved: figures are medians, "
            f"with the min–max of the runs in brackets" if res.get("repeat", 1) > 1 else "")
         + f". Channels hold {res['channel_capacity']:,} records; a full channel drops "
         f"(counted).", ""]
    tree = [r for r in res["runs"] if r["setup"] == "tree"]
    if tree:
        L += ["## Real tree: replay -> feed rings -> procs.detector -> opportunities -> "
              f"{res.get('reader') or 'reader'}", "",
              "| rate | achieved/s | drops | total p50 | p99 | p99.9 | max | feed->det p50/p99 "
              "| detect p50/p99 | publish->read p50/p99 | CPU % replay/det/reader |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in tree:
            hp = r["hops"]
            L.append(f"| {_rate(r['rate'])} | {_rate(r['achieved_rate'])} | {r['drops']:,} | "
                     f"{_qs(r, 'p50_ns')} | {_qs(r, 'p99_ns')} | "
                     f"{_qs(r, 'p999_ns')} | {_us(r['total']['max_ns'])} | "
                     + " | ".join(f"{_us(hp[x]['p50_ns'])} / {_us(hp[x]['p99_ns'])}" for x in HOPS)
                     + f" | {_cpus(r)} |")
        L.append("")
    harness = [r for r in res["runs"] if r["setup"] == "harness"]
    if harness:
        L += ["## Same pipeline, transport swapped (generator -> detector kernel -> reader)", "",
              "| rate | transport | achieved/s | drops | total p50 | p99 | p99.9 | max | "
              "p50 / arbpipe | p99 / arbpipe | CPU % gen/det/reader |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rate in res["rates"]:
            ref = find_run(res["runs"], "harness", "arbpipe", rate)
            for t in TRANSPORTS:
                r = find_run(res["runs"], "harness", t, rate)
                if not r:
                    continue

                def ratio(q):
                    if not ref or not ref["total"][q] or not r["total"][q]:
                        return "-"
                    return f"{r['total'][q] / ref['total'][q]:,.1f}x"
                L.append(f"| {_rate(rate)} | {t} | {_rate(r['achieved_rate'])} | "
                         f"{r['drops']:,} | {_qs(r, 'p50_ns')} | "
                         f"{_qs(r, 'p99_ns')} | {_qs(r, 'p999_ns')} | "
                         f"{_us(r['total']['max_ns'])} | {ratio('p50_ns')} | {ratio('p99_ns')} | "
                         f"{_cpus(r)} |")
        L += ["", "Per hop (p50 / p99):", "",
              "| rate | transport | feed -> detector | detect | publish -> reader |",
              "|---:|---|---:|---:|---:|"]
        for r in harness:
            L.append(f"| {_rate(r['rate'])} | {r['transport']} | "
                     + " | ".join(f"{_us(r['hops'][x]['p50_ns'])} / {_us(r['hops'][x]['p99_ns'])}"
                                  for x in HOPS) + " |")
        L.append("")
    L += ["## Summary", ""]
    by = res["max_zero_drop_rate_by"]
    L.append("- highest rate sustained end to end (zero drops, >= 95% of it achieved, no stage "
             f"ending the window more than {BACKLOG_OK:,} records behind; of the rates run"
             + (", plus the search below" if res.get("search") else "") + "): "
             + ", ".join(f"{k} {_rate(v) if v else 'none'}" for k, v in by.items()))
    if tree:
        v = res["max_zero_drop_rate_detector"]
        L.append(f"- real tree, detector alone (replay -> feed rings -> detector: no input "
                 f"drops, keeping up): {_rate(v) if v else 'none'}")
    if res.get("search"):
        L.append("- search (real tree): " + ", ".join(
            f"{_rate(r['rate'])} {'sustained' if r['sustained'] else 'not'}"
            f" ({_rate(r['achieved_rate'])}/s, {r['drops']:,} drops)" for r in res["search"]))
    for r in res["runs"]:
        if r["sustained"]:
            continue
        d = r["drops_detail"]
        why = [f"achieved {_rate(r['achieved_rate'])}/s"]
        if r["generator_behind"]:
            why.append(f"the generator fell {r['generator_behind']:,} records behind")
        if d["input_full"]:
            why.append(f"{d['input_full']:,} refused by a full input channel (the detector "
                       f"could not keep up)")
        if d["output_full"]:
            why.append(f"{d['output_full']:,} refused by a full output channel")
        if d["reader_lost"]:
            why.append(f"the reader lost {d['reader_lost']:,} (lapped)")
        bl = r["backlog_at_end"]
        if bl["detector"] > BACKLOG_OK:
            why.append(f"the detector ended the window {bl['detector']:,} updates behind")
        if bl["reader"] > BACKLOG_OK:
            why.append(f"the reader ended the window {bl['reader']:,} opportunities behind")
        L.append(f"- {r['setup']} {r['transport']} at {_rate(r['rate'])}/s not sustained: "
                 + "; ".join(why))
    for t in res["targets"]:
        v = t.get("value_ns")
        val = _us(v) if v is not None else (f"{t['value']:.1f}x" if isinstance(
            t.get("value"), float) else json.dumps(t.get("value")))
        L.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']} "
                 f"(measured {val}{', ' + t['setup'] if t.get('setup') else ''})")
    for n in res["notes"][1:]:
        L.append(f"- {n}")
    return "\n".join(L)


def _cpus(r) -> str:
    c = r["cpu_pct"]
    return " / ".join("-" if c.get(k) is None else f"{c[k]:.0f}" for k in ("gen", "det", "reader"))


COLORS = {"arbpipe": "tab:blue", "mp-queue": "tab:red", "faster-fifo": "tab:orange",
          "pyzmq": "tab:green"}


def plot(res: dict, path: str) -> bool:
    """Latency percentile spectrum of the total hop, per transport, one panel per rate."""
    try:
        import matplotlib  # lazy: optional (bench extra); without it there is no figure
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: as above, after choosing the Agg backend
    except ImportError:
        return False
    rates = res["rates"]
    fig, axes = plt.subplots(1, len(rates), figsize=(5.5 * len(rates), 4.5), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        for r in res["runs"]:
            if r["rate"] != rate or not r["total_buckets"]:
                continue
            b = np.array(r["total_buckets"], dtype=np.float64)
            low, cnt = b[:, 0], b[:, 1]
            cum = np.cumsum(cnt) / cnt.sum()
            q = np.clip(cum, 0, 1 - 1e-6)
            x = 1.0 / (1.0 - q)
            tree = r["setup"] == "tree"
            label = "arbpipe (real tree)" if tree else r["transport"]
            ax.step(x, np.maximum(low, 1) / 1e3, where="post", label=label,
                    linestyle="--" if tree else "-",
                    color="black" if tree else COLORS.get(r["transport"]))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [2, 10, 100, 1000, 10000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlim(1, 2e4)
        ax.set_title(f"{_rate(rate)} updates/s")
        ax.set_xlabel("percentile")
        ax.set_ylabel("feed ring -> reader latency (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("arbpipe bench pipeline: total latency by transport")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def save(res: dict, out_dir: str = RESULTS_DIR) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "pipeline.json"),
             "md": os.path.join(out_dir, "pipeline.md"),
             "png": os.path.join(out_dir, "pipeline.png")}
    with open(paths["json"], "w") as f:
        json.dump(res, f, indent=1)
    with open(paths["md"], "w") as f:
        f.write(render(res) + "\n")
    if not plot(res, paths["png"]):
        paths.pop("png")
    return paths
