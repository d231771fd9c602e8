"""`arbpipe bench reliability --only PART --out FILE --merge`: only the parts run replace
theirs in FILE (bench/reliability.py ``merge``); ``measured`` says when each was measured."""
from bench import reliability as R


def _fb(crashes=0):
    return {"total": {"crashes": crashes, "parse_errors": 0, "rest_crashes": 0}}


def test_merge_replaces_only_the_parts_run_and_keeps_the_totals_honest():
    saved = {"started": "then", "kills": {"x": 20}, "crashes": 0, "frames_fuzzed": 8,
             "fuzz": {"total": {"crashes": 0, "parse_errors": 0}},
             "tree": {"t": 1}, "restart_max_s": 0.4,
             "measured": {"tree": "this run (started then)", "fuzz": "this run (started then)"}}
    new = {"started": "now", "kills": {}, "crashes": 1, "fuzz_books": _fb(1),
           "fuzz_books_ok": False, "measured": {"fuzz-books": "this run (started now)"}}
    m = R.merge(saved, new)
    assert m["started"] == "then" and m["tree"] == {"t": 1} and m["kills"] == {"x": 20}
    assert m["fuzz_books"] == new["fuzz_books"] and m["fuzz_books_ok"] is False
    assert m["measured"] == {"tree": "this run (started then)", "fuzz": "this run (started then)",
                             "fuzz-books": "this run (started now)"}
    assert m["crashes"] == 1            # the depth fuzz's crash counts in the total
    assert saved["measured"] == {"tree": "this run (started then)",
                                 "fuzz": "this run (started then)"}   # not changed in place
    assert set(R.SECTIONS) == set(R.PARTS)
