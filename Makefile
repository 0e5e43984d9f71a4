# Every target that needs the environment creates it first, so each works alone on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUTPUT ?= runs
PROFILE ?= quick
ARGS ?=
SWEEP = $(BIN)/sweep --output $(OUTPUT)
JOBS ?=
REPEATS ?=
CONFIRM ?=
# Runs per grid point (REPEATS) and a drawn study's best configurations retrained (CONFIRM).
SEEDS = $(if $(REPEATS),--repeats $(REPEATS)) $(if $(CONFIRM),--confirm $(CONFIRM))
RUN = $(SWEEP) run --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS)) $(SEEDS)
DEBIAN_DATASET := /usr/share/datasets/fashion-mnist
# Many workers: `make services`, then `make workers N=2 SPACE=filters`.
PG_PORT ?= 5433
MLFLOW_PORT ?= 5001
STORAGE ?= postgresql://sweep@127.0.0.1:$(PG_PORT)/optuna
TRACKING ?= http://127.0.0.1:$(MLFLOW_PORT)
N ?= 2
SPACE ?= filters

.DEFAULT_GOAL := help
.PHONY: help setup dataset factors sweep-filters sweep-kernel sweep-batch sweep-lr sweep-depth sweep sweep-classifier \
	studies classify report ui dashboard services services-stop workers test test-fast lint clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}'
	@echo "  Variables: PROFILE=quick|full  JOBS=auto|N  REPEATS=N  CONFIRM=K  OUTPUT=runs  ARGS='--n-trials 5 --set epochs=3'"

setup: $(STAMP) dataset ## Create .venv, install the package with test extras, and the dataset

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

dataset: ## Install Debian's dataset-fashion-mnist where apt is available
	@if [ -d $(DEBIAN_DATASET) ]; then \
		true; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "note: no apt here; Fashion-MNIST will come from Keras' cache or download"; \
	fi

sweep-filters: setup ## Sweep the filter counts (4 configurations)
	$(RUN) search_spaces/filters.yaml $(ARGS)

sweep-kernel: setup ## Sweep the kernel size
	$(RUN) search_spaces/kernel.yaml $(ARGS)

sweep-batch: setup ## Sweep the batch size
	$(RUN) search_spaces/batch.yaml $(ARGS)

sweep-lr: setup ## Sweep the learning rate
	$(RUN) search_spaces/lr.yaml $(ARGS)

sweep-depth: setup ## Sweep the depth (stages, convs per stage, poolings)
	$(RUN) search_spaces/depth.yaml $(ARGS)

sweep-classifier: setup ## Sweep the classifier stage on the best encoder (val_accuracy)
	$(RUN) search_spaces/classifier.yaml $(ARGS)

FACTORS = filters kernel batch lr depth

factors: setup ## The five one-factor sweeps, REPEATS=3 runs per value, then the report
	@for space in $(FACTORS); do \
		$(SWEEP) run --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS)) --repeats $(or $(REPEATS),3) \
		  search_spaces/$$space.yaml $(ARGS) || exit $$?; \
	done
	$(SWEEP) report

sweep: setup ## Joint search over all of them (TPE with pruning)
	$(RUN) search_spaces/joint.yaml $(ARGS)

studies: $(STAMP) ## List the studies with their trial counts and best values
	$(SWEEP) studies

classify: setup ## Classifier on the best encoder: frozen, then fine-tuned; test metrics once
	$(SWEEP) classify --profile $(PROFILE) $(ARGS)

report: $(STAMP) ## Write the PDF report of every study to $(OUTPUT)/report.pdf
	$(SWEEP) report

ui: $(STAMP) ## Open the MLflow UI on the project's store (127.0.0.1:5000)
	$(SWEEP) ui

dashboard: $(STAMP) ## Open Optuna's dashboard on the project's storage (127.0.0.1:8080)
	$(SWEEP) dashboard

services: setup ## Start PostgreSQL + an MLflow server on loopback, for many workers
	$(SWEEP) services start --pg-port $(PG_PORT) --mlflow-port $(MLFLOW_PORT)

services-stop: $(STAMP) ## Stop the services started by `make services`
	$(SWEEP) services stop

workers: setup ## Run N workers (N=2, JOBS=1 trials each, the cores shared) on search_spaces/$(SPACE).yaml over the services
	@mkdir -p $(OUTPUT)/workers
	@export PGPASSWORD="$${PGPASSWORD:-$$(cat $(OUTPUT)/services/password 2>/dev/null)}"; \
	jobs=$${JOBS:-1}; cores=$$(nproc); threads=$$(( 2 * cores / ($(N) * $$jobs) )); \
	[ $$threads -ge 1 ] || threads=1; [ $$threads -le $$cores ] || threads=$$cores; \
	for i in $$(seq 1 $(N)); do \
		( $(SWEEP) run --profile $(PROFILE) --jobs $$jobs --threads $$threads $(SEEDS) \
		  search_spaces/$(SPACE).yaml \
		  --storage $(STORAGE) --tracking-uri $(TRACKING) $(ARGS) 2>&1; \
		  echo "exit code $$?" ) | tee $(OUTPUT)/workers/worker-$$i.log | sed -u "s/^/[worker $$i] /" & \
	done; wait; \
	! grep -L "^exit code 0$$" $(OUTPUT)/workers/worker-*.log | grep -q .

test: $(STAMP) ## Run the test suite
	$(BIN)/pytest

test-fast: $(STAMP) ## Run the tests that train nothing end to end
	$(BIN)/pytest -m "not slow"

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean: ## Remove generated output (the runs/ folder)
	rm -rf $(OUTPUT)
