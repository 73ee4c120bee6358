"""`trainctl list-checkpoints` and `trainctl cleanup` on real checkpoints on disk, with the
contract's output formats and exit codes."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from platform_core.json_types import JsonObject
from platform_core.manifests import RunManifest, write_manifest
from platform_core.run_state import RunStatus
from trainer_cli.main import main
from trainer_worker.checkpoints import list_checkpoints, save_checkpoint
from trainer_worker.training.seeding import make_generator
from trainer_worker.training.state import capture_train_state

# step -> eval loss: step 20 is the best, step 40 the newest
LOSSES = {10: 3.0, 20: 1.5, 30: 2.0, 40: 2.5}


def _names(steps: list[int]) -> list[str]:
    return [f"step-{step:08d}" for step in steps]


@pytest.fixture
def run_folder(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A finished run with four checkpoints and a retention of one last plus one best."""
    monkeypatch.setenv("APP__DATA_ROOT", str(data_root))
    monkeypatch.delenv("REDIS_URL", raising=False)
    folder = data_root / "runs" / "run-a"
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 16)).sum().backward()
    optimizer.step()
    state = capture_train_state(
        step=0,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        sampler=make_generator(0),
        tokens_seen=0,
        best_eval_loss=None,
        evals_without_improvement=0,
    )
    for step, loss in LOSSES.items():
        save_checkpoint(folder / "checkpoints", model, replace(state, step=step), eval_loss=loss)
    spec: JsonObject = {
        "tokenizer_id": "tok",
        "model": {"family": "gpt2"},
        "retention": {"keep_last_n": 1, "keep_best_k": 1},
    }
    manifest = RunManifest(
        run_id="run-a",
        kind="train_model",
        status=RunStatus.COMPLETED,
        spec=spec,
        started_at=datetime.now(UTC),
    )
    write_manifest(folder / "manifest.json", manifest)
    return folder


def _steps(folder: Path) -> list[int]:
    return [int(p.name.removeprefix("step-")) for p in list_checkpoints(folder / "checkpoints")]


