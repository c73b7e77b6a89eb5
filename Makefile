# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv when missing,
# installing exactly the versions in constraints.txt (the lock; `make lock` renews it).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STUB   := react-native-stub
LOCK   := constraints.txt

.PHONY: demo test system-deps test-python test-quick test-stub lint typecheck bench doc-figures clean distclean lock

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[dev]'
	touch $(STAMP)

# Renew the lock on purpose: resolve pyproject.toml's ranges afresh in a throw-away venv,
# write what was installed to constraints.txt, then reinstall .venv from it and run every
# test. Commit constraints.txt only when that run is green.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# The Python lock: every version the suite was last green with (make lock renews it)."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable \
	    | grep -v -i -E '^(modelsync|setuptools|wheel)[= ]'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv
	$(MAKE) test

$(STUB)/node_modules/.installed-stamp: $(STUB)/package.json $(STUB)/package-lock.json
	cd $(STUB) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	touch $@

demo: $(STAMP)
	$(BIN)/modelsync demo

test: $(STAMP) system-deps lint typecheck test-python test-stub

# Debian's nginx for the deploy tests (tests/deploy) and Debian's chromium for the release
# console's browser tests (tests/console): installed when we are root with apt-get;
# otherwise those tests skip, and under CI=true they fail instead.
SYSTEM_DEPS := nginx:/usr/sbin/nginx chromium:/usr/bin/chromium
system-deps:
	@for dep in $(SYSTEM_DEPS); do \
	  pkg=$${dep%%:*}; path=$${dep#*:}; \
	  if ! command -v $$pkg >/dev/null 2>&1 && ! test -x $$path; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing Debian's $$pkg for the tests that need it"; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null 2>&1 || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null; }; \
	    else echo "$$pkg is not installed: the tests that need it will skip (sudo apt-get install $$pkg)"; fi; \
	  fi; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Both cores: two xdist workers, each taking the next test as it finishes one (the slow
# fleet and demo tests do not queue behind each other). Coverage of the three packages is
# reported at the end.
test-python: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal --cov --cov-report=term:skip-covered

# The suite less the tests marked slow (fleet, demo, schemathesis, fault trials): a minute.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not slow"

# The TypeScript client: type checks, the Node tests, the React Native jest project
# (test-rn/: React Native's preset, the hook and example/App.tsx against the real service) and
# the npm package in a new app (test-package/: npm pack, install, tsc, Metro, hermesc).
test-stub: $(STAMP) $(STUB)/node_modules/.installed-stamp
	cd $(STUB) && npm run --silent typecheck && npm test && npm run --silent test:rn && npm run --silent test:package && npm run --silent test:hermes

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_index.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_transfer.py --out benchmarks/results

# After a benchmark run: rewrite every figure the docs quote from benchmarks/results
# (marked <!-- result FILE PATH -->), so tests/test_doc_figures.py passes again.
doc-figures: $(STAMP)
	$(BIN)/python -m tests.doc_figures --update

# `make clean` removes what the demo and the tests leave; `make distclean` also the
# installed environments (.venv and node_modules take minutes to install again).
clean:
	rm -rf demo-out .coverage .coverage.* htmlcov

distclean: clean
	rm -rf $(VENV) $(STUB)/node_modules
