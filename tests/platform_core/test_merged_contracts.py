"""The contracts the new run kinds declared in platform_core, at their refusals: the dataset
and registry paths of the layout, the dual-agent and classifier options of a model run, the
arXiv source's dates, and a study's search space (int parameters, budget shares, paths that
name no field)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.specs import ArxivSource, DualAgentOptions, ModelSpec, TrainRunSpec
from platform_core.study_specs import IntParam, apply_params, validate_study


def test_dataset_and_registry_paths_lie_under_their_folders(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    assert layout.dataset_report("ds-1") == tmp_path / "datasets" / "ds-1" / "report.json"
    assert layout.dataset_baseline("ds-1") == tmp_path / "datasets/ds-1/eval/baseline.json"
    assert layout.models_dir == tmp_path / "models"
    assert layout.model_version_dir("clf", "1.2.0") == tmp_path / "models" / "clf" / "1.2.0"
    with pytest.raises(AppError) as refused:
        layout.model_version_dir("clf", "1.2")
    assert refused.value.code is ErrorCode.INVALID_INPUT


def test_a_pretrained_model_takes_no_dropout() -> None:
    with pytest.raises(ValidationError, match="cannot override a pretrained model"):
        ModelSpec(family="gpt2", pretrained="gpt2", dropout=0.1)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"path": "posts.jsonl", "hf_dataset": "org/posts"}, "not both"),
        ({"hf_dataset": "data:posts"}, "a local file goes in path"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, "must leave posts to train on"),
    ],
)
def test_dual_agent_options_name_one_source_and_leave_posts_to_train(
    options: JsonObject, problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        DualAgentOptions.model_validate(options)


def test_a_run_of_one_family_refuses_the_other_familys_accessors() -> None:
    dual = TrainRunSpec.model_validate({"model": {"family": "dual_agent"}})
    with pytest.raises(AppError, match="not a language model"):
        _ = dual.lm_tokenizer_id
    with pytest.raises(AppError, match="not a classifier run"):
        _ = dual.classifier_options
    assert dual.dual_agent_options == DualAgentOptions()


def test_arxiv_dates_must_be_in_order() -> None:
    with pytest.raises(ValidationError, match="is after date_to"):
        ArxivSource(
            kind="arxiv",
            categories=("cs.LG", "q-bio.GN"),
            date_from="20240201",
            date_to="20240101",
        )


def test_int_parameters_are_ordered_and_log_scale_starts_at_one() -> None:
    with pytest.raises(ValidationError, match="must be < high"):
        IntParam(type="int", low=8, high=8)
    with pytest.raises(ValidationError, match="log-scale int"):
        IntParam(type="int", low=0, high=8, log=True)
    assert IntParam(type="int", low=2, high=9, step=3).corners() == [2, 8]


BASE: JsonObject = {
    "model": {"family": "char_lstm", "preset": "tiny"},
    "tokenizer_id": "tok",
    "train": {"max_steps": 20, "eval_every": 5},
}


def _study(**fields: object) -> JsonObject:
    payload: JsonObject = {
        "name": "s",
        "base": copy.deepcopy(BASE),
        "search_space": {"train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
        "n_trials": 4,
        "parallelism": 3,
    }
    payload.update(fields)  # type: ignore[arg-type]
    return payload


def test_a_study_shares_its_checkpoint_budget_between_running_trials_and_the_best() -> None:
    assert validate_study(_study()).trial_share_gb() is None
    spec = validate_study(_study(checkpoint_budget_gb=8.0))
    assert spec.trial_share_gb() == pytest.approx(2.0)  # 3 running trials + the best one


def test_a_bad_study_is_one_invalid_input_naming_the_problem() -> None:
    with pytest.raises(AppError) as refused:
        validate_study(_study(n_trials=0))
    assert refused.value.code is ErrorCode.INVALID_INPUT


def test_a_search_path_through_a_value_names_no_field() -> None:
    base = TrainRunSpec.model_validate(BASE)
    for path in ("tokenizer_id.x", "train.max_steps.x", "tokenizer_id.x.y"):
        with pytest.raises(AppError, match="is not a field of the base spec"):
            apply_params(base, {path: 1})
