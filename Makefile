# Every entry point sets itself up first (scripts/bootstrap is idempotent: seconds when nothing changed).
SHELL := /bin/bash
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: bootstrap quickstart quickstart-down test k8s-tools image bench clean

bootstrap:
	@scripts/bootstrap

## The main job: the quickstart stack (`pulumi up`), one real inference, the listener's scores.
quickstart: bootstrap
	@$(ENV) scripts/quickstart

## Destroy the quickstart stack and stop what it started.
quickstart-down: bootstrap
	@$(ENV) scripts/quickstart down

## Lint and check the import contracts, then the whole test suite, through the real Pulumi engine and a real runtime on loopback.
test: bootstrap
	@$(ENV) ruff check . && lint-imports && python -m pytest $(PYTEST_ARGS)

## Build the Kubernetes tests' control plane and provider plugin into .tools/bin (the tests run this themselves).
k8s-tools: bootstrap
	@$(ENV) scripts/k8s-tools

## The runtime image from the Dockerfile, without a Docker daemon (podman on a debootstrapped Debian base).
image:
	@scripts/runtime-image

## Every benchmark, each printing its side-by-side table (LiteLLM, their comparison, in a venv of its own: scripts/litellm).
bench: bootstrap
	@$(ENV) export LITELLM="$$(scripts/litellm)" && for b in benchmarks/bench_*.py; do echo "== $$b"; python "$$b" || exit 1; done

clean:
	rm -rf .state .pytest_cache
