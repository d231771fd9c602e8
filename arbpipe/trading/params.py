"""Strategy risk limits changed at runtime through Redis, and the breaker mirrored there.

Hash ``<prefix>:<instance>:risk`` (``arbpipe risk set KEY VALUE`` writes it): field = a key of
``arbpipe.config.RISK_KEYS``, value = a decimal number of the ``StrategyLimits`` field's type
(int or float). A key absent from the hash means the config value (``arbpipe risk unset``
reverts). Every value is checked with the config's own rules (``config.validate_config`` on
the config with the change applied: same bounds, same cross-key rules); a bad one is rejected
with a logged reason naming the key, and the last good value stays.

``RiskSource`` (inside the strategy): a background thread reads the hash every
``redis.risk_poll_ms``; ``take()`` hands the validated changes since the last ``take()`` to
the strategy's loop (a dict, applied there at once, or None: cheap, lock-free when nothing
changed). Redis unreachable (at start or later): the last good values stay (the config's
at start), logged once per outage. Hash ``<prefix>:<instance>:breaker``: ``mirror_breaker``
queues the breaker state for the thread to write (never blocks the caller);
``load_breaker`` reads it once at start so that a restarted tree comes back halted.
Fields of the breaker hash are JSON values (``tripped`` -> ``true``), plus ``_updated_ns``.

No URL (``arbpipe.redis_conn.resolve_url`` gives ""): everything is a no-op; limits come
from the config only. URLs are redacted in every message.
"""
from __future__ import annotations

import json
import math
import threading
import time
import typing

import msgspec

from arbpipe.config import RISK_KEYS, ConfigError, StrategyLimits, validate_config
from arbpipe.redact import redact_url, scrub
from arbpipe.redis_conn import connect, key_prefix, resolve_url
from arbpipe.trading.view import read_state
from arbpipe.transport.segments import default_instance

RISK_TYPES: dict[str, type] = {k: typing.get_type_hints(StrategyLimits)[k] for k in RISK_KEYS}


class RiskError(ValueError):
    """An invalid risk key or value; the message starts with the key (exit code 2)."""
    code = 2


class RedisUnavailable(RuntimeError):
    """No Redis configured, or it cannot be reached (exit code 1)."""
    code = 1


def _keys(cfg, instance):
    p = key_prefix(cfg, instance)
    return f"{p}:risk", f"{p}:breaker"


def parse_value(key: str, raw) -> int | float:
    """The typed value of ``raw`` (str / bytes / number) for risk key ``key``; RiskError
    naming the key when the key is unknown or the value is not a finite number of its type."""
    if key not in RISK_TYPES:
        raise RiskError(f"{key}: unknown risk key; runtime-changeable keys: {', '.join(RISK_KEYS)}")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    text = str(raw).strip()
    tp = RISK_TYPES[key]
    try:
        x = float(text)
    except ValueError:
        raise RiskError(f"{key}: expected {tp.__name__}, got {text[:40]!r}") from None
    if not math.isfinite(x):
        raise RiskError(f"{key}: must be a finite number, got {text[:40]!r}")
    if tp is int:
        if x != int(x) or abs(x) > 2 ** 62:
            raise RiskError(f"{key}: expected int, got {text[:40]!r}")
        return int(x)
    return x


def validate(cfg, values: dict) -> None:
    """Raise RiskError (naming the first changed key) unless ``cfg`` with ``values`` applied
    to its strategy limits passes the config's validation."""
    try:
        strat = msgspec.structs.replace(cfg.strategy, **values)
        validate_config(msgspec.structs.replace(cfg, strategy=strat))
    except ConfigError as e:
        key = next(iter(values), "?")
        msg = str(e)
        if msg.startswith(f"strategy.{key}: "):
            msg = msg[len(f"strategy.{key}: "):]
        raise RiskError(f"{key}: {msg}") from None


def check_change(cfg, current: dict, key: str, raw) -> int | float:
    """The typed value of ``key = raw`` if valid on top of ``current`` (RISK_KEYS -> value)."""
    v = parse_value(key, raw)
    vals = dict(current)
    vals[key] = v
    validate(cfg, {key: v, **{k: x for k, x in vals.items() if k != key}})
    return v


