"""The import rules of docs/design.md ("Package layout and the import rule"), checked on the
source so they cannot erode.

Every import statement of ``arbpipe/``, ``shm_layouts/``, ``bench/`` and ``procs/`` (those
inside functions too) is read with ``ast`` and checked against four rules:

* ``layers``: a module imports only from its own unit or a unit that ``MAY_IMPORT`` lists
  for it (one table, bottom layer first); the edges in ``EXCEPTIONS`` are tolerated, each
  with its reason, and an exception that no longer occurs fails too;
* ``cycles``: the graph of modules (an edge per import) has no cycle;
* ``private``: no name with a leading underscore is imported from another module of the
  repository (``from x import _y``, or ``x._y`` on an imported module);
* ``lazy``: an import inside a function carries a comment containing ``lazy:`` (the
  measured cost it saves) on its own line or the line above.

Failures name ``file:line``, the rule and the offending import. Tests themselves may import
anything. The checker is fed synthetic sources that break each rule (``test_checker_*``),
so a checker that reports nothing cannot pass for a clean tree.
"""
import ast
import functools
import os
import sys
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCANNED = ("arbpipe", "shm_layouts", "bench", "procs")

CORE = ("config", "config_decode", "legs", "symbols", "clock", "redact", "paths", "redis_conn")
FEATURES = ("feeds", "detect", "trading", "persist", "replay", "bridge")
BELOW_FEATURES = ("shm_layouts", "transport", "sim", "core", "books")

# unit -> what its modules may import, bottom layer first. An entry is a unit or one module
# (dotted name); a unit may always import its own modules. Other packages (numpy, the
# standard library, ...) are outside the table; LAYOUT_DEPENDENCIES limits shm_layouts.
MAY_IMPORT = {
    # layer 0: the byte contract (numpy only)
    "shm_layouts": (),
    # layer 1: transport, the core modules and the simulator
    "transport": ("shm_layouts",),
    "sim": ("shm_layouts",),
    "core": ("shm_layouts", "arbpipe.sim.config"),   # config validates simulator faults
    # layer 1b: the L2 book kernels (the feeds build books, the detector keeps their top)
    "books": ("shm_layouts", "transport"),
    # layer 2: the feature packages, which do not import each other
    "feeds": BELOW_FEATURES,
    "detect": BELOW_FEATURES,
    "trading": BELOW_FEATURES,
    "persist": BELOW_FEATURES,
    "replay": BELOW_FEATURES,
    "bridge": BELOW_FEATURES,      # Redis Streams between trees (a producer and a tap)
    # layer 3: display and the backtest (the detector and the strategy on a recording),
    # then operation (the operator commands run the terminal view and the backtest)
    "ui": BELOW_FEATURES + FEATURES,
    "backtest": BELOW_FEATURES + FEATURES,
    "ops": BELOW_FEATURES + FEATURES + ("ui", "backtest"),
    # layer 4: benchmarks
    "bench": BELOW_FEATURES + FEATURES + ("ops", "ui"),
    # layer 5: the entry points
    "procs": BELOW_FEATURES + FEATURES + ("ops", "ui", "bench"),
}

# (importer, imported) -> why imports against the table are tolerated there. Each side is a
# module or a package (it then covers the modules under it). An entry that matches no import
# fails the test, so the list shrinks when the code does.
EXCEPTIONS = {
    ("arbpipe.persist", "arbpipe.detect"):
        "the persister stores the detector's leg-status events, read with the detector's "
        "stats reader",
}
# shm_layouts imports nothing outside the standard library but these.
LAYOUT_DEPENDENCIES = ("numpy",)


def unit_of(module):
    """The unit of the layer table a module belongs to; None outside the repository."""
    parts = module.split(".")
    top = parts[0]
    if top in ("shm_layouts", "bench", "procs"):
        return top
    if top != "arbpipe":
        return None
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    if parts[1] in MAY_IMPORT and parts[1] not in ("shm_layouts", "bench", "procs"):
        return parts[1]
    return "?"            # an arbpipe module the table does not place: reported by `layers`


# -- reading the sources -----------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Import:
    module: str           # importing module
    path: str             # its file, relative to the repository root
    line: int
    end_line: int
    target: str           # the repository module imported (the package for a name in it)
    name: str             # the name imported from it ("" for ``import x``)
    in_function: bool


@dataclass(frozen=True, order=True)
class Violation:
    rule: str
    path: str
    line: int
    text: str

    def __str__(self):
        return f"{self.path}:{self.line}: [{self.rule}] {self.text}"


