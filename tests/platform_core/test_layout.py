"""The data root's layout: ids checked once, every path inside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout, check_id


def test_every_folder_of_a_run_and_a_tokenizer(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    root = tmp_path.resolve()
    assert layout.run_dir("run-1") == root / "runs" / "run-1"
    assert layout.run_manifest("run-1") == root / "runs" / "run-1" / "manifest.json"
    assert layout.run_log("run-1") == root / "runs" / "run-1" / "logs.jsonl"
    assert layout.checkpoints_dir("run-1") == root / "runs" / "run-1" / "checkpoints"
    assert layout.eval_dir("run-1") == root / "runs" / "run-1" / "eval"
    assert layout.model_dir("run-1") == root / "runs" / "run-1" / "model"
    evals = root / "runs" / "run-1" / "eval"
    assert [
        layout.eval_history("run-1"),
        layout.eval_metrics("run-1"),
        layout.eval_samples("run-1"),
        layout.evaluations("run-1"),
    ] == [
        evals / "history.jsonl",
        evals / "metrics.json",
        evals / "samples.jsonl",
        evals / "evaluations.jsonl",
    ]
    assert layout.tokenizer_manifest("tok") == root / "tokenizers" / "tok" / "manifest.json"
    assert layout.study_dir("s_1") == root / "studies" / "s_1"
    assert layout.spool_file("run-1") == root / "spool" / "run-1.events.jsonl"
    assert (layout.runs_dir, layout.tokenizers_dir, layout.studies_dir) == (
        tmp_path / "runs",
        tmp_path / "tokenizers",
        tmp_path / "studies",
    )
    assert layout.relative(layout.run_dir("run-1")) == "runs/run-1"


@pytest.mark.parametrize("bad", ["", "a.b", "../x", "-x", "x" * 65, "with space", "a/b"])
def test_ids_that_are_not_folder_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(AppError) as info:
        DataLayout(tmp_path).run_dir(bad)
    assert info.value.code is ErrorCode.INVALID_INPUT
    with pytest.raises(AppError, match="tokenizer id"):
        check_id(bad, what="tokenizer id")


def test_a_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "runs").mkdir(parents=True)
    outside.mkdir()
    (root / "runs" / "escape").symlink_to(outside)
    with pytest.raises(AppError) as info:
        DataLayout(root).run_manifest("escape")
    assert info.value.code is ErrorCode.PATH_OUTSIDE_DATA_ROOT
