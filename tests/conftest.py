"""Fixtures every test may use (``instance``, the redis-server ones) and the test levels:
each test is marked ``unit``, ``integration`` or ``system`` after its directory."""
import os
import uuid

import pytest

from arbpipe.transport import segments
# real redis-server fixtures (skip without redis-server; fail with ARBPIPE_REQUIRE_REDIS=1)
from tests.redis_fixture import redis_server, redis_server_auth, redis_server_saving  # noqa: F401

TESTS = os.path.dirname(os.path.abspath(__file__))
LEVELS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config, items):
    """Mark every test with its level, the directory it lives in: ``-m unit`` runs
    tests/unit only, ``-m "not system"`` skips the tests that start the whole tree."""
    for item in items:
        level = os.path.relpath(str(item.path), TESTS).split(os.sep)[0]
        if level in LEVELS:
            item.add_marker(getattr(pytest.mark, level))


def _ours(instance):
    return sorted(e for e in os.listdir("/dev/shm")
                  if e.startswith(f"arbpipe.{instance}.") or e.startswith(f"sem.arbpipe.{instance}."))


@pytest.fixture
def instance():
    """A pipeline instance name private to this test; asserts nothing of it is left in /dev/shm."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    left = _ours(name)
    segments.clean(name, everything=True)
    assert not left, f"test leaked shared-memory objects: {left}"