def repo_modules(root=ROOT):
    """{dotted module name: (path relative to root, source)} of every scanned file."""
    out = {}
    for top in SCANNED:
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(d, f), root)
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                with open(os.path.join(root, rel), encoding="utf-8") as fh:
                    out[".".join(parts)] = (rel, fh.read())
    return out


def _known(name, modules):
    """``name`` if it is a repository module, else its longest prefix that is, else None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in modules:
            return cand
    return None


def _base_of(node, module, path):
    """The absolute module an ``ImportFrom`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    pkg = module.split(".")
    if not path.endswith("__init__.py"):
        pkg = pkg[:-1]
    pkg = pkg[:len(pkg) - (node.level - 1)]
    return ".".join(pkg + ([node.module] if node.module else []))


def read_imports(modules):
    """Lists of: every import of a repository module; every import statement inside a
    function; uses of ``alias._name`` on an imported repository module; every import of
    another package (``target`` is its top-level name)."""
    repo, in_func, private_attrs, external = [], [], [], []
    for module, (path, source) in sorted(modules.items()):
        tree = ast.parse(source, filename=path)
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node

        def inside_function(node):
            while node in parents:
                node = parents[node]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    return True
            return False

        module_aliases = {}      # local name -> repository module it is bound to
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            func = inside_function(node)
            if func:
                in_func.append(Import(module, path, node.lineno, node.end_lineno, "", "", True))
            if isinstance(node, ast.Import):
                for a in node.names:
                    target = _known(a.name, modules)
                    if target:
                        repo.append(Import(module, path, node.lineno, node.end_lineno, target,
                                           "", func))
                        if a.asname and a.name in modules:
                            module_aliases[a.asname] = a.name
                    else:
                        external.append(Import(module, path, node.lineno, node.end_lineno,
                                               a.name.split(".")[0], "", func))
                continue
            base = _base_of(node, module, path)
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in modules:
                    repo.append(Import(module, path, node.lineno, node.end_lineno, full,
                                       a.name, func))
                    module_aliases[a.asname or a.name] = full
                    continue
                target = _known(base, modules)
                if target:
                    repo.append(Import(module, path, node.lineno, node.end_lineno, target,
                                       a.name, func))
                elif not node.level:
                    external.append(Import(module, path, node.lineno, node.end_lineno,
                                           base.split(".")[0], a.name, func))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and _is_private(node.attr)):
                target = module_aliases[node.value.id]
                if target != module:
                    private_attrs.append(Import(module, path, node.lineno, node.lineno, target,
                                                node.attr, False))
    return repo, in_func, private_attrs, external


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# -- the rules ---------------------------------------------------------------------------

def layer_violations(imports, exceptions, external=()):
    out, used = [], set()
    for imp in external:
        if (unit_of(imp.module) == "shm_layouts" and imp.target not in LAYOUT_DEPENDENCIES
                and imp.target not in sys.stdlib_module_names):
            out.append(Violation("layers", imp.path, imp.line,
                                 f"{imp.module} (shm_layouts) imports {imp.target}; the byte "
                                 f"contract imports only {', '.join(LAYOUT_DEPENDENCIES)} "
                                 "and the standard library"))
    for imp in imports:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src == "?" or dst == "?":
            odd = imp.module if src == "?" else imp.target
            out.append(Violation("layers", imp.path, imp.line,
                                 f"{odd} belongs to no unit of MAY_IMPORT (add it to the table)"))
            continue
        if src == dst or dst in MAY_IMPORT[src] or imp.target in MAY_IMPORT[src]:
            continue
        hit = [e for e in exceptions if _under(imp.module, e[0]) and _under(imp.target, e[1])]
        if hit:
            used.update(hit)
            continue
        allowed = ", ".join(MAY_IMPORT[src]) or "nothing of the repository"
        out.append(Violation("layers", imp.path, imp.line,
                             f"{imp.module} ({src}) imports {imp.target} ({dst}); "
                             f"{src} may import: {allowed}"))
    for edge in sorted(set(exceptions) - used):
        out.append(Violation("layers", "tests/unit/test_layers.py", 0,
                             f"exception {edge[0]} -> {edge[1]} no longer occurs: remove it"))
    return out


def _under(module, name):
    """True when ``module`` is ``name`` or a module inside package ``name``."""
    return module == name or module.startswith(name + ".")


def strongly_connected(graph):
    """Tarjan's algorithm: the components of ``graph`` ({node: set(nodes)}) with more than
    one node, or with a self-edge, each as a sorted list."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def cycle_violations(imports):
    graph, where = {}, {}
    for imp in imports:
        if imp.target == imp.module:
            continue
        graph.setdefault(imp.module, set()).add(imp.target)
        where.setdefault((imp.module, imp.target), imp)
    out = []
    for comp in strongly_connected(graph):
        members = set(comp)
        edges = sorted(where[(a, b)] for a in comp for b in graph.get(a, ()) if b in members)
        first = edges[0]
        detail = "; ".join(f"{e.path}:{e.line} {e.module} -> {e.target}" for e in edges)
        out.append(Violation("cycles", first.path, first.line,
                             f"import cycle among {', '.join(comp)}: {detail}"))
    return out


def private_violations(imports, private_attrs):
    out = []
    for imp in imports:
        if imp.name and _is_private(imp.name) and imp.target != imp.module:
            out.append(Violation("private", imp.path, imp.line,
                                 f"{imp.module} imports private {imp.name} from {imp.target} "
                                 "(make it public or move it)"))
    for use in private_attrs:
        out.append(Violation("private", use.path, use.line,
                             f"{use.module} uses private {use.target}.{use.name} "
                             "(make it public or move it)"))
    return out


def lazy_violations(in_func, modules):
    out = []
    for imp in in_func:
        lines = modules[imp.module][1].splitlines()
        span = lines[max(imp.line - 2, 0):imp.end_line]
        if not any("#" in ln and "lazy:" in ln.split("#", 1)[1] for ln in span):
            out.append(Violation("lazy", imp.path, imp.line,
                                 f"import inside a function without a `# lazy: <measured cost>` "
                                 f"comment: {lines[imp.line - 1].strip()}"))
    return out


