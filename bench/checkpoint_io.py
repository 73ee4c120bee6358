"""Checkpoint I/O of trainer_worker.checkpoints against raw file I/O on the same filesystem,
for model + AdamW states of the requested sizes (issue 4's benchmark).

(a) save_ratio: `write_snapshot` (serialise + SHA-256 + fsync + rename + index) GB/s over a
    raw `write` + `fsync` of the same number of bytes.
    save_vs_limit_ratio: the same save against the limit a verified save can reach, the slower
    of that raw write + fsync and one core's SHA-256 of the same bytes (hashlib over them in
    memory), both timed in the same repetition: on a disk faster than one core hashes, the
    save ratio cannot reach 1 with a whole-file digest; this one can.
(b) verify_ratio: `verify_checkpoint` (the hashing read of every file) GB/s over a raw read +
    `hashlib.sha256` of the same files in the same 8 MiB pieces; `load_checkpoint` reported too.
(c) stall_ratio: time the training thread is blocked (`CheckpointWriter.snapshot`, which
    refills the previous checkpoint's buffers, + `submit`) over a synchronous `save_checkpoint`.
(d) resume_s: `load_checkpoint` into a fresh model (verify + deserialise + load_state_dict +
    TrainState).

Our path and the baseline alternate which goes first, repetition by repetition; a ratio is
the median of the repetitions' paired ratios (time of one over time of the other), a GB/s or
seconds figure the median of its own runs. Before every timed operation the page cache is
written back (`sync`) and, when the process may (root), dropped, so reads come from the disk.

Usage: python bench/checkpoint_io.py [--sizes 100MB,1GB] [--repeats 3] [--dir /tmp]
The last line printed is one JSON object with the figures issue 4 names (ratios for the
largest size, normally 1 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer_worker.checkpoints import (
    CheckpointMeta,
    CheckpointWriter,
    Snapshot,
    checkpoint_name,
    load_checkpoint,
    save_checkpoint,
    snapshot,
    verify_checkpoint,
    write_snapshot,
)
from trainer_worker.checkpoints.hashed_io import HASH_THREADS
from trainer_worker.training.seeding import make_generator
from trainer_worker.training.state import TrainState, capture_train_state

LAYERS = 4  # a few large Linear layers; their float32 weights are a third of the size
CHUNK = 8 * 1024 * 1024  # the raw hashing read uses the same piece size as verify_checkpoint
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
_UNITS = {"": 10**6, "MB": 10**6, "GB": 10**9, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'100MB', '1GB', '512MiB' (a bare number is MB) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 100MB, 1GB)")
    return int(float(match.group(1)) * _UNITS[unit])


def _label(size: int) -> str:
    return f"{size / 10**9:g}gb" if size >= 10**9 else f"{size / 10**6:g}mb"


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model and its TrainState (AdamW after one step) totalling about `size` bytes."""

    size: int  # requested bytes: weights ~1/3, AdamW's exp_avg and exp_avg_sq ~2/3
    width: int  # every layer is Linear(width, width)
    model: nn.Sequential
    state: TrainState  # optimizer tensors shared with the live (discarded) optimizer


def build_model(size: int) -> tuple[nn.Sequential, int]:
    params = size // 3 // 4  # float32 parameters holding a third of the bytes
    width = max(8, round(math.sqrt(params / LAYERS)))
    return nn.Sequential(*(nn.Linear(width, width) for _ in range(LAYERS))), width


def build_workload(size: int) -> Workload:
    torch.manual_seed(0)
    model, width = build_model(size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # one step on a dummy loss so both moment buffers exist, each the size of the weights
    model(torch.ones(1, width)).square().mean().backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)
    state = capture_train_state(
        step=1,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        sampler=make_generator(0),
        tokens_seen=0,
        best_eval_loss=None,
        evals_without_improvement=0,
    )
    return Workload(size, width, model, state)


class Cache:
    """Writes dirty pages back and, when allowed, drops the page cache before each timed
    operation, so every one starts from the same state."""

    def __init__(self) -> None:
        self.cold = self._drop()

    def settle(self) -> None:
        if self.cold:
            self._drop()
        else:
            os.sync()

    @staticmethod
    def _drop() -> bool:
        os.sync()
        try:
            DROP_CACHES.write_text("3\n")
        except OSError:
            return False
        return True


def timed(cache: Cache, action: Callable[[], object]) -> float:
    cache.settle()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def raw_write(path: Path, data: bytes) -> None:
    """The baseline for (a): one file, one write, fsync; what the hardware gives."""
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def raw_sha256(files: list[Path]) -> None:
    """The baseline for (b): read each file in 8 MiB pieces and hash it, keep nothing."""
    for path in files:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        digest.hexdigest()


def _alternate(
    rep: int, ours: Callable[[], float], base: Callable[[], float]
) -> tuple[float, float]:
    """Run both, swapping which goes first every repetition; return (ours, base) seconds."""
    if rep % 2:
        first = ours()
        return first, base()
    first = base()
    return ours(), first


