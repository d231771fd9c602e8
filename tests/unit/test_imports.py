"""The supervisor never loads numba and LLVM (about 38 MiB of USS it would hold for nothing):
neither through its imports nor through what it runs (creating the rings, the drain check,
the console line). Each check runs in a fresh interpreter, so that nothing the test session
imported hides a regression. The roles bind the kernels with their first ring handle
(``arbpipe.transport.rings.jit``), and ``view.peek`` reads as ``kernels.peek`` does."""
import os
import subprocess
import sys

import numpy as np
import pytest

from arbpipe.transport import kernels as K
from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
from arbpipe.transport.rings import view as V
from shm_layouts import ring as L

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JIT = ("numba", "llvmlite", "arbpipe.transport.kernels")


def loaded_after(code: str) -> list[str]:
    """The modules of ``JIT`` a fresh interpreter holds after running ``code``."""
    probe = code + f"\nimport sys\nprint(sorted(m for m in {JIT!r} if m in sys.modules))\n"
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return eval(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("modules", [
    "arbpipe.ops.tree, arbpipe.ops.supervisor",                 # `arbpipe up`'s process
    "procs.cli, arbpipe.ops.cli, arbpipe.replay.source",        # the command line, --replay
    "arbpipe.transport.rings, arbpipe.ops.stat",
])
def test_the_supervisor_imports_no_numba(modules):
    assert loaded_after(f"import {modules}") == []


def test_the_supervisor_runs_its_ring_work_without_numba(instance):
    """Create the rings as ``Supervisor.create_rings`` does, read them as the drain check and
    the console line do, remove them: numba stays out."""
    code = f"""
import numpy as np
from arbpipe.ops import stat
from arbpipe.ops.tree import Console
from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, MpmcRing, SpscRing
from arbpipe.transport.rings import view as V
made = [SpscRing.create_segment("feed.x", 64, "MarketUpdate", instance={instance!r}),
        MpmcRing.create_segment("q", 64, 64, instance={instance!r}),
        BroadcastRing.create_segment("opportunities", 64, "Opportunity", "overwrite",
                                     instance={instance!r})]
rows = stat.snapshot({instance!r})
assert sorted(r["name"] for r in rows) == ["feed.x", "opportunities", "q"], rows
assert all(r["fill"] == 0 for r in rows)
Console({instance!r}).summary()
with V.attach("opportunities", {instance!r}) as v:
    out = np.zeros(3, np.int64)
    V.peek(v.w, int(v.KIND), 0, np.zeros(8 * v.rw, np.int64), 8, out)
    assert list(out) == [0, 0, 0] and V.head_of(v.w) == 0
for s in made:
    s.close()
segments.clean({instance!r}, everything=True)
"""
    assert loaded_after(code) == []


def test_a_ring_handle_binds_the_kernels(instance):
    code = f"""
import numpy as np
from arbpipe.transport.rings import SpscRing, doorbell, spsc
assert spsc.K is None
r = SpscRing.create("k", 8, 64, instance={instance!r})
assert spsc.K is doorbell.K is not None and r.push_batch(np.zeros(8, np.int64)) == 1
r.close()
r.unlink()
"""
    assert loaded_after(code) == sorted(JIT)


@pytest.mark.parametrize("cls,policy", [(SpscRing, "drop"), (MpmcRing, "drop"),
                                        (BroadcastRing, "overwrite")])
def test_view_peek_reads_what_the_kernel_peek_reads(instance, cls, policy):
    ring = cls.create("r", 16, 16, policy=policy, instance=instance)
    reader = cls.attach("r", instance=instance)
    try:
        rw, rng = ring.rw, np.random.default_rng(7)
        n = 0
        for step in range(40):                        # wraps, laps (broadcast), fills
            k = int(rng.integers(0, 9))
            words = np.arange(n * rw, (n + k) * rw, dtype=np.int64)
            n += ring.push_words(words, k)
            if cls is not BroadcastRing and step % 3 == 0:
                reader.pop_words(np.zeros(8 * rw, np.int64), int(rng.integers(0, 9)))
            assert V.head_of(ring.w) == int(K.head_of(ring.w))
            claim = int(ring.w[L.W_CLAIM])
            # SPSC: a producer that has claimed 3 slots past head (mid-push) may be tearing
            # the oldest records: both peeks drop the same ones
            for torn in ((0, 3) if cls is SpscRing else (0,)):
                ring.w[L.W_CLAIM] = claim + torn
                for pos in (0, max(n - 20, 0), max(n - 5, 0), n, n + 3):
                    for m in (1, 4, 32):
                        a, b = np.zeros(32 * rw, np.int64), np.zeros(32 * rw, np.int64)
                        oa, ob = np.zeros(3, np.int64), np.zeros(3, np.int64)
                        V.peek(ring.w, int(ring.KIND), pos, a, m, oa)
                        K.peek(ring.w, int(ring.KIND), pos, b, m, ob)
                        assert list(oa) == list(ob), (step, torn, pos, m)
                        assert np.array_equal(a[:oa[1] * rw], b[:ob[1] * rw])
                ring.w[L.W_CLAIM] = claim
    finally:
        reader.close()
        ring.close()
        ring.unlink()
