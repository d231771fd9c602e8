"""Window of a hop histogram: the difference of two snapshots, and what it is when the
writer made the histogram anew between them (a restarted strategy or detector)."""
import numpy as np

from arbpipe.transport import histogram as H


def test_diff_is_what_was_recorded_between_the_snapshots():
    old = H.from_values(np.array([1_000, 2_000, 50_000]))
    new = H.from_values(np.array([1_000, 2_000, 50_000, 3_000, 3_000]))
    d = H.diff(new, old)
    assert int(d[H.W_DATA:H.W_DATA + H.NB].sum()) == 2
    assert H.summary(d)["count"] == 2
    assert H.percentile(d, 99) == H.percentile(H.from_values(np.array([3_000, 3_000])), 99)


def test_a_histogram_made_anew_in_between_is_taken_whole():
    old = H.from_values(np.array([10_000] * 50 + [900_000] * 50))
    # the writer restarted: the new histogram holds more values in total, but fewer in the
    # buckets the old one filled; a plain difference would carry negative counts there
    new = H.from_values(np.array([5_000] * 120))
    d = H.diff(new, old)
    assert (d[H.W_DATA:H.W_DATA + H.NB] >= 0).all()
    assert H.summary(d)["count"] == 120
    assert H.percentile(d, 99) == H.percentile(new, 99)
    assert d is not new                       # a copy: the caller may change it
