"""One model training run, from a JSON spec to `runs/<run_id>/`.

Everything the user can get wrong (spec, tokenizer, corpus, pretrained weights) is checked
before the run folder exists, so a bad request fails fast as USER_INPUT and leaves nothing
behind. A later attempt resumes from the newest valid checkpoint, or trains from step 0 in
the same folder (its logs and eval history are kept; nothing is published twice). The shared
loop trains; its callbacks publish progress, eval and checkpoint events and save
checkpoints; at the end come deterministic samples, `eval/metrics.json`, the final weights
(hashed in the manifest) and `manifest.json`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final

import torch
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, invalid_input
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
from platform_core.specs import GenerateRequest, TrainRunSpec, sample_seed
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.checkpoints import MODEL_FILE, list_checkpoints, write_model
from trainer_worker.data.corpus import corpus_spec, load_corpus
from trainer_worker.inference.generate import generate
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.models.registry import build_model, count_parameters, resolve_pretrained
from trainer_worker.resume import ResumePoint, ResumeSearch, find_resume_point
from trainer_worker.run_callbacks import RunCallbacks, read_history
from trainer_worker.tokenizers.artifacts import load_tokenizer
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.training.callbacks import EvalInfo, TrainResult
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.lm_task import LanguageModelTask
from trainer_worker.training.loop import train_task
from trainer_worker.training.seeding import seed_everything
from trainer_worker.training.task import BatchT, TrainingTask

_log = logging.getLogger(__name__)
SERVICE: Final = "model-trainer-worker"


def parse_spec(spec: JsonObject) -> TrainRunSpec:
    try:
        return TrainRunSpec.model_validate(spec)
    except ValidationError as exc:
        raise invalid_input(exc, what="training spec") from exc


@dataclass(frozen=True)
class _Prepared:
    """Everything a run needs, built before anything is written."""

    spec: TrainRunSpec
    tokenizer: Tokenizer
    model: torch.nn.Module
    train_ids: torch.Tensor  # (N,) token ids
    eval_ids: torch.Tensor | None  # (M,) holdout ids; None without a holdout
    manifest: RunManifest  # the run's manifest as it starts


def resume_hint(layout: DataLayout, run_id: str) -> int | None:
    """The step of the run's newest checkpoint, before anything is verified or built: what
    the started event announces. The resume notice that follows names the step the run
    really resumes from (an older one when the newest turns out corrupt)."""
    checkpoints = list_checkpoints(layout.checkpoints_dir(run_id))
    return int(checkpoints[-1].name.removeprefix("step-")) if checkpoints else None


def train_model_body(
    spec_json: JsonObject,
    context: JobContext,
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> Outcome:
    """The body of a `train_model` job: prepare, resume or start, train, publish.
    A study trial passes its pruner, asked at each eval (the run ends "pruned"), and its
    view of the disk (its share of the study's checkpoint budget)."""
    started = time.monotonic()
    run = _prepare(parse_spec(spec_json), context)
    search, manifest = begin_run(context, run.model, run.manifest, run.spec.train.max_steps)
    with run_log(context.layout.run_log(context.run_id), context.run_id, service=SERVICE):
        if search.point is not None or search.quarantined:
            _log.warning(resume_message(search), extra={"event": "run.resumed"})
        return _train_and_publish(
            context,
            run,
            manifest,
            started=started,
            resume=search.point,
            should_prune=should_prune,
            disk_probe=disk_probe,
        )


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


def _prepare(spec: TrainRunSpec, context: JobContext) -> _Prepared:
    """Everything a user can get wrong (tokenizer, corpus, model), checked and built."""
    layout = context.layout
    tokenizer = _load_tokenizer(layout, spec.lm_tokenizer_id)
    corpus = load_corpus(corpus_spec(spec.corpus), layout.root)
    train_ids = _encode(tokenizer, corpus.train_text)
    eval_ids = _encode(tokenizer, corpus.holdout_text) if corpus.holdout_documents else None
    model_spec = resolve_pretrained(spec.model, layout.root)  # data: folders inside the root
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators too
    model = build_model(model_spec, tokenizer.vocab_size, tokenizer.eos_id)
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
        corpus=CorpusRecord(source=corpus.source, sha256=corpus.sha256),
        tokenizer=TokenizerRef(id=spec.lm_tokenizer_id, vocab_size=tokenizer.vocab_size),
        library_versions=library_versions(),
        host=HostInfo(
            python=platform.python_version(),
            machine=platform.machine(),
            cpus=os.cpu_count() or 1,
        ),
        started_at=datetime.now(UTC),
        attempt=context.attempt,
    )
    return _Prepared(spec, tokenizer, model, train_ids, eval_ids, manifest)


