"""Finding the resume point: the newest checkpoint that verifies, loaded into the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from platform_core.errors import AppError, ErrorCode
from trainer_worker import resume
from trainer_worker.checkpoints import (
    list_checkpoints,
    list_quarantined,
    load_checkpoint,
    save_checkpoint,
)
from trainer_worker.resume import find_resume_point, load_resume_point
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
    # set aside, not deleted: renamed out of the listing, the damaged bytes still there
    assert [p.name for p in list_checkpoints(directory)] == ["step-00000001"]
    moved = list_quarantined(directory)
    assert [p.name.split(".corrupt-")[0] for p in moved] == ["step-00000002", "step-00000003"]
    assert [q.moved_to for q in point.quarantined] == [moved[1].name, moved[0].name]
    assert (moved[1] / "model.safetensors").read_bytes() == b"damaged"
    assert "hash mismatch" in point.quarantined[0].reason
    index = (directory / "index.json").read_text()
    assert "step-00000001" in index and "step-00000003" not in index


def test_no_valid_checkpoint_means_no_resume_point(
    saved: tuple[Path, dict[int, torch.Tensor]], tmp_path: Path
) -> None:
    directory, _ = saved
    for checkpoint in list_checkpoints(directory):
        (checkpoint / "meta.json").unlink()
    search = find_resume_point(directory, torch.nn.Linear(4, 4, bias=False))
    assert search.point is None  # the run starts over, and the caller can say why
    assert search.skipped == ["step-00000003", "step-00000002", "step-00000001"]
    assert len(list_quarantined(directory)) == 3 and list_checkpoints(directory) == []
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


def test_a_reader_that_does_not_own_the_run_skips_without_moving(
    saved: tuple[Path, dict[int, torch.Tensor]],
) -> None:
    directory, weights = saved
    newest = list_checkpoints(directory)[-1]
    (newest / "train_state.pt").write_bytes(b"damaged")
    model = torch.nn.Linear(4, 4, bias=False)
    search = find_resume_point(directory, model, quarantine_corrupt=False)
    assert search.point is not None and search.point.state.step == 2
    assert search.skipped == ["step-00000003"] and list_quarantined(directory) == []
    assert torch.equal(model.weight, weights[2])
    assert load_resume_point(directory, model) is not None  # the owner quarantines it
    assert len(list_quarantined(directory)) == 1


def test_a_checkpoint_pruned_while_it_was_read_is_not_reported_corrupt(
    saved: tuple[Path, dict[int, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = saved
    real = load_checkpoint

    def pruned_meanwhile(checkpoint: Path, model: torch.nn.Module) -> TrainState:
        if checkpoint.name == "step-00000003":
            for item in checkpoint.iterdir():
                item.unlink()
            checkpoint.rmdir()  # the run's retention removed it under our feet
        return real(checkpoint, model)

    monkeypatch.setattr(resume, "load_checkpoint", pruned_meanwhile)
    search = find_resume_point(directory, torch.nn.Linear(4, 4, bias=False))
    assert search.point is not None and search.point.state.step == 2
    assert search.quarantined == [] and list_quarantined(directory) == []
