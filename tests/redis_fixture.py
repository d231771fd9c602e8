"""Real redis-server fixtures (``arbpipe.persist.redis_embed.EmbeddedRedis`` on a unix socket).

``redis_server``: a private server for one test (no password), ``redis_server_auth``: one
with ``--requirepass`` (``.password``). Both yield the ``EmbeddedRedis`` (``.url``,
``.client()``, ``.pause()`` / ``.resume()`` (SIGSTOP / SIGCONT), ``.stop()`` / ``.start()``
on the same socket, ``.kill()``). Without a redis-server binary the test is skipped, or
fails when ``ARBPIPE_REQUIRE_REDIS=1`` (CI). Nothing is left behind: the server is stopped
and its directory removed.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import pytest

from arbpipe.redis_conn import connect
from arbpipe.persist.redis_embed import EmbeddedRedis, redis_server_path


def require_redis_server() -> str:
    path = redis_server_path()
    if path is None:
        msg = ("redis-server is not installed (sudo apt-get install redis-server, or "
               "scripts/install-redis)")
        if os.environ.get("ARBPIPE_REQUIRE_REDIS") == "1":
            pytest.fail(msg + "; ARBPIPE_REQUIRE_REDIS=1 makes this a failure")
        pytest.skip(msg)
    return path


class TestRedis(EmbeddedRedis):
    __test__ = False

    def client(self):
        return connect(self.url, 5.0, "arbpipe-test")


def _server(password=None, save=False):
    require_redis_server()
    d = tempfile.mkdtemp(prefix="arbpipe-rt-", dir="/tmp")   # short: unix socket path limit
    srv = TestRedis(d, password=password, save=save)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop(remove_data=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_server():
    """A private redis-server (unix socket, no persistence) for this test."""
    yield from _server()


@pytest.fixture
def redis_server_saving():
    """Like ``redis_server`` but an RDB is written at ``stop()`` and read at ``start()``, so a
    stop / start keeps the data (an outage that loses nothing on the server side)."""
    yield from _server(save=True)


@pytest.fixture
def redis_server_auth():
    """A private redis-server that requires a password (``.password``, inside ``.url``)."""
    yield from _server(password="pw-" + secrets.token_hex(12))
