# ckd-cds: `make demo` sets up everything and runs the service with demo patients; `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench bench-workers profile goldens bench-trend bench-engine bench-screen fuzz durability load audit train validate review fhir-up fhir-down clean

$(BIN)/ckd-cds: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(BIN)/ckd-cds

demo: setup
	bash scripts/demo.sh

bench: setup
	$(BIN)/python bench/harness.py

profile: setup  # BASELINE=<revision>: that revision's code measured first, in the same run
	$(BIN)/python bench/profile.py $${BASELINE:+--baseline $$BASELINE}

bench-workers: setup
	$(BIN)/python bench/workers.py

goldens: setup  # every hook response of the demo, Synthea and bench patients, this tree against BASELINE (default HEAD)
	$(BIN)/python bench/goldens.py --baseline $${BASELINE:-HEAD}

bench-trend: setup  # the kidney trend view's page for a 500-observation patient vs the engine alone
	$(BIN)/python bench/bench_trend.py

bench-engine: setup
	$(BIN)/python bench/bench_engine.py

bench-screen: setup  # population mode on generated NDJSON, 1 and 2 workers (PATIENTS=100000 by default)
	$(BIN)/python bench/bench_screen.py --patients $${PATIENTS:-100000}

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service cards tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered

fuzz: setup
	FUZZ_EXAMPLES=2000 $(BIN)/pytest -q -p no:cacheprovider tests/reliability/test_fuzz.py

durability: setup
	$(BIN)/python bench/durability.py --posts 10000 --database sqlite
	$(BIN)/python bench/durability.py --posts 10000 --database postgresql

load: setup
	$(BIN)/python bench/load.py --seconds 60 --connections 8

audit: setup  # needs the PyPI vulnerability API or OSV, which the build machines cannot reach
	$(BIN)/pip-audit --skip-editable

validate: setup
	$(BIN)/python models/validation/uci_ckd.py

review: setup  # alert burden of the real card builder over the Synthea patients (needs ../shared/data)
	$(BIN)/python models/validation/alert_burden.py

train: setup
	$(BIN)/python models/mortality_flchain/1/train.py

fhir-up: setup
	$(BIN)/python -m service.fhir.testserver start --load-demo

fhir-down:
	$(BIN)/python -m service.fhir.testserver stop

clean:
	rm -rf $(VENV) .fhir-venv var .pytest_cache .mypy_cache .ruff_cache .coverage