class RiskSource:
    """See the module docstring. ``start()``, ``take()``, ``limits()``, ``mirror_breaker()``,
    ``load_breaker()``, ``close()``; none of them raises into the caller or waits on Redis
    (except ``load_breaker``, bounded by ``timeout``)."""

    def __init__(self, cfg, instance: str | None = None, log=print, url: str | None = None,
                 timeout: float = 2.0):
        self.cfg = cfg
        self.instance = instance or default_instance()
        self.log = log
        self.url = resolve_url(cfg, self.instance) if url is None else url
        self.safe_url = redact_url(self.url)
        self.key, self.breaker_key = _keys(cfg, self.instance)
        self.poll_s = cfg.redis.risk_poll_ms / 1e3
        self.timeout = timeout
        self.base = {k: getattr(cfg.strategy, k) for k in RISK_KEYS}
        self.effective = dict(self.base)
        self.reachable: bool | None = None
        self.polls = self.changes = self.rejections = 0
        self._pending: dict = {}
        self._lock = threading.Lock()
        self._logged_bad: dict[str, str] = {}
        self._accepted: dict[str, str] = {}   # key -> hash text behind its current value
        self._breaker: dict | None = None
        self._breaker_written: dict | None = None
        self._client = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the strategy's side --------------------------------------------------------
    def start(self) -> "RiskSource":
        if self._thread is not None:
            return self
        if not self.url:
            self.log("risk: no Redis configured; limits come from the config only")
            return self
        self._thread = threading.Thread(target=self._run, name="risk-source", daemon=True)
        self._thread.start()
        return self

    def take(self) -> dict | None:
        """Validated changes since the last call ({key: value}), or None."""
        if not self._pending:
            return None
        with self._lock:
            p, self._pending = self._pending, {}
        return p or None

    def limits(self) -> dict:
        """The last good value of every risk key."""
        with self._lock:
            return dict(self.effective)

    def mirror_breaker(self, state: dict) -> None:
        """Queue ``state`` (a dict of JSON-able values) for the hash ``...:breaker``."""
        if not self.url or state == self._breaker_written:
            return
        self._breaker = dict(state)
        self._wake.set()

    def load_breaker(self) -> dict | None:
        """The mirrored breaker state (``updated_ns`` added), or None (none / unreachable)."""
        if not self.url:
            return None
        try:
            c = self._connect()
            raw = c.hgetall(self.breaker_key)
            c.close()
        except Exception as e:  # noqa: BLE001
            self.log(f"risk: cannot read breaker state from redis {self.safe_url} "
                     f"({scrub(e, self.url)}); starting from the config")
            return None
        if not raw:
            return None
        out = {}
        for k, v in raw.items():
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
        if "_updated_ns" in out:
            out["updated_ns"] = out.pop("_updated_ns")
        return out

    def close(self) -> None:
        """Stop the thread; write a queued breaker state (bounded by ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout * 2 + 1)
            self._thread = None
        if self.url and self._breaker is not None and self._breaker != self._breaker_written:
            try:
                self._write_breaker()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        c, self._client = self._client, None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    # -- the thread ---------------------------------------------------------------------
    def _connect(self):
        return connect(self.url, self.timeout, "arbpipe-risk")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._client is None:
                    self._client = self._connect()
                if self._breaker is not None and self._breaker != self._breaker_written:
                    self._write_breaker()
                self._poll_once()
                if self.reachable is False:
                    self.log(f"risk: redis {self.safe_url} reachable again")
                self.reachable = True
            except Exception as e:  # noqa: BLE001 - redis errors, OSError, ...
                if self.reachable is not False:
                    self.log(f"risk: redis {self.safe_url} unreachable ({scrub(e, self.url)}); "
                             f"keeping the last good limits")
                self.reachable = False
                c, self._client = self._client, None
                if c is not None:
                    try:
                        c.close()
                    except Exception:  # noqa: BLE001
                        pass
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _write_breaker(self) -> None:
        state = self._breaker
        c = self._client or self._connect()
        self._client = c
        m = {k: json.dumps(v) for k, v in state.items()}
        m["_updated_ns"] = str(time.time_ns())
        pipe = c.pipeline(transaction=True)
        pipe.delete(self.breaker_key)
        pipe.hset(self.breaker_key, mapping=m)
        pipe.execute()
        self._breaker_written = state

    def _poll_once(self) -> None:
        raw = self._client.hgetall(self.key)
        self.polls += 1
        self.apply(raw)

    def apply(self, raw: dict) -> dict:
        """Validate the hash contents ``raw`` against the last good values; returns (and
        queues for ``take``) the accepted changes. Rejections are logged once per value."""
        cfg = self.cfg
        for k in raw:
            if k not in RISK_TYPES and self._logged_bad.get(k) != "unknown":
                self._logged_bad[k] = "unknown"
                self.rejections += 1
                self.log(f"risk: rejected {k} from redis {self.key}: {k}: unknown risk key "
                         f"(runtime-changeable keys: {', '.join(RISK_KEYS)})")
        cand = dict(self.effective)
        for k in RISK_KEYS:
            text = raw.get(k)
            if text is None:
                self._accepted.pop(k, None)
                want = self.base[k]          # absent: the config value
                if cand[k] == want:
                    continue
                try:
                    validate(cfg, {k: want, **{x: v for x, v in cand.items() if x != k}})
                    cand[k] = want
                except RiskError:
                    pass
                continue
            if self._accepted.get(k) == text:
                continue                     # unchanged since it was accepted
            try:
                v = check_change(cfg, cand, k, text)
            except RiskError as e:
                if self._logged_bad.get(k) != text:
                    self._logged_bad[k] = text
                    self.rejections += 1
                    self.log(f"risk: rejected {k}={text!r} from redis {self.key}: {e}; keeping "
                             f"{cand[k]!r}")
                continue
            self._logged_bad.pop(k, None)
            self._accepted[k] = text
            cand[k] = v
        changes = {k: v for k, v in cand.items() if v != self.effective[k]}
        if changes:
            for k, v in changes.items():
                src = "redis" if k in raw else "config (key removed from redis)"
                self.log(f"risk: {k} {self.effective[k]!r} -> {v!r} ({src})")
            with self._lock:
                self.effective = cand
                self._pending.update(changes)
            self.changes += len(changes)
        return changes


# ------------------------------------------------------------------ the CLI side -----

def _client(cfg, instance, timeout=2.0):
    url = resolve_url(cfg, instance)
    if not url:
        raise RedisUnavailable("no Redis: set ARBPIPE_REDIS_URL or [redis] url, or start the "
                               "tree (`arbpipe up` embeds a redis-server)")
    c = connect(url, timeout, "arbpipe-cli")
    try:
        c.ping()
    except Exception as e:  # noqa: BLE001
        raise RedisUnavailable(f"redis {redact_url(url)} unreachable: {scrub(e, url)}") from None
    return c, url


def _overrides(cfg, raw: dict) -> dict:
    """The valid typed values among the hash contents (on top of the config)."""
    cur = {k: getattr(cfg.strategy, k) for k in RISK_KEYS}
    for k in RISK_KEYS:
        if k in raw:
            try:
                cur[k] = check_change(cfg, cur, k, raw[k])
            except RiskError:
                pass
    return cur


def set_risk(cfg, instance: str, key: str, value) -> int | float:
    """Validate ``key = value`` (config rules, on top of the config and the valid values in
    the hash) and write it to the risk hash. RiskError (exit 2) names the key;
    RedisUnavailable (exit 1) when there is no reachable Redis."""
    v = parse_value(key, value)
    try:
        c, url = _client(cfg, instance)
    except RedisUnavailable:
        validate(cfg, {key: v})      # invalid even on top of the config alone: say so (2)
        raise
    rkey, _ = _keys(cfg, instance)
    try:
        cur = _overrides(cfg, c.hgetall(rkey))
        v = check_change(cfg, cur, key, value)
        c.hset(rkey, key, repr(v) if isinstance(v, float) else str(v))
    except RiskError:
        raise
    except Exception as e:  # noqa: BLE001
        raise RedisUnavailable(f"redis {redact_url(url)}: {scrub(e, url)}") from None
    finally:
        c.close()
    return v


def unset_risk(cfg, instance: str, key: str) -> bool:
    """Remove ``key`` from the hash (the strategy goes back to the config value)."""
    if key not in RISK_TYPES:
        raise RiskError(f"{key}: unknown risk key; runtime-changeable keys: {', '.join(RISK_KEYS)}")
    c, url = _client(cfg, instance)
    rkey, _ = _keys(cfg, instance)
    try:
        return bool(c.hdel(rkey, key))
    except Exception as e:  # noqa: BLE001
        raise RedisUnavailable(f"redis {redact_url(url)}: {scrub(e, url)}") from None
    finally:
        c.close()


def show_risk(cfg, instance: str) -> dict:
    """{"url", "key", "rows": [{key, config, redis, strategy}], "breaker"}; the strategy's
    values come from its state blob when it runs. RedisUnavailable without Redis."""
    c, url = _client(cfg, instance)
    rkey, bkey = _keys(cfg, instance)
    try:
        raw = c.hgetall(rkey)
        breaker = c.hgetall(bkey)
    except Exception as e:  # noqa: BLE001
        raise RedisUnavailable(f"redis {redact_url(url)}: {scrub(e, url)}") from None
    finally:
        c.close()
    st = read_state(instance) or {}
    live = st.get("limits") or {}
    rows = [{"key": k, "config": getattr(cfg.strategy, k), "redis": raw.get(k),
             "strategy": live.get(k)} for k in RISK_KEYS]
    extra = sorted(k for k in raw if k not in RISK_TYPES)
    return {"url": redact_url(url), "key": rkey, "rows": rows, "unknown": extra,
            "breaker": breaker}


def render_risk(d: dict) -> str:
    lines = [f"risk limits: redis {d['url']} hash {d['key']}",
             f"  {'key':<24} {'config':>14} {'redis':>14} {'strategy':>14}"]
    for r in d["rows"]:
        def f(x):
            return "-" if x is None else str(x)
        lines.append(f"  {r['key']:<24} {f(r['config']):>14} {f(r['redis']):>14} "
                     f"{f(r['strategy']):>14}")
    if d["unknown"]:
        lines.append(f"  ignored (not risk keys): {', '.join(d['unknown'])}")
    if d["breaker"]:
        lines.append("  breaker (mirrored): " + "  ".join(f"{k}={v}" for k, v in
                                                          sorted(d["breaker"].items())))
    return "\n".join(lines)
