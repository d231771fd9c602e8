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

# Under CI=true a skipped test fails the run unless its node id is here, with the reason it
# may skip there. Root-only tests are not listed: CI runs as root, so they run; redis-server
# and tmux are installed by `make test` and required by .ci/run.
CI_SKIP_ALLOWED: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    """Mark every test with its level, the directory it lives in: ``-m unit`` runs
    tests/unit only, ``-m "not system"`` skips the tests that start the whole tree."""
    for item in items:
        level = os.path.relpath(str(item.path), TESTS).split(os.sep)[0]
        if level in LEVELS:
            item.add_marker(getattr(pytest.mark, level))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true, a skip outside ``CI_SKIP_ALLOWED`` is reported as a failure that names
    the skip's reason: a missing tool or an import regression must not pass CI quietly."""
    outcome = yield
    rep = outcome.get_result()
    if (rep.skipped and not hasattr(rep, "wasxfail") and os.environ.get("CI") == "true"
            and item.nodeid not in CI_SKIP_ALLOWED):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        rep.outcome = "failed"
        rep.longrepr = (f"skipped under CI=true: {reason} (only the tests in "
                        f"tests/conftest.py CI_SKIP_ALLOWED may skip in CI)")


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

