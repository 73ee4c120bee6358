"""The classifier's test report: accuracy, macro F1 and per-class figures on the dataset's
test split (classify/metrics.py, as the baseline), the confusion matrix (JSON and a PNG),
single-text CPU latency and model size, and optionally the same for a dynamic int8 copy.

Latency is what one request costs: tokenise one text and run one forward pass, timed over
`samples` test texts after warm-up passes, on the CPU (where int8 applies).
"""

from __future__ import annotations

import copy
import io
import math
import statistics
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from platform_core.manifests import (
    ClassificationMetrics,
    LatencyReport,
    QuantizedReport,
)
from trainer_worker.classify.metrics import classification_metrics
from trainer_worker.classify.task import TextBatch, predict_probs

WARMUP_PASSES = 3  # the first passes allocate and pick kernels; they are not what a user sees
CONFUSION_PNG = "confusion.png"
_MAX_TICK_LABELS = 40  # past this many classes the axes name none (they would overlap)


def score(
    model: nn.Module, data: TextBatch, labels: Sequence[str]
) -> tuple[ClassificationMetrics, list[str]]:
    """Metrics on `data` (on the model's device, fp32) and the predicted labels."""
    device = next(model.parameters()).device
    probs, _ = predict_probs(model, data, device, nullcontext)
    guess = [labels[int(i)] for i in probs.argmax(dim=-1)]
    truth = [labels[int(i)] for i in data.labels]
    return classification_metrics(truth, guess, labels), guess


def confusion_matrix(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """[true][predicted] counts in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for gold, guess in zip(truth, predicted, strict=True):
        matrix[index[gold]][index[guess]] += 1
    return matrix


def confusion_png(matrix: list[list[int]], labels: Sequence[str], path: Path) -> None:
    """Rows normalised to recall (a big class does not drown the colours), counts written in
    the cells when the matrix is small enough to read them."""
    import matplotlib  # noqa: PLC0415 - lazy: only a finished classifier run needs it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415 - after the backend is chosen

    n = len(labels)
    rates = [[count / max(sum(row), 1) for count in row] for row in matrix]
    side = min(4.0 + 0.35 * n, 20.0)
    figure = Figure(figsize=(side, side), dpi=100)  # a bare Figure: nothing global leaks
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= _MAX_TICK_LABELS:
        axes.set_xticks(range(n), labels=list(labels), rotation=90, fontsize=7)
        axes.set_yticks(range(n), labels=list(labels), fontsize=7)
    if n <= 20:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                if count:
                    color = "white" if rates[i][j] > 0.5 else "black"
                    axes.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("confusion matrix (test split)")
    figure.tight_layout()
    figure.savefig(path, format="png")


@torch.no_grad()
def single_text_latency(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    width: int,
    samples: int,
) -> LatencyReport:
    """p50 / p95 milliseconds to tokenise one text and classify it, on the model's device."""
    if not texts:
        raise ValueError("no texts to time")
    device = next(iter(model.state_dict().values())).device
    was_training = model.training
    model.eval()
    timings: list[float] = []
    try:
        for n in range(WARMUP_PASSES + samples):
            text = texts[n % len(texts)]
            started = time.perf_counter()
            encoded = tokenizer(text, max_length=width, truncation=True, return_tensors="pt")
            model(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
            )
            if n >= WARMUP_PASSES:
                timings.append((time.perf_counter() - started) * 1000.0)
    finally:
        model.train(was_training)
    return LatencyReport(
        p50_ms=statistics.median(timings),
        p95_ms=percentile(timings, 0.95),
        samples=samples,
        threads=torch.get_num_threads(),
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample at or above a `q` share of them (the
    epsilon keeps 0.95 * 100 = 95.00000000000001 from ranking as 96)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` whose Linear layers run in dynamic int8 (weights int8, activations
    quantised per batch); embeddings and norms stay fp32."""
    cpu = copy.deepcopy(model).to("cpu").eval()
    # torch 2.13 marks torch.ao.quantization deprecated (for torchao, not a dependency here);
    # its dynamic int8 Linear still runs, and its warnings would repeat on every report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic  # noqa: PLC0415 - only when asked

        # torch leaves quantize_dynamic unannotated
        quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            cpu, {nn.Linear}, dtype=torch.qint8
        )
    return quantized


def state_bytes(model: nn.Module) -> int:
    """Size of the model's serialised state dict (int8 packed weights included)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def quantized_report(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    test: TextBatch,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    fp32: tuple[ClassificationMetrics, LatencyReport],
    width: int,
    samples: int,
) -> QuantizedReport:
    """The int8 copy on the test split, against the fp32 model's figures (`fp32`, CPU)."""
    int8 = quantize_int8(model)
    metrics, _ = score(int8, test, labels)
    latency = single_text_latency(int8, tokenizer, texts, width, samples)
    fp32_metrics, fp32_latency = fp32
    return QuantizedReport(
        test=metrics,
        accuracy_delta=metrics.accuracy - fp32_metrics.accuracy,
        latency=latency,
        speedup=fp32_latency.p50_ms / max(latency.p50_ms, 1e-9),
        size_bytes=state_bytes(int8),
    )
