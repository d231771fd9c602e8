"""``arbpipe backtest`` on a small synthetic recording (quotes, funding and the L2 LEVEL
records of each top change, as a feed publishes them): the same input gives the same
report byte for byte; bad input (a truncated or corrupt file, an unknown or mistyped
--set / --sweep key, an existing --out) is refused with the right exit code, naming the
byte offset or the key, and writes nothing. The live-tree agreement is
tests/system/test_backtest_tree.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from arbpipe.backtest import load as LD
from arbpipe.backtest.cli import backtest_command, parse_value
from arbpipe.config import load_config
from arbpipe.replay.file import names_from_config, write_recording
from bench.workload import make_stream
from shm_layouts import MARKET_UPDATE
from shm_layouts.records import MARKET_UPDATE_LEVEL, Flag, Kind

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def with_book_messages(stream: np.ndarray) -> np.ndarray:
    """Each QUOTE preceded by the depth message that moved the top (its new best bid,
    then its best ask with BOOK_END), received with it, as a feed publishes them."""
    q = stream["kind"] == Kind.QUOTE
    per = np.where(q, 3, 1)
    at = np.cumsum(per) - per                       # where each source record's group starts
    out = np.zeros(int(per.sum()), MARKET_UPDATE)
    out[at + per - 1] = stream
    lv = out.view(MARKET_UPDATE_LEVEL)
    for off, side in ((0, "bid"), (1, "ask")):
        idx = at[q] + off
        src = stream[q]
        for f in ("instrument_id", "venue_id", "exchange_ts_ns", "recv_ts_ns", "seq"):
            lv[f][idx] = src[f]
        lv["kind"][idx] = int(Kind.LEVEL)
        lv["flags"][idx] = int(Flag.BOOK_ASK | Flag.BOOK_END) if off else 0
        lv["price"][idx] = src[side]
        lv["qty"][idx] = src[side + "_qty"]
        lv["depth"][idx] = 20
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    cfg = load_config()
    recs = with_book_messages(make_stream(cfg, 6000, seed=7, dislocation_p=0.02))
    path = str(tmp_path_factory.mktemp("bt") / "synthetic.arbrec")
    write_recording(path, recs, names_from_config(cfg, source="test"))
    return path


def run(rec, out, *args, **kw):
    msgs = []
    kw.setdefault("quiet", True)
    code = backtest_command(rec, out=str(out), echo=msgs.append, err=msgs.append, **kw)
    return code, "\n".join(msgs)


def test_the_same_recording_and_settings_give_the_same_report(recording, tmp_path):
    code, out = run(recording, tmp_path / "a", latency="0,5", sweeps=["strategy.min_net_bps=2,4"])
    assert code == 0, out
    assert "updates/s" in out
    code, out = run(recording, tmp_path / "b", latency="0,5", sweeps=["strategy.min_net_bps=2,4"])
    assert code == 0, out
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert (a / "journal.jsonl").read_bytes() == (b / "journal.jsonl").read_bytes()
    doc = json.loads((a / "report.json").read_text())
    m = doc["run"]
    assert m["updates"] == len(LD.load(recording)) and m["trades"] > 0
    assert m["journal"]["order"]["count"] >= 2 * m["trades"]
    assert m["journal"]["fill"]["fee"] == pytest.approx(m["fees"])
    assert [r["latency_ms"] for r in doc["latency"]] == [0.0, 5.0]
    assert [r["strategy.min_net_bps"] for r in doc["sweep"]["rows"]] == [2, 4]
    md = (a / "report.md").read_text()
    for part in ("Throughput", "capture ratio", "Latency sensitivity", "## Sweep",
                 "PnL by venue", "Sharpe per trade"):
        assert part in md, part
    for png in doc["plots"]:       # deterministic PNGs (matplotlib installed by make)
        assert (a / png).read_bytes() == (b / png).read_bytes(), png


def test_a_truncated_recording_names_the_byte_offset_and_writes_nothing(recording, tmp_path):
    data = open(recording, "rb").read()
    hs = int(np.frombuffer(data[16:20], "<u4")[0])
    cut = tmp_path / "cut.arbrec"
    cut.write_bytes(data[:hs + 100 * 64 + 10])          # inside record 100
    code, out = run(str(cut), tmp_path / "out")
    assert code == 1 and f"byte offset {hs + 100 * 64 + 10}" in out and "truncated" in out, out
    assert not (tmp_path / "out").exists()
    # a crashed recorder's file (no record count in the header) with a torn last record
    torn = bytearray(data[:hs + 100 * 64 + 10])
    torn[24:32] = bytes(8)
    cut.write_bytes(bytes(torn))
    code, out = run(str(cut), tmp_path / "out")
    assert code == 1 and f"byte offset {hs + 100 * 64}" in out and "partial record" in out, out


def test_a_corrupt_record_names_its_byte_offset(recording, tmp_path):
    data = bytearray(open(recording, "rb").read())
    hs = int(np.frombuffer(bytes(data[16:20]), "<u4")[0])
    data[hs + 5 * 64 + 6] = 77                            # record 5: kind 77
    bad = tmp_path / "bad.arbrec"
    bad.write_bytes(bytes(data))
    code, out = run(str(bad), tmp_path / "out")
    assert code == 1 and f"byte offset {hs + 5 * 64 + 6}" in out and "kind 77" in out, out
    bad.write_bytes(b"NOTAREC!" + bytes(data[8:]))
    code, out = run(str(bad), tmp_path / "out")
    assert code == 1 and "byte offset 0" in out, out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, key", [
    (dict(sets=["strategy.no_such_key=1"]), "strategy.no_such_key"),
    (dict(sets=["strategy.latency_ms=fast"]), "strategy.latency_ms"),
    (dict(sweeps=["detector.min_net=1,2"]), "detector.min_net"),
    (dict(sweeps=["strategy.mode=trade,sometimes"]), "strategy.mode"),
    (dict(latency="1,soon"), "soon"),
])
def test_a_bad_key_or_value_exits_2_naming_it(recording, tmp_path, args, key):
    code, out = run(recording, tmp_path / "out", **args)
    assert code == 2 and key in out, out
    assert not (tmp_path / "out").exists()


def test_an_existing_out_is_kept_without_force(recording, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, msg = run(recording, out)
    assert code == 2 and "--force" in msg
    assert os.listdir(out) == ["mine.txt"]
    code, msg = run(recording, out, force=True)
    assert code == 0, msg
    assert not (out / "mine.txt").exists() and (out / "report.json").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".backtest-")]


def test_the_command_is_registered_and_exits_2_on_an_unknown_key(recording, tmp_path):
    p = subprocess.run([sys.executable, "-m", "procs.cli", "backtest", recording, "--out",
                        str(tmp_path / "o"), "--set", "detector.bogus=1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "detector.bogus" in p.stderr, p.stdout + p.stderr


def test_set_values_are_read_as_toml():
    assert parse_value("2") == 2 and parse_value("2.5") == 2.5 and parse_value("true") is True
    assert parse_value("observe") == "observe" and parse_value('"x"') == "x"


def test_loaded_records_are_in_receive_time_order(recording):
    d = LD.load(recording)
    assert d.records.dtype == MARKET_UPDATE and np.all(np.diff(d.recv) >= 0)


def test_json_prints_the_report_document(recording, tmp_path):
    printed, said = [], []
    code = backtest_command(recording, out=str(tmp_path / "j"), as_json=True,
                            echo=printed.append, err=said.append)
    assert code == 0, said
    doc = json.loads("\n".join(printed))
    assert doc == json.loads((tmp_path / "j" / "report.json").read_text())
    assert "throughput" in "\n".join(said)


def test_a_recording_of_other_instruments_exits_2_naming_the_id(recording, tmp_path):
    cfg = load_config()
    names = names_from_config(cfg, source="test")
    names["instruments"]["1"] = "FOO/USDT"
    other = str(tmp_path / "other.arbrec")
    write_recording(other, LD.load(recording).records, names)
    code, out = run(other, tmp_path / "out")
    assert code == 2 and "instrument id 1" in out and "FOO/USDT" in out, out
    assert not (tmp_path / "out").exists()
