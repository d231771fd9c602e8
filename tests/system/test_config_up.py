"""``arbpipe up --detach`` with a bad config exits 2 and starts nothing: no process,
nothing in /dev/shm, no status file. The bad configs (``BAD``) are the config-fuzz ones of
tests/unit/test_config_fuzz.py."""
import os
import subprocess
import sys

import psutil
import pytest

from tests.unit.test_config_fuzz import BAD


@pytest.mark.parametrize("case", sorted(BAD))
def test_up_with_a_bad_config_exits_2_and_starts_nothing(instance, tmp_path, case):
    text, named = BAD[case]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    env = dict(os.environ, ARBPIPE_RUN_DIR=str(tmp_path / "run"), ARBPIPE_INSTANCE=instance)
    before = {p.pid for p in psutil.process_iter()}
    r = subprocess.run([sys.executable, "-m", "procs.cli", "up", "--detach", "--config",
                        str(cfg)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert named in r.stderr, r.stderr
    assert not [e for e in os.listdir("/dev/shm") if f".{instance}." in e]
    new = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid not in before and instance in " ".join(p.info["cmdline"] or []):
            new.append(p.pid)
    assert not new, f"processes of {instance} were started: {new}"
    assert not os.path.exists(tmp_path / "run" / instance / "status.json")
