"""DDP under torchrun on the CPU (gloo): two processes with half the batch each train exactly
like one process with the whole batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from platform_core.json_types import JsonObject
from tests.worker.classify import ddp_classifier_script
from tests.worker.ddp_train_script import run

REPO_ROOT = Path(__file__).resolve().parents[2]


def _torchrun(module: str, out_dir: Path, per_rank_batch: int) -> list[JsonObject]:
    """`module` run by two torchrun processes (one thread each); each rank's report."""
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"  # two processes on two cores
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        module,
        str(out_dir),
        str(per_rank_batch),
    ]
    # a session of its own, so a hung run is killed with all of torchrun's workers
    launcher = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = launcher.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        output, _ = launcher.communicate()
    assert launcher.returncode == 0, output[-3000:]
    reports: list[JsonObject] = [
        json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)
    ]
    return reports


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_global_batch(tmp_path: Path) -> None:
    # per-rank batch 4: the global batch is 2 x 4 = 8
    ranks = _torchrun("tests.worker.ddp_train_script", tmp_path, 4)

    single, single_calls = run(batch_size=8)

    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["group_left"] for r in ranks)  # the loop tore down the group it created
    for report in ranks:  # every rank agrees: losses and evals are all-reduced
        assert report["losses"] == pytest.approx(single.losses, abs=1e-5)
        assert report["evals"] == pytest.approx(
            [e.eval_loss for e in single.eval_history], abs=1e-5
        )
    assert single.losses[-1] < single.losses[0] - 0.5
    # only rank 0 talks to the caller
    assert ranks[0]["calls"] == single_calls
    assert ranks[1]["calls"] == {"progress": 0, "eval": 0, "checkpoint": 0, "should_stop": 0}


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_ddp_trains_a_classifier_with_a_frozen_prefix_as_one_process(
    tmp_path: Path,
) -> None:
    """The classifier's step swaps modules inside the DDP wrapper's forward (the cached
    prefix's states through the blocks above it, the top one for [CLS] only) and draws its
    rows from a length bucket, each rank cutting its half to its own longest row: two
    processes with half the batch still train as one with the whole batch."""
    ranks = _torchrun("tests.worker.classify.ddp_classifier_script", tmp_path, 4)
    single = ddp_classifier_script.run(batch_size=8)
    assert single["first_token"] and single["cached"] and single["buckets"]
    for report in ranks:
        assert report["first_token"] and report["cached"] and report["buckets"]
        assert report["losses"] == pytest.approx(single["losses"], abs=1e-5)
        assert report["evals"] == pytest.approx(single["evals"], abs=1e-5)