def sha256_once(data: bytes) -> None:
    """One core's SHA-256 of the bytes, in memory: the hashing half of a verified save."""
    hashlib.sha256(data).digest()


def measure_save(
    snap: Snapshot, root: Path, cache: Cache, repeats: int
) -> tuple[list[float], list[float], list[float], CheckpointMeta, Path]:
    """(a) Returns our times, raw write times, SHA-256 times, the meta and the folder of one
    kept checkpoint."""
    ours_s: list[float] = []
    raw_s: list[float] = []
    hash_s: list[float] = []
    metas: list[CheckpointMeta] = []
    payload = b""
    for rep in range(repeats):
        target = root / f"save-{rep}"
        step_snap = dataclasses.replace(snap, step=rep + 1)  # a new folder per repetition

        def ours(target: Path = target, step_snap: Snapshot = step_snap) -> float:
            cache.settle()
            start = time.perf_counter()
            metas.append(write_snapshot(target, step_snap, eval_loss=1.0))
            return time.perf_counter() - start

        if not payload:  # an untimed warm-up save, which also tells the raw write its size
            size = write_snapshot(root / "warmup", snap, eval_loss=1.0).size_bytes
            payload = np.random.default_rng(0).bytes(size)  # incompressible, like weights
            shutil.rmtree(root / "warmup")
        raw_file = root / f"raw-{rep}.bin"
        base = functools.partial(timed, cache, functools.partial(raw_write, raw_file, payload))
        ours_time, raw_time = _alternate(rep, ours, base)
        ours_s.append(ours_time)
        raw_s.append(raw_time)
        hash_s.append(timed(cache, functools.partial(sha256_once, payload)))
        raw_file.unlink()
        if rep < repeats - 1:
            shutil.rmtree(target)
    last = root / f"save-{repeats - 1}"
    return ours_s, raw_s, hash_s, metas[-1], last / checkpoint_name(repeats)


def measure_stall(
    load: Workload, root: Path, cache: Cache, repeats: int
) -> tuple[list[float], list[float], list[float]]:
    """(c) Returns blocked times, synchronous save times and background write times. An
    untimed first checkpoint goes through the writer first: in a run, every checkpoint after
    the first refills the buffers of the one before."""
    writer = CheckpointWriter()
    writer.submit(
        root / "background",
        writer.snapshot(load.model, load.state),
        eval_loss=1.0,
        on_written=lambda _meta: None,
    )
    writer.wait()
    stall_s: list[float] = []
    sync_s: list[float] = []
    background_s: list[float] = []
    for rep in range(repeats):
        state = dataclasses.replace(load.state, step=rep + 1)
        done: list[float] = []

        def in_background(state: TrainState = state, done: list[float] = done) -> float:
            cache.settle()
            start = time.perf_counter()
            snap = writer.snapshot(load.model, state)
            writer.submit(
                root / "background",
                snap,
                eval_loss=1.0,
                on_written=lambda _meta: done.append(time.perf_counter()),
            )
            blocked = time.perf_counter() - start
            writer.wait()  # not part of the stall: the next checkpoint is many steps away
            background_s.append(done[0] - start)
            return blocked

        sync = functools.partial(
            timed,
            cache,
            functools.partial(save_checkpoint, root / "sync", load.model, state, eval_loss=1.0),
        )
        blocked, full = _alternate(rep, in_background, sync)
        stall_s.append(blocked)
        sync_s.append(full)
        shutil.rmtree(root / "background")
        shutil.rmtree(root / "sync")
    return stall_s, sync_s, background_s


def measure_verify(
    load: Workload, checkpoint: Path, cache: Cache, repeats: int
) -> tuple[list[float], list[float], list[float]]:
    """(b) and (d): verify_checkpoint, raw sha256 and load_checkpoint times."""
    files = sorted(p for p in checkpoint.iterdir() if p.is_file())
    fresh, _ = build_model(load.size)
    verify_s: list[float] = []
    raw_s: list[float] = []
    resume_s: list[float] = []
    resumed: list[TrainState] = []  # load_checkpoint's result, checked after each run
    if not cache.cold:  # hot cache: both paths read from memory, neither pays the first read
        raw_sha256(files)
    for rep in range(repeats):
        ours = functools.partial(timed, cache, functools.partial(verify_checkpoint, checkpoint))
        base = functools.partial(timed, cache, functools.partial(raw_sha256, files))
        verify_time, raw_time = _alternate(rep, ours, base)
        verify_s.append(verify_time)
        raw_s.append(raw_time)
        resumed.clear()  # one resumed state at a time: each holds the optimizer's moments
        resume_s.append(timed(cache, lambda: resumed.append(load_checkpoint(checkpoint, fresh))))
        if resumed[-1].step != load.state.step:
            raise RuntimeError(f"resumed at step {resumed[-1].step}, saved {load.state.step}")
    for name, tensor in load.model.state_dict().items():
        if not torch.equal(tensor, fresh.state_dict()[name]):
            raise RuntimeError(f"{name} differs after load_checkpoint")
    return verify_s, raw_s, resume_s


