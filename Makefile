# meshd — the two commands a new user needs are `make demo` and `make test`.
# Each does its own set-up (apt packages, .venv, pip) on a fresh machine.

PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast services stop-services bench clean fuzz

setup:
	@bash scripts/setup.sh

# A small local mesh on the embedded store: publishes the example engines,
# enqueues tasks and a split/map/reduce pipeline, and shows the results.
demo: setup
	@$(PY) scripts/demo.py

# The whole suite against a real Docker engine and a real IPFS node, both
# started by the project's own scripts.
test: setup
	@bash scripts/test.sh $(PYTEST_ARGS)

# The suite without starting Docker/IPFS (their tests skip, with the reason).
test-fast: setup
	@MESHD_DOCKER_AUTOSTART=0 MESHD_IPFS_AUTOSTART=0 $(PY) -m pytest -q $(PYTEST_ARGS)

# Long fuzzing, never in CI: schemathesis (~5,000 API requests) and atheris
# on every decoder for FUZZ_SECONDS each, corpus kept in fuzz/corpus/.
fuzz: setup
	@bash scripts/fuzz.sh

services:
	@bash scripts/start-services.sh

stop-services:
	@bash scripts/stop-docker.sh || true
	@bash scripts/stop-ipfs.sh || true

bench: setup
	@.venv/bin/meshd bench lattice --json

clean: stop-services
	rm -rf .venv .run .demo .pytest_cache .hypothesis
