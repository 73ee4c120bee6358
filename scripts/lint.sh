#!/usr/bin/env bash
# Lint and strict types over every package, the tests and the benchmarks (part of test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
source .venv/bin/activate

echo "== ruff"
ruff check .
ruff format --check .

echo "== mypy (strict)"
mypy libs/platform_core/src services/api/src services/worker/src services/bot/src \
    services/cli/src tests bench
