"""Scoring a text: how surprised a trained model is by each of its tokens.

The loss is the training loss exactly (`training.evaluate.token_losses`, nats per predicted
token) over windows laid out like the holdout's `BlockDataset`: the text's ids are cut into
windows of the model's context, each next window starting at the previous one's last target,
so every token after the first is predicted once. Per-token surprisal is reported in bits
(-log2 p), the unit people read; loss and perplexity stay in nats as in training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import ScoreRequest, ScoreResult, TokenPrediction, TokenScore
from trainer_worker.models.registry import context_size, model_device, require_vocab
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.training.evaluate import (
    forward_logits,
    output_vocab_size,
    perplexity,
    token_losses,
)

UNLIMITED_CONTEXT_WINDOW = 1024  # window for models without a context limit (the LSTM):
# bounds the (T, V) logits held at once, and matches a typical training block


@torch.no_grad()
def score(model: nn.Module, tokenizer: Tokenizer, request: ScoreRequest) -> ScoreResult:
    ids = tokenizer.encode(request.text)
    if len(ids) < 2:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"the text encodes to {len(ids)} token(s); scoring needs at least 2",
        )
    device = model_device(model)
    require_vocab(output_vocab_size(model, device), max(ids))
    window = context_size(model) or UNLIMITED_CONTEXT_WINDOW
    all_ids = torch.tensor(ids, dtype=torch.long, device=device)  # (N,)
    surprisal_nats: list[float] = []
    top: list[list[TokenPrediction]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(ids) - 1, window):
            chunk = all_ids[start : start + window + 1]  # (<=L+1,)
            x, y = chunk[:-1][None, :], chunk[1:][None, :]  # (1, T), (1, T)
            logits = forward_logits(model, x)  # (1, T, V)
            surprisal_nats.extend(token_losses(logits, y)[0].tolist())
            if request.top_k > 0 and request.detail_level == "per_token":
                top.extend(_top_predictions(logits[0], request.top_k, tokenizer))
    finally:
        model.train(was_training)

    loss = math.fsum(surprisal_nats) / len(surprisal_nats)
    tokens: list[TokenScore] = []
    if request.detail_level == "per_token":
        for position, token_id in enumerate(ids):
            predicted = position - 1  # position t is predicted from the logits at t - 1
            tokens.append(
                TokenScore(
                    position=position,
                    token_id=token_id,
                    text=tokenizer.decode([token_id]),
                    surprisal_bits=surprisal_nats[predicted] / math.log(2) if position else None,
                    topk=top[predicted] if position and top else [],
                )
            )
    return ScoreResult(
        loss=loss,
        perplexity=perplexity(loss),
        bits_per_token=loss / math.log(2),
        num_tokens=len(ids),
        num_predicted=len(surprisal_nats),
        tokens=tokens,
    )


def _top_predictions(
    logits: torch.Tensor, k: int, tokenizer: Tokenizer
) -> list[list[TokenPrediction]]:
    """The k likeliest next tokens at each position of (T, V) logits."""
    probs = torch.softmax(logits.float(), dim=-1)  # (T, V)
    values, indices = torch.topk(probs, min(k, probs.size(-1)), dim=-1)  # (T, k)
    return [
        [
            TokenPrediction(token_id=token_id, text=tokenizer.decode([token_id]), prob=prob)
            for token_id, prob in zip(row_ids, row_probs, strict=True)
        ]
        for row_ids, row_probs in zip(indices.tolist(), values.tolist(), strict=True)
    ]
