# Two entry points: `make run` (the service locally, in Docker) and `make test` (everything
# CI checks). Both install what they need; only Python 3.11 and pip are assumed. A bare
# `make` lists the targets: every public one says what it does in a `## ` comment.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# One uv release everywhere: the gateway image's build pins it, the rest follows.
UV_VERSION := $(shell sed -n 's/^ARG UV_VERSION=//p' services/gateway/Dockerfile)
UV := $(shell command -v uv 2>/dev/null || echo "$(CURDIR)/.tools/bin/uv")
export UV_PYTHON_PREFERENCE := only-system
# Every dependency group (a plain `uv sync`, what `pulumi up` runs, installs only `infra`).
RUN := $(UV) run --locked --all-groups
# The model tooling needs TensorFlow, which has no wheel for Intel Macs since 2.17: there it
# runs in a Linux container (natively x86_64 under Docker Desktop), everywhere else here.
HOST_PLATFORM := $(shell uname -s)-$(shell uname -m)
ifeq ($(HOST_PLATFORM),Darwin-x86_64)
MODEL_TOOLS := tools/in-linux.sh python -m model_tools
else
MODEL_TOOLS := $(UV) run --locked --group model python -m model_tools
endif

# The model `make model` exports: the course's trained Xception (downloaded once into
# MODEL_CACHE), or your own Keras file: `make model MODEL_FILE=path/to/model.h5`.
MODEL_URL ?= https://github.com/DataTalksClub/machine-learning-zoomcamp/releases/download/chapter7-model/xception_v4_large_08_0.894.h5
MODEL_CACHE ?= .cache
COURSE_MODEL := $(MODEL_CACHE)/xception_v4_large_08_0.894.h5
MODEL_FILE ?= $(COURSE_MODEL)
MODEL_DIR ?= services/tf-serving/models
# More `python -m model_tools export` options, e.g. --labels-file labels.txt --preprocessing torch
EXPORT_ARGS ?=
# The name TF Serving serves the export under (empty: the export's default); `make run`
# passes the same name to the gateway through compose.
MODEL_NAME ?=
export MODEL_NAME
EXPORTED := $(MODEL_DIR)/models.config
# What the export was made from: a different MODEL_FILE, MODEL_DIR, MODEL_NAME or EXPORT_ARGS
# re-exports.
EXPORT_INPUTS := $(MODEL_CACHE)/export-inputs
export_args = $(if $(MODEL_NAME),--name "$(MODEL_NAME)") $(EXPORT_ARGS)
export_inputs = $(abspath $(MODEL_FILE)) $(abspath $(MODEL_DIR)) $(export_args)

# The TensorFlow runtime of the pinned TF Serving image, to prove exports load in it.
TF_SERVING_RUNTIME := $(CURDIR)/.tools/tf-serving-runtime/bin/python
# The schemas of the custom resources the Pulumi program declares (npm packages).
CRD_SCHEMAS := $(CURDIR)/tests/crds/node_modules/.package-lock.json
# axe-core, the accessibility rules the website's browser tests run (an npm package).
WEB_CHECKS := $(CURDIR)/tests/web/node_modules/.package-lock.json

.PHONY: help setup venv test lint pytest run dev model inspect stubs fuzz bench load cost \
  screenshots clean FORCE

help: ## this list (make TARGET [VARIABLE=value ...]; the variables are in the Makefile)
	@echo "make TARGET, where TARGET is one of:"
	@sed -n 's/^\([a-z][a-z-]*\):.*## \(.*\)$$/\1\t\2/p' $(firstword $(MAKEFILE_LIST)) \
	  | awk -F '\t' '!seen[$$1]++ { printf "  %-12s %s\n", $$1, $$2 }'

$(CURDIR)/.tools/bin/uv:
	python3 -m pip install --quiet --target "$(CURDIR)/.tools/uv" "uv==$(UV_VERSION)"
	mkdir -p "$(CURDIR)/.tools/bin" && ln -sf "$(CURDIR)/.tools/uv/bin/uv" "$(CURDIR)/.tools/bin/uv"

CHECKOV := $(CURDIR)/.tools/checkov/bin/checkov

