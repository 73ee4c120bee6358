"""The classifier as a `TrainingTask`: batches of encoded texts, cross-entropy over the
dataset's labels, and validation accuracy / macro F1 at every eval.

The task declares 1 - validation accuracy as its selection score, so early stopping and
"best checkpoint" go by accuracy rather than loss; it also keeps an in-memory copy of the
weights at the best eval, which the run restores before its test report.

With `classifier.freeze_layers` N, the embeddings and lowest N blocks are a fixed feature
extractor (`models.encoder.FrozenPrefix`): they run in eval mode (no dropout), once per text
before step 0 when the train and val states fit in `PREFIX_CACHE_BYTES` (kept on the
device), otherwise once per drawn batch; a step then runs only the blocks above them, the top
one for the [CLS] position only where the head reads no other (`first_token`). Eval
mode makes the prefix's output the same every time, so caching changes no result, only
the cost of a step (bench/classify.py: about 3x fewer seconds a step with 5 of MiniLM's 6
blocks frozen).

With `classifier.token_dropout` p, each token of a training batch but [CLS] is hidden
from attention with probability p in the blocks the step runs (above the prefix, whose
states stay those of the whole text): an augmentation, drawn like dropout from the torch
generator of the batch's device (per process, restored on resume). Evaluation, the test
report and predictions see every token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import TrainConfig
from trainer_worker.classify.metrics import classification_metrics
from trainer_worker.dual_agent.encoding import encode_texts
from trainer_worker.models.encoder import FrozenPrefix
from trainer_worker.training.device import DeviceSetup
from trainer_worker.training.distributed import DistContext
from trainer_worker.training.evaluate import AutocastFactory
from trainer_worker.training.task import TaskEval
from trainer_worker.training.text_rows import LengthBuckets, check_rows, draw_rows, trim_width

EVAL_BATCH = 64  # texts per forward pass when evaluating or predicting
# the frozen prefix's train + val states are cached up to this size (MiniLM, 32 tokens:
# 49 KB a text), otherwise computed per batch
PREFIX_CACHE_BYTES = 2 << 30

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextBatch:
    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    labels: Tensor  # (B,) label index
    states: Tensor | None = None  # (B, T, H) the frozen prefix's output, when known

    def __len__(self) -> int:
        return int(self.input_ids.size(0))

    def trimmed(self) -> TextBatch:
        """The same rows without the padding columns none of them attends to (the logits
        are the same: a masked key changes no output, positions count from the left)."""
        width = trim_width(self.attention_mask)
        if width == int(self.input_ids.size(1)):
            return self
        states = None if self.states is None else self.states[:, :width]
        return TextBatch(
            self.input_ids[:, :width], self.attention_mask[:, :width], self.labels, states
        )

    def select(self, index: Tensor, device: torch.device) -> TextBatch:
        states = self.states
        return TextBatch(
            self.input_ids[index].to(device),
            self.attention_mask[index].to(device),
            self.labels[index].to(device),
            None if states is None else states[index.to(states.device)].to(device),
        )


def batch_logits(model: nn.Module, batch: TextBatch, prefix: FrozenPrefix | None) -> Tensor:
    """(B, L) logits: from the prefix's states through the blocks above it when the batch
    carries them, otherwise one forward from the token ids."""
    if prefix is None or batch.states is None:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    else:
        with prefix.upper():
            out = model(inputs_embeds=batch.states, attention_mask=batch.attention_mask)
    logits: Tensor = out.logits
    return logits


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
    model: nn.Module,
    data: TextBatch,
    device: torch.device,
    autocast: AutocastFactory,
    prefix: FrozenPrefix | None = None,
) -> tuple[Tensor, float]:
    """(N, L) class probabilities in eval mode, in the rows' order, and the mean
    cross-entropy; computed over chunks of rows of similar lengths, each without the
    padding none of its rows needs."""
    was_training = model.training
    model.eval()
    probs: list[Tensor] = []
    total = 0.0
    order = data.attention_mask.sum(dim=1).argsort(stable=True)  # chunks of similar lengths
    try:
        for first in range(0, len(data), EVAL_BATCH):
            rows = order[first : first + EVAL_BATCH]
            batch = data.select(rows, device).trimmed()
            with autocast():
                scores = batch_logits(model, batch, prefix).float()  # (B, L)
            total += float(F.cross_entropy(scores, batch.labels, reduction="sum"))
            probs.append(scores.softmax(dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs)[order.argsort()], total / max(len(data), 1)


@dataclass
class ClassifierTask:
    """`TrainingTask[TextBatch]` over encoded train and val texts."""

    train: TextBatch
    val: TextBatch
    labels: list[str]  # the head's order
    source: nn.Module  # the model being trained, unwrapped (its weights are the ones kept)
    frozen_layers: int = 0  # classifier.freeze_layers: run as a fixed feature extractor
    first_token: bool = True  # the top block computes [CLS] only (when the head reads no more)
    token_dropout: float = 0.0  # classifier.token_dropout: training tokens hidden at this rate
    buckets: LengthBuckets | None = None  # set by prepare: train batches of similar lengths
    prefix: FrozenPrefix | None = None  # set by prepare when frozen_layers > 0
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
        self.buckets = LengthBuckets.of(self.train.attention_mask, config, ctx)
        if isinstance(model, PreTrainedModel):
            self.prefix = FrozenPrefix.of(model, self.frozen_layers, first_token=self.first_token)
        if self.prefix is not None:
            self._cache_prefix(self.prefix, ctx.device)

    def _cache_prefix(self, prefix: FrozenPrefix, device: torch.device) -> None:
        """Check that the model splits at the prefix (otherwise it trains as one forward)
        and keep the train and val texts' states on `device` when they fit."""
        probe = self.train.select(torch.arange(min(8, len(self.train))), device)
        if not prefix.splits_exactly(probe.input_ids, probe.attention_mask):
            logger.warning(
                "the model does not split at its frozen blocks; training it whole",
                extra={"event": "classifier.prefix_unsplit", "layers": prefix.layers},
            )
            self.prefix = None
            return
        states = prefix.states(probe.input_ids[:1], probe.attention_mask[:1])
        need = (len(self.train) + len(self.val)) * states.numel() * states.element_size()
        cached = need <= PREFIX_CACHE_BYTES
        if cached:
            self.train = replace(self.train, states=_prefix_states(prefix, self.train, device))
            self.val = replace(self.val, states=_prefix_states(prefix, self.val, device))
        logger.info(
            "frozen blocks run as a feature extractor",
            extra={
                "event": "classifier.prefix",
                "layers": prefix.layers,
                "cached": cached,
                "bytes": need,
            },
        )

    def get_batch(
        self,
        config: TrainConfig,
        generator: torch.Generator,
        device: torch.device,
        ctx: DistContext,
    ) -> TextBatch:
        if self.buckets is None:
            rows = draw_rows(len(self.train), config, generator, ctx)
        else:
            rows = self.buckets.draw(config, generator, ctx)
        batch = self.train.select(rows, device).trimmed()
        if self.prefix is not None and batch.states is None:  # not cached: this batch's
            batch = replace(batch, states=self.prefix.states(batch.input_ids, batch.attention_mask))
        return hide_tokens(batch, self.token_dropout)

    def loss(self, model: nn.Module, batch: TextBatch) -> Tensor:
        logits = batch_logits(model, batch, self.prefix)
        loss = F.cross_entropy(logits.float(), batch.labels)
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
        probs, loss = predict_probs(model, self.val, device, autocast, self.prefix)
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


def hide_tokens(batch: TextBatch, rate: float) -> TextBatch:
    """`batch` with each token but the first ([CLS]) masked out of attention with
    probability `rate` (`classifier.token_dropout`); the same batch at rate 0."""
    if rate == 0.0:
        return batch
    mask = batch.attention_mask
    keep = torch.rand(mask.shape, device=mask.device) >= rate
    keep[:, 0] = True
    return replace(batch, attention_mask=mask * keep.to(mask.dtype))


def _prefix_states(prefix: FrozenPrefix, data: TextBatch, device: torch.device) -> Tensor:
    """(N, T, H) the prefix's states of every row of `data`, on `device`."""
    chunks = []
    for first in range(0, len(data), EVAL_BATCH):
        batch = data.select(torch.arange(first, min(first + EVAL_BATCH, len(data))), device)
        chunks.append(prefix.states(batch.input_ids, batch.attention_mask))
    return torch.cat(chunks) if chunks else torch.empty(0, device=device)