def run_size(size: int, root: Path, cache: Cache, repeats: int) -> dict[str, float | int | str]:
    load = build_workload(size)
    snap = snapshot(load.model, load.state)
    save_s, raw_write_s, sha256_s, meta, kept = measure_save(snap, root, cache, repeats)
    limit_s = [max(w, h) for w, h in zip(raw_write_s, sha256_s, strict=True)]
    del snap
    stall_s, sync_s, background_s = measure_stall(load, root, cache, repeats)
    verify_s, raw_hash_s, resume_s = measure_verify(load, kept, cache, repeats)
    shutil.rmtree(kept.parent)
    nbytes = meta.size_bytes  # model.safetensors + train_state.pt (meta.json is < 1 kB)
    med = statistics.median

    def gbps(seconds: float) -> float:
        return round(nbytes / seconds / 10**9, 3)

    def paired(numerators: list[float], denominators: list[float]) -> float:
        # each repetition's two runs sat side by side in time, so their ratio cancels most
        # of the machine's drift; the median of those ratios is the figure
        return round(med(n / d for n, d in zip(numerators, denominators, strict=True)), 3)

    return {
        "size": _label(size),
        "checkpoint_bytes": nbytes,
        "width": load.width,
        "save_gbps": gbps(med(save_s)),
        "raw_write_gbps": gbps(med(raw_write_s)),
        "save_ratio": paired(raw_write_s, save_s),
        "sha256_gbps": gbps(med(sha256_s)),
        "save_vs_limit_ratio": paired(limit_s, save_s),
        "verify_gbps": gbps(med(verify_s)),
        "raw_sha256_gbps": gbps(med(raw_hash_s)),
        "verify_ratio": paired(raw_hash_s, verify_s),
        "load_gbps": gbps(med(resume_s)),
        "resume_s": round(med(resume_s), 3),
        "stall_s": round(med(stall_s), 3),
        "sync_save_s": round(med(sync_s), 3),
        "background_write_s": round(med(background_s), 3),
        "stall_ratio": paired(stall_s, sync_s),
    }


def check_free_disk(root: Path, sizes: list[int]) -> None:
    """At most the kept checkpoint, one being written and a raw file exist at once."""
    need = 3 * max(sizes) + 10**9
    free = shutil.disk_usage(root).free
    if free < need:
        raise SystemExit(
            f"checkpoint_io: {root} has {free / 10**9:.1f} GB free, the run needs "
            f"{need / 10**9:.1f} GB; pass --dir on a filesystem with more room or smaller --sizes"
        )


def run(sizes: list[int], repeats: int, parent: Path | None) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=parent))
    try:
        check_free_disk(root, sizes)
        cache = Cache()
        rows = []
        for size in sorted(sizes):
            row = run_size(size, root, cache, repeats)
            print(
                f"{row['size']} ({'cold' if cache.cold else 'hot'} cache): save "
                f"{row['save_gbps']} GB/s vs raw write {row['raw_write_gbps']} (ratio "
                f"{row['save_ratio']}), sha256 {row['sha256_gbps']} GB/s (save vs limit "
                f"{row['save_vs_limit_ratio']}); verify "
                f"{row['verify_gbps']} GB/s vs raw sha256 {row['raw_sha256_gbps']} (ratio "
                f"{row['verify_ratio']}); load {row['load_gbps']} GB/s, resume "
                f"{row['resume_s']} s; stall {row['stall_s']} s vs sync save "
                f"{row['sync_save_s']} s (ratio {row['stall_ratio']})",
                flush=True,
            )
            rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    head = rows[-1]  # the largest size, 1 GB by default
    return {
        "bench": "checkpoint_io",
        "save_ratio": head["save_ratio"],
        "save_vs_limit_ratio": head["save_vs_limit_ratio"],
        "verify_ratio": head["verify_ratio"],
        "stall_ratio": head["stall_ratio"],
        "resume_s_1gb": next((r["resume_s"] for r in rows if r["size"] == "1gb"), None),
        "headline_size": head["size"],
        "cache": "cold" if cache.cold else "hot",
        "hash_threads": HASH_THREADS,
        "repeats": repeats,
        "sizes": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [parse_size(part) for part in text.split(",")],
        default=[10**8, 10**9],
        help="comma-separated checkpoint sizes, e.g. 100MB,1GB (default)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per figure")
    parser.add_argument(
        "--dir", type=Path, default=None, help="parent of the scratch folder (default: TMPDIR)"
    )
    args = parser.parse_args()
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a directory")
    result = run(args.sizes, args.repeats, args.dir)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
