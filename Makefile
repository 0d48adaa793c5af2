# Every entry point sets itself up first (scripts/bootstrap is idempotent: seconds when nothing changed).
SHELL := /bin/bash
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=
# Test workers: most of a test's time is spent waiting on the runtime, Pulumi or a server it started,
# so the default is one worker more than a 2-core machine's cores (D43); `make test PYTEST_WORKERS=0` runs serially.
PYTEST_WORKERS ?= 3

.PHONY: bootstrap quickstart quickstart-down test test-setup k8s-tools image bench clean

bootstrap:
	@scripts/bootstrap

## The main job: the quickstart stack (`pulumi up`), one real inference, the listener's scores.
quickstart: bootstrap
	@$(ENV) scripts/quickstart

## Destroy the quickstart stack and stop what it started.
quickstart-down: bootstrap
	@$(ENV) scripts/quickstart down

## Set up (every tool the suite needs, built or checked), lint and check the import contracts, then the
## whole test suite, through the real Pulumi engine and a real runtime on loopback: all but the Kubernetes
## group on xdist workers, then that group on its own, in order (D43). Exit 5 (nothing selected) is no failure.
test: test-setup
	@$(ENV) ruff check . && lint-imports \
	  && { python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not kubernetes" $(PYTEST_ARGS) || [ $$? = 5 ]; } \
	  && { python -m pytest -m kubernetes $(PYTEST_ARGS) || [ $$? = 5 ]; }

## The setup phase of `make test`, on its own: Kubernetes tools, the Wallaroo SDK venv, the runtime image, PostgreSQL.
test-setup: bootstrap
	@$(ENV) scripts/test-setup

## Build the Kubernetes tests' control plane and provider plugin into .tools/bin (make test-setup does).
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
