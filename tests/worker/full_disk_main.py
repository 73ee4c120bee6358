"""A model run whose disk fills up while it trains, on a small file system of its own.

Run by `test_full_disk.py` inside `unshare --user --map-root-user --mount` with a tmpfs of a
few MB mounted on argv[1] (the data root) and a real Redis at argv[2]. Once the run passes
step 20, a filler file takes every byte left; the run must then fail with STORAGE_FULL.
Prints one JSON line: the job's result and what the data root holds afterwards.
"""

from __future__ import annotations

import errno
import json
import sys
import threading
import time
from pathlib import Path

from platform_core.event_bus import EventBus
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.redis_connection import connect
from platform_core.run_state import RunStateStore, RunStatus
from platform_core.specs import TokenizerSpec
from trainer_worker.job_context import run_job
from trainer_worker.model_run import train_model_body
from trainer_worker.tokenizers.artifacts import train_tokenizer_artifact

SPEC: JsonObject = {
    "model": {"family": "char_lstm", "preset": "tiny"},
    "tokenizer_id": "tok",
    "train": {
        "max_steps": 5000,
        "batch_size": 8,
        "block_size": 32,
        "eval_every": 10,
        "eval_batches": 1,
        "progress_every_steps": 5,
        "checkpoint_every": 10,
        "device": "cpu",
        "seed": 5,
    },
    "retention": {"keep_last_n": 1, "min_free_disk_fraction": 0.0},
    "sample_max_new_tokens": 4,
}


def fill_when_past(store: RunStateStore, run_id: str, step: int, filler: Path) -> None:
    deadline = time.monotonic() + 120
    while int(float(store.progress(run_id).get("step", "0"))) < step:
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    with filler.open("ab", buffering=0) as handle:  # the last bytes a chunk could not take
        try:
            while True:
                handle.write(b"\0")
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def main() -> None:
    root, redis_url = Path(sys.argv[1]), sys.argv[2]
    layout = DataLayout(root)
    train_tokenizer_artifact("tok", TokenizerSpec(kind="char"), root)
    client = connect(redis_url)
    store = RunStateStore(client)
    store.set_status("full", RunStatus.QUEUED)
    filler = threading.Thread(
        target=fill_when_past, args=(RunStateStore(connect(redis_url)), "full", 20, root / "fill")
    )
    filler.start()
    result = run_job(
        "train_model",
        "full",
        lambda context: train_model_body(SPEC, context),
        bus=EventBus(client),
        layout=layout,
    )
    filler.join()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    log = layout.run_log("full")
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    torn = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            torn += 1
    report = {"result": result, "files": files, "torn_log_lines": torn}
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
