"""The classifier as a `TrainingTask`: batches of encoded texts, cross-entropy over the
dataset's labels, and validation accuracy / macro F1 at every eval.

The task declares 1 - validation accuracy as its selection score, so early stopping and
"best checkpoint" go by accuracy rather than loss; it also keeps an in-memory copy of the
weights at the best eval, which the run restores before its test report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerFast

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.classify.metrics import classification_metrics
from trainer_worker.dual_agent.encoding import encode_texts
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.evaluate import AutocastFactory
from trainer_worker.training.task import TaskEval
from trainer_worker.training.text_rows import check_rows, draw_rows

EVAL_BATCH = 64  # texts per forward pass when evaluating or predicting


@dataclass(frozen=True)
class TextBatch:
    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    labels: Tensor  # (B,) label index

    def __len__(self) -> int:
        return int(self.input_ids.size(0))

    def select(self, index: Tensor, device: torch.device) -> TextBatch:
        return TextBatch(
            self.input_ids[index].to(device),
            self.attention_mask[index].to(device),
            self.labels[index].to(device),
        )


def encode_split(
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    labels: Sequence[str],
    label_index: dict[str, int],
    width: int,
) -> TextBatch:
    """Texts padded / truncated to `width` tokens; DATA_INVALID for a label the head lacks."""
    unknown = sorted({label for label in labels if label not in label_index})
    if unknown:
        raise AppError(
            ErrorCode.DATA_INVALID, f"labels not in the dataset's label list: {unknown[:5]}"
        )
    ids, mask, _ = encode_texts(tokenizer, texts, width)
    target = torch.tensor([label_index[label] for label in labels], dtype=torch.long)
    return TextBatch(ids, mask, target)


@torch.no_grad()
def predict_probs(
    model: nn.Module, data: TextBatch, device: torch.device, autocast: AutocastFactory
) -> tuple[Tensor, float]:
    """(N, L) class probabilities in eval mode, and the mean cross-entropy."""
    was_training = model.training
    model.eval()
    probs: list[Tensor] = []
    total = 0.0
    try:
        for first in range(0, len(data), EVAL_BATCH):
            batch = data.select(torch.arange(first, min(first + EVAL_BATCH, len(data))), device)
            with autocast():
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            scores = logits.logits.float()  # (B, L)
            total += float(F.cross_entropy(scores, batch.labels, reduction="sum"))
            probs.append(scores.softmax(dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs), total / max(len(data), 1)


@dataclass
class ClassifierTask:
    """`TrainingTask[TextBatch]` over encoded train and val texts."""

    train: TextBatch
    val: TextBatch
    labels: list[str]  # the head's order
    source: nn.Module  # the model being trained, unwrapped (its weights are the ones kept)
    best_accuracy: float | None = None
    best_state: dict[str, Tensor] | None = None  # CPU copy of the weights at the best eval
    _losses: list[Tensor] = field(default_factory=list)

    @property
    def train_tokens(self) -> int:
        return int(self.train.input_ids.numel())

    @property
    def has_eval(self) -> bool:
        return len(self.val) > 0

    def prepare(
        self, model: nn.Module, config: TrainConfig, *, setup: DeviceSetup, ctx: DistContext
    ) -> None:
        check_rows(self.train.input_ids, config, "texts")

    def get_batch(
        self,
        config: TrainConfig,
        generator: torch.Generator,
        device: torch.device,
        ctx: DistContext,
    ) -> TextBatch:
        return self.train.select(draw_rows(len(self.train), config, generator, ctx), device)

    def loss(self, model: nn.Module, batch: TextBatch) -> Tensor:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        loss = F.cross_entropy(out.logits.float(), batch.labels)
        self._losses.append(loss.detach())
        return loss

    def evaluate(
        self,
        model: nn.Module,
        device: torch.device,
        autocast: AutocastFactory,
        ctx: DistContext,
    ) -> TaskEval:
        """Every val text on every process (the result is the same everywhere)."""
        probs, loss = predict_probs(model, self.val, device, autocast)
        truth = [self.labels[int(i)] for i in self.val.labels]
        guess = [self.labels[int(i)] for i in probs.argmax(dim=-1)]
        scored = classification_metrics(truth, guess, self.labels)
        metrics = {
            "val/loss": loss,
            "val/accuracy": scored.accuracy,
            "val/macro_f1": scored.macro_f1,
        }
        if self._losses:  # the training mean since the previous eval
            metrics["train/loss"] = float(torch.stack(self._losses).mean())
            self._losses.clear()
        self._keep_if_best(scored.accuracy)
        return TaskEval(loss=loss, metrics=metrics, selection=1.0 - scored.accuracy)

    def _keep_if_best(self, accuracy: float) -> None:
        """Ties keep the earlier weights, as the loop's "improved" does."""
        if self.best_accuracy is not None and accuracy <= self.best_accuracy:
            return
        self.best_accuracy = accuracy
        self.best_state = {k: v.detach().cpu().clone() for k, v in self.source.state_dict().items()}