def check(modules, exceptions=None):
    """Every violation of the four rules in ``modules`` ({name: (path, source)})."""
    exceptions = EXCEPTIONS if exceptions is None else exceptions
    imports, in_func, private_attrs, external = read_imports(modules)
    return (layer_violations(imports, exceptions, external) + cycle_violations(imports)
            + private_violations(imports, private_attrs) + lazy_violations(in_func, modules))


@functools.lru_cache(maxsize=1)
def tree_violations():
    return tuple(check(repo_modules()))


def _assert_none(rule):
    bad = [str(v) for v in sorted(tree_violations()) if v.rule == rule]
    assert not bad, f"{len(bad)} break(s) of the `{rule}` rule:\n" + "\n".join(bad)


# -- the tree ----------------------------------------------------------------------------

def test_the_tree_is_scanned():
    mods = repo_modules()
    for name in ("shm_layouts.records", "arbpipe.transport.segments", "arbpipe.config",
                 "procs.cli", "bench.cli"):
        assert name in mods, name
    assert {unit_of(m) for m in mods} >= set(MAY_IMPORT)


def test_imports_follow_the_layers():
    _assert_none("layers")


def test_no_import_cycles():
    _assert_none("cycles")


def test_no_private_names_cross_modules():
    _assert_none("private")


def test_function_level_imports_say_why():
    _assert_none("lazy")


# -- the checker can fail ------------------------------------------------------------------