$(CHECKOV): tools/checkov-requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python 3.11 "$(CURDIR)/.tools/checkov"
	VIRTUAL_ENV="$(CURDIR)/.tools/checkov" $(UV) pip sync --quiet tools/checkov-requirements.txt
	mkdir -p "$(CURDIR)/.tools/bin" && ln -sf "$(CHECKOV)" "$(CURDIR)/.tools/bin/checkov"
	touch "$(CHECKOV)"

$(TF_SERVING_RUNTIME): tools/tf-serving-runtime-requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python 3.11 "$(CURDIR)/.tools/tf-serving-runtime"
	VIRTUAL_ENV="$(CURDIR)/.tools/tf-serving-runtime" $(UV) pip sync --quiet tools/tf-serving-runtime-requirements.txt
	touch "$(TF_SERVING_RUNTIME)"

$(CRD_SCHEMAS): tests/crds/package-lock.json
	npm ci --prefix tests/crds --no-audit --no-fund --loglevel=error
	touch "$(CRD_SCHEMAS)"

$(WEB_CHECKS): tests/web/package-lock.json
	npm ci --prefix tests/web --no-audit --no-fund --loglevel=error
	touch "$(WEB_CHECKS)"

venv: | $(UV) ## .venv from uv.lock (all dependency groups)
	$(UV) sync --locked --all-groups

# The test tools are set up where `make test` runs (CI's platform): the TF Serving image's
# TensorFlow and Debian's nginx and Chromium exist for Linux x86_64 only.
ifeq ($(HOST_PLATFORM),Linux-x86_64)
setup: venv $(CHECKOV) $(TF_SERVING_RUNTIME) $(CRD_SCHEMAS) $(WEB_CHECKS) ## .venv, plus the test tools (checkov, TF Serving runtime, CRD schemas, axe-core, nginx, Chromium)
	bash tools/install-test-packages.sh
else
setup: venv
	@echo "note: .venv is ready; the test tools (checkov, the TF Serving runtime, nginx, Chromium) are set up on Linux x86_64 only, where make test runs"
endif

lint: setup ## ruff + mypy
	$(UV) lock --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

pytest: setup ## the tests alone (no lint)
	$(RUN) pytest

test: lint pytest ## what CI runs

# Longer, random-seeded runs of the coverage-guided fuzz targets (tests/fuzz); the test
# suite runs each from a fixed seed for a few seconds. FUZZ_TARGET=decode runs just one.
FUZZ_SECONDS ?= 600
FUZZ_TARGET ?= decode url body predict_response
fuzz: setup ## fuzz the gateway's parsers for FUZZ_SECONDS each (crashes land in .cache/fuzz)
	mkdir -p $(MODEL_CACHE)/fuzz
	for target in $(FUZZ_TARGET); do \
	  $(RUN) python -m tests.fuzz.seeds $$target $(MODEL_CACHE)/fuzz/$$target-corpus && \
	  $(RUN) python -m tests.fuzz $$target -max_total_time=$(FUZZ_SECONDS) -timeout=5 \
	    -rss_limit_mb=2048 -artifact_prefix=$(MODEL_CACHE)/fuzz/ $(MODEL_CACHE)/fuzz/$$target-corpus \
	    || exit 1; \
	done

stubs: setup ## regenerate the gateway's TF Serving stubs
	$(RUN) python services/gateway/tools/generate_stubs.py

# Only the course's model is downloaded; any other MODEL_FILE must already exist.
$(COURSE_MODEL):
	@mkdir -p "$(dir $@)"
	@echo "downloading the course's model: $(MODEL_URL)"
	@curl -fsSL --retry 2 --connect-timeout 10 -o "$@.part" "$(MODEL_URL)" 2>"$@.log" \
	  && mv "$@.part" "$@" && rm -f "$@.log" \
	  || { rm -f "$@.part"; \
	       echo "error: could not download $(MODEL_URL) ($$(tail -n 1 "$@.log"; rm -f "$@.log"))" >&2; \
	       echo "  Download it (or use any Keras image classifier you have) and run:" >&2; \
	       echo "  make model MODEL_FILE=path/to/model.h5" >&2; exit 1; }

ifneq ($(MODEL_FILE),$(COURSE_MODEL))
$(MODEL_FILE):
	@echo "error: MODEL_FILE=$(MODEL_FILE) does not exist" >&2; exit 1
