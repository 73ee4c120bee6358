"""The built-in botocore dataset and the TF-IDF + logistic-regression baseline on it: the
baseline learns the services from masked documentation, and only from real signal (the
same pipeline on shuffled labels stays near chance)."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from platform_core.specs import BuiltinSource, DatasetSpec
from trainer_worker.classify.baseline import train_baseline
from trainer_worker.classify.builtin_botocore import MASK, SERVICES, botocore_rows
from trainer_worker.classify.preparation import prepare_rows
from trainer_worker.classify.records import LabelledText

PER_CLASS = 60  # 900 rows: enough to learn, fast to fit


@pytest.fixture(scope="module")
def rows() -> list[LabelledText]:
    return list(botocore_rows(PER_CLASS))


def test_every_service_gives_rows_with_its_names_masked(rows: list[LabelledText]) -> None:
    counts = Counter(row.label for row in rows)
    assert set(counts) == set(SERVICES)
    assert all(count == PER_CLASS for count in counts.values())
    names = re.compile(
        r"\b(?:EC2|S3|DynamoDB|CloudFront|SageMaker|GuardDuty|Redshift|CloudWatch|IAM|KMS)\b"
    )
    assert not [row.id for row in rows if names.search(row.text)]
    assert sum(MASK in row.text for row in rows) > len(rows) // 4
    assert list(botocore_rows(PER_CLASS)) == rows  # the same rows every time


def test_baseline_learns_the_services(rows: list[LabelledText]) -> None:
    spec = DatasetSpec(source=BuiltinSource(max_per_class=PER_CLASS), seed=3)
    prepared = prepare_rows(rows, spec)
    report = train_baseline(prepared.splits, prepared.report.labels, seed=3)
    chance = 1 / len(SERVICES)
    assert report.test.accuracy > 0.6 > 5 * chance
    assert report.test.macro_f1 > 0.55
    assert set(report.test.per_class) == set(SERVICES)
    assert report.test.num_examples == len(prepared.splits["test"])


def test_baseline_on_shuffled_labels_stays_near_chance(rows: list[LabelledText]) -> None:
    labels = [row.label for row in rows]
    random.Random(0).shuffle(labels)
    shuffled = [
        LabelledText(text=r.text, label=lab, id=r.id) for r, lab in zip(rows, labels, strict=True)
    ]
    spec = DatasetSpec(source=BuiltinSource(max_per_class=PER_CLASS), seed=3)
    prepared = prepare_rows(shuffled, spec)
    report = train_baseline(prepared.splits, prepared.report.labels, seed=3)
    assert report.test.accuracy < 0.25
