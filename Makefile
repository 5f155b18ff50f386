# Two entry points: `make run` (the service locally, in Docker) and `make test` (everything
# CI checks). Both install what they need; only Python 3.11 and pip are assumed.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "$(CURDIR)/.tools/bin/uv")
export UV_PYTHON_PREFERENCE := only-system

MODEL_URL ?= https://github.com/DataTalksClub/machine-learning-zoomcamp/releases/download/chapter7-model/xception_v4_large_08_0.894.h5
MODEL_FILE ?= .cache/xception_v4_large_08_0.894.h5
EXPORTED := services/tf-serving/models/clothing-model/1/saved_model.pb

.PHONY: setup test lint pytest run model stubs bench load cost clean

$(CURDIR)/.tools/bin/uv:
	python3 -m pip install --quiet --target "$(CURDIR)/.tools/uv" "uv==$(UV_VERSION)"
	mkdir -p "$(CURDIR)/.tools/bin" && ln -sf "$(CURDIR)/.tools/uv/bin/uv" "$(CURDIR)/.tools/bin/uv"

CHECKOV := $(CURDIR)/.tools/checkov/bin/checkov

$(CHECKOV): tools/checkov-requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python 3.11 "$(CURDIR)/.tools/checkov"
	VIRTUAL_ENV="$(CURDIR)/.tools/checkov" $(UV) pip sync --quiet tools/checkov-requirements.txt
	mkdir -p "$(CURDIR)/.tools/bin" && ln -sf "$(CHECKOV)" "$(CURDIR)/.tools/bin/checkov"
	touch "$(CHECKOV)"

setup: $(UV) $(CHECKOV) ## create .venv from uv.lock (all dependency groups) and the checkov tool
	$(UV) sync --locked

lint: setup ## ruff + mypy
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy

pytest: setup
	$(UV) run --locked pytest

test: lint pytest ## what CI runs

stubs: setup ## regenerate the gateway's TF Serving stubs
	$(UV) run --locked python services/gateway/tools/generate_stubs.py

$(MODEL_FILE):
	mkdir -p $(dir $(MODEL_FILE))
	curl -fL --retry 3 -o "$@.part" "$(MODEL_URL)" && mv "$@.part" "$@"

$(EXPORTED): | $(MODEL_FILE)
	$(MAKE) setup
	$(UV) run --locked python -m model_tools export "$(MODEL_FILE)" --outputs logits

model: $(EXPORTED) ## download the course's trained model and export it for TF Serving

run: model ## build both images and start TF Serving + the gateway on http://localhost:9696
	docker compose up --build

cost: setup ## hourly cost of the dev and prod stacks (from their config and list prices)
	$(UV) run --locked python -m infra.cost

bench: setup ## gateway vs the course's reference gateway (prints req/s, p50/p99)
	$(UV) run --locked python -m bench.gateway_vs_reference

load: setup ## load test: sustained req/s, p50/p95/p99, errors, gateway RSS over the run
	$(UV) run --locked python -m bench.load_test

clean:
	rm -rf .venv .tools .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
