#!/usr/bin/env bash
# The README's main job: set everything up on a fresh machine, then train a BPE tokenizer and
# a tiny GPT-2 on the built-in corpus through the real API, queue, worker and Redis (an
# embedded redis-server when REDIS_URL is unset), following both runs live over SSE.
# Extra arguments go to `trainctl demo` (e.g. --steps 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/trainctl demo "$@"
