"""The seed's metric contract (002): criteria matching as macro precision / recall / F1 /
accuracy / ROC AUC (and per criterion), evidence binding as exact match, has-answer
accuracy and character-level precision / recall / F1 (SQuAD 2.0 conventions: a post
without evidence scores 1 when none is predicted, else 0)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from trainer_worker.dual_agent.criteria import CRITERIA

CharSpan = tuple[int, int]  # [start, end) character offsets
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def _prf(pred: Tensor, gold: Tensor) -> tuple[float, float, float]:
    tp = float((pred & gold).sum())
    fp = float((pred & ~gold).sum())
    fn = float((~pred & gold).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def roc_auc(scores: Tensor, gold: Tensor) -> float | None:
    """Mann-Whitney AUC (ties count half); None when only one class is present."""
    pos, neg = scores[gold], scores[~gold]
    if pos.numel() == 0 or neg.numel() == 0:
        return None
    greater = (pos.unsqueeze(1) > neg.unsqueeze(0)).double().sum()
    ties = (pos.unsqueeze(1) == neg.unsqueeze(0)).double().sum()
    return float((greater + 0.5 * ties) / (pos.numel() * neg.numel()))


def criteria_metrics(
    scores: Tensor, labels: Tensor, thresholds: Sequence[float], prefix: str
) -> dict[str, float]:
    """scores (N, C) probabilities (or any monotone score), labels (N, C) in {0, 1}."""
    gold = labels > 0.5
    pred = scores >= torch.tensor(thresholds, dtype=scores.dtype)
    out: dict[str, float] = {}
    sums = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    aucs: list[float] = []
    for c, name in enumerate(CRITERIA):
        precision, recall, f1 = _prf(pred[:, c], gold[:, c])
        accuracy = float((pred[:, c] == gold[:, c]).double().mean()) if len(gold) else 0.0
        for key, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            out[f"{prefix}/{key}/{name}"] = value
            sums[key] += value
        sums["accuracy"] += accuracy
        auc = roc_auc(scores[:, c], gold[:, c])
        if auc is not None:
            out[f"{prefix}/auc/{name}"] = auc
            aucs.append(auc)
    for key, total in sums.items():
        out[f"{prefix}/{key}"] = total / len(CRITERIA)
    out[f"{prefix}/auc"] = sum(aucs) / len(aucs) if aucs else 0.5
    return out


def tune_thresholds(scores: Tensor, labels: Tensor) -> list[float]:
    """Per criterion, the grid threshold with the best F1 on these (validation) posts, the
    one nearest 0.5 among equals (the middle of a range that separates the classes);
    0.5 for a criterion with no positive post to learn from."""
    gold = labels > 0.5
    chosen = []
    for c in range(len(CRITERIA)):
        if not bool(gold[:, c].any()):
            chosen.append(0.5)
            continue
        best = max(
            THRESHOLD_GRID,
            key=lambda t: (_prf(scores[:, c] >= t, gold[:, c])[2], -abs(t - 0.5)),
        )
        chosen.append(best)
    return chosen


def evidence_metrics(
    texts: Sequence[str],
    predicted: Sequence[CharSpan | None],
    gold: Sequence[Sequence[CharSpan]],
    prefix: str,
) -> dict[str, float]:
    n = len(predicted)
    if n == 0:
        return {f"{prefix}/{k}": 0.0 for k in _EVIDENCE_KEYS}
    sums = dict.fromkeys(_EVIDENCE_KEYS, 0.0)
    for text, pred, golds in zip(texts, predicted, gold, strict=True):
        sums["has_answer"] += float((pred is not None) == bool(golds))
        if pred is None or not golds:
            same = float(pred is None and not golds)
            for key in ("exact_match", "char_precision", "char_recall", "char_f1"):
                sums[key] += same
            continue
        p = _strip(text, pred)
        scored = [_char_prf(p, _strip(text, g)) for g in golds]
        precision, recall, f1 = max(scored, key=lambda s: s[2])
        sums["exact_match"] += float(any(p == _strip(text, g) for g in golds))
        sums["char_precision"] += precision
        sums["char_recall"] += recall
        sums["char_f1"] += f1
    return {f"{prefix}/{key}": value / n for key, value in sums.items()}


_EVIDENCE_KEYS = ("exact_match", "has_answer", "char_f1", "char_precision", "char_recall")


def _strip(text: str, span: CharSpan) -> CharSpan:
    """The span without leading / trailing whitespace (what a reader compares)."""
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _char_prf(pred: CharSpan, gold: CharSpan) -> tuple[float, float, float]:
    overlap = max(0, min(pred[1], gold[1]) - max(pred[0], gold[0]))
    if overlap == 0:
        return 0.0, 0.0, 0.0
    precision = overlap / (pred[1] - pred[0])
    recall = overlap / (gold[1] - gold[0])
    return precision, recall, 2 * precision * recall / (precision + recall)
