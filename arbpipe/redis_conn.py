"""How every process finds and reaches the pipeline's Redis: the URL (first that is set wins:
``$ARBPIPE_REDIS_URL``, ``[redis] url``, the embedded server of a running tree of the
instance, else none), the key prefix of an instance, and a client that fails fast."""
from __future__ import annotations

import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from arbpipe.paths import run_dir

ENV_URL = "ARBPIPE_REDIS_URL"
URL_FILE = "redis.url"          # in the run dir while an embedded server runs
IO_TIMEOUT_S = 2.0              # connect and per-round-trip timeout


def configured_url(cfg) -> str:
    """$ARBPIPE_REDIS_URL, else ``cfg.redis.url`` (``""``: none configured)."""
    env = os.environ.get(ENV_URL, "").strip()
    return env or (cfg.redis.url if cfg is not None else "")


def embedded_url(instance: str) -> str:
    """URL of the embedded server of a running tree of ``instance`` ("" if none)."""
    try:
        with open(os.path.join(run_dir(instance), URL_FILE)) as f:
            url, _, pid = f.read().strip().partition(" ")
    except OSError:
        return ""
    try:
        alive = pid and os.kill(int(pid), 0) is None
    except (OSError, ValueError):
        alive = False
    return url if alive else ""


def resolve_url(cfg, instance: str | None = None) -> str:
    """The Redis URL to use (see the module docstring), or "" for none."""
    url = configured_url(cfg)
    if url or instance is None:
        return url
    return embedded_url(instance)


def key_prefix(cfg, instance: str) -> str:
    return f"{cfg.redis.stream_prefix}:{instance}"


def connect(url: str, timeout: float = IO_TIMEOUT_S, name: str = "arbpipe"):
    """A redis-py client that fails fast (no hidden retries); ``rediss://`` is TLS."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0), health_check_interval=0,
                                client_name=name, decode_responses=True)


def connect_raw(url: str, timeout: float = IO_TIMEOUT_S, name: str = "arbpipe"):
    """Like ``connect`` but replies stay bytes and the protocol is RESP2 (what a caller
    that parses replies itself, the bridge, reads)."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0), health_check_interval=0,
                                client_name=name, decode_responses=False, protocol=2)


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        c = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                 retry=Retry(NoBackoff(), 0))
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False
