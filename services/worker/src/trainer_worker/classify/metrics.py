"""Accuracy, macro F1 and per-class precision / recall / F1 from labels and predictions:
one implementation for the baseline, the classifier's test report and the A/B test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from platform_core.manifests import ClassificationMetrics, ClassMetrics


def classification_metrics(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> ClassificationMetrics:
    """Macro F1 averages over `labels` (every class of the dataset, including one the split
    lacks or the model never predicts: its F1 is 0, as scikit-learn's zero_division=0)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no examples to score")
    true_positive: Counter[str] = Counter()
    for gold, guess in zip(truth, predicted, strict=True):
        if gold == guess:
            true_positive[gold] += 1
    support = Counter(truth)
    predicted_count = Counter(predicted)
    per_class: dict[str, ClassMetrics] = {}
    for label in labels:
        tp = true_positive[label]
        precision = tp / predicted_count[label] if predicted_count[label] else 0.0
        recall = tp / support[label] if support[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassMetrics(
            precision=precision, recall=recall, f1=f1, support=support[label]
        )
    return ClassificationMetrics(
        num_examples=len(truth),
        accuracy=sum(true_positive.values()) / len(truth),
        macro_f1=macro_f1(per_class),
        per_class=per_class,
    )


def macro_f1(per_class: dict[str, ClassMetrics]) -> float:
    return sum(metrics.f1 for metrics in per_class.values()) / len(per_class)
