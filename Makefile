# The two commands a newcomer needs: `make up` (the assistant on the embedded default) and `make test` (everything).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help bootstrap up test test-fast test-vm lint typecheck bench monitoring plugin-example infra-preview clean images bundle

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

bootstrap:  ## install Debian packages, .venv and the cached llama.cpp wheel (idempotent)
	@scripts/bootstrap

up: bootstrap  ## run the assistant, a local model server and a generic-IM inbox in the foreground
	$(BIN)/ai-assistant up

lint: bootstrap  ## ruff over everything, mypy --strict over service/, infra/ and monitoring/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service tests bench monitoring infra airgap
	$(BIN)/mypy

typecheck: lint

test: bootstrap  ## lint and every test; the Debian 12 VM suite runs beside the others (scripts/run-tests)
	@PYTEST_ARGS="$(PYTEST_ARGS)" scripts/run-tests

test-fast: bootstrap  ## everything except the VM suite (about 35 min)
	$(BIN)/pytest -m 'not vm' $(PYTEST_ARGS)

test-vm: bootstrap  ## only the Ansible roles converged and verified in a Debian 12 VM (QEMU, 40-60 min)
	$(BIN)/pytest -m vm tests/roles $(PYTEST_ARGS)

images: bootstrap  ## build the assistant and model-server images with podman (cached by their inputs; docs/images.md)
	PYTHON=$(BIN)/python scripts/build-images

bundle: bootstrap  ## the air-gapped bundle: one archive with wheels, models, a signed APT repository, Ansible (docs/images.md)
	PYTHON=$(BIN)/python scripts/build-bundle $(BUNDLE_ARGS)

bench: bootstrap  ## the benchmarks in bench/ (figures go to docs/benchmarks.md by hand)
	$(BIN)/python bench/ack_bench.py
	$(BIN)/python bench/ack_bench.py --payload feishu
	$(BIN)/python bench/ack_bench.py --payload slack
	$(BIN)/python bench/ack_inprocess.py
	$(BIN)/python bench/answer_bench.py
	$(BIN)/python bench/answer_bench.py --knowledge --store sqlite
	$(BIN)/python bench/answer_bench.py --soak 180 --store redis
	$(BIN)/python bench/first_words_bench.py
	$(BIN)/python bench/rss_components.py
	$(BIN)/python bench/kb_bench.py

monitoring: bootstrap  ## regenerate rules and dashboards, then run the monitoring tests
	$(BIN)/python -m monitoring.rulegen && $(BIN)/python -m monitoring.dashboards
	$(BIN)/pytest tests/monitoring

plugin-example: bootstrap  ## build and sign the example plugin into build/plugins/ (signing key made there on first use)
	$(BIN)/python examples/plugins/build.py

infra-preview:  ## pulumi preview with the security policy pack (needs the Pulumi CLI and cloud credentials)
	pulumi preview --policy-pack infra/policy

clean:  ## remove the virtualenv and local state (the llama.cpp wheel cache is kept)
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
