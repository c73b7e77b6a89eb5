# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STUB   := react-native-stub

.PHONY: demo test test-python test-stub lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(STUB)/node_modules/.installed-stamp: $(STUB)/package.json $(STUB)/package-lock.json
	cd $(STUB) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	touch $@

demo: $(STAMP)
	$(BIN)/modelsync demo

test: $(STAMP) lint typecheck test-python test-stub

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test-python: $(STAMP)
	$(BIN)/python -m pytest

test-stub: $(STAMP) $(STUB)/node_modules/.installed-stamp
	cd $(STUB) && npm run --silent typecheck && npm test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_index.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_transfer.py --out benchmarks/results

clean:
	rm -rf $(VENV) $(STUB)/node_modules demo-out
