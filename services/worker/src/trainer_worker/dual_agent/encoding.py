"""Posts as tensors: token ids, attention mask, criteria targets, the evidence's start and
end token, and each token's character offsets (to map predicted spans back to the text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from trainer_worker.dual_agent.criteria import CRITERIA, CRITERION_INDEX
from trainer_worker.dual_agent.data import Post

NO_EVIDENCE = 0  # the [CLS] position: the evidence head's "no span" answer


@dataclass(frozen=True)
class Encoded:
    input_ids: Tensor  # (N, T) long
    attention_mask: Tensor  # (N, T) long
    offsets: Tensor  # (N, T, 2) long: character start / end of each token; (0, 0) special
    labels: Tensor  # (N, C) float multi-hot
    start: Tensor  # (N,) long: evidence start token, NO_EVIDENCE when none fits
    end: Tensor  # (N,) long

    def __len__(self) -> int:
        return int(self.input_ids.size(0))


def encode_texts(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int
) -> tuple[Tensor, Tensor, Tensor]:
    """ids (N, T), attention mask (N, T) and offsets (N, T, 2), padded to `max_length`."""
    batch = tokenizer(
        list(texts),
        max_length=max_length,
        truncation=True,
        padding="max_length",
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    ids, mask, offsets = batch["input_ids"], batch["attention_mask"], batch["offset_mapping"]
    if not (isinstance(ids, Tensor) and isinstance(mask, Tensor) and isinstance(offsets, Tensor)):
        raise TypeError("the tokenizer did not return tensors")
    special = _special_mask(tokenizer, ids)
    offsets = offsets.masked_fill(special.unsqueeze(-1), 0)
    return ids.long(), mask.long(), offsets.long()


def _special_mask(tokenizer: PreTrainedTokenizerFast, ids: Tensor) -> Tensor:
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
    return torch.isin(ids, specials)


def encode_posts(
    tokenizer: PreTrainedTokenizerFast, posts: Sequence[Post], max_length: int
) -> Encoded:
    ids, mask, offsets = encode_texts(tokenizer, [p.text for p in posts], max_length)
    labels = torch.zeros((len(posts), len(CRITERIA)), dtype=torch.float32)
    start = torch.full((len(posts),), NO_EVIDENCE, dtype=torch.long)
    end = torch.full((len(posts),), NO_EVIDENCE, dtype=torch.long)
    for row, post in enumerate(posts):
        for criterion in post.criteria:
            labels[row, CRITERION_INDEX[criterion]] = 1.0
        if post.evidence:  # the head binds one span: the post's first evidence
            span = post.evidence[0]
            tokens = _tokens_of(offsets[row], span.start, span.end)
            if tokens is not None:  # else truncated away: the post reads as "no evidence"
                start[row], end[row] = tokens
    return Encoded(ids, mask, offsets, labels, start, end)


def _tokens_of(offsets: Tensor, start_char: int, end_char: int) -> tuple[int, int] | None:
    """The first and last token overlapping [start_char, end_char); None when none does."""
    starts, ends = offsets[:, 0], offsets[:, 1]  # (T,), (T,)
    real = ends > starts
    inside = real & (ends > start_char) & (starts < end_char)
    hits = inside.nonzero().flatten()
    if hits.numel() == 0:
        return None
    return int(hits[0]), int(hits[-1])
