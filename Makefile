# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/example.toml

CHROMIUM ?= /usr/bin/chromium

AXE := node_modules/axe-core/axe.min.js

.PHONY: run test install browser axe proof clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "unsubd needs Python 3.11 or newer: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## make run: install, migrate, and serve SMTP on 127.0.0.1:2525 and HTTP on 127.0.0.1:8025 (SQLite: ./unsubd.db)
run: $(STAMP)
	$(BIN)/unsubd db upgrade --config $(CONFIG)
	$(BIN)/unsubd serve --config $(CONFIG)

## make browser: Debian's Chromium for the browser tests (Playwright drives it; its own download cannot work)
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: no $(CHROMIUM) and no apt-get: install Chromium and set CHROMIUM=/path/to/it (browser tests skip locally, fail under CI=true)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Chromium for the browser tests (apt-get install chromium)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	elif sudo -n true 2>/dev/null; then \
	  echo "installing Chromium for the browser tests (sudo apt-get install chromium)"; \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "make: Chromium is missing; run 'sudo apt-get install chromium' (browser tests skip locally, fail under CI=true)"; \
	fi

## make axe: axe-core from the npm registry for the console's accessibility test (node_modules/, git-ignored);
## without npm the test uses the copy of axe-core the axe-playwright-python wheel (test extra) carries
axe:
	@if [ -f "$(AXE)" ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  echo "installing axe-core from the npm registry (node_modules/axe-core)"; \
	  npm install --no-save --no-package-lock --silent axe-core@4 >/dev/null || echo "make: npm could not install axe-core; the test uses the wheel's copy"; \
	fi

## make test: the whole test suite (installs the venv and, where it can, Chromium and axe-core first)
test: $(STAMP) browser axe
	UNSUBD_TEST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest $(PYTEST_ARGS)

## make proof: the ledger state machine at length, on SQLite and PostgreSQL (prints hypothesis statistics),
## then issue 22's attacks at length against `unsubd serve` on loopback (bench/attack_proof.py --long:
## 15 SIGKILLs, 500 hostile messages, 10,000 forged reports, 300 slow connections; prints the counters)
proof: $(STAMP)
	UNSUBD_LEDGER_EXAMPLES=$${UNSUBD_LEDGER_EXAMPLES:-500} UNSUBD_LEDGER_STEPS=$${UNSUBD_LEDGER_STEPS:-50} \
	  $(BIN)/python -m pytest -p no:timeout tests/integration/test_ledger_machine.py --hypothesis-show-statistics -q
	$(BIN)/python -m bench.attack_proof --long

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

## make fuzz: a long run of the classify fuzz target (tests/unit/test_fuzz_classify.py; CI runs 200 examples per test)
.PHONY: fuzz
fuzz: $(STAMP)
	UNSUBD_FUZZ_EXAMPLES=$${UNSUBD_FUZZ_EXAMPLES:-20000} $(BIN)/python -m pytest -q -p no:timeout tests/unit/test_fuzz_classify.py
