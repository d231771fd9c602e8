"""Is the tree healthy, is it ready: the verdicts behind ``GET /healthz`` and ``GET /readyz``
(``arbpipe.ops.http``), as pure functions of documents other parts already publish.

* **Healthy**: the supervisor is alive and writing ``status.json`` (every second), and every
  role of its plan is running; a role waiting to be restarted counts as unhealthy once it
  has been down for ``[dashboard] health_grace_s``.
* **Ready**: healthy, and the tree can trade: every configured venue's feed is connected
  with a message younger than ``[detector] max_quote_age_ms`` and, where L2 books are on,
  every book synced; the detector's heartbeat is current; and the strategy publishes its state with the kill switch off and the breaker
  not tripped. Read from the dashboard's view (``arbpipe.ui.dashboard``), which the HTTP
  endpoint's process refreshes at ``refresh_hz``.

Each verdict is ``(ok, problems)``: a list of short sentences, empty when ok.
"""
from __future__ import annotations

STATUS_MAX_AGE_S = 5.0        # status.json is rewritten every second by the supervisor
DETECTOR_MIN_AGE_S = 2.0      # the detector's heartbeat: every sweep, and at least this often


def health(status: dict | None, now_s: float, grace_s: float) -> tuple[bool, list[str]]:
    """``status``: the supervisor's status document (``arbpipe.ops.control.read_status``,
    None when no supervisor lives); ``now_s``: ``time.time()``."""
    if status is None:
        return False, ["supervisor: not running"]
    problems = []
    written = float(status.get("started", 0)) + float(status.get("uptime_s", 0))
    if now_s - written > STATUS_MAX_AGE_S:
        problems.append(f"supervisor: status not updated for {now_s - written:.0f} s")
    for p in status.get("processes", []):
        if p.get("state") != "running" and float(p.get("down_s") or 0) > grace_s:
            problems.append(f"{p['name']}: {p.get('state')} for {p.get('down_s')} s "
                            f"(restarts {p.get('restarts', 0)})")
    return not problems, problems


def readiness(status: dict | None, view: dict | None, venues: list[str], max_quote_age_s: float,
              sweep_s: float, now_ns: int, grace_s: float) -> tuple[bool, list[str]]:
    """``view``: the dashboard's state document (None before its first refresh);
    ``venues``: the configured (enabled) venues."""
    ok, problems = health(status, now_ns / 1e9, grace_s)
    if view is None:
        return False, problems + ["dashboard: no view yet"]
    rows = {v["venue"]: v for v in view.get("venues") or []}
    for name in venues:
        v = rows.get(name)
        if v is None:
            problems.append(f"venue {name}: no feed statistics")
        elif v["status"] != "connected":
            problems.append(f"venue {name}: {v['status']}")
        elif v.get("last_msg_age_s") is None or v["last_msg_age_s"] > max_quote_age_s:
            problems.append(f"venue {name}: last message {v.get('last_msg_age_s')} s ago "
                            f"(max {max_quote_age_s:g} s)")
        elif v.get("books") and v.get("books_ready", 0) < v["books"]:
            problems.append(f"venue {name}: {v['books'] - v.get('books_ready', 0)} of "
                            f"{v['books']} books resyncing")
    det = view.get("detector")
    if not det or not det.get("alive"):
        problems.append("detector: not running")
    else:
        age = (now_ns - int(det.get("heartbeat_ns") or 0)) / 1e9
        limit = max(5 * sweep_s, DETECTOR_MIN_AGE_S)
        if age > limit:
            problems.append(f"detector: heartbeat {age:.1f} s old (max {limit:g} s)")
    st = view.get("strategy")
    if not st:
        problems.append("strategy: no state published")
    elif st.get("_alive") is False:
        problems.append("strategy: not running")
    else:
        if st.get("kill_switch"):
            problems.append("strategy: kill switch on")
        b = st.get("breaker") or {}
        if b.get("tripped"):
            problems.append(f"strategy: breaker tripped ({b.get('reason')})")
    return not problems, problems
