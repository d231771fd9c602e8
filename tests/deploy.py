"""What the tests of deploy/ share: the Prometheus rules and the Grafana board as data, the
metric names their PromQL uses, the families a scrape declares, and promtool (skipped when
missing, a failure with ``ARBPIPE_REQUIRE_PROMTOOL=1``, as in CI)."""
import glob
import json
import os
import re
import shutil

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM = os.path.join(ROOT, "deploy", "prometheus")
RULES = os.path.join(PROM, "arbpipe-rules.yml")
PROM_CONFIG = os.path.join(PROM, "prometheus.yml")
RULE_TESTS = sorted(glob.glob(os.path.join(PROM, "tests", "*.yml")))
BOARD = os.path.join(ROOT, "deploy", "grafana", "arbpipe.json")
OPERATIONS = os.path.join(ROOT, "docs/operations.md")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![A-Za-z0-9_:])arbpipe_[a-z0-9_]+")
_SUFFIXES = {"_bucket": ("histogram",), "_sum": ("histogram", "summary"),
             "_count": ("histogram", "summary")}


def require_promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        msg = ("promtool is not installed (make promtool, scripts/install-promtool or "
               "sudo apt-get install prometheus)")
        if os.environ.get("ARBPIPE_REQUIRE_PROMTOOL") == "1":
            pytest.fail(msg + "; ARBPIPE_REQUIRE_PROMTOOL=1 makes this a failure")
        pytest.skip(msg)
    return path


def alert_rules() -> list[dict]:
    with open(RULES) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def board() -> dict:
    with open(BOARD) as f:
        return json.load(f)


def board_targets(b: dict | None = None) -> list[tuple[dict, dict]]:
    """(panel, target) of every query of the board, rows' nested panels included."""
    out = []
    for p in (b or board())["panels"]:
        for q in [p] + p.get("panels", []):
            out += [(q, t) for t in q.get("targets", [])]
    return out


def metric_names(expr: str) -> set[str]:
    """The arbpipe metric names a PromQL expression reads: identifiers ``arbpipe_...``
    outside string literals (label values) and not part of a longer name."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def families(text: str) -> dict[str, str]:
    """{family name: type} of every ``# TYPE`` line of an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, mtype = line.split(None, 3)
            out[name] = mtype.strip()
    return out


def missing_names(names: set[str], fams: dict[str, str]) -> set[str]:
    """The names that are no family of the scrape; ``X_bucket`` / ``X_sum`` / ``X_count``
    count as present only when ``X`` is a histogram (or a summary for _sum/_count)."""
    missing = set()
    for n in names:
        if n in fams:
            continue
        if not any(n.endswith(s) and fams.get(n[:-len(s)]) in types
                   for s, types in _SUFFIXES.items()):
            missing.add(n)
    return missing


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(path: str = OPERATIONS) -> set[str]:
    with open(path) as f:
        return {slug(line.lstrip("#")) for line in f if line.startswith("#")}
