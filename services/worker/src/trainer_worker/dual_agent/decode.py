"""From the heads' logits to answers: criteria probabilities and character spans."""

from __future__ import annotations

import torch
from torch import Tensor

from trainer_worker.dual_agent.encoding import NO_EVIDENCE
from trainer_worker.dual_agent.metrics import CharSpan
from trainer_worker.dual_agent.model import CriteriaHead

MAX_SPAN_TOKENS = 96  # a sentence of evidence; longer spans are not considered


def criteria_probs(logits: Tensor, head: CriteriaHead) -> Tensor:
    """(N, C[+1]) logits -> (N, C) probability of each criterion (softmax: its share)."""
    if head == "softmax":
        return torch.softmax(logits.float(), dim=-1)[:, :-1]
    return torch.sigmoid(logits.float())


def decode_spans(start: Tensor, end: Tensor, offsets: Tensor) -> list[CharSpan | None]:
    """Best span per row: the (i <= j < i + MAX_SPAN_TOKENS) pair of real tokens with the
    highest start[i] + end[j], unless "no evidence" (start[0] + end[0]) scores higher.
    start, end (N, T) logits; offsets (N, T, 2) characters, (0, 0) for special tokens."""
    real = offsets[:, :, 1] > offsets[:, :, 0]  # (N, T)
    floor = torch.finfo(start.dtype).min / 4
    s = start.masked_fill(~real, floor)
    e = end.masked_fill(~real, floor)
    pair = s.unsqueeze(2) + e.unsqueeze(1)  # (N, T, T): start i, end j
    T = start.size(1)
    idx = torch.arange(T, device=start.device)
    band = (idx.unsqueeze(0) >= idx.unsqueeze(1)) & (
        idx.unsqueeze(0) < idx.unsqueeze(1) + MAX_SPAN_TOKENS
    )  # (T, T): j >= i and j < i + max
    pair = pair.masked_fill(~band, floor)
    best, flat = pair.flatten(1).max(dim=1)  # (N,)
    null = start[:, NO_EVIDENCE] + end[:, NO_EVIDENCE]  # (N,)
    spans: list[CharSpan | None] = []
    for row in range(start.size(0)):
        if not bool(real[row].any()) or float(null[row]) >= float(best[row]):
            spans.append(None)
            continue
        i, j = divmod(int(flat[row]), T)
        spans.append((int(offsets[row, i, 0]), int(offsets[row, j, 1])))
    return spans
