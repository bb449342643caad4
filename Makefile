# Two commands on a machine that has only Python:  make bench   and   make test
# Each creates the virtual environment (.venv) and installs vgbench on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
GRID   ?= benchmarks/default.toml
RESULTS ?= results

.PHONY: bench bench-quick test perf report lock clean-venv

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

bench: $(STAMP)
	$(BIN)/vgbench run $(GRID) --results $(RESULTS)

bench-quick: $(STAMP)
	$(BIN)/vgbench run benchmarks/smoke.toml --results $(RESULTS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

perf: $(STAMP)
	$(BIN)/python benchmarks/perf.py --out $(RESULTS)/perf.csv

report: $(STAMP)
	$(BIN)/vgbench report --results $(RESULTS)

# Refresh the lock file from a fresh resolve of pyproject.toml's ranges (maintainers only).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet ".[test]"
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^vgbench' > requirements.lock
	rm -rf .lockenv

clean-venv:
	rm -rf $(VENV)
