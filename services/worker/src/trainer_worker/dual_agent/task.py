"""The dual-agent model as a `TrainingTask`: batches of posts, the joint loss with
`task_weights`, and the seed's validation metrics at every eval.

Loss = w_c * criteria loss (BCE per criterion, or cross-entropy over criteria + "none")
     + w_e * evidence loss (mean of the start and end cross-entropies; "no evidence" is the
       [CLS] position). The two parts' training means since the previous eval are reported
       as `train/criteria_matcher/loss` and `train/evidence_binder/loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from platform_core.specs import TaskWeights, TrainConfig
from trainer_worker.dual_agent.decode import criteria_probs, decode_spans
from trainer_worker.dual_agent.encoding import Encoded
from trainer_worker.dual_agent.metrics import CharSpan, criteria_metrics, evidence_metrics
from trainer_worker.dual_agent.model import CriteriaHead
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.evaluate import AutocastFactory
from trainer_worker.training.task import TaskEval
from trainer_worker.training.text_rows import check_rows, draw_rows

CRITERIA_LOSS = "train/criteria_matcher/loss"
EVIDENCE_LOSS = "train/evidence_binder/loss"


@dataclass(frozen=True)
class DualBatch:
    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    labels: Tensor  # (B, C)
    start: Tensor  # (B,)
    end: Tensor  # (B,)


@dataclass(frozen=True)
class Predictions:
    """A model's answers on a set of posts."""

    probs: Tensor  # (N, C) criteria probabilities
    spans: list[CharSpan | None]  # evidence per post
    loss: float  # mean joint loss
    criteria_loss: float
    evidence_loss: float


def _select(data: Encoded, index: Tensor, device: torch.device) -> DualBatch:
    return DualBatch(
        data.input_ids[index].to(device),
        data.attention_mask[index].to(device),
        data.labels[index].to(device),
        data.start[index].to(device),
        data.end[index].to(device),
    )


@dataclass
class DualAgentTask:
    """`TrainingTask[DualBatch]` over encoded train and val posts."""

    train: Encoded
    val: Encoded
    val_texts: list[str]
    val_gold: list[list[CharSpan]]
    head: CriteriaHead
    weights: TaskWeights
    pos_weight: Tensor | None = None  # (C,) BCE weights of positives; None = unweighted
    _parts: list[Tensor] = field(default_factory=list)  # (2,) detached losses per micro-batch

    @property
    def train_tokens(self) -> int:
        return int(self.train.input_ids.numel())

    @property
    def has_eval(self) -> bool:
        return len(self.val) > 0

    def prepare(
        self, model: nn.Module, config: TrainConfig, *, setup: DeviceSetup, ctx: DistContext
    ) -> None:
        check_rows(self.train.input_ids, config, "posts")
        if self.pos_weight is not None:
            self.pos_weight = self.pos_weight.to(ctx.device)

    def get_batch(
        self,
        config: TrainConfig,
        generator: torch.Generator,
        device: torch.device,
        ctx: DistContext,
    ) -> DualBatch:
        return _select(self.train, draw_rows(len(self.train), config, generator, ctx), device)

    def loss(self, model: nn.Module, batch: DualBatch) -> Tensor:
        criteria, start, end = model(batch.input_ids, batch.attention_mask)
        parts = self.losses(criteria, start, end, batch)  # (2,)
        self._parts.append(parts.detach())
        return self.weights.criteria_matcher * parts[0] + self.weights.evidence_binder * parts[1]

    def losses(self, criteria: Tensor, start: Tensor, end: Tensor, batch: DualBatch) -> Tensor:
        """(criteria loss, evidence loss), fp32, as a (2,) tensor."""
        logits = criteria.float()
        if self.head == "softmax":
            none = (batch.labels.sum(dim=1, keepdim=True) == 0).float()  # (B, 1)
            target = torch.cat([batch.labels, none], dim=1)
            target = target / target.sum(dim=1, keepdim=True)  # (B, C+1) distribution
            c_loss = F.cross_entropy(logits, target)
        else:
            c_loss = F.binary_cross_entropy_with_logits(
                logits, batch.labels, pos_weight=self.pos_weight
            )
        e_loss = 0.5 * (
            F.cross_entropy(start.float(), batch.start) + F.cross_entropy(end.float(), batch.end)
        )
        return torch.stack([c_loss, e_loss])

    @torch.no_grad()
    def predict(
        self,
        model: nn.Module,
        data: Encoded,
        device: torch.device,
        autocast: AutocastFactory,
        batch_size: int,
    ) -> Predictions:
        """The model's answers on `data`, in eval mode (no dropout)."""
        was_training = model.training
        model.eval()
        probs, spans, totals = [], [], torch.zeros(2, dtype=torch.float64)
        try:
            for first in range(0, len(data), batch_size):
                index = torch.arange(first, min(first + batch_size, len(data)))
                batch = _select(data, index, device)
                with autocast():
                    criteria, start, end = model(batch.input_ids, batch.attention_mask)
                totals += self.losses(criteria, start, end, batch).double().cpu() * len(index)
                probs.append(criteria_probs(criteria, self.head).cpu())
                spans += decode_spans(start.float().cpu(), end.float().cpu(), data.offsets[index])
        finally:
            model.train(was_training)
        n = max(len(data), 1)
        c_loss, e_loss = (float(v) / n for v in totals)
        w = self.weights
        return Predictions(
            probs=torch.cat(probs) if probs else torch.zeros((0, data.labels.size(1))),
            spans=spans,
            loss=w.criteria_matcher * c_loss + w.evidence_binder * e_loss,
            criteria_loss=c_loss,
            evidence_loss=e_loss,
        )

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device,
        autocast: AutocastFactory,
        ctx: DistContext,
    ) -> TaskEval:
        """Every val post on every process (the val split is small; the result is the same
        everywhere without a reduction); the decision threshold is 0.5 until tuned."""
        found = self.predict(model, self.val, device, autocast, batch_size=64)
        metrics = criteria_metrics(
            found.probs, self.val.labels, [0.5] * self.val.labels.size(1), "val/criteria_matcher"
        )
        metrics["val/criteria_matcher/loss"] = found.criteria_loss
        metrics.update(
            evidence_metrics(self.val_texts, found.spans, self.val_gold, "val/evidence_binder")
        )
        metrics["val/evidence_binder/loss"] = found.evidence_loss
        if self._parts:  # the training means since the previous eval
            mean = torch.stack(self._parts).mean(dim=0).tolist()
            metrics[CRITERIA_LOSS], metrics[EVIDENCE_LOSS] = mean[0], mean[1]
            self._parts.clear()
        return TaskEval(loss=found.loss, metrics=metrics)
