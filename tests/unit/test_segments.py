"""Segment safety: refusal of foreign or mismatched segments, stale reclaim, no leaks."""
import mmap
import multiprocessing as mp
import os
import stat
import subprocess
import sys

import numpy as np
import posix_ipc
import pytest

from arbpipe.transport import segments
from arbpipe.transport.rings import BroadcastRing, SpscRing, attach_any
from shm_layouts import ring as L
from tests import ring_workers as W

CTX = mp.get_context("spawn")


def _poke(instance, name, off, dtype, value):
    shm = posix_ipc.SharedMemory(segments.shm_name(instance, name))
    mm = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    np.frombuffer(mm, np.uint8)[off:off + np.dtype(dtype).itemsize].view(dtype)[0] = value
    mm.close()


def test_created_with_mode_0600_and_instance_in_name(instance):
    r = SpscRing.create("feed.binance", 64, "MarketUpdate", instance=instance)
    path = f"/dev/shm/arbpipe.{instance}.feed.binance"
    st_ = os.stat(path)
    assert stat.S_IMODE(st_.st_mode) == 0o600 and st_.st_uid == os.geteuid()
    for tag in ("c", "p"):
        assert stat.S_IMODE(os.stat(f"/dev/shm/sem.arbpipe.{instance}.feed.binance.{tag}")
                            .st_mode) == 0o600
    # the same ring name under another instance does not collide
    other = SpscRing.create("feed.binance", 64, "MarketUpdate", instance=instance + "b")
    other.unlink()
    other.close()
    r.unlink()
    r.close()


@pytest.mark.parametrize("what,off,dtype,value,msg", [
    ("magic", L.OFF_MAGIC, np.uint64, 0x1234, "bad magic"),
    ("version", L.OFF_VERSION, np.uint32, L.LAYOUT_VERSION + 1, "layout version"),
])
def test_attach_refuses_wrong_header(instance, what, off, dtype, value, msg):
    r = SpscRing.create("x", 64, "MarketUpdate", instance=instance)
    _poke(instance, "x", off, dtype, value)
    with pytest.raises(segments.SegmentError, match=msg):
        SpscRing.attach("x", instance=instance)
    r.unlink()
    r.close()


def test_attach_refuses_wrong_record_size_and_kind(instance):
    r = SpscRing.create("x", 64, "MarketUpdate", instance=instance)
    with pytest.raises(segments.SegmentError, match="record size 64 bytes, expected 192"):
        SpscRing.attach("x", instance=instance, record="Opportunity")
    with pytest.raises(segments.SegmentError, match="ring kind"):
        BroadcastRing.attach("x", instance=instance)
    assert isinstance(attach_any("x", instance=instance), SpscRing)
    r.unlink()
    r.close()


def test_an_opportunity_ring_of_layout_1_is_refused_by_name(instance):
    """A ring an older arbpipe made for 128-byte Opportunity records (record type 2)."""
    r = BroadcastRing.create("opportunities", 64, 128, instance=instance)
    _poke(instance, "opportunities", L.OFF_RECORD_TYPE, np.uint32, 2)
    try:
        with pytest.raises(segments.SegmentError, match=r"Opportunity layout 1 records "
                           r"\(128 bytes\) of an older arbpipe.*Opportunity records of 192 "
                           r"bytes: stop that tree \(arbpipe down\)"):
            BroadcastRing.attach("opportunities", instance=instance, record="Opportunity")
    finally:
        r.unlink()
        r.close()


