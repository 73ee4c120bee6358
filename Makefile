# Common operations. Each target is one line calling the project's own commands;
# `make help` lists them. Variables: ARGS (extra arguments), CONFIRM=1 (really delete).
.DEFAULT_GOAL := help
TRAINCTL := .venv/bin/trainctl

.PHONY: help train resume clean-artifacts test lint format docker-build docker-run

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-16s %s\n", $$1, $$2}'

train: ## train a BPE tokenizer and a GPT-2 through the API, followed live (ARGS="--steps 1000")
	./scripts/demo.sh $(ARGS)

resume: ## run a worker: runs whose worker died resume from their newest valid checkpoint
	bash scripts/bootstrap.sh && $(TRAINCTL) worker $(ARGS)

clean-artifacts: ## remove unfinished and corrupt checkpoint writes (a dry run unless CONFIRM=1)
	bash scripts/bootstrap.sh && $(TRAINCTL) cleanup --orphaned-only $(if $(CONFIRM),,--dry-run) $(ARGS)

test: ## ruff, mypy --strict and the whole test suite with coverage floors
	./scripts/test.sh $(ARGS)

lint: ## ruff check, ruff format --check and mypy --strict
	./scripts/lint.sh

format: ## format and auto-fix with ruff
	bash scripts/bootstrap.sh && .venv/bin/ruff format . && .venv/bin/ruff check --fix .

docker-build: ## build the api, worker and bot images
	docker compose --profile dev build

docker-run: ## start redis, api, worker and bot with docker compose (needs .env)
	docker compose --profile dev up
