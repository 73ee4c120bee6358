"""Cleaning, dedup, quality filters, label checks and the stratified split; the metrics
against scikit-learn's."""

from __future__ import annotations

import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import DatasetSpec, FileSource
from trainer_worker.classify.cleaning import clean_text, text_key, word_count
from trainer_worker.classify.metrics import classification_metrics
from trainer_worker.classify.preparation import prepare_rows, stratified_split
from trainer_worker.classify.records import LabelledText

SPEC = DatasetSpec(source=FileSource(path="rows.jsonl"), min_words=3)


def _rows(label: str, n: int, *, start: int = 0) -> list[LabelledText]:
    return [
        LabelledText(text=f"document {i} about {label} with words", label=label, id=f"{label}-{i}")
        for i in range(start, start + n)
    ]


def test_clean_text_removes_urls_latex_math_and_markup() -> None:
    raw = (
        "We study \\emph{sparse} models (see https://example.org/x?y=1 and www.a.io) "
        "with $O(n^2)$ cost and $$\\sum_i x_i$$ terms \\cite{smith2020}.\n\n  <p>Done</p> &amp;"
    )
    assert clean_text(raw) == "We study sparse models (see and ) with cost and terms . Done &"


def test_clean_text_keeps_escaped_dollars_and_prose() -> None:
    assert clean_text("costs \\$5 \\textbf{bold}\tword") == "costs $5 bold word"


def test_text_key_ignores_case_punctuation_and_spacing_only() -> None:
    assert text_key("Deep  Learning, for graphs!") == text_key("deep learning for GRAPHS")
    assert text_key("deep learning for graphs") != text_key("deep learning for trees")
    assert word_count("a b, c-d") == 4


def test_prepare_counts_duplicates_and_filtered_rows() -> None:
    rows = [
        *_rows("a", 20),
        *_rows("b", 20),
        LabelledText(text="repeated id text here", label="a", id="a-0"),  # id seen
        LabelledText(text="DOCUMENT 1 about a, with words!", label="a", id="x-1"),  # same text
        LabelledText(text="$x$ https://only.url", label="b", id="x-2"),  # empty once cleaned
        LabelledText(text="two words", label="b", id="x-3"),  # under min_words
    ]
    prepared = prepare_rows(rows, SPEC)
    report = prepared.report
    assert report.rows_read == 44
    assert (report.duplicates_by_id, report.duplicates_by_text) == (1, 1)
    assert (report.filtered_empty, report.filtered_too_short) == (1, 1)
    assert report.rows_kept == 40
    assert report.class_counts == {"a": 20, "b": 20}
    assert report.split_counts == {
        "train": {"a": 16, "b": 16},
        "val": {"a": 2, "b": 2},
        "test": {"a": 2, "b": 2},
    }
    assert report.imbalance_ratio == 1.0
    all_ids = [row.id for split in prepared.splits.values() for row in split]
    assert len(all_ids) == len(set(all_ids)) == 40  # every row in exactly one split


def test_split_is_stratified_and_reproducible_by_seed() -> None:
    rows = _rows("a", 100) + _rows("b", 30)
    first = stratified_split(list(rows), seed=7, min_per_class=10)
    again = stratified_split(list(rows), seed=7, min_per_class=10)
    other = stratified_split(list(rows), seed=8, min_per_class=10)
    assert first == again
    assert [r.id for r in first["test"]] != [r.id for r in other["test"]]
    assert sum(r.label == "a" for r in first["test"]) == 10
    assert sum(r.label == "b" for r in first["test"]) == 3
    assert len(first["train"]) == 104


def test_unknown_labels_fail_listing_examples_without_text() -> None:
    spec = SPEC.model_copy(update={"labels": ("a", "b")})
    rows = [*_rows("a", 20), *_rows("b", 20), *_rows("zz", 7)]
    with pytest.raises(AppError) as caught:
        prepare_rows(rows, spec)
    assert caught.value.code is ErrorCode.DATA_INVALID
    message = caught.value.message
    assert "7 row(s) carry a label outside spec.labels (a, b)" in message
    assert "row 41: 'zz'" in message and "and 2 more" in message
    assert "document" not in message  # never the corpus text


def test_a_class_too_small_to_split_is_a_clear_error() -> None:
    with pytest.raises(AppError, match=r"'b' \(4\)") as caught:
        prepare_rows(_rows("a", 20) + _rows("b", 4), SPEC)
    assert caught.value.code is ErrorCode.DATA_INVALID


def test_one_class_is_not_a_classification_dataset() -> None:
    with pytest.raises(AppError, match="at least 2 classes"):
        prepare_rows(_rows("a", 30), SPEC)


def test_metrics_match_scikit_learn() -> None:
    truth = ["a", "a", "a", "b", "b", "c", "c", "c", "c", "a"]
    guess = ["a", "b", "a", "b", "c", "c", "c", "a", "c", "a"]
    labels = ["a", "b", "c", "d"]  # d: in the dataset, not in this split
    ours = classification_metrics(truth, guess, labels)
    assert ours.accuracy == pytest.approx(accuracy_score(truth, guess))
    assert ours.macro_f1 == pytest.approx(
        f1_score(truth, guess, labels=labels, average="macro", zero_division=0)
    )
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, guess, labels=labels, zero_division=0
    )
    for i, label in enumerate(labels):
        assert ours.per_class[label].precision == pytest.approx(precision[i])
        assert ours.per_class[label].recall == pytest.approx(recall[i])
        assert ours.per_class[label].f1 == pytest.approx(f1[i])
        assert ours.per_class[label].support == support[i]
