"""The dual-agent model: one `transformers` encoder shared by two heads (seed 000 §6).

criteria_matcher: the max over the encoder's token states -> one logit per criterion
(multi-label sigmoid), or per criterion plus "none" (softmax). evidence_binder: every
token's state -> a start and an end logit; position 0 ([CLS]) stands for "no evidence".
A max pool rather than BERT's pooler: a from-scratch encoder has no pretrained pooler
(MiniLM-style sentence encoders ship without one), and whether a post matches a criterion
turns on one sentence among many, which a max keeps and a mean dilutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import AutoModel, BertModel, PreTrainedModel

from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.models.encoder import (
    ENCODER_PRESETS,
    EncoderPreset,
    encoder_config,
    load_pretrained,
)

CriteriaHead = Literal["sigmoid", "softmax"]

# the shared encoder's presets (platform_core.specs.PRESET_SHAPES["dual_agent"] mirrors them)
DUAL_AGENT_PRESETS = ENCODER_PRESETS


class DualAgentModel(nn.Module):
    # as a transformers model names its base model: `heads` are what lies outside it, the
    # parameters train.head_lr_scale applies to
    base_model_prefix = "encoder"

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
    config = encoder_config(preset, vocab_size, pad_id, dropout=dropout)
    return BertModel(config, add_pooling_layer=False)


def load_encoder(source: Path) -> PreTrainedModel:
    """A pretrained encoder from a local folder (`fetch_pretrained`'s: a `data:` folder, a
    hub id's cached snapshot or a packaged model)."""
    return load_pretrained(AutoModel, source)
