"""`GET /runs/{id}/chart.png`: the chart of the whole run, from its stored metric history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from platform_core.errors import ErrorCode
from platform_core.http_client import ApiError, TrainerClient
from platform_core.run_state import RunStateStore, RunStatus
from trainer_api.run_chart import MAX_POINTS, downsample, read_history, smoothed

pytestmark = pytest.mark.integration
STEPS = 15_000


def write_run(folder: Path, steps: int) -> None:
    """What the worker leaves: a progress line per step among other log lines (a resumed
    attempt repeating steps 100-199, one diverged step), and an eval history."""
    folder.mkdir(parents=True)
    lines = []
    for step in [*range(steps), *range(100, 200)]:
        loss = float("nan") if step == 7 else 4.0 - 3.0 * step / steps
        record = {"event": "training.progress", "step": step, "loss": loss, "lr": 1e-3}
        lines.append(json.dumps(record))
        if step % 1000 == 0:
            lines.append(json.dumps({"event": "train.eval", "step": step, "eval_loss": 9.0}))
    (folder / "logs.jsonl").write_text("\n".join(lines) + "\nnot json\n", encoding="utf-8")
    (folder / "eval").mkdir()
    evals = [json.dumps({"step": s, "eval_loss": 3.0, "perplexity": 20.1}) for s in (0, 7_500)]
    (folder / "eval" / "history.jsonl").write_text("\n".join(evals) + "\n", encoding="utf-8")


def test_the_history_is_the_whole_run_not_a_tail(tmp_path: Path) -> None:
    write_run(tmp_path / "run-c", STEPS)
    history = read_history(tmp_path / "run-c")
    assert len(history.train) == STEPS - 1  # every step once; the diverged one left out
    assert history.train[0] == (0, 4.0)
    assert history.train[-1][0] == STEPS - 1
    assert history.evals == [(0, 3.0), (7_500, 3.0)]  # from the eval history, not log lines
    assert len(history.lr) == STEPS - 1


def test_downsampling_keeps_the_ends_and_smoothing_starts_at_the_first_value() -> None:
    points = [(step, float(step)) for step in range(10_000)]
    sampled = downsample(points)
    assert len(sampled) == MAX_POINTS
    assert (sampled[0], sampled[-1]) == (points[0], points[-1])
    assert downsample(points[:10]) == points[:10]
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_the_chart_endpoint_draws_the_run(
    client: TrainerClient, redis_client: redis.Redis, data_root: Path
) -> None:
    RunStateStore(redis_client).set_status("run-c", RunStatus.RUNNING)
    RunStateStore(redis_client).set_status("run-new", RunStatus.QUEUED)
    write_run(data_root / "runs" / "run-c", 3_000)

    png = client.run_chart("run-c")

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ApiError) as no_steps:
        client.run_chart("run-new")
    assert (no_steps.value.status, no_steps.value.error_code) == (404, ErrorCode.NOT_FOUND)
    assert "no training steps" in no_steps.value.message
    with pytest.raises(ApiError) as unknown:
        client.run_chart("ghost")
    assert unknown.value.status == 404