endif

$(EXPORT_INPUTS): FORCE
	@mkdir -p "$(dir $@)"
	@echo '$(export_inputs)' | cmp -s - "$@" || echo '$(export_inputs)' > "$@"

$(EXPORTED): $(MODEL_FILE) $(EXPORT_INPUTS) | $(UV)
	$(MODEL_TOOLS) export "$(MODEL_FILE)" --out "$(MODEL_DIR)" \
	  --overwrite $(export_args)

model: $(EXPORTED) ## export MODEL_FILE (default: the course's model) for TF Serving

# The model `make dev` and `make run` serve (MODEL_NAME, else the export's default name).
inspect: | $(UV) ## print the exported model's signatures and manifest
	@$(MODEL_TOOLS) inspect "$(MODEL_DIR)" $(if $(MODEL_NAME),--name "$(MODEL_NAME)")

run: ## build both images and start TF Serving + the gateway on http://localhost:9696
	@tools/check-docker.sh
	$(MAKE) --no-print-directory model
	docker compose up --build

# Without Docker: TensorFlow in Python serves the export (`python -m model_tools serve`, not
# TF Serving), the gateway runs under gunicorn. It serves what `make model` last exported,
# exporting first when there is nothing yet or when MODEL_FILE, EXPORT_ARGS or MODEL_NAME
# is given. DEV_ARGS: `python tools/dev.py` options (--port, --model-port).
DEV_ARGS ?=
# Given: on the command line, or non-empty in the environment (a parent make exports
# MODEL_NAME, empty, to everything it runs: that names nothing).
dev_given = $(strip $(foreach v,MODEL_FILE EXPORT_ARGS MODEL_NAME,$(if $(or \
  $(filter command line,$(origin $(v))),$(and $(filter environment%,$(origin $(v))),$(strip $($(v))))),$(v))))
dev_exports = $(or $(dev_given),$(if $(wildcard $(EXPORTED)),,none yet))
ifeq ($(HOST_PLATFORM),Darwin-x86_64)
dev: ## try your model without Docker: model server + gateway, the website on localhost:9696
	@echo "error: make dev runs TensorFlow here, which has no wheel for Intel Macs since 2.17: make run serves the model in Docker" >&2; exit 1
else
dev: | $(UV) ## try your model without Docker: model server + gateway, the website on localhost:9696
	@$(if $(dev_exports),$(MAKE) --no-print-directory model)
	@$(RUN) python tools/dev.py "$(MODEL_DIR)" $(if $(MODEL_NAME),--name "$(MODEL_NAME)") $(DEV_ARGS)
endif

cost: venv ## hourly cost of the dev and prod stacks (from their config and list prices)
	$(RUN) python -m infra.cost

# More options of the benchmarks, e.g. BENCH_ARGS="--images path/to/jpegs" (default: the
# 10 in tests/fixtures/images)
BENCH_ARGS ?=
bench: venv ## gateway vs the course's reference gateway (prints req/s, p50/p99)
	$(RUN) python -m bench.gateway_vs_reference $(BENCH_ARGS)

load: venv ## load test: sustained req/s, p50/p95/p99, errors, gateway RSS over the run
	$(RUN) python -m bench.load_test $(BENCH_ARGS)

# The README's pictures of the website, taken by its browser tests: into
# $(MODEL_CACHE)/screenshots to look at, into docs/ (tracked) with UPDATE_DOCS=1.
SCREENSHOTS := $(if $(UPDATE_DOCS),$(CURDIR)/docs,$(abspath $(MODEL_CACHE))/screenshots)
screenshots: setup ## retake the website's pictures into .cache/screenshots (UPDATE_DOCS=1: docs/)
	@mkdir -p "$(SCREENSHOTS)"
	WEBSITE_SCREENSHOTS="$(SCREENSHOTS)" $(RUN) pytest -q tests/web -k "screenshot or phone or waking"
	@echo "screenshots: $(SCREENSHOTS)/website.png, website-phone.png, website-waking.png"

clean: ## remove .venv, .tools and .cache (installed tools, downloads, exports' inputs)
	rm -rf .venv .tools .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
