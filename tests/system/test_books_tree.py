"""L2 books on a running tree (the default: depth 20 on every venue, on the simulator):
every venue's books become ready, `arbpipe book` shows each leg's ladder (sorted, not
crossed, at most N levels), and `arbpipe stat feeds` and the detector's books agree. Depth
faults through real sockets are in tests/integration/test_books_*.py."""
import json

from bench.harness import Tree, tree_config
from tests.helpers import cli, wait_for


def _book(t, instrument="BTC/USDT", *extra):
    r = cli("book", instrument, "--json", "--instance", t.instance, *extra, env=t.env,
            check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _feeds(t):
    return json.loads(cli("stat", "feeds", "--json", "--instance", t.instance,
                          env=t.env).stdout)


def test_every_venue_keeps_ready_books_and_arbpipe_book_shows_them(instance, tmp_path):
    cfg = tree_config(str(tmp_path / "arbpipe.toml"), 50.0)
    t = Tree(instance, str(tmp_path), cfg)
    t.up()
    try:
        rows = wait_for(lambda: (lambda b: b if b and all(
            r["state"] == "ready" and r["bids"] and r["asks"] for r in b) else None)(_book(t)),
            180, "every leg's BTC/USDT book ready")
        assert len(rows) == 9                       # 8 venues, OKX spot and SWAP
        for r in rows:
            assert len(r["bids"]) <= 20 and len(r["asks"]) <= 20
            assert r["bids"][0][0] < r["asks"][0][0]            # not crossed
            assert [p for p, _ in r["bids"]] == sorted((p for p, _ in r["bids"]), reverse=True)
            assert [p for p, _ in r["asks"]] == sorted(p for p, _ in r["asks"])
        okx = _book(t, "BTC/USDT", "--venue", "okx", "--depth", "3")
        assert [r["leg"] for r in okx] == ["okx", "okx-perp"]
        assert all(len(r["bids"]) <= 3 for r in okx)
        feeds = wait_for(lambda: (lambda f: f if len(f) == 8 and all(
            x["books"] and x["books_ready"] == x["books"] for x in f) else None)(_feeds(t)),
            120, "every feed's books ready")
        assert all(x["book_messages"] > 0 and x["book_levels"] > 0 for x in feeds)
        text = cli("stat", "detector", "--instance", instance, env=t.env).stdout
        assert "books (the detector uses only ready ones)" in text and "resyncing" not in text
        bad = cli("book", "NOPE/USDT", "--instance", instance, env=t.env, check=False)
        assert bad.returncode == 2 and "unknown instrument" in bad.stderr
    finally:
        t.down()