def test_list_checkpoints_as_json_marks_best_latest_and_retained(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list-checkpoints", "--run", "run-a", "--format", "json", "--show-metrics"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert [r["eval_loss"] for r in rows] == list(LOSSES.values())
    assert [r["is_best"] for r in rows] == [False, True, False, False]
    assert [r["is_latest"] for r in rows] == [False, False, False, True]
    assert [r["retained"] for r in rows] == [False, True, False, True]
    assert [r["status"] for r in rows] == ["valid"] * 4
    assert all(len(r["sha256"]) == 64 and r["size_mb"] > 0 for r in rows)


def test_list_checkpoints_as_csv_and_table(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list-checkpoints", "--run", "run-a", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["checkpoint"] for r in rows] == _names([10, 20, 30, 40])
    assert "eval_loss" not in rows[0]  # only with --show-metrics

    assert main(["list-checkpoints", "--run", "run-a", "--show-metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "checkpoint",
        "step",
        "status",
        "is_best",
        "is_latest",
        "retained",
        "size_mb",
        "sha256",
        "eval_loss",
    ]
    best = next(line for line in lines if line.startswith("step-00000020"))
    assert best.split()[2:6] == ["valid", "True", "False", "True"]
    assert best.split()[-1] == "1.5000"
    assert len(best.split()[-2]) == 12  # hashes are shortened in the table


def test_list_checkpoints_of_a_run_without_checkpoints_or_folder(
    run_folder: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data_root / "runs" / "empty").mkdir()
    assert main(["list-checkpoints", "--run", "empty"]) == 0
    assert capsys.readouterr().out.strip() == "no checkpoints"
    assert main(["list-checkpoints", "--run", "empty", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["list-checkpoints", "--run", "missing"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["list-checkpoints", "--run", "../etc"]) == 1  # not a run id: never a path


def test_cleanup_dry_run_deletes_nothing_then_retention_applies(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = run_folder / "checkpoints" / ".step-00000050.abc.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"x" * 1000)

    assert main(["cleanup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and "unfinished write" in out and "would free" in out
    assert _steps(run_folder) == [10, 20, 30, 40] and leftover.exists()

    assert main(["cleanup", "--run", "run-a"]) == 0
    assert "freed" in capsys.readouterr().out
    assert _steps(run_folder) == [20, 40]  # the best and the newest
    assert not leftover.exists()
    index = json.loads((run_folder / "checkpoints" / "index.json").read_text())
    assert [row["step"] for row in index] == [20, 40]


def test_cleanup_aggressive_keeps_the_best_and_the_newest(run_folder: Path) -> None:
    assert main(["cleanup", "--aggressive"]) == 0
    assert _steps(run_folder) == [20, 40]


def test_cleanup_orphaned_only_removes_corrupt_checkpoints_only_when_asked(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_folder / "checkpoints" / "step-00000030" / "meta.json").write_text("{", encoding="utf-8")
    assert main(["cleanup", "--orphaned-only"]) == 0
    assert "pass --corrupt to remove it" in capsys.readouterr().out
    assert _steps(run_folder) == [10, 20, 30, 40]  # corrupt, but kept unless asked
    assert main(["cleanup", "--orphaned-only", "--corrupt"]) == 0
    assert "unreadable meta" in capsys.readouterr().out
    assert _steps(run_folder) == [10, 20, 40]  # retention itself is not applied


def _flip_a_byte(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # an exponent bit of the last weight
    path.write_bytes(bytes(data))


def test_list_checkpoints_verifies_and_marks_corrupt_and_quarantined_ones(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints = run_folder / "checkpoints"
    _flip_a_byte(checkpoints / "step-00000040")
    (checkpoints / "step-00000010").rename(checkpoints / "step-00000010.corrupt-20261204T000000Z")
    assert main(["list-checkpoints", "--run", "run-a", "--format", "json"]) == 0
    rows = {r["checkpoint"]: r for r in json.loads(capsys.readouterr().out)}
    newest = rows["step-00000040"]
    assert newest["status"] == "corrupt" and not newest["is_latest"] and not newest["retained"]
    assert rows["step-00000030"]["is_latest"] and rows["step-00000030"]["retained"]
    assert rows["step-00000020"]["is_best"] and rows["step-00000020"]["status"] == "valid"
    quarantined = rows["step-00000010.corrupt-20261204T000000Z"]
    assert quarantined["status"] == "quarantined" and quarantined["step"] == 10
    assert not quarantined["retained"]

    assert main(["list-checkpoints", "--run", "run-a", "--format", "json", "--no-verify"]) == 0
    rows = {r["checkpoint"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["step-00000040"]["status"] == "unverified"  # not hashed: not known corrupt
    assert rows["step-00000040"]["is_latest"]


def test_cleanup_keeps_the_newest_valid_checkpoint_not_the_newest_by_step(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _flip_a_byte(run_folder / "checkpoints" / "step-00000040")
    assert main(["cleanup", "--aggressive"]) == 0
    assert "step-00000040 (corrupt" in capsys.readouterr().out
    assert _steps(run_folder) == [20, 30, 40]  # best, newest valid; the corrupt one waits
    assert main(["cleanup", "--aggressive", "--corrupt", "--dry-run"]) == 0
    assert "would delete" in capsys.readouterr().out
    assert _steps(run_folder) == [20, 30, 40]
    assert main(["cleanup", "--aggressive", "--corrupt"]) == 0
    assert _steps(run_folder) == [20, 30]
    index = json.loads((run_folder / "checkpoints" / "index.json").read_text())
    assert [row["step"] for row in index] == [20, 30]


def test_cleanup_leaves_a_running_run_to_its_own_retention(run_folder: Path) -> None:
    manifest = json.loads((run_folder / "manifest.json").read_text())
    (run_folder / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert main(["cleanup"]) == 0
    assert _steps(run_folder) == [10, 20, 30, 40]


def test_cleanup_of_a_missing_run_is_exit_2_and_an_io_error_exit_1(
    run_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["cleanup", "--run", "missing"]) == 2
    assert "not found" in capsys.readouterr().err

    def denied(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("trainer_worker.cli.checkpoint_commands.shutil.rmtree", denied)
    (run_folder / "checkpoints" / ".step-00000050.abc.tmp").mkdir()
    assert main(["cleanup", "--orphaned-only"]) == 1
    assert "Permission denied" in capsys.readouterr().err
