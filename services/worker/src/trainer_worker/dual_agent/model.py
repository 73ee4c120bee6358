"""The dual-agent model: one `transformers` encoder shared by two heads (seed 000 §6).

criteria_matcher: the max over the encoder's token states -> one logit per criterion
(multi-label sigmoid), or per criterion plus "none" (softmax). evidence_binder: every
token's state -> a start and an end logit; position 0 ([CLS]) stands for "no evidence".
A max pool rather than BERT's pooler: a from-scratch encoder has no pretrained pooler
(MiniLM-style sentence encoders ship without one), and whether a post matches a criterion
turns on one sentence among many, which a max keeps and a mean dilutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import AutoModel, BertConfig, BertModel, PreTrainedModel

from platform_core.errors import AppError, ErrorCode
from trainer_worker.dual_agent.criteria import CRITERIA

CriteriaHead = Literal["sigmoid", "softmax"]


@dataclass(frozen=True)
class EncoderPreset:
    """A small BERT trained from scratch (nanoGPT-style config: one default per field)."""

    hidden_size: int = 64  # width of every token state
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads (hidden_size / num_heads per head)
    intermediate_size: int = 128  # feed-forward width
    max_positions: int = 128  # longest input, tokens ([CLS] and [SEP] included)
    dropout: float = 0.1  # hidden and attention dropout


# platform_core.specs.PRESET_SHAPES["dual_agent"] mirrors these (a test keeps them equal)
DUAL_AGENT_PRESETS = {
    "tiny": EncoderPreset(),
    "small": EncoderPreset(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_positions=256
    ),
}


class DualAgentModel(nn.Module):
    def __init__(self, encoder: PreTrainedModel, criteria_head: CriteriaHead) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        outputs = len(CRITERIA) + (1 if criteria_head == "softmax" else 0)
        self.criteria_head: CriteriaHead = criteria_head
        self.heads = nn.ModuleDict(
            {
                "criteria_matcher": nn.Linear(hidden, outputs),
                "evidence_binder": nn.Linear(hidden, 2),  # start / end logits
            }
        )
        self.context_size = int(encoder.config.max_position_embeddings)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T) ids and mask -> criteria logits (B, C[+1]), start and end logits (B, T);
        padding positions get the lowest logit, so no span starts or ends there."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden: Tensor = out.last_hidden_state  # (B, T, H)
        padding = attention_mask == 0  # (B, T)
        lowest = torch.finfo(hidden.dtype).min
        pooled = hidden.masked_fill(padding.unsqueeze(-1), lowest).amax(dim=1)  # (B, H)
        criteria = self.heads["criteria_matcher"](pooled)  # (B, C[+1])
        spans = self.heads["evidence_binder"](hidden).float()  # (B, T, 2)
        start, end = spans.unbind(dim=-1)  # (B, T) each
        floor = torch.finfo(start.dtype).min
        return criteria, start.masked_fill(padding, floor), end.masked_fill(padding, floor)


def build_encoder(
    preset: EncoderPreset, vocab_size: int, pad_id: int, dropout: float | None
) -> PreTrainedModel:
    rate = preset.dropout if dropout is None else dropout
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=preset.max_positions,
        hidden_dropout_prob=rate,
        attention_probs_dropout_prob=rate,
        pad_token_id=pad_id,
    )
    return BertModel(config, add_pooling_layer=False)


def load_encoder(source: str | Path) -> PreTrainedModel:
    """A pretrained encoder: a local folder (as resolved inside the data root) or a hub id,
    from the local cache first."""
    try:
        encoder = AutoModel.from_pretrained(str(source))
    except OSError as exc:
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"encoder {source} could not be loaded (not a model folder, or a hub id that is "
            "neither cached nor reachable)",
        ) from exc
    if not isinstance(encoder, PreTrainedModel):
        raise AppError(ErrorCode.CONFIG_INVALID, f"{source} is not a transformers model")
    return encoder
