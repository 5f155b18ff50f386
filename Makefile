# Two entry points: `make run` (the service locally, in Docker) and `make test` (everything
# CI checks). Both install what they need; only Python 3.11 and pip are assumed.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "$(CURDIR)/.tools/bin/uv")
export UV_PYTHON_PREFERENCE := only-system

.PHONY: setup test lint pytest run model stubs bench clean

$(CURDIR)/.tools/bin/uv:
	python3 -m pip install --quiet --target "$(CURDIR)/.tools/uv" "uv==$(UV_VERSION)"
	mkdir -p "$(CURDIR)/.tools/bin" && ln -sf "$(CURDIR)/.tools/uv/bin/uv" "$(CURDIR)/.tools/bin/uv"

setup: $(UV) ## create .venv from uv.lock (all dependency groups)
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

run: ## build both images and start TF Serving + the gateway on http://localhost:9696
	docker compose up --build

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis
