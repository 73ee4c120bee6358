"""From collected rows to a dataset: clean, drop duplicates (by id, then by normalised
text), filter (empty, too short), check the labels, split 80/10/10 per class with a seed.
Every row that goes is counted in the report; no text is logged."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from platform_core.errors import AppError, ErrorCode
from platform_core.manifests import SPLITS, DatasetReport, SplitName
from platform_core.specs import DatasetSpec
from trainer_worker.classify.cleaning import clean_text, text_key, word_count
from trainer_worker.classify.records import LabelledText

VAL_FRACTION: Final = 0.1
TEST_FRACTION: Final = 0.1
MAX_EXAMPLES_LISTED: Final = 5  # of bad rows in an error message


@dataclass(frozen=True, slots=True)
class PreparedDataset:
    splits: dict[SplitName, list[LabelledText]]
    report: DatasetReport


def prepare_rows(rows: Iterable[LabelledText], spec: DatasetSpec) -> PreparedDataset:
    """Clean, dedup, filter, check and split `rows` (at most `spec.max_rows` are read)."""
    allowed = set(spec.labels) if spec.labels is not None else None
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    kept: list[LabelledText] = []
    unknown: list[tuple[int, str]] = []  # (row number, label) of rows with a label not allowed
    counts: Counter[str] = Counter()
    read = 0
    for number, row in enumerate(rows, start=1):
        if number > spec.max_rows:
            break
        read = number
        label = row.label.strip()
        if allowed is not None and label not in allowed:
            unknown.append((number, label))
            continue
        if row.id is not None:
            if row.id in seen_ids:
                counts["duplicates_by_id"] += 1
                continue
            seen_ids.add(row.id)
        text = clean_text(row.text)
        if not text:
            counts["filtered_empty"] += 1
            continue
        if word_count(text) < spec.min_words:
            counts["filtered_too_short"] += 1
            continue
        key = text_key(text)
        if key in seen_texts:
            counts["duplicates_by_text"] += 1
            continue
        seen_texts.add(key)
        kept.append(LabelledText(text=text, label=label, id=row.id))
    if unknown:
        raise _unknown_labels(unknown, allowed or set())
    splits = stratified_split(kept, seed=spec.seed, min_per_class=spec.min_per_class)
    class_counts = Counter(row.label for row in kept)
    report = DatasetReport(
        rows_read=read,
        rows_kept=len(kept),
        duplicates_by_id=counts["duplicates_by_id"],
        duplicates_by_text=counts["duplicates_by_text"],
        filtered_empty=counts["filtered_empty"],
        filtered_too_short=counts["filtered_too_short"],
        labels=sorted(class_counts),
        class_counts=dict(sorted(class_counts.items())),
        split_counts={
            name: dict(sorted(Counter(row.label for row in splits[name]).items()))
            for name in SPLITS
        },
        imbalance_ratio=max(class_counts.values()) / min(class_counts.values()),
        seed=spec.seed,
    )
    return PreparedDataset(splits=splits, report=report)


def stratified_split(
    rows: list[LabelledText], *, seed: int, min_per_class: int
) -> dict[SplitName, list[LabelledText]]:
    """80/10/10 within each class (so every split has every class in proportion), shuffled
    by `seed`; the same rows and seed give the same split."""
    by_label: dict[str, list[LabelledText]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    if len(by_label) < 2:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"a classification dataset needs at least 2 classes; {len(by_label)} left after "
            "cleaning and filtering",
        )
    small = {label: len(group) for label, group in by_label.items() if len(group) < min_per_class}
    if small:
        listed = ", ".join(f"{label!r} ({n})" for label, n in sorted(small.items())[:10])
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"{len(small)} class(es) have fewer than min_per_class={min_per_class} rows after "
            f"cleaning and filtering: {listed}; collect more or leave them out (spec.labels)",
        )
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not a secret
    splits: dict[SplitName, list[LabelledText]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_val = max(1, round(len(group) * VAL_FRACTION))
        n_test = max(1, round(len(group) * TEST_FRACTION))
        splits["val"].extend(group[:n_val])
        splits["test"].extend(group[n_val : n_val + n_test])
        splits["train"].extend(group[n_val + n_test :])
    for name in SPLITS:  # classes interleaved, not in blocks
        rng.shuffle(splits[name])
    return splits


def _unknown_labels(unknown: list[tuple[int, str]], allowed: set[str]) -> AppError:
    examples = ", ".join(f"row {n}: {label!r}" for n, label in unknown[:MAX_EXAMPLES_LISTED])
    more = len(unknown) - MAX_EXAMPLES_LISTED
    return AppError(
        ErrorCode.DATA_INVALID,
        f"{len(unknown)} row(s) carry a label outside spec.labels "
        f"({', '.join(sorted(allowed))}): {examples}" + (f" and {more} more" if more > 0 else ""),
    )
