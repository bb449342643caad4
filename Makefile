# Two commands on a machine that has only Python:  make bench   and   make test
# Each creates the virtual environment (.venv) and installs vgbench on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAY_STAMP := $(VENV)/.ray-installed
GRID   ?= benchmarks/default.toml
RESULTS ?= results
JOBS   ?= 2
# pytest-xdist workers for make test: the suite's time is mostly XLA compiling, one core each
TEST_JOBS ?= 2

.PHONY: bench bench-quick test perf report lock lock-ray clean-venv

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# The tests run a real local Ray instance: Ray is installed for them only (from its own lock).
$(RAY_STAMP): requirements-ray.lock $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-ray.lock
	@touch $(RAY_STAMP)

# Run the grid (finished runs are skipped), then rebuild the report if any record is newer.
REPORT_STAMP = $(RESULTS)/.report-stamp
define run_then_report
	$(BIN)/vgbench run $(1) --results $(RESULTS) --jobs $(JOBS)
	@if [ ! -f $(REPORT_STAMP) ] || [ -n "$$(find $(RESULTS)/runs -maxdepth 1 -name '*.json' -newer $(REPORT_STAMP) | head -n 1)" ]; then \
	  $(BIN)/vgbench report --results $(RESULTS) && touch $(REPORT_STAMP); \
	else echo "report is up to date ($(RESULTS))"; fi
endef

# The finite-width measurement at initialization (results/finite_width/, a few minutes) is made
# once; the report links it. Delete results/finite_width/init.csv to make it again.
bench: $(STAMP)
	@test -f $(RESULTS)/finite_width/init.csv || $(BIN)/vgbench finite-width --results $(RESULTS)
	$(call run_then_report,$(GRID))

bench-quick: $(STAMP)
	$(call run_then_report,benchmarks/smoke.toml)

test: $(STAMP) $(RAY_STAMP)
	$(BIN)/ruff check vgbench tests benchmarks
	$(BIN)/python -m pytest -q -n $(TEST_JOBS)

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

# Refresh the Ray lock: Ray's dependencies on top of requirements.lock (maintainers only).
lock-ray:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -r requirements.lock
	.lockenv/bin/pip freeze | sort > .lockenv/before.txt
	.lockenv/bin/pip install --quiet -c requirements.lock "ray>=2.9,<3"
	.lockenv/bin/pip freeze | sort | comm -13 .lockenv/before.txt - > .lockenv/ray.txt
	{ head -n 2 requirements-ray.lock; cat .lockenv/ray.txt; } > requirements-ray.lock.new
	mv requirements-ray.lock.new requirements-ray.lock
	rm -rf .lockenv

clean-venv:
	rm -rf $(VENV)
