# NanoSocket developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PORT ?= 3000

.PHONY: demo test lint typecheck pytest conformance conformance-compression conformance-compression-quick \
	conformance-client conformance-client-compression conformance-full bench venv clean browser-deps \
	redis-deps nginx-deps fuzz screenshots

# Creates the venv and installs the package (compiling the extension when there is one).
$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/nanosocket/_speedups/*.pyx src/nanosocket/_speedups/*.pxd)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip setuptools wheel
	$(PIP) install -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) examples/chat/app.py --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks examples fuzz setup.py
	$(VENV)/bin/ruff format --check src tests benchmarks examples fuzz setup.py

typecheck: venv
	$(VENV)/bin/mypy --strict src

# The whole suite runs on the compiled twins (which must have been built), then the tests of the
# engine, the transport and the server run again on the pure-Python spec the twins copy.
pytest: venv
	NANOSOCKET_REQUIRE_SPEEDUPS=1 $(PY) -m pytest -q
	NANOSOCKET_NO_SPEEDUPS=1 $(PY) -m pytest -q tests/protocol tests/test_transport.py tests/test_transport_twin.py tests/test_dispatch_twin.py tests/test_endpoint.py tests/server

# Refreshes the README's screenshots (docs/images/) from the browser tests of the demo and dashboard.
screenshots: venv browser-deps
	NANOSOCKET_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/browser/test_browser.py

# The real-browser tests (tests/browser/) need Debian's Chromium and, for the TypeScript check,
# node/npm and typescript in ./node_modules (gitignored). Installed when missing (CI runs as root
# on a fresh machine); without them the browser tests fail. NANOSOCKET_SKIP_BROWSER=1 skips both.
browser-deps:
	@if [ "$$NANOSOCKET_SKIP_BROWSER" = 1 ]; then echo "NANOSOCKET_SKIP_BROWSER=1: no browser tests"; exit 0; fi; \
	set -e; \
	missing=""; \
	command -v chromium >/dev/null || missing="chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi; \
	test -x node_modules/.bin/tsc || \
		npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error typescript@5

# On the compiled twin of the engine (what runs when it was built), then on the pure-Python spec.
# The cluster tests (tests/cluster/) need a redis-server binary: they use the Redis at
# 127.0.0.1:6379 when it answers, else start their own, and start private ones for the tests that
# kill or pause Redis. Installed from Debian when missing (CI runs as root on a fresh machine).
redis-deps:
	@command -v redis-server >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# tests/cluster/test_nginx.py runs docs/deployment.md's nginx config in front of NanoSocket nodes:
# it needs the nginx binary, installed from Debian when missing (CI runs as root on a fresh machine).
nginx-deps:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }

conformance: venv
	$(PY) tests/conformance/autobahn.py
	NANOSOCKET_NO_SPEEDUPS=1 $(PY) tests/conformance/autobahn.py --output-dir build/conformance-python

# permessage-deflate: every case (1-13) against the echo server in each compression mode, the two
# modes at once (one wstest each; about 10 minutes for both here, 12.*/13.* are minutes of wstest
# CPU). `make test` runs a quick subset in one mode (~27 s): every payload kind (12.1-12.5) and
# negotiation variant (13.1-13.7), with 16-byte messages (x.x.1) and with 8 KiB messages
# auto-fragmented into 256-byte frames (x.x.11). The ids are literal: the suite reads "12.*.1" as
# a prefix, which would select nearly all of 12.*.
COMPRESSION_QUICK_CASES := 12.1.1,12.2.1,12.3.1,12.4.1,12.5.1,12.1.11,12.2.11,12.3.11,12.4.11,12.5.11,\
13.1.1,13.2.1,13.3.1,13.4.1,13.5.1,13.6.1,13.7.1,13.1.11,13.2.11,13.3.11,13.4.11,13.5.11,13.6.11,13.7.11

conformance-compression: venv
	$(PY) tests/conformance/autobahn.py --compression shared --output-dir build/conformance-shared & \
	shared=$$!; \
	$(PY) tests/conformance/autobahn.py --compression dedicated --output-dir build/conformance-dedicated; \
	dedicated=$$?; wait $$shared && test $$dedicated = 0

conformance-compression-quick: venv
	$(PY) tests/conformance/autobahn.py --compression dedicated --cases "$(COMPRESSION_QUICK_CASES)" \
		--output-dir build/conformance-compression-quick

# The Python client against the suite's fuzzingserver (tests/conformance/autobahn_client.py): cases
# 1-10 (~15 s) and the quick compression subset in `make test`; every case with compression offered
# in both modes, at once, in conformance-client-compression (about 10 minutes here).
conformance-client: venv
	$(PY) tests/conformance/autobahn_client.py
	$(PY) tests/conformance/autobahn_client.py --compression dedicated --cases "$(COMPRESSION_QUICK_CASES)" \
		--output-dir build/conformance-client-compression-quick

conformance-client-compression: venv
	$(PY) tests/conformance/autobahn_client.py --compression shared \
		--output-dir build/conformance-client-shared & shared=$$!; \
	$(PY) tests/conformance/autobahn_client.py --compression dedicated \
		--output-dir build/conformance-client-dedicated; \
	dedicated=$$?; wait $$shared && test $$dedicated = 0

# Every compression case of both sides, in both modes (what CI runs after `make test`).
conformance-full: conformance-compression conformance-client-compression

test: lint typecheck browser-deps redis-deps nginx-deps pytest conformance conformance-compression-quick \
	conformance-client

# Coverage-guided fuzzing (atheris) of the envelope codec, the handshake parsing and the
# permessage-deflate path, FUZZ_SECONDS per target. Seeds come from fuzz/corpus/TARGET; new inputs
# go to build/fuzz/TARGET, inputs that break an invariant to build/fuzz/crashes (copy them into
# fuzz/corpus/TARGET once fixed: tests/test_fuzz.py replays the corpus, with a short hypothesis
# run of each target, in `make test`).
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := envelope handshake deflate

fuzz: venv
	@mkdir -p build/fuzz/crashes
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p build/fuzz/$$target; \
		echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
		$(PY) fuzz/run.py $$target -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=build/fuzz/crashes/$$target- build/fuzz/$$target fuzz/corpus/$$target \
			|| exit 1; \
	done

bench: venv
	$(PIP) install -e '.[dev,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
	rm -f src/nanosocket/_speedups/*.so src/nanosocket/_speedups/*.c