BROKEN = {
    "shm_layouts": ("shm_layouts/__init__.py", ""),
    "shm_layouts.records": ("shm_layouts/records.py", "import enum\nimport numpy as np\n"
                                                      "from numba import njit\n"),  # layers
    # layers: the byte contract imports transport
    "shm_layouts.bad": ("shm_layouts/bad.py", "from arbpipe.transport import rings\n"),
    "arbpipe": ("arbpipe/__init__.py", ""),
    "arbpipe.config": ("arbpipe/config.py",
                       "from arbpipe.sim.config import FAULTS\n"      # allowed by the table
                       "from arbpipe.sim import server\n"),           # layers: not sim.config
    "arbpipe.sim": ("arbpipe/sim/__init__.py", ""),
    "arbpipe.sim.config": ("arbpipe/sim/config.py", "FAULTS = ()\n"),
    "arbpipe.sim.server": ("arbpipe/sim/server.py", ""),
    "arbpipe.transport": ("arbpipe/transport/__init__.py", ""),
    # cycles: rings <-> segments; private: _hidden
    "arbpipe.transport.rings": ("arbpipe/transport/rings.py",
                                "from arbpipe.transport.segments import _hidden, open_it\n"
                                "import shm_layouts.records\n"),
    "arbpipe.transport.segments": ("arbpipe/transport/segments.py",
                                   "from . import rings\n"
                                   "import arbpipe.config\n"),        # layers: transport->core
    "arbpipe.feeds": ("arbpipe/feeds/__init__.py", ""),
    "arbpipe.feeds.runtime": ("arbpipe/feeds/runtime.py",
                              "import arbpipe.detect.kernel as K\n"   # layers: feature->feature
                              "def f():\n"
                              "    import json\n"                     # lazy: no comment
                              "    # lazy: saves 180 ms of numba import\n"
                              "    import numba\n"                    # fine
                              "    x = K._state\n"                    # private attribute
                              "    return json, numba, x\n"),
    "arbpipe.detect": ("arbpipe/detect/__init__.py", ""),
    "arbpipe.detect.kernel": ("arbpipe/detect/kernel.py",
                              "from ..trading import strategy  # tolerated by EXC below\n"),
    "arbpipe.trading": ("arbpipe/trading/__init__.py", ""),
    "arbpipe.trading.strategy": ("arbpipe/trading/strategy.py", ""),
    "arbpipe.oddity": ("arbpipe/oddity.py", "import arbpipe.config\n"),  # layers: no unit
    "procs.cli": ("procs/cli.py", "import bench.cli\nimport arbpipe.detect.kernel\n"),
    "bench.cli": ("bench/cli.py", "def main():\n    import procs.cli  # lazy: 1 ms\n"),
}
EXC = {("arbpipe.detect", "arbpipe.trading.strategy"): "for the self-check",
       ("arbpipe.ops.cli", "arbpipe.persist"): "stale: occurs nowhere"}


def _broken():
    return check(BROKEN, EXC)


def test_checker_reports_layer_breaks():
    got = [str(v) for v in _broken() if v.rule == "layers"]
    expect = [
        "shm_layouts/bad.py:1: [layers] shm_layouts.bad (shm_layouts) imports "
        "arbpipe.transport.rings (transport)",
        "arbpipe/config.py:2: [layers] arbpipe.config (core) imports arbpipe.sim.server (sim)",
        "arbpipe/transport/segments.py:2: [layers] arbpipe.transport.segments (transport) "
        "imports arbpipe.config (core)",
        "arbpipe/feeds/runtime.py:1: [layers] arbpipe.feeds.runtime (feeds) imports "
        "arbpipe.detect.kernel (detect)",
        "arbpipe/oddity.py:1: [layers] arbpipe.oddity belongs to no unit",
        "bench/cli.py:2: [layers] bench.cli (bench) imports procs.cli (procs)",
        "shm_layouts/records.py:3: [layers] shm_layouts.records (shm_layouts) imports numba; "
        "the byte contract imports only numpy and the standard library",
        "[layers] exception arbpipe.ops.cli -> arbpipe.persist no longer occurs",
    ]
    for e in expect:
        assert any(e in g for g in got), (e, got)
    assert len(got) == len(expect), got
    assert not any(g.startswith(("arbpipe/config.py:1:", "arbpipe/detect/")) for g in got)


def test_checker_reports_cycles():
    got = [v for v in _broken() if v.rule == "cycles"]
    assert len(got) == 2, got     # rings <-> segments, and procs.cli <-> bench.cli
    text = " ".join(str(v) for v in got)
    assert "arbpipe.transport.rings, arbpipe.transport.segments" in text
    assert "arbpipe/transport/segments.py:1 arbpipe.transport.segments -> " \
           "arbpipe.transport.rings" in text
    assert "bench.cli, procs.cli" in text
    assert strongly_connected({1: {2}, 2: {3}, 3: {1}, 4: {4}, 5: {1}}) == [[1, 2, 3], [4]]


def test_checker_reports_private_names():
    got = sorted(str(v) for v in _broken() if v.rule == "private")
    assert got == [
        "arbpipe/feeds/runtime.py:6: [private] arbpipe.feeds.runtime uses private "
        "arbpipe.detect.kernel._state (make it public or move it)",
        "arbpipe/transport/rings.py:1: [private] arbpipe.transport.rings imports private "
        "_hidden from arbpipe.transport.segments (make it public or move it)",
    ], got


def test_checker_reports_unexplained_function_imports():
    got = [str(v) for v in _broken() if v.rule == "lazy"]
    assert got == ["arbpipe/feeds/runtime.py:3: [lazy] import inside a function without a "
                   "`# lazy: <measured cost>` comment: import json"], got

