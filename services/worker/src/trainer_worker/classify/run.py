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
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from platform_core.json_types import JsonObject
from platform_core.manifests import (
    SPLITS,
    ClassifierRecord,
    CorpusRecord,
    DatasetManifest,
    read_dataset_manifest,
    write_atomic,
)
from platform_core.specs import TrainRunSpec
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
from trainer_worker.family_run import (
    RunStart,
    Trained,
    encoder_tokenizer,
    finish_run,
    headline_outcome,
    param_bytes,
    starting_manifest,
)
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.models.encoder import freeze_lower_layers
from trainer_worker.models.gpt2 import fetch_pretrained
from trainer_worker.models.registry import resolve_pretrained
from trainer_worker.run_callbacks import read_history
from trainer_worker.training.seeding import seed_everything

REPORT_FILE = "classifier.json"  # in eval/


@dataclass(frozen=True)
class ClassifierRun:
    """A prepared classifier run (a `family_run.FamilyRun`): its start, and what the test
    report needs once it has trained."""

    start: RunStart[TextBatch]
    dataset: DatasetManifest
    labels: list[str]
    tokenizer: PreTrainedTokenizerFast
    model: PreTrainedModel  # start's, typed
    task: ClassifierTask  # start's, typed
    test: TextBatch
    test_texts: list[str]

    def finish(self, context: JobContext, trained: Trained) -> Outcome:
        """The best eval's weights scored on the test split, `model/` loadable as is, then
        the shared end with the classifier's record and headline figures."""
        layout, run_id, model = context.layout, context.run_id, self.model
        history = read_history(layout.run_dir(run_id))
        if self.task.best_state is not None:  # the weights of the best validation accuracy
            model.load_state_dict(self.task.best_state)
        module: torch.nn.Module = model  # nn.Module's typed to(); transformers' own is wrapped
        module.to("cpu")  # the report times CPU inference, where int8 applies
        model_dir = layout.model_dir(run_id)
        model_dir.mkdir(exist_ok=True)
        # config (with the labels) and tokenizer here; finish_run writes the weights beside
        # them as model.safetensors, so the folder loads with from_pretrained as is. The
        # tokenizer carries the length the run trained on (a registered version's users
        # truncate so too).
        model.config.save_pretrained(str(model_dir))
        self.tokenizer.model_max_length = self.start.spec.train.block_size
        self.tokenizer.save_pretrained(str(model_dir))
        record = measure(self, history)
        report = record.model_dump_json(indent=2).encode()
        write_atomic(layout.eval_dir(run_id) / REPORT_FILE, report)
        confusion_png(record.confusion, record.labels, layout.eval_dir(run_id) / CONFUSION_PNG)
        headline = headline_metrics(record)
        update: dict[str, object] = {"classifier": record}
        done = finish_run(context, trained, model, update=update, final_metrics=headline)
        return headline_outcome(trained, done, headline, summary_line(headline))


def build_model(
    spec: TrainRunSpec, data_root: Path, tokenizer: PreTrainedTokenizerFast, labels: list[str]
) -> PreTrainedModel:
    """The spec's classifier over `labels`: the preset's, fresh over `tokenizer`, or the
    pretrained encoder with a new head and its `classifier.freeze_layers` lower blocks frozen
    (bench/classify.py builds its models here too)."""
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, data_root).pretrained
        model = load_pretrained_classifier(fetch_pretrained(str(resolved), None), labels)
        freeze_lower_layers(model, spec.classifier_options.freeze_layers)
        return model
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return build_classifier(
        CLASSIFIER_PRESETS[spec.model.preset],
        len(tokenizer),
        pad,
        labels,
        dropout=spec.model.dropout,
        max_positions=spec.model.context_size,
    )


def prepare_classifier(spec: TrainRunSpec, context: JobContext) -> ClassifierRun:
    options, layout = spec.classifier_options, context.layout
    dataset = read_dataset_manifest(layout.dataset_manifest(options.dataset_id))
    splits = {name: read_split(layout.dataset_split(dataset.id, name)) for name in SPLITS}
    labels = list(dataset.report.labels)
    index = {label: i for i, label in enumerate(labels)}
    texts = [row.text for row in splits["train"]]
    tokenizer = encoder_tokenizer(spec, layout, context.run_id, texts, options.vocab_size)
    model = build_model(spec, layout.root, tokenizer, labels)
    width = spec.train.block_size

    def encode(rows: list[LabelledText]) -> TextBatch:
        return encode_split(
            tokenizer, [r.text for r in rows], [r.label for r in rows], index, width
        )

    task = ClassifierTask(
        train=encode(splits["train"]),
        val=encode(splits["val"]),
        labels=labels,
        source=model,
        frozen_layers=options.freeze_layers,
        token_dropout=options.token_dropout,
    )
    corpus = CorpusRecord(
        source=f"dataset:{dataset.id} ({dataset.source})",
        sha256=_dataset_digest(dataset),
        num_documents=sum(len(rows) for rows in splits.values()),
        num_train_documents=len(splits["train"]),
        num_holdout_documents=len(splits["val"]),
    )
    manifest = starting_manifest(context, spec, model, corpus)
    start = RunStart(spec, model, task, manifest, len(tokenizer), keep_tokenizer=tokenizer)
    test, test_texts = encode(splits["test"]), [row.text for row in splits["test"]]
    return ClassifierRun(start, dataset, labels, tokenizer, model, task, test, test_texts)


def _dataset_digest(dataset: DatasetManifest) -> str:
    """One digest of the split files (their SHA-256s, in name order)."""
    joined = "\n".join(f"{name} {digest}" for name, digest in sorted(dataset.files.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def measure(run: ClassifierRun, history: list[JsonObject]) -> ClassifierRecord:
    """The restored model (on the CPU) on the test split, beside the dataset's baseline."""
    spec = run.start.spec
    options, width = spec.classifier_options, spec.train.block_size
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
