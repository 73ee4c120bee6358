"""The keyword baseline: a criterion matches when any of its keywords occurs in the post;
the evidence is the sentence with the most keyword hits (none when nothing hits)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from trainer_worker.dual_agent.criteria import CRITERIA, KEYWORDS
from trainer_worker.dual_agent.metrics import CharSpan

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_PATTERNS = {
    name: [re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE) for word in words]
    for name, words in KEYWORDS.items()
}


def _hits(text: str, criterion: str) -> int:
    return sum(len(pattern.findall(text)) for pattern in _PATTERNS[criterion])


def keyword_baseline(texts: Sequence[str]) -> tuple[Tensor, list[CharSpan | None]]:
    """Per text: hit counts per criterion (N, C) (a score; >= 1 means "matches") and the
    evidence span."""
    scores = torch.zeros((len(texts), len(CRITERIA)), dtype=torch.float32)
    spans: list[CharSpan | None] = []
    for row, text in enumerate(texts):
        for c, name in enumerate(CRITERIA):
            scores[row, c] = _hits(text, name)
        best: CharSpan | None = None
        most = 0
        for match in _SENTENCE.finditer(text):
            count = sum(_hits(match.group(), name) for name in CRITERIA)
            if count > most:  # the sentence without the space before it
                lead = len(match.group()) - len(match.group().lstrip())
                best, most = (match.start() + lead, match.end()), count
        spans.append(best)
    return scores, spans


BASELINE_THRESHOLDS = [1.0] * len(CRITERIA)  # one keyword hit is a match
