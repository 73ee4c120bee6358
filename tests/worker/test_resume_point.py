"""Finding the resume point: the newest checkpoint that verifies, loaded into the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from platform_core.errors import AppError, ErrorCode
from trainer_worker import resume
from trainer_worker.checkpoints import list_checkpoints, save_checkpoint
from trainer_worker.resume import load_resume_point
from trainer_worker.training.seeding import make_generator
from trainer_worker.training.state import TrainState, capture_train_state


def _state(model: torch.nn.Module, step: int) -> TrainState:
    return capture_train_state(
        step=step,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        sampler=make_generator(0),
        tokens_seen=step * 10,
        best_eval_loss=None,
        evals_without_improvement=0,
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[int, torch.Tensor]]:
    """Checkpoints at steps 1, 2, 3 of a model whose weight is filled with the step."""
    model = torch.nn.Linear(4, 4, bias=False)
    weights = {}
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights[step] = model.weight.detach().clone()
        save_checkpoint(tmp_path, model, _state(model, step), eval_loss=None)
    return tmp_path, weights


def test_the_newest_valid_checkpoint_is_loaded(
    saved: tuple[Path, dict[int, torch.Tensor]],
) -> None:
    directory, weights = saved
    model = torch.nn.Linear(4, 4, bias=False)
    point = load_resume_point(directory, model)
    assert point is not None and point.state.step == 3 and point.skipped == []
    assert torch.equal(model.weight, weights[3])


def test_corrupt_checkpoints_are_skipped_newest_first(
    saved: tuple[Path, dict[int, torch.Tensor]], caplog: pytest.LogCaptureFixture
) -> None:
    directory, weights = saved
    for checkpoint in list_checkpoints(directory)[1:]:  # steps 2 and 3
        (checkpoint / "model.safetensors").write_bytes(b"damaged")
    model = torch.nn.Linear(4, 4, bias=False)
    with caplog.at_level("WARNING"):
        point = load_resume_point(directory, model)
    assert point is not None and point.state.step == 1
    assert point.skipped == ["step-00000003", "step-00000002"]
    assert torch.equal(model.weight, weights[1])
    assert "step-00000003 is corrupt" in caplog.text


def test_no_valid_checkpoint_means_no_resume_point(
    saved: tuple[Path, dict[int, torch.Tensor]], tmp_path: Path
) -> None:
    directory, _ = saved
    for checkpoint in list_checkpoints(directory):
        (checkpoint / "meta.json").unlink()
    assert load_resume_point(directory, torch.nn.Linear(4, 4, bias=False)) is None
    assert load_resume_point(tmp_path / "nothing-here", torch.nn.Linear(4, 4)) is None


def test_errors_other_than_corruption_are_not_swallowed(
    saved: tuple[Path, dict[int, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = saved

    def unavailable(checkpoint: Path, model: torch.nn.Module) -> TrainState:
        raise AppError(ErrorCode.STORAGE_FULL, "disk gone")

    monkeypatch.setattr(resume, "load_checkpoint", unavailable)
    with pytest.raises(AppError) as info:
        load_resume_point(directory, torch.nn.Linear(4, 4, bias=False))
    assert info.value.code is ErrorCode.STORAGE_FULL
