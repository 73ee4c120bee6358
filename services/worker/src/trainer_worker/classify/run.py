"""One classifier training run, from a `TrainRunSpec` (family `classifier`) to
`runs/<run_id>/`, on the same lifecycle and loop as the other model families.

The prepared dataset (`classifier.dataset_id`), tokenizer and model are built before the run
folder exists (a bad request fails as USER_INPUT and leaves nothing). The shared loop trains
with the run's callbacks (events, checkpoints, retention, resume), stopping early after two
evals without a better validation accuracy; the weights of the best eval are restored, then
scored on the test split beside the dataset's TF-IDF baseline (report.py). `model/` is a
`save_pretrained` folder (weights, config with the labels, tokenizer), so
`AutoModelForSequenceClassification.from_pretrained` and the registry load it as is.

A resumed attempt keeps the best weights among its own evals (the in-memory copy of an
earlier attempt is gone; its checkpoints' evals still count in the history).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from platform_core.json_types import JsonObject
from platform_core.logging import run_log
from platform_core.manifests import (
    SPLITS,
    ClassifierRecord,
    CorpusRecord,
    DatasetManifest,
    HostInfo,
    RunManifest,
    read_dataset_manifest,
    write_atomic,
)
from platform_core.run_state import RunStatus
from platform_core.specs import TrainRunSpec
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.classify.dataset_job import read_split
from trainer_worker.classify.model import (
    CLASSIFIER_PRESETS,
    build_classifier,
    load_pretrained_classifier,
)
from trainer_worker.classify.records import LabelledText
from trainer_worker.classify.report import (
    CONFUSION_PNG,
    confusion_matrix,
    confusion_png,
    quantized_report,
    score,
    single_text_latency,
)
from trainer_worker.classify.task import ClassifierTask, TextBatch, encode_split
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer, train_wordpiece
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.model_run import (
    SERVICE,
    announce_config,
    begin_run,
    finish_run,
    library_versions,
    param_bytes,
    resume_message,
    train_with_callbacks,
)
from trainer_worker.models.gpt2 import fetch_pretrained
from trainer_worker.models.registry import count_parameters, resolve_pretrained
from trainer_worker.resume import ResumePoint
from trainer_worker.run_callbacks import read_history
from trainer_worker.training.callbacks import EvalInfo
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.seeding import seed_everything

_log = logging.getLogger(__name__)
TOKENIZER_DIR = "tokenizer"  # in the run folder: a later attempt loads it back
REPORT_FILE = "classifier.json"  # in eval/


@dataclass(frozen=True)
class _Prepared:
    spec: TrainRunSpec
    dataset: DatasetManifest
    labels: list[str]
    tokenizer: PreTrainedTokenizerFast
    model: PreTrainedModel
    task: ClassifierTask
    test: TextBatch
    test_texts: list[str]
    manifest: RunManifest


def train_classifier_body(
    spec: TrainRunSpec,
    context: JobContext,
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> Outcome:
    """The body of a `train_model` job whose family is classifier."""
    started = time.monotonic()
    run = _prepare(spec, context)
    search, manifest = begin_run(context, run.model, run.manifest, spec.train.max_steps)
    saved = context.layout.run_dir(context.run_id) / TOKENIZER_DIR
    if not saved.is_dir():
        run.tokenizer.save_pretrained(str(saved))
    with run_log(context.layout.run_log(context.run_id), context.run_id, service=SERVICE):
        if search.point is not None or search.quarantined:
            _log.warning(resume_message(search), extra={"event": "run.resumed"})
        return _train_and_publish(
            context,
            run,
            manifest,
            started,
            search.point,
            should_prune=should_prune,
            disk_probe=disk_probe,
        )


def _tokenizer(
    spec: TrainRunSpec, context: JobContext, train: list[LabelledText]
) -> PreTrainedTokenizerFast:
    saved = context.layout.run_dir(context.run_id) / TOKENIZER_DIR
    if saved.is_dir():
        return load_fast_tokenizer(saved)
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, context.layout.root).pretrained
        return load_fast_tokenizer(fetch_pretrained(str(resolved), None))
    with tempfile.TemporaryDirectory() as scratch:  # the run folder does not exist yet
        texts = [row.text for row in train]
        return train_wordpiece(texts, spec.classifier_options.vocab_size, Path(scratch))


def _model(
    spec: TrainRunSpec, context: JobContext, tokenizer: PreTrainedTokenizerFast, labels: list[str]
) -> PreTrainedModel:
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, context.layout.root).pretrained
        return load_pretrained_classifier(fetch_pretrained(str(resolved), None), labels)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return build_classifier(
        CLASSIFIER_PRESETS[spec.model.preset],
        len(tokenizer),
        pad,
        labels,
        dropout=spec.model.dropout,
        max_positions=spec.model.context_size,
    )


def _prepare(spec: TrainRunSpec, context: JobContext) -> _Prepared:
    options, layout = spec.classifier_options, context.layout
    dataset = read_dataset_manifest(layout.dataset_manifest(options.dataset_id))
    splits = {name: read_split(layout.dataset_split(dataset.id, name)) for name in SPLITS}
    labels = list(dataset.report.labels)
    index = {label: i for i, label in enumerate(labels)}
    tokenizer = _tokenizer(spec, context, splits["train"])
    model = _model(spec, context, tokenizer, labels)
    width = spec.train.block_size

    def encode(rows: list[LabelledText]) -> TextBatch:
        return encode_split(
            tokenizer, [r.text for r in rows], [r.label for r in rows], index, width
        )

    task = ClassifierTask(
        train=encode(splits["train"]), val=encode(splits["val"]), labels=labels, source=model
    )
    setup = resolve_device_setup(spec.train.device, spec.train.precision)
    manifest = RunManifest(
        run_id=context.run_id,
        kind="train_model",
        status=RunStatus.RUNNING,
        user_id=context.user_id,
        spec=json.loads(spec.model_dump_json()),
        seed=spec.train.seed,
        device=str(setup.device),
        precision=setup.precision,
        num_params=count_parameters(model),
        corpus=CorpusRecord(
            source=f"dataset:{dataset.id} ({dataset.source})",
            sha256=_dataset_digest(dataset),
            num_documents=sum(len(rows) for rows in splits.values()),
            num_train_documents=len(splits["train"]),
            num_holdout_documents=len(splits["val"]),
        ),
        library_versions=library_versions(),
        host=HostInfo(
            python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count() or 1
        ),
        started_at=datetime.now(UTC),
        attempt=context.attempt,
    )
    test_texts = [row.text for row in splits["test"]]
    return _Prepared(
        spec, dataset, labels, tokenizer, model, task, encode(splits["test"]), test_texts, manifest
    )


def _dataset_digest(dataset: DatasetManifest) -> str:
    """One digest of the split files (their SHA-256s, in name order)."""
    joined = "\n".join(f"{name} {digest}" for name, digest in sorted(dataset.files.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def _train_and_publish(
    context: JobContext,
    run: _Prepared,
    manifest: RunManifest,
    started: float,
    resume: ResumePoint | None,
    *,
    should_prune: Callable[[EvalInfo], bool] | None,
    disk_probe: DiskProbe | None,
) -> Outcome:
    spec, model = run.spec, run.model
    layout, run_id = context.layout, context.run_id
    folder = layout.run_dir(run_id)
    announce_config(context, spec, manifest, vocab_size=len(run.tokenizer))
    result = train_with_callbacks(
        context, model, run.task, spec, resume, should_prune=should_prune, disk_probe=disk_probe
    )

    history = read_history(folder)
    if run.task.best_state is not None:  # the weights of the best validation accuracy
        model.load_state_dict(run.task.best_state)
    module: torch.nn.Module = model  # nn.Module's typed to(); transformers' own is wrapped
    module.to("cpu")  # the report times CPU inference, where int8 applies
    model_dir = layout.model_dir(run_id)
    model_dir.mkdir(exist_ok=True)
    # config (with the labels) and tokenizer here; finish_run writes the weights beside them
    # as model.safetensors, so the folder loads with from_pretrained as is. The tokenizer
    # carries the length the run trained on (a registered version's users truncate so too).
    model.config.save_pretrained(str(model_dir))
    run.tokenizer.model_max_length = spec.train.block_size
    run.tokenizer.save_pretrained(str(model_dir))
    record = measure(run, history)
    write_atomic(layout.eval_dir(run_id) / REPORT_FILE, record.model_dump_json(indent=2).encode())
    confusion_png(record.confusion, record.labels, layout.eval_dir(run_id) / CONFUSION_PNG)
    headline = headline_metrics(record)
    done = finish_run(
        context,
        manifest,
        result,
        model,
        started,
        update={"classifier": record},
        final_metrics=headline,
    )
    verb = f"cancelled at step {result.final_step}" if done.cancelled else "trained"
    return Outcome(
        result={
            "steps": result.final_step,
            "stop_reason": result.reason,
            # a study trial's objective, as for the language models
            "best_eval_loss": done.metrics.best_eval_loss,
            **headline,
        },
        message=f"{verb} {result.final_step} steps; {summary_line(headline)}",
        artifact_dir=done.artifact_dir,
        cancelled_at_step=result.final_step if done.cancelled else None,
        pruned=result.reason == "pruned",  # a study trial its pruner stopped
    )


def measure(run: _Prepared, history: list[JsonObject]) -> ClassifierRecord:
    """The restored model (on the CPU) on the test split, beside the dataset's baseline."""
    options, width = run.spec.classifier_options, run.spec.train.block_size
    metrics, guess = score(run.model, run.test, run.labels)
    truth = [run.labels[int(i)] for i in run.test.labels]
    latency = single_text_latency(
        run.model, run.tokenizer, run.test_texts, width, options.latency_samples
    )
    quantized = (
        quantized_report(
            run.model,
            run.tokenizer,
            run.test,
            run.test_texts,
            run.labels,
            fp32=(metrics, latency),
            width=width,
            samples=options.latency_samples,
        )
        if options.quantize
        else None
    )
    best_step, best_accuracy = best_eval(history)
    baseline = run.dataset.baseline
    return ClassifierRecord(
        dataset_id=run.dataset.id,
        labels=run.labels,
        best_step=best_step,
        best_val_accuracy=best_accuracy,
        test=metrics,
        baseline_test=baseline.test if baseline is not None else None,
        confusion=confusion_matrix(truth, guess, run.labels),
        latency=latency,
        size_bytes=param_bytes(run.model),
        quantized=quantized,
    )


