"""What every model family's run shares, from its starting manifest to its final one.

A family (the language models in `model_run`, `classify/run.py`, `dual_agent/run.py`) hands
`run_family` (see `families.py`) its `prepare`: the data, tokenizer, model and
`TrainingTask`, built before anything is written (a bad request fails as USER_INPUT and
leaves nothing), as a `FamilyRun` holding its `RunStart` and its `finish`. The start is the
same for all: resume from the newest checkpoint that verifies (setting corrupt ones aside),
the starting manifest, the family's own tokenizer kept in the run folder, the run's log, the
`metrics.config` event, the shared loop with the run's callbacks. So is the end
(`finish_run`, which the family's `finish` calls after writing its own files):
`eval/metrics.json`, the final weights hashed in the manifest, the final manifest and the
`metrics.completed` event.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final, Generic, Protocol

import torch
from transformers import PreTrainedTokenizerFast

from platform_core.events import (
    MetricsCompleted,
    MetricsCompletedPayload,
    MetricsConfig,
    MetricsConfigPayload,
)
from platform_core.json_types import JsonObject
from platform_core.layout import MODEL, DataLayout
from platform_core.logging import run_log
from platform_core.manifests import (
    CorpusRecord,
    EvalPoint,
    HostInfo,
    MetricsSummary,
    RunDurations,
    RunManifest,
    TokenizerRef,
    write_atomic,
    write_manifest,
)
from platform_core.run_state import RunStatus
from platform_core.specs import TrainRunSpec
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.checkpoints import MODEL_FILE, list_checkpoints, write_model
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer, train_wordpiece
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.models.gpt2 import fetch_pretrained
from trainer_worker.models.registry import count_parameters, resolve_pretrained
from trainer_worker.resume import ResumePoint, ResumeSearch, find_resume_point
from trainer_worker.run_callbacks import RunCallbacks, read_history
from trainer_worker.training.callbacks import EvalInfo, TrainResult
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.loop import train_task
from trainer_worker.training.task import BatchT, TrainingTask

_log = logging.getLogger(__name__)
SERVICE: Final = "model-trainer-worker"
# a saved tokenizer: in the run folder (a later attempt loads it back), in a dual-agent model/
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class RunStart(Generic[BatchT]):
    """What a family built before anything is written."""

    spec: TrainRunSpec
    model: torch.nn.Module
    task: TrainingTask[BatchT]
    manifest: RunManifest  # as `starting_manifest` builds it
    vocab_size: int  # announced in the config event
    tokenizer_id: str | None = None  # the tokenizer artifact a language model trains with
    # a tokenizer the family built itself, saved in the run folder once (a later attempt
    # loads it back there, so it never trains a different vocabulary)
    keep_tokenizer: PreTrainedTokenizerFast | None = None


@dataclass(frozen=True)
class Trained:
    """What the shared start hands a family's `finish`."""

    result: TrainResult  # the loop's
    manifest: RunManifest  # the starting manifest, as written (with `resumed_from_step`)
    started: float  # time.monotonic() when the attempt began preparing


class FamilyRun(Protocol[BatchT]):
    """A family's prepared run: its `start`, and how it ends once trained (its own files and
    report, then `finish_run`, and the job's outcome)."""

    @property
    def start(self) -> RunStart[BatchT]: ...

    def finish(self, context: JobContext, trained: Trained) -> Outcome: ...


def run_family(
    spec: TrainRunSpec,
    context: JobContext,
    prepare: Callable[[TrainRunSpec, JobContext], FamilyRun[BatchT]],
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> Outcome:
    """Prepare (everything a user can get wrong, before anything is written), resume or
    start, announce and train, then the family's `finish`. A study trial passes its pruner
    (asked at each eval; the run ends "pruned") and its view of the disk (its share of the
    study's checkpoint budget)."""
    started = time.monotonic()
    if context.tracker is not None:
        context.tracker.expect_metrics()  # MLflow's run opens while the model is prepared
    run = prepare(spec, context)
    start = run.start
    search, manifest = begin_run(context, start.model, start.manifest, start.spec.train.max_steps)
    saved = context.layout.run_dir(context.run_id) / TOKENIZER_DIR
    if start.keep_tokenizer is not None and not saved.is_dir():
        start.keep_tokenizer.save_pretrained(str(saved))
    with run_log(context.layout.run_log(context.run_id), context.run_id, service=SERVICE):
        if search.point is not None or search.quarantined:
            _log.warning(resume_message(search), extra={"event": "run.resumed"})
        _log.info("training started", extra={"event": "training.started"})
        announce_config(
            context,
            start.spec,
            manifest,
            vocab_size=start.vocab_size,
            tokenizer_id=start.tokenizer_id,
        )
        result = train_with_callbacks(
            context,
            start.model,
            start.task,
            start.spec,
            search.point,
            should_prune=should_prune,
            disk_probe=disk_probe,
        )
        return run.finish(context, Trained(result, manifest, started))


def encoder_tokenizer(
    spec: TrainRunSpec, layout: DataLayout, run_id: str, texts: list[str], vocab_size: int
) -> PreTrainedTokenizerFast:
    """An encoder family's tokenizer: the one an earlier attempt kept in the run folder, else
    the pretrained encoder's own, else a WordPiece vocabulary of `vocab_size` over the
    training `texts` (kept by `run_family` through `RunStart.keep_tokenizer`)."""
    saved = layout.run_dir(run_id) / TOKENIZER_DIR
    if saved.is_dir():
        return load_fast_tokenizer(saved)
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, layout.root).pretrained
        return load_fast_tokenizer(fetch_pretrained(str(resolved), None))
    with tempfile.TemporaryDirectory() as scratch:  # the run folder does not exist yet
        return train_wordpiece(texts, vocab_size, Path(scratch))


