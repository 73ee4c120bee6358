"""Offline A/B test of two classifiers on the same labelled test set, as pure functions:
McNemar's exact test on per-example correctness, a bootstrap confidence interval on the
macro-F1 difference, and the decision they support (PROMOTE the candidate, or KEEP the
current version) with its reason and numbers.

McNemar looks only at the examples the two disagree on: `b` = the candidate right where the
current is wrong, `c` = the reverse. Under "equally good", b ~ Binomial(b + c, 1/2); the
exact two-sided p-value is min(1, 2 * P[X <= min(b, c)]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from platform_core.retrain_specs import DEFAULT_ALPHA, DEFAULT_MIN_ACCURACY_GAIN
from trainer_worker.classify.metrics import classification_metrics

DEFAULT_RESAMPLES: Final = 2000  # bootstrap resamples: CI bounds stable to ~0.005
DEFAULT_CONFIDENCE: Final = 0.95


class McNemarResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    candidate_only_correct: int  # b: the candidate right, the current version wrong
    current_only_correct: int  # c: the reverse
    p_value: float  # exact, two-sided


class BootstrapInterval(BaseModel):
    model_config = ConfigDict(frozen=True)

    observed: float  # macro F1 of the candidate minus the current version's, on the test set
    low: float
    high: float
    confidence: float
    resamples: int


class ABDecision(BaseModel):
    """The report: the decision, why, and every number it rests on."""

    model_config = ConfigDict(frozen=True)

    decision: Literal["PROMOTE", "KEEP"]
    reason: str
    num_examples: int
    current_accuracy: float
    candidate_accuracy: float
    accuracy_gain: float
    current_macro_f1: float
    candidate_macro_f1: float
    mcnemar: McNemarResult
    macro_f1_difference: BootstrapInterval
    min_accuracy_gain: float
    alpha: float


def mcnemar_exact(
    current_correct: Sequence[bool], candidate_correct: Sequence[bool]
) -> McNemarResult:
    if len(current_correct) != len(candidate_correct):
        raise ValueError("both versions must be scored on the same examples")
    b = sum(
        1 for old, new in zip(current_correct, candidate_correct, strict=True) if new and not old
    )
    c = sum(
        1 for old, new in zip(current_correct, candidate_correct, strict=True) if old and not new
    )
    return McNemarResult(candidate_only_correct=b, current_only_correct=c, p_value=_two_sided(b, c))


def _two_sided(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))  # exact integers
    return min(1.0, 2 * tail / (1 << n))  # int / int: exact enough for any n, no overflow


def bootstrap_macro_f1_difference(
    truth: Sequence[str],
    current: Sequence[str],
    candidate: Sequence[str],
    labels: Sequence[str],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile interval of macro-F1(candidate) - macro-F1(current) over `resamples`
    resamples of the test examples (with replacement, the same resample for both)."""
    if not len(truth) == len(current) == len(candidate) > 0:
        raise ValueError("both versions must be scored on the same, non-empty examples")
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for label in truth])
    old, new = _ids(current, index), _ids(candidate, index)
    observed = _macro_f1(y[None, :], new[None, :], len(labels)) - _macro_f1(
        y[None, :], old[None, :], len(labels)
    )
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(y), size=(resamples, len(y)))  # (R, N)
    differences = _macro_f1(y[picks], new[picks], len(labels)) - _macro_f1(
        y[picks], old[picks], len(labels)
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return BootstrapInterval(
        observed=float(observed[0]),
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=resamples,
    )


def _ids(
    predicted: Sequence[str], index: dict[str, int]
) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    """Label ids; a prediction outside the labels gets an id of its own (never a match)."""
    unknown = len(index)
    return np.array([index.get(label, unknown) for label in predicted], dtype=np.int64)


def _macro_f1(
    truth: np.ndarray[tuple[int, int], np.dtype[np.int64]],
    predicted: np.ndarray[tuple[int, int], np.dtype[np.int64]],
    num_labels: int,
) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
    """Macro F1 of each row (R, N) -> (R,), as `metrics.classification_metrics` defines it
    (F1 = 2 tp / (2 tp + fp + fn); a class with none of either scores 0)."""
    rows = truth.shape[0]
    width = num_labels + 1  # + the "unknown prediction" id
    offsets = (np.arange(rows) * width)[:, None]  # (R, 1)
    hit = truth == predicted
    tp = np.bincount((truth + offsets)[hit], minlength=rows * width).reshape(rows, width)
    support = np.bincount((truth + offsets).ravel(), minlength=rows * width).reshape(rows, width)
    guessed = np.bincount((predicted + offsets).ravel(), minlength=rows * width).reshape(
        rows, width
    )
    denominator = support + guessed  # 2 tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros((rows, width)), where=denominator > 0)
    result: np.ndarray[tuple[int], np.dtype[np.float64]] = f1[:, :num_labels].mean(axis=1)
    return result


def decide(
    truth: Sequence[str],
    current: Sequence[str],
    candidate: Sequence[str],
    labels: Sequence[str],
    *,
    min_accuracy_gain: float = DEFAULT_MIN_ACCURACY_GAIN,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> ABDecision:
    """PROMOTE only when the candidate is better by at least `min_accuracy_gain`, McNemar
    says the difference is significant (p < `alpha`), and the macro-F1 interval lies above
    0; else KEEP, saying which test it failed."""
    old = classification_metrics(truth, current, labels)
    new = classification_metrics(truth, candidate, labels)
    mcnemar = mcnemar_exact(
        [a == t for a, t in zip(current, truth, strict=True)],
        [b == t for b, t in zip(candidate, truth, strict=True)],
    )
    interval = bootstrap_macro_f1_difference(
        truth, current, candidate, labels, resamples=resamples, seed=seed
    )
    gain = new.accuracy - old.accuracy
    failures: list[str] = []
    if gain < min_accuracy_gain:
        failures.append(f"accuracy gain {gain:+.4f} is below the required {min_accuracy_gain:+.4f}")
    if mcnemar.p_value >= alpha:
        failures.append(f"McNemar p = {mcnemar.p_value:.4g} is not below {alpha:g}")
    if interval.low <= 0:
        failures.append(
            f"the {interval.confidence:.0%} interval of the macro-F1 difference "
            f"[{interval.low:+.4f}, {interval.high:+.4f}] does not lie above 0"
        )
    reason = (
        "; ".join(failures)
        if failures
        else f"accuracy {gain:+.4f} (>= {min_accuracy_gain:+.4f}), McNemar p = "
        f"{mcnemar.p_value:.4g} < {alpha:g}, macro-F1 difference in "
        f"[{interval.low:+.4f}, {interval.high:+.4f}]"
    )
    return ABDecision(
        decision="KEEP" if failures else "PROMOTE",
        reason=reason,
        num_examples=len(truth),
        current_accuracy=old.accuracy,
        candidate_accuracy=new.accuracy,
        accuracy_gain=gain,
        current_macro_f1=old.macro_f1,
        candidate_macro_f1=new.macro_f1,
        mcnemar=mcnemar,
        macro_f1_difference=interval,
        min_accuracy_gain=min_accuracy_gain,
        alpha=alpha,
    )
