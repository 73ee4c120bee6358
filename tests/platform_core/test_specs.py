"""Request specs refuse what the worker could not use, before anything is queued."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import CorpusOptions, TrainConfig


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


def test_negative_seed_is_refused_with_a_config_error() -> None:
    with pytest.raises(AppError, match="seed") as err:
        TrainConfig(seed=-1)
    assert err.value.code is ErrorCode.CONFIG_INVALID
