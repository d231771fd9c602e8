# arbpipe: every target sets itself up on a fresh Linux machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  ?= test,bench,sim
ARGS    ?=
PIPELINE_S ?= 1
REPEAT  ?= 3

.PHONY: up test check bench clean venv redis tmux promtool sample

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# redis-server for the tests and benchmarks that talk to a real Redis (installed when missing, root only).
redis:
	@command -v redis-server >/dev/null 2>&1 || bash scripts/install-redis || echo "redis-server not installed; Redis parts will say so"

# promtool for the Prometheus rule and config tests (installed when missing, root only; from
# Debian's prometheus package, with no Prometheus server left running).
promtool:
	@command -v promtool >/dev/null 2>&1 || bash scripts/install-promtool || echo "promtool not installed; the deploy/prometheus tests will skip"

# tmux for the dashboard's terminal test (installed when missing, root only; else that test skips).
tmux:
	@command -v tmux >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q tmux >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tmux >/dev/null 2>&1)); } || \
	  echo "tmux not installed; the dashboard terminal test will skip"

up: venv
	$(BIN)/arbpipe up $(ARGS)

# every test: unit, integration and system (the whole tree)
test: venv redis tmux promtool
	$(BIN)/python -m pytest -q $(ARGS)

# the edit-test loop: unit + integration tests, without the whole-tree system tests
check: venv redis promtool
	$(BIN)/python -m pytest -q tests/unit tests/integration $(ARGS)

bench: venv redis
	@mkdir -p bench/results
	$(BIN)/arbpipe bench rings --out bench/results/rings.json $(ARGS)
	$(BIN)/arbpipe bench pipeline --duration $(PIPELINE_S) --repeat $(REPEAT) --out-dir bench/results
	scripts/bench-tables

# a short simulator recording, books included, for the README's backtest quick start
# (samples/ is ignored: about 14 MB a minute); SAMPLE_S=seconds, OUT=file
sample: venv
	bash scripts/make-sample

# ignored build outputs only (bench/results holds the committed figures the README links);
# shared memory: only segments whose creator is gone (a running pipeline is left alone)
clean:
	-@test -x $(BIN)/arbpipe && $(BIN)/arbpipe clean --all || true
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