def _train_and_publish(
    context: JobContext,
    run: _Prepared,
    manifest: RunManifest,
    *,
    started: float,
    resume: ResumePoint | None,
    should_prune: Callable[[EvalInfo], bool] | None,
    disk_probe: DiskProbe | None,
) -> Outcome:
    spec, model, tokenizer = run.spec, run.model, run.tokenizer
    layout, run_id = context.layout, context.run_id
    _log.info("training started", extra={"event": "training.started"})
    announce_config(
        context, spec, manifest, vocab_size=tokenizer.vocab_size, tokenizer_id=spec.lm_tokenizer_id
    )
    task = LanguageModelTask(run.train_ids, run.eval_ids)
    result = train_with_callbacks(
        context, model, task, spec, resume, should_prune=should_prune, disk_probe=disk_probe
    )

    # samples, metrics, weights, manifest
    samples = _samples(model, tokenizer, spec)
    _write_jsonl(layout.eval_samples(run_id), samples)
    done = finish_run(context, manifest, result, model, started)
    metrics, cancelled, artifact_dir = done.metrics, done.cancelled, done.artifact_dir
    pruned = result.reason == "pruned"
    ppl = metrics.final_perplexity
    message = f"{result.reason} at step {result.final_step}"
    if not (cancelled or pruned):
        message = f"trained {result.final_step} steps"
    if ppl is not None:
        message += f", eval perplexity {ppl:.2f}"
    return Outcome(
        result={
            "steps": result.final_step,
            "final_perplexity": ppl,
            "best_eval_loss": metrics.best_eval_loss,
            "stop_reason": result.reason,
        },
        message=message,
        artifact_dir=artifact_dir,
        cancelled_at_step=result.final_step if cancelled else None,
        pruned=pruned,
    )


@dataclass(frozen=True)
class FinishedRun:
    metrics: MetricsSummary  # the run's metrics summary (every attempt's evals)
    cancelled: bool
    artifact_dir: str  # the run folder, relative to the data root


def finish_run(
    context: JobContext,
    manifest: RunManifest,
    result: TrainResult,
    model: torch.nn.Module,
    started: float,
    *,
    update: dict[str, object] | None = None,
    final_metrics: dict[str, float] | None = None,
) -> FinishedRun:
    """How every model run ends: `eval/metrics.json`, the final weights (hashed in the
    manifest), the final manifest (plus the family's `update`) and the completed event
    (with the family's `final_metrics`; a perplexity only for a language model)."""
    layout, run_id = context.layout, context.run_id
    folder = layout.run_dir(run_id)
    metrics = metrics_summary(result, read_history(folder))
    write_atomic(layout.eval_metrics(run_id), metrics.model_dump_json(indent=2).encode())
    layout.model_dir(run_id).mkdir(exist_ok=True)
    weights = write_model(layout.model_dir(run_id) / MODEL_FILE, model)
    duration = time.monotonic() - started
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
        fallback_checkpoint_bytes=3 * param_bytes(model),  # weights + two AdamW moments
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


def _load_tokenizer(layout: DataLayout, tokenizer_id: str) -> Tokenizer:
    directory = layout.tokenizer_dir(tokenizer_id)
    if not layout.tokenizer_manifest(tokenizer_id).is_file():
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"tokenizer {tokenizer_id!r} not found; train one first (train_tokenizer)",
        )
    return load_tokenizer(directory)


def _encode(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)


def _samples(model: torch.nn.Module, tokenizer: Tokenizer, spec: TrainRunSpec) -> list[JsonObject]:
    model.eval()
    samples: list[JsonObject] = []
    for index, prompt in enumerate(spec.sample_prompts):
        request = GenerateRequest(
            prompt=prompt,
            max_new_tokens=spec.sample_max_new_tokens,
            temperature=0.8,
            top_k=50,
            seed=sample_seed(spec.train.seed, index),
        )
        output = generate(model, tokenizer, request)
        samples.append({"prompt": prompt, "output": output.outputs[0], "seed": output.seed})
    return samples


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


def _write_jsonl(path: Path, rows: list[JsonObject]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
