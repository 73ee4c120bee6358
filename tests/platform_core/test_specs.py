"""Request specs refuse what the worker could not use, before anything is queued."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import CorpusOptions, TrainConfig, TrainRunSpec


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("corpus\x00.txt", "NUL"),
        ("/etc/passwd", "relative"),
        ("C:\\corpus.txt", "relative"),
    ],
)
def test_corpus_path_must_be_a_plain_relative_path(path: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        CorpusOptions(path=path)


def test_corpus_path_may_be_nested_or_absent() -> None:
    assert CorpusOptions(path="books/a.txt").path == "books/a.txt"
    assert CorpusOptions().path is None  # the demo corpus


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1 when set"),
        ({"min_lr": 1.0, "learning_rate": 0.1}, "min_lr <= learning_rate"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"warmup_steps": 10, "lr_decay_steps": 10}, "greater than warmup_steps"),
        ({"beta1": 1.0}, "beta1 and beta2"),
        ({"weight_decay": -0.1}, "must be >= 0"),
        ({"progress_every_s": 0.0}, "progress_every_s"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_train_config_refuses_each_bad_value_with_a_config_error(
    fields: dict[str, float], message: str
) -> None:
    with pytest.raises(AppError, match=message) as err:
        TrainConfig(**fields)  # type: ignore[arg-type]  # parametrized mix of int/float fields
    assert err.value.code is ErrorCode.CONFIG_INVALID


def test_runs_checkpoint_by_default_and_may_opt_out() -> None:
    """A crashed run resumes from its last interval checkpoint, not from step 0."""
    config = TrainConfig()
    assert config.checkpoint_every == 200
    assert config.checkpoint_every % config.eval_every == 0  # each save has a fresh eval loss
    spec = {"model": {"family": "char_lstm"}, "tokenizer_id": "t"}
    assert TrainRunSpec.model_validate(spec).train.checkpoint_every == 200
    opted_out = TrainRunSpec.model_validate({**spec, "train": {"checkpoint_every": None}})
    assert opted_out.train.checkpoint_every is None  # only the final save
