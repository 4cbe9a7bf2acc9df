# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit lint up bench-collector bench-hotpath bench-warehouse bench-student bench-control bench-delivery bench-serving bench-bots live-sessions reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[platform,simulator,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/firstmile demo

up: $(STAMP)
	$(BIN)/firstmile up

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not browser"

lint: $(STAMP)
	$(BIN)/ruff check streaming warehouse ml orchestration tests
	$(BIN)/mypy
	$(BIN)/mypy tests/reliability

bench-collector: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_collector.py

bench-hotpath: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_hotpath.py

bench-warehouse: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_warehouse.py $(BENCH_ARGS)

bench-student: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_student.py --data-dir $${FIRSTMILE_DATA_DIR:-data}

bench-control: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_control.py $(BENCH_ARGS)

bench-serving: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_serving.py $(BENCH_ARGS)

bench-delivery: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_delivery.py $(BENCH_ARGS)

bench-bots: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_bots.py $(BENCH_ARGS)

# Visitors who respond: plays the scenario now against a running `firstmile up` (README: the live mode), e.g.
# make live-sessions LIVE_ARGS="--url http://127.0.0.1:8080 --write-key KEY --read-key SERVER_OR_PUBLISHABLE_KEY"
live-sessions: $(STAMP)
	$(BIN)/python -m streaming.simulator --live $(LIVE_ARGS)

test-browser: $(STAMP)
	$(BIN)/python -m pytest -q -m browser tests/orchestration/test_uis.py tests/streaming/test_serving_inspector.py

reliability: $(STAMP)
	$(BIN)/python tests/reliability/run_all.py

clean:
	rm -rf data dbt_project/target dbt_project/logs