def starting_manifest(
    context: JobContext,
    spec: TrainRunSpec,
    model: torch.nn.Module,
    corpus: CorpusRecord,
    tokenizer: TokenizerRef | None = None,
) -> RunManifest:
    """A model run's manifest as it starts (status running): the spec, seed, device, size,
    data, library versions and host that make it reproducible."""
    setup = resolve_device_setup(spec.train.device, spec.train.precision)
    return RunManifest(
        run_id=context.run_id,
        kind="train_model",
        status=RunStatus.RUNNING,
        user_id=context.user_id,
        spec=json.loads(spec.model_dump_json()),
        seed=spec.train.seed,
        device=str(setup.device),
        precision=setup.precision,
        num_params=count_parameters(model),
        corpus=corpus,
        tokenizer=tokenizer,
        library_versions=library_versions(),
        host=HostInfo(
            python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count() or 1
        ),
        started_at=datetime.now(UTC),
        attempt=context.attempt,
    )


def resume_hint(layout: DataLayout, run_id: str) -> int | None:
    """The step of the run's newest checkpoint, before anything is verified or built: what
    the started event announces. The resume notice that follows names the step the run
    really resumes from (an older one when the newest turns out corrupt)."""
    checkpoints = list_checkpoints(layout.checkpoints_dir(run_id))
    return int(checkpoints[-1].name.removeprefix("step-")) if checkpoints else None


def begin_run(
    context: JobContext, model: torch.nn.Module, manifest: RunManifest, max_steps: int
) -> tuple[ResumeSearch, RunManifest]:
    """Load the newest checkpoint that verifies into `model` (setting corrupt ones aside),
    say where the run resumes, and write the starting manifest; every model kind begins so."""
    search = find_resume_point(context.layout.checkpoints_dir(context.run_id), model)
    resume = search.point
    if search.quarantined:  # the run's message, as `trainctl status` shows it while it trains
        context.store.set_status(context.run_id, RunStatus.RUNNING, message=resume_message(search))
    if resume is not None or search.quarantined:
        context.progress(
            step=resume.state.step if resume else 0,
            total_steps=max_steps,
            epoch=0,
            eta_s=None,
            message=resume_message(search),
        )
    context.layout.eval_dir(context.run_id).mkdir(parents=True, exist_ok=True)
    started = manifest.model_copy(
        update={"resumed_from_step": resume.state.step if resume else None}
    )
    write_manifest(context.layout.run_manifest(context.run_id), started)
    return search, started


def resume_message(search: ResumeSearch) -> str:
    """What the user is told: where the run resumes, and which corrupt checkpoints were set
    aside (renamed, kept for inspection)."""
    aside = ", ".join(f"{q.name} as {q.moved_to}" for q in search.quarantined)
    skipped = f" (skipped corrupt {aside})" if aside else ""
    if search.point is None:
        return f"no checkpoint verifies; training again from step 0{skipped}"
    return f"resumed from step {search.point.state.step}{skipped}"


def announce_config(
    context: JobContext,
    spec: TrainRunSpec,
    manifest: RunManifest,
    *,
    vocab_size: int,
    tokenizer_id: str | None = None,
) -> None:
    """The run's `metrics.config` event: family, preset (or pretrained id), size, settings."""
    context.publish(
        MetricsConfig(
            run_id=context.run_id,
            user_id=context.user_id,
            payload=MetricsConfigPayload(
                model_family=spec.model.family,
                preset=spec.model.pretrained or spec.model.preset,
                num_params=manifest.num_params or 0,
                vocab_size=vocab_size,
                batch_size=spec.train.batch_size,
                max_steps=spec.train.max_steps,
                learning_rate=spec.train.learning_rate,
                device=str(manifest.device),
                precision=str(manifest.precision),
                seed=spec.train.seed,
                tokenizer_id=tokenizer_id,
            ),
        )
    )


