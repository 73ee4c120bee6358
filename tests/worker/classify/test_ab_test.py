"""The offline A/B statistics against known answers: McNemar's exact p-values by hand and
against scipy's binomial test, the bootstrap interval against the metrics module, and the
decision rule's three conditions."""

from __future__ import annotations

import random

import pytest
from scipy.stats import binomtest

from trainer_worker.classify.ab_test import bootstrap_macro_f1_difference, decide, mcnemar_exact
from trainer_worker.classify.metrics import classification_metrics

LABELS = ["a", "b", "c"]


def _correctness(b: int, c: int, both: int = 5) -> tuple[list[bool], list[bool]]:
    """b examples only the candidate gets right, c only the current, `both` both."""
    current = [False] * b + [True] * c + [True] * both
    candidate = [True] * b + [False] * c + [True] * both
    return current, candidate


def test_mcnemar_exact_by_hand() -> None:
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    result = mcnemar_exact(*_correctness(1, 9))
    assert (result.candidate_only_correct, result.current_only_correct) == (1, 9)
    assert result.p_value == 22 / 1024
    assert mcnemar_exact(*_correctness(9, 1)).p_value == 22 / 1024  # two-sided: symmetric
    assert mcnemar_exact(*_correctness(0, 0)).p_value == 1.0  # no disagreement
    assert mcnemar_exact(*_correctness(5, 5)).p_value == 1.0  # capped at 1
    assert mcnemar_exact(*_correctness(0, 6)).p_value == 2 / 64


@pytest.mark.parametrize(
    ("b", "c"), [(3, 17), (40, 25), (120, 80), (700, 650), (0, 1), (1600, 1400)]
)
def test_mcnemar_exact_matches_scipy_binomial_test(b: int, c: int) -> None:
    expected = binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(*_correctness(b, c)).p_value == pytest.approx(expected, rel=1e-9)


def test_bootstrap_interval_brackets_the_observed_difference() -> None:
    rng = random.Random(1)
    truth = [rng.choice(LABELS) for _ in range(300)]
    current = [t if rng.random() < 0.6 else rng.choice(LABELS) for t in truth]
    candidate = [t if rng.random() < 0.9 else rng.choice(LABELS) for t in truth]
    interval = bootstrap_macro_f1_difference(truth, current, candidate, LABELS, seed=3)
    expected = (
        classification_metrics(truth, candidate, LABELS).macro_f1
        - classification_metrics(truth, current, LABELS).macro_f1
    )
    assert interval.observed == pytest.approx(expected)
    assert 0 < interval.low < interval.observed < interval.high
    assert interval.high - interval.low < 0.25
    again = bootstrap_macro_f1_difference(truth, current, candidate, LABELS, seed=3)
    assert again == interval  # seeded: reproducible
    same = bootstrap_macro_f1_difference(truth, current, current, LABELS)
    assert (same.observed, same.low, same.high) == (0.0, 0.0, 0.0)


def test_decide_promotes_a_clearly_better_candidate() -> None:
    truth = ["a", "b", "c"] * 100
    current = ["b" if t == "a" else t for t in truth]  # wrong on every "a": 1 in 3
    candidate = list(truth)
    report = decide(truth, current, candidate, LABELS, resamples=500)
    assert report.decision == "PROMOTE"
    assert report.accuracy_gain == pytest.approx(
        report.candidate_accuracy - report.current_accuracy
    )
    assert report.mcnemar.p_value < 1e-10
    assert "McNemar p" in report.reason


def test_decide_keeps_when_the_gain_is_below_the_threshold_or_not_significant() -> None:
    truth = ["a", "b", "c"] * 100
    candidate = list(truth)
    current = list(truth)
    current[0] = current[1] = current[2] = "c"  # the candidate is 2 examples (0.7 points) better
    report = decide(truth, current, candidate, LABELS, resamples=500)
    assert report.decision == "KEEP"
    assert "below the required +0.0200" in report.reason
    assert "is not below 0.05" in report.reason  # b=2, c=0: p = 0.5
    same = decide(truth, truth, truth, LABELS, resamples=200)
    assert same.decision == "KEEP" and same.accuracy_gain == 0.0
