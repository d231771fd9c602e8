import os
import uuid

import pytest

from arbpipe.transport import segments


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


# real redis-server fixtures (skip without redis-server; fail with ARBPIPE_REQUIRE_REDIS=1)
from tests.redis_fixture import redis_server, redis_server_auth, redis_server_saving  # noqa: E402,F401
