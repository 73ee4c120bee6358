"""The causal-LM loss, and its estimate on the holdout (nanoGPT's `estimate_loss`).

One definition of the loss serves training, evaluation and scoring: the mean cross-entropy
in nats per predicted token, computed in fp32 whatever precision produced the logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from platform_core.errors import AppError, ErrorCode

AutocastFactory = Callable[[], AbstractContextManager[object]]

# exp() of a loss above this overflows a float; report inf instead of raising
_MAX_EXP_ARG = 700.0


def forward_logits(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Call the forward contract: (B, T) long ids -> (B, T, V) logits."""
    logits = model(input_ids)
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        raise AppError(
            ErrorCode.INTERNAL, "model forward must return (B, T, V) logits as one tensor"
        )
    return logits


@torch.no_grad()
def output_vocab_size(model: nn.Module, device: torch.device) -> int:
    """Width V of the model's logits, from one eval-mode forward of a single token (eval mode:
    no dropout, so no random numbers are drawn and seeded runs stay reproducible)."""
    was_training = model.training
    model.eval()
    try:
        probe = torch.zeros((1, 1), dtype=torch.long, device=device)  # (1, 1)
        return forward_logits(model, probe).size(-1)
    finally:
        model.train(was_training)


def token_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each target under its logits, nats: (B, T, V), (B, T) -> (B, T)."""
    flat = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
    )
    return flat.view(targets.shape)


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every position of the batch, nats per token (scalar)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < _MAX_EXP_ARG else math.inf


@dataclass(frozen=True)
class LossSum:
    """Summed token losses and their count: sums of shards add up across processes."""

    total_nats: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.total_nats / self.tokens if self.tokens else math.nan


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    loader: DataLoader[tuple[Tensor, Tensor]],
    device: torch.device,
    autocast: AutocastFactory,
) -> LossSum:
    """Summed loss over every block the loader yields, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    try:
        for x_cpu, y_cpu in loader:
            x = x_cpu.to(device, non_blocking=True)  # (B, T)
            y = y_cpu.to(device, non_blocking=True)  # (B, T)
            with autocast():
                logits = forward_logits(model, x)  # (B, T, V)
            total += token_losses(logits, y).double().sum()
            tokens += y.numel()
    finally:
        model.train(was_training)
    return LossSum(total_nats=float(total), tokens=tokens)
