"""L2 books end to end below the venues: FullBook (the feed's book at the venue's depth)
against a reference, the sink's LEVEL records through a real ring into the detector's
top-N blocks (exact after every message, seqlocked), and BOOK_RESYNC marking a book not
ready."""
import random

import numpy as np
import pytest

from arbpipe.books.full import BookError, FullBook
from arbpipe.books.segment import BooksSegment
from arbpipe.config import load_config
from arbpipe.detect.detector import Detector
from arbpipe.feeds.sinks import RingSink
from arbpipe.transport.rings import SpscRing
from shm_layouts import MARKET_UPDATE
from shm_layouts.books import BookState
from shm_layouts.records import BookFault, Kind


def ordered(d, side):
    return sorted(d.items(), key=lambda kv: -kv[0] if side == 0 else kv[0])


def stream(seed, n, deep=40):
    """Messages (bids, asks, snapshot) of a book that never crosses: bids below 100,
    asks above 100.5; many deletions near the top expose deeper levels."""
    rng = random.Random(seed)
    out = []
    for step in range(n):
        snap = step % 400 == 0
        bids, asks = [], []
        if snap:
            for k in range(rng.randint(0, deep)):
                bids.append([100 - k * 0.5, rng.choice([1, 2, 3])])
                asks.append([100.5 + k * 0.5, rng.choice([1, 2, 3])])
        else:
            for _ in range(rng.randint(1, 6)):
                side = rng.randint(0, 1)
                k = min(int(rng.expovariate(0.3)), deep)
                p = 100 - k * 0.5 if side == 0 else 100.5 + k * 0.5
                (bids if side == 0 else asks).append([p, rng.choice([0, 0, 1, 2, 5])])
        out.append((bids, asks, snap))
    return out


@pytest.mark.parametrize("seed,depth", [(1, 5), (2, 1), (3, 20)])
def test_full_book_and_its_top_n_changes_match_a_reference(seed, depth):
    fb = FullBook(depth)
    ref = {0: {}, 1: {}}
    top = {0: {}, 1: {}}                     # a consumer that keeps N levels
    for bids, asks, snap in stream(seed, 5000):
        if snap:
            ref[0].clear()
            ref[1].clear()
        for side, rows in ((0, bids), (1, asks)):
            for p, q in rows:
                if q == 0:
                    ref[side].pop(p, None)
                else:
                    ref[side][p] = q
        changes, moved = fb.apply(bids, asks, snap)
        if snap:
            top[0].clear()
            top[1].clear()
        for side in (0, 1):
            for p, q in changes[side]:
                if q == 0:
                    top[side].pop(p, None)
                else:
                    top[side][p] = q
            top[side] = dict(ordered(top[side], side)[:depth])
            assert ordered(top[side], side) == ordered(ref[side], side)[:depth]
            px, qty = fb.side(side)
            assert list(zip(px.tolist(), qty.tolist())) == ordered(ref[side], side)


def test_a_crossed_or_garbage_message_is_refused():
    fb = FullBook(5)
    fb.apply([[100, 1]], [[101, 1]], True)
    with pytest.raises(BookError, match="crossed"):
        fb.apply([[101.5, 1]], [], False)
    for bad in ([["x", 1]], [[-1, 1]], [[float("nan"), 1]], [[100, -2]], [[1]]):
        with pytest.raises(BookError):
            FullBook(5).apply(bad, [], True)


def _cfg():
    cfg = load_config()
    assert cfg.book_depth() == 20
    return cfg


def test_sink_levels_through_a_ring_rebuild_the_top_n_in_the_detector(instance):
    cfg = _cfg()
    depth = cfg.book_depth()
    ring = SpscRing.create("feed.okx", 1 << 16, "MarketUpdate", instance=instance)
    seg = BooksSegment.create(instance, len(cfg.instruments) + 1, len(cfg.legs()), depth)
    try:
        det = Detector(cfg, levels=seg.blocks)
        sink = RingSink(ring, cfg.venue_id("okx"), depth=depth)
        iid = 1                                       # BTC/USDT spot on okx
        leg = int(cfg.legs().tab[cfg.venue_id("okx"), 0])
        ref = FullBook(depth)
        ring.join("t")
        buf = np.zeros(1 << 12, MARKET_UPDATE)
        quotes = 0
        for k, (bids, asks, snap) in enumerate(stream(7, 3000)):
            sink.recv_ns = 1_700_000_000_000_000_000 + k
            if k == 1500:                             # a broken rule: not ready until a snapshot
                sink.book_broken(iid, BookFault.GAP)
                sink.flush()
                n = ring.pop_batch(buf)
                det.process(buf[:n])
                b = seg.read(iid, leg)
                assert b["state"] == "resyncing" and b["fault"] == "gap" and b["bids"] == []
                assert sink.book(iid, bids, asks, False, 0) is None   # refused: no snapshot
                assert sink.rejects["no_snapshot"] == 1
                snap = True
            ref.apply(bids, asks, snap)
            sink.book(iid, bids, asks, snap, 0, update_id=k)
            sink.flush()
            n = ring.pop_batch(buf)
            recs = buf[:n]
            quotes += int((recs["kind"] == Kind.QUOTE).sum())
            det.process(recs)
            b = seg.read(iid, leg)
            want_b, want_a = ref.top()
            # a message that left the top N as it was publishes nothing (its id is not seen)
            assert b["state"] == "ready" and b["update_id"] <= k
            assert b["bids"] == want_b.tolist() and b["asks"] == want_a.tolist(), k
        assert quotes > 100 and sink.book_resyncs == 1 and sink.resyncs_by_fault == {1: 1}
        assert det.stats()["filter_unknown"] == 0
        state = det.state.lvl_i[iid * len(cfg.legs()) + leg]
        assert state[0] % 2 == 0 and BookState(state[1]) == BookState.READY
    finally:
        seg.close(unlink=True)
        ring.unlink()
        ring.close()