def test_attach_refuses_a_non_arbpipe_segment(instance):
    path = segments.shm_name(instance, "junk")
    shm = posix_ipc.SharedMemory(path, posix_ipc.O_CREX, 0o600, size=4096)
    os.write(shm.fd, b"not an arbpipe header" * 10)
    shm.close_fd()
    with pytest.raises(segments.SegmentError, match="bad magic"):
        SpscRing.attach("junk", instance=instance)
    posix_ipc.unlink_shared_memory(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a segment to another uid")
def test_attach_refuses_a_segment_owned_by_another_uid(instance):
    r = SpscRing.create("foreign", 64, "MarketUpdate", instance=instance)
    os.chown(f"/dev/shm/arbpipe.{instance}.foreign", 65534, 65534)
    with pytest.raises(segments.SegmentError, match="owned by uid 65534"):
        SpscRing.attach("foreign", instance=instance)
    r.unlink()
    r.close()


def test_another_uid_cannot_open_our_segment(instance):
    """Run as 'nobody': mode 0600 keeps our segment unreadable to another user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to a second uid")
    r = SpscRing.create("private", 64, "MarketUpdate", instance=instance)
    path = f"/dev/shm/arbpipe.{instance}.private"
    for mode in ("<", ">>"):  # shm_open is open(2) on /dev/shm: try to read, then to write
        res = subprocess.run(["/bin/sh", "-c", f"exec 3{mode}{path}"], user=65534, group=65534,
                             cwd="/", capture_output=True, text=True)
        assert res.returncode != 0 and "ermission denied" in res.stderr, res
    r.unlink()
    r.close()


def test_stale_segment_of_dead_creator_is_detected_and_reclaimed(instance):
    p = CTX.Process(target=W.create_and_die, args=("spsc", instance, "orphan"))
    p.start()
    p.join(60)
    assert p.exitcode == -9
    (s,) = segments.list_segments(instance)
    assert s.name == "orphan" and s.stale
    # `up` over a dead run: create reclaims it
    r = SpscRing.create("orphan", 64, "MarketUpdate", instance=instance)
    assert not segments.list_segments(instance)[0].stale
    r.close()
    # a live creator's segment is not reclaimable...
    with pytest.raises(segments.SegmentExists, match="alive"):
        SpscRing.create("orphan", 64, "MarketUpdate", instance=instance)
    # ...and `clean` leaves it alone unless asked for everything
    assert segments.clean(instance) == []
    removed = segments.clean(instance, everything=True)
    assert f"/arbpipe.{instance}.orphan" in removed
    assert not [e for e in os.listdir("/dev/shm") if instance in e]


def test_cli_clean_removes_stale_segments(instance):
    p = CTX.Process(target=W.create_and_die, args=("broadcast", instance, "dead"))
    p.start()
    p.join(60)
    out = subprocess.run([sys.executable, "-m", "procs.cli", "clean", "--instance", instance],
                         capture_output=True, text=True, check=True).stdout
    assert f"removed /arbpipe.{instance}.dead" in out
    assert not [e for e in os.listdir("/dev/shm") if instance in e]


def test_cli_clean_all_keeps_a_live_creators_segment_and_says_why(instance):
    """`arbpipe clean --all` never removes a segment whose creator lives (here: this test
    process), names it as skipped with its pid, and removes the dead creator's one."""
    p = CTX.Process(target=W.create_and_die, args=("spsc", instance, "dead"))
    p.start()
    p.join(60)
    live = SpscRing.create("live", 64, "MarketUpdate", instance=instance)
    try:
        env = dict(os.environ, ARBPIPE_INSTANCE=instance)   # --all: every instance even so
        outs = [subprocess.run([sys.executable, "-m", "procs.cli", *args], env=env,
                               capture_output=True, text=True, check=True).stdout
                for args in (["clean", "--all", "--instance", instance], ["clean", "--all"])]
        assert f"removed /arbpipe.{instance}.dead" in outs[0]
        for out in outs:
            assert f"skipped arbpipe.{instance}.live: creator pid {os.getpid()} alive" in out
        assert segments.probe(instance, "live") is not None
        left = [s.name for s in segments.list_segments(instance)]
        assert left == ["live"], left
    finally:
        live.unlink()
        live.close()
    assert not [e for e in os.listdir("/dev/shm") if instance in e]


def test_clean_everything_takes_one_instance():
    with pytest.raises(ValueError, match="one instance"):
        segments.clean(None, everything=True)


def test_pid_reuse_is_not_mistaken_for_the_creator():
    me = os.getpid()
    assert segments.pid_alive(me, segments.process_start_ticks(me))
    assert not segments.pid_alive(me, segments.process_start_ticks(me) + 1)
    assert not segments.pid_alive(0)


def test_names_are_validated():
    with pytest.raises(segments.SegmentError):
        segments.shm_name("bad/inst", "x")
    with pytest.raises(segments.SegmentError):
        segments.shm_name("a.b", "x")
