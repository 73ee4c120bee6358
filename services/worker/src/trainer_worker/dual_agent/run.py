"""One dual-agent training run, from a `TrainRunSpec` (family `dual_agent`) to
`runs/<run_id>/`, on the same lifecycle and loop as the language models.

Data, tokenizer and model are built before the run folder exists (a bad request fails as
USER_INPUT and leaves nothing). The shared loop trains with the run's callbacks (events,
checkpoints, retention, resume); then the criteria thresholds are tuned on validation, the
model and the keyword baseline are measured on the test split, and the final weights, the
tokenizer and the encoder's config go to `model/` for predict.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from platform_core.logging import run_log
from platform_core.manifests import (
    CorpusRecord,
    DualAgentRecord,
    HostInfo,
    RunManifest,
    write_atomic,
)
from platform_core.run_state import RunStatus
from platform_core.specs import DualAgentOptions, TrainRunSpec
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.dual_agent.baseline import BASELINE_THRESHOLDS, keyword_baseline
from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.data import Post, Splits, data_report
from trainer_worker.dual_agent.encoding import Encoded, encode_posts
from trainer_worker.dual_agent.metrics import (
    CharSpan,
    criteria_metrics,
    evidence_metrics,
    tune_thresholds,
)
from trainer_worker.dual_agent.model import (
    DUAL_AGENT_PRESETS,
    DualAgentModel,
    build_encoder,
    load_encoder,
)
from trainer_worker.dual_agent.sources import load_splits
from trainer_worker.dual_agent.task import DualAgentTask
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer, train_wordpiece
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.model_run import (
    SERVICE,
    announce_config,
    begin_run,
    finish_run,
    library_versions,
    resume_message,
    train_with_callbacks,
)
from trainer_worker.models.gpt2 import fetch_pretrained
from trainer_worker.models.registry import count_parameters, resolve_pretrained
from trainer_worker.resume import ResumePoint
from trainer_worker.training.callbacks import EvalInfo
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.seeding import seed_everything

_log = logging.getLogger(__name__)
TOKENIZER_DIR = "tokenizer"  # in the run folder and in model/
ENCODER_DIR = "encoder"  # in model/: the encoder's config.json (predict rebuilds from it)
REPORT_FILE = "dual_agent.json"  # in eval/
# the completed event's headline figures (the manifest holds every one)
HEADLINE = (
    "criteria_matcher/f1",
    "criteria_matcher/precision",
    "criteria_matcher/recall",
    "criteria_matcher/auc",
    "evidence_binder/char_f1",
    "evidence_binder/exact_match",
    "evidence_binder/has_answer",
)


@dataclass(frozen=True)
class _Prepared:
    spec: TrainRunSpec
    options: DualAgentOptions
    splits: Splits
    tokenizer: PreTrainedTokenizerFast
    model: DualAgentModel
    task: DualAgentTask
    test: Encoded
    manifest: RunManifest


def gold_spans(posts: tuple[Post, ...]) -> list[list[CharSpan]]:
    return [[(s.start, s.end) for s in post.evidence] for post in posts]


def train_dual_agent_body(
    spec: TrainRunSpec,
    context: JobContext,
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> Outcome:
    """The body of a `train_model` job whose family is dual_agent."""
    started = time.monotonic()
    run = _prepare(spec, context)
    search, manifest = begin_run(context, run.model, run.manifest, spec.train.max_steps)
    saved = context.layout.run_dir(context.run_id) / TOKENIZER_DIR
    if not saved.is_dir():  # a later attempt loads this one back (see _tokenizer)
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
    spec: TrainRunSpec, context: JobContext, train: tuple[Post, ...]
) -> PreTrainedTokenizerFast:
    saved = context.layout.run_dir(context.run_id) / TOKENIZER_DIR
    if saved.is_dir():
        return load_fast_tokenizer(saved)
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, context.layout.root).pretrained
        return load_fast_tokenizer(fetch_pretrained(str(resolved), None))
    with tempfile.TemporaryDirectory() as scratch:  # the run folder does not exist yet
        texts = [post.text for post in train]
        return train_wordpiece(texts, spec.dual_agent_options.vocab_size, Path(scratch))


def _prepare(spec: TrainRunSpec, context: JobContext) -> _Prepared:
    options = spec.dual_agent_options
    loaded = load_splits(options, context.layout.root)
    splits = loaded.splits
    tokenizer = _tokenizer(spec, context, splits.train)
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, context.layout.root).pretrained
        encoder = load_encoder(fetch_pretrained(str(resolved), None))
    else:
        preset = DUAL_AGENT_PRESETS[spec.model.preset]
        if spec.model.context_size is not None:
            preset = preset.__class__(
                **{**preset.__dict__, "max_positions": spec.model.context_size}
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        encoder = build_encoder(preset, len(tokenizer), pad, spec.model.dropout)
    model = DualAgentModel(encoder, options.criteria_head)
    width = spec.train.block_size
    train, val = (
        encode_posts(tokenizer, splits.train, width),
        encode_posts(tokenizer, splits.val, width),
    )
    task = DualAgentTask(
        train=train,
        val=val,
        val_texts=[post.text for post in splits.val],
        val_gold=gold_spans(splits.val),
        head=options.criteria_head,
        weights=options.task_weights,
        pos_weight=dual_pos_weight(train) if options.class_weights else None,
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
            source=loaded.source,
            sha256=loaded.sha256,
            num_documents=len(splits.train) + len(splits.val) + len(splits.test),
            num_train_documents=len(splits.train),
            num_holdout_documents=len(splits.val),
        ),
        library_versions=library_versions(),
        host=HostInfo(
            python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count() or 1
        ),
        started_at=datetime.now(UTC),
        attempt=context.attempt,
    )
    test = encode_posts(tokenizer, splits.test, width)
    return _Prepared(spec, options, splits, tokenizer, model, task, test, manifest)


def dual_pos_weight(train: Encoded) -> torch.Tensor:
    """negatives / positives per criterion, within [1, 100] (1 for a criterion never seen)."""
    positives = train.labels.sum(dim=0)  # (C,)
    negatives = len(train) - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1), 1.0).clamp(1.0, 100.0)


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
    announce_config(context, spec, manifest, vocab_size=len(run.tokenizer))
    result = train_with_callbacks(
        context, model, run.task, spec, resume, should_prune=should_prune, disk_probe=disk_probe
    )

    # thresholds on val, then the test split: the model and the keyword baseline
    record = measure(run)
    write_atomic(layout.eval_dir(run_id) / REPORT_FILE, record.model_dump_json(indent=2).encode())
    model_dir = layout.model_dir(run_id)
    model_dir.mkdir(exist_ok=True)
    run.tokenizer.save_pretrained(str(model_dir / TOKENIZER_DIR))
    model.encoder.config.save_pretrained(str(model_dir / ENCODER_DIR))
    headline = headline_metrics(record)
    done = finish_run(
        context,
        manifest,
        result,
        model,
        started,
        update={"dual_agent": record},
        final_metrics=headline,
    )
    cancelled, artifact_dir = done.cancelled, done.artifact_dir
    verb = f"cancelled at step {result.final_step}" if cancelled else "trained"
    return Outcome(
        result={
            "steps": result.final_step,
            "stop_reason": result.reason,
            # a study trial's objective, as for the language models
            "best_eval_loss": done.metrics.best_eval_loss,
            **headline,
        },
        message=f"{verb} {result.final_step} steps; {summary_line(headline)}",
        artifact_dir=artifact_dir,
        cancelled_at_step=result.final_step if cancelled else None,
        pruned=result.reason == "pruned",  # a study trial its pruner stopped
    )


def measure(run: _Prepared) -> DualAgentRecord:
    """Tune the thresholds on val, then score the model and the baseline on test."""
    task, device = run.task, next(run.model.parameters()).device
    batch = max(run.spec.train.batch_size, 32)
    val = task.predict(run.model, task.val, device, nullcontext, batch)
    thresholds = tune_thresholds(val.probs, task.val.labels)
    val_metrics = criteria_metrics(val.probs, task.val.labels, thresholds, "val/criteria_matcher")
    val_metrics.update(
        evidence_metrics(task.val_texts, val.spans, task.val_gold, "val/evidence_binder")
    )
    test_metrics: dict[str, float] = {}
    baseline_metrics: dict[str, float] = {}
    if len(run.test):
        texts, gold = [post.text for post in run.splits.test], gold_spans(run.splits.test)
        found = task.predict(run.model, run.test, device, nullcontext, batch)
        test_metrics = criteria_metrics(
            found.probs, run.test.labels, thresholds, "test/criteria_matcher"
        )
        test_metrics["test/criteria_matcher/loss"] = found.criteria_loss
        test_metrics.update(evidence_metrics(texts, found.spans, gold, "test/evidence_binder"))
        scores, spans = keyword_baseline(texts)
        baseline_metrics = criteria_metrics(
            scores, run.test.labels, BASELINE_THRESHOLDS, "test/criteria_matcher"
        )
        baseline_metrics.update(evidence_metrics(texts, spans, gold, "test/evidence_binder"))
    return DualAgentRecord(
        criteria=list(CRITERIA),
        criteria_head=run.options.criteria_head,
        thresholds=dict(zip(CRITERIA, thresholds, strict=True)),
        data_report=data_report(run.splits),
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        baseline_test_metrics=baseline_metrics,
    )


def headline_metrics(record: DualAgentRecord) -> dict[str, float]:
    """Macro test figures of the model ("test/...") and the baseline ("baseline/...")."""
    out: dict[str, float] = {}
    for name in HEADLINE:
        if f"test/{name}" in record.test_metrics:
            out[f"test/{name}"] = record.test_metrics[f"test/{name}"]
            out[f"baseline/{name}"] = record.baseline_test_metrics[f"test/{name}"]
    return out


def summary_line(headline: dict[str, float]) -> str:
    if "test/criteria_matcher/f1" not in headline:
        return "no test split"
    return (
        f"criteria macro F1 {headline['test/criteria_matcher/f1']:.3f} "
        f"(keyword baseline {headline['baseline/criteria_matcher/f1']:.3f}), "
        f"evidence char F1 {headline['test/evidence_binder/char_f1']:.3f} "
        f"(baseline {headline['baseline/evidence_binder/char_f1']:.3f})"
    )