def train_with_callbacks(
    context: JobContext,
    model: torch.nn.Module,
    task: TrainingTask[BatchT],
    spec: TrainRunSpec,
    resume: ResumePoint | None,
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> TrainResult:
    """The shared loop on `task` with the run's callbacks (events, eval history, checkpoints,
    retention, cancellation; a study trial's pruner and disk share); closed before
    returning: reports published, the last checkpoint on disk, before the run ends."""
    callbacks = RunCallbacks(
        context,
        context.layout.run_dir(context.run_id),
        spec.retention,
        watermark=context.store.published_step(context.run_id),
        # weights + two AdamW moments (+ the live weights beside their average)
        fallback_checkpoint_bytes=(3 if spec.train.ema_decay is None else 4) * param_bytes(model),
        should_prune=should_prune,
        probe=disk_probe,
    )
    try:
        return train_task(
            model,
            task,
            spec.train,
            callbacks.callbacks(),
            resume_from=resume.state if resume else None,
            run_id=context.run_id,
        )
    finally:
        callbacks.close()


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@dataclass(frozen=True)
class FinishedRun:
    metrics: MetricsSummary  # the run's metrics summary (every attempt's evals)
    cancelled: bool
    artifact_dir: str  # the run folder, relative to the data root


def finish_run(
    context: JobContext,
    trained: Trained,
    model: torch.nn.Module,
    *,
    update: dict[str, object] | None = None,
    final_metrics: dict[str, float] | None = None,
) -> FinishedRun:
    """How every model run ends: `eval/metrics.json`, the final weights (hashed in the
    manifest), the final manifest (plus the family's `update`) and the completed event
    (with the family's `final_metrics`; a perplexity only for a language model)."""
    layout, run_id = context.layout, context.run_id
    result, manifest = trained.result, trained.manifest
    folder = layout.run_dir(run_id)
    metrics = metrics_summary(result, read_history(folder))
    write_atomic(layout.eval_metrics(run_id), metrics.model_dump_json(indent=2).encode())
    layout.model_dir(run_id).mkdir(exist_ok=True)
    weights = write_model(layout.model_dir(run_id) / MODEL_FILE, model)
    duration = time.monotonic() - trained.started
    cancelled = result.reason == "cancelled"
    # a study trial its pruner stopped ended as designed: pruned, not failed nor completed
    ended = RunStatus.PRUNED if result.reason == "pruned" else RunStatus.COMPLETED
    final = manifest.model_copy(
        update={
            "status": RunStatus.CANCELLED if cancelled else ended,
            "stop_reason": result.reason,
            "finished_at": datetime.now(UTC),
            "durations_s": RunDurations(
                total=round(duration, 3), training=round(result.duration_s, 3)
            ),
            "metrics": metrics,
            "artifacts": artifact_list(folder),
            "model_files": {f"{MODEL}/{MODEL_FILE}": str(weights["sha256"])},
            **(update or {}),
        }
    )
    write_manifest(layout.run_manifest(run_id), final)
    artifact_dir = layout.relative(folder)
    context.publish(
        MetricsCompleted(
            run_id=run_id,
            user_id=context.user_id,
            payload=MetricsCompletedPayload(
                steps=result.final_step,
                duration_s=duration,
                final_loss=result.final_loss,
                final_eval_loss=metrics.final_eval_loss,
                final_perplexity=None if final_metrics else metrics.final_perplexity,
                tokens_per_s=result.tokens_per_s,
                artifact_dir=artifact_dir,
                metrics=final_metrics or {},
            ),
        )
    )
    return FinishedRun(metrics, cancelled, artifact_dir)


def headline_outcome(
    trained: Trained, done: FinishedRun, headline: dict[str, float], summary: str
) -> Outcome:
    """The outcome of a family whose completed event carries its `headline` figures (the
    classifier's, the dual-agent model's), `summary` their one line for the user."""
    result = trained.result
    verb = f"cancelled at step {result.final_step}" if done.cancelled else "trained"
    return Outcome(
        result={
            "steps": result.final_step,
            "stop_reason": result.reason,
            # a study trial's objective, as for the language models
            "best_eval_loss": done.metrics.best_eval_loss,
            **headline,
        },
        message=f"{verb} {result.final_step} steps; {summary}",
        artifact_dir=done.artifact_dir,
        cancelled_at_step=result.final_step if done.cancelled else None,
        pruned=result.reason == "pruned",  # a study trial its pruner stopped
    )


def metrics_summary(result: TrainResult, history: list[JsonObject]) -> MetricsSummary:
    """The run's metrics summary; evals come from the history file, so a resumed run's
    summary covers its whole life."""
    points = [EvalPoint.model_validate(row) for row in history]
    losses = [point.eval_loss for point in points if point.eval_loss is not None]
    return MetricsSummary(
        steps=result.final_step,
        final_loss=result.final_loss,
        best_eval_loss=min(losses) if losses else None,
        first_perplexity=points[0].perplexity if points else None,
        final_perplexity=points[-1].perplexity if points else None,
        final_eval_loss=points[-1].eval_loss if points else None,
        tokens_per_s=result.tokens_per_s,
        eval_history=points,
    )


def artifact_list(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def library_versions() -> dict[str, str]:
    names = ("torch", "transformers", "tokenizers", "safetensors", "numpy")
    return {name: version(name) for name in names}
