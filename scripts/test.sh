#!/usr/bin/env bash
# The project's test command (README, CI): lint, strict types, then the whole test suite
# (integration tests against a real Redis included) with statement and branch coverage.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
source .venv/bin/activate

# Coverage floors: platform_core (every service builds on it) is held at 100%; the project-wide floor is
# raised as the project grows and never lowered.
# Lowered on 2026-12-04 (stop 19) to 98 / 95 when four run kinds merged at once; raised back
# the next session once the gaps (docs/operations.md "Coverage debt") were closed: measured
# 100% / 97.4% on the merged main, so the project floor went up to 97.
PLATFORM_CORE_FLOOR=100
PROJECT_FLOOR=97

bash scripts/lint.sh

echo "== pytest"
rm -f .coverage .coverage.*
pytest --cov --cov-report= "$@"

echo "== coverage"
coverage report --include='libs/platform_core/*' --fail-under="$PLATFORM_CORE_FLOOR"
coverage report --fail-under="$PROJECT_FLOOR"