def best_eval(history: list[JsonObject]) -> tuple[int | None, float | None]:
    """The first step with the highest validation accuracy in the run's history."""
    best: tuple[int | None, float | None] = (None, None)
    for row in history:
        metrics, step = row.get("metrics"), row.get("step")
        if not isinstance(metrics, dict) or not isinstance(step, int):
            continue
        accuracy = metrics.get("val/accuracy")
        if isinstance(accuracy, float) and (best[1] is None or accuracy > best[1]):
            best = (step, accuracy)
    return best


def headline_metrics(record: ClassifierRecord) -> dict[str, float]:
    """The model's test figures ("test/..."), the baseline's twins ("baseline/..."), latency,
    size and the int8 copy's ("int8/...")."""
    out = {
        "test/accuracy": record.test.accuracy,
        "test/macro_f1": record.test.macro_f1,
        "test/p50_ms": record.latency.p50_ms,
        "test/p95_ms": record.latency.p95_ms,
        "model/size_bytes": float(record.size_bytes),
    }
    if record.baseline_test is not None:
        out["baseline/accuracy"] = record.baseline_test.accuracy
        out["baseline/macro_f1"] = record.baseline_test.macro_f1
    if record.quantized is not None:
        out["int8/accuracy"] = record.quantized.test.accuracy
        out["int8/accuracy_delta"] = record.quantized.accuracy_delta
        out["int8/p95_ms"] = record.quantized.latency.p95_ms
        out["int8/speedup"] = record.quantized.speedup
    return out


def summary_line(headline: dict[str, float]) -> str:
    line = (
        f"test accuracy {headline['test/accuracy']:.3f}, macro F1 {headline['test/macro_f1']:.3f}"
    )
    if "baseline/accuracy" in headline:
        line += (
            f" (TF-IDF baseline {headline['baseline/accuracy']:.3f}, "
            f"{headline['baseline/macro_f1']:.3f})"
        )
    line += f", p95 {headline['test/p95_ms']:.1f} ms"
    if "int8/p95_ms" in headline:
        line += (
            f"; int8 p95 {headline['int8/p95_ms']:.1f} ms, "
            f"accuracy {headline['int8/accuracy_delta']:+.3f}"
        )
    return line
