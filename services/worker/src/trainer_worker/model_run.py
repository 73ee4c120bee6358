"""One model training run, from a JSON spec to `runs/<run_id>/`.

Everything the user can get wrong (spec, tokenizer, corpus, pretrained weights) is checked
before the run folder exists, so a bad request fails fast as USER_INPUT and leaves nothing
behind. Then the shared loop trains; its callbacks publish progress, eval and checkpoint
events and save checkpoints; at the end come deterministic samples, `eval/metrics.json`, the
final weights and `manifest.json`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import torch
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.events import (
    MetricsCompleted,
    MetricsCompletedPayload,
    MetricsConfig,
    MetricsConfigPayload,
)
from platform_core.json_types import JsonObject, JsonValue
from platform_core.logging import run_log
from platform_core.paths import resolve_inside
from platform_core.specs import GenerateRequest, ModelSpec, TrainRunSpec
from trainer_worker.checkpoints import write_model
from trainer_worker.data.corpus import corpus_spec, load_corpus
from trainer_worker.inference.generate import generate
from trainer_worker.job_context import JobContext
from trainer_worker.models.registry import build_model, count_parameters
from trainer_worker.resume import ResumePoint, load_resume_point
from trainer_worker.run_callbacks import RunCallbacks, read_history
from trainer_worker.tokenizers.artifacts import load_tokenizer, tokenizer_dir
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.training.callbacks import (
    TrainResult,
)
from trainer_worker.training.device import resolve_device_setup
from trainer_worker.training.loop import train
from trainer_worker.training.seeding import seed_everything

_log = logging.getLogger(__name__)


def parse_spec(spec: JsonObject) -> TrainRunSpec:
    try:
        return TrainRunSpec.model_validate(spec)
    except ValidationError as exc:
        raise invalid_input(exc, what="training spec") from exc


def run_dir(data_root: Path, run_id: str) -> Path:
    return data_root / "runs" / run_id


@dataclass(frozen=True)
class _Prepared:
    """Everything a run needs, built before anything is written."""

    spec: TrainRunSpec
    tokenizer: Tokenizer
    model: torch.nn.Module
    train_ids: torch.Tensor  # (N,) token ids
    eval_ids: torch.Tensor | None  # (M,) holdout ids; None without a holdout
    manifest: JsonObject  # the run's manifest.json, completed as the run goes


def train_model_body(spec_json: JsonObject, context: JobContext) -> JsonObject:
    """The body of a `train_model` job; it announces the job's start itself (`run_job`'s
    `body_announces_start`), with the step it resumes from."""
    started = time.monotonic()
    folder = run_dir(context.data_root, context.run_id)
    if not folder.exists():  # a first attempt: nothing to resume, announce before preparing
        context.announce_start()
    run = _prepare(parse_spec(spec_json), context)
    watermark = _watermark(context)  # read before the resume notice moves the live step
    resume = _resume_or_start_clean(folder, run)
    context.announce_start(resumed_from_step=resume.state.step if resume else None)
    if resume is not None:
        context.progress(
            step=resume.state.step,
            total_steps=run.spec.train.max_steps,
            epoch=0,
            eta_s=None,
            message=_resume_message(resume),
        )
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    run.manifest["resumed_from_step"] = resume.state.step if resume else None
    context.manifest_path = folder / "manifest.json"
    _write_json(context.manifest_path, run.manifest)
    with run_log(folder / "logs.jsonl", context.run_id, service="model-trainer-worker"):
        if resume is not None:
            _log.warning(_resume_message(resume), extra={"event": "run.resumed"})
        return _train_and_publish(
            context,
            run,
            folder,
            started=started,
            resume=resume,
            watermark=watermark if resume else -1,
        )


def _resume_message(resume: ResumePoint) -> str:
    skipped = f" (skipped corrupt {', '.join(resume.skipped)})" if resume.skipped else ""
    return f"resumed from step {resume.state.step}{skipped}"


def _resume_or_start_clean(folder: Path, run: _Prepared) -> ResumePoint | None:
    """A run folder left by an earlier attempt resumes from its newest valid checkpoint; one
    without any starts over."""
    if not folder.exists():
        return None
    resume = load_resume_point(folder / "checkpoints", run.model)
    if resume is None:
        shutil.rmtree(folder)
    return resume


def _prepare(spec: TrainRunSpec, context: JobContext) -> _Prepared:
    """Everything a user can get wrong (tokenizer, corpus, model), checked and built."""
    root = context.data_root
    tokenizer = _load_tokenizer(root, spec.tokenizer_id)
    corpus = load_corpus(corpus_spec(spec.corpus), root)
    train_ids = _encode(tokenizer, corpus.train_text)
    eval_ids = _encode(tokenizer, corpus.holdout_text) if corpus.holdout_documents else None
    model_spec = _resolve_pretrained(spec.model, root)
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators too
    model = build_model(model_spec, tokenizer.vocab_size, tokenizer.eos_id)
    setup = resolve_device_setup(spec.train.device, spec.train.precision)
    manifest: JsonObject = {
        "run_id": context.run_id,
        "kind": "train_model",
        "status": "running",
        "spec": json.loads(spec.model_dump_json()),
        "seed": spec.train.seed,
        "device": str(setup.device),
        "precision": setup.precision,
        "num_params": count_parameters(model),
        "corpus": {"source": corpus.source, "sha256": corpus.sha256},
        "tokenizer": {"id": spec.tokenizer_id, "vocab_size": tokenizer.vocab_size},
        "library_versions": _versions(),
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count() or 1,
        },
        "started_at": datetime.now(UTC).isoformat(),
        "attempt": context.attempt,
    }
    return _Prepared(spec, tokenizer, model, train_ids, eval_ids, manifest)


def _train_and_publish(
    context: JobContext,
    run: _Prepared,
    folder: Path,
    *,
    started: float,
    resume: ResumePoint | None,
    watermark: int,
) -> JsonObject:
    spec, model, tokenizer, manifest = run.spec, run.model, run.tokenizer, run.manifest
    _log.info("training started", extra={"event": "training.started"})
    context.publish(
        MetricsConfig(
            run_id=context.run_id,
            user_id=context.user_id,
            payload=MetricsConfigPayload(
                model_family=spec.model.family,
                preset=spec.model.preset
                if spec.model.pretrained is None
                else spec.model.pretrained,
                num_params=_int(manifest["num_params"]),
                vocab_size=tokenizer.vocab_size,
                batch_size=spec.train.batch_size,
                max_steps=spec.train.max_steps,
                learning_rate=spec.train.learning_rate,
                device=str(manifest["device"]),
                precision=str(manifest["precision"]),
                seed=spec.train.seed,
                tokenizer_id=spec.tokenizer_id,
            ),
        )
    )

    callbacks = RunCallbacks(
        context,
        folder,
        spec.retention,
        watermark=watermark,
        fallback_checkpoint_bytes=3 * _param_bytes(model),  # weights + two AdamW moments
    )
    try:
        result = train(
            model,
            run.train_ids,
            run.eval_ids,
            spec.train,
            callbacks.callbacks(),
            resume_from=resume.state if resume else None,
            run_id=context.run_id,
        )
    finally:
        callbacks.close()  # reports published, last checkpoint on disk, before the run ends

    # samples, metrics, weights, manifest
    samples = _samples(model, tokenizer, spec)
    _write_jsonl(folder / "eval" / "samples.jsonl", samples)
    history = read_history(folder)
    metrics = _metrics(result, history)
    _write_json(folder / "eval" / "metrics.json", metrics)
    (folder / "model").mkdir(exist_ok=True)
    write_model(folder / "model" / "model.safetensors", model)
    duration = time.monotonic() - started
    manifest.update(
        {
            "status": "cancelled" if result.reason == "cancelled" else "completed",
            "stop_reason": result.reason,
            "finished_at": datetime.now(UTC).isoformat(),
            "durations_s": {"total": round(duration, 3), "training": round(result.duration_s, 3)},
            "metrics": metrics,
            "artifacts": _artifact_list(folder),
        }
    )
    _write_json(folder / "manifest.json", manifest)
    context.publish(
        MetricsCompleted(
            run_id=context.run_id,
            user_id=context.user_id,
            payload=MetricsCompletedPayload(
                steps=result.final_step,
                duration_s=duration,
                final_loss=result.final_loss,
                final_eval_loss=_float(metrics["final_eval_loss"]),
                final_perplexity=_float(metrics["final_perplexity"]),
                tokens_per_s=result.tokens_per_s,
                artifact_dir=f"runs/{context.run_id}",
            ),
        )
    )
    context.artifact_dir = f"runs/{context.run_id}"
    if result.reason == "cancelled":
        context.cancelled_at_step = result.final_step
    ppl = metrics.get("final_perplexity")
    if result.reason == "cancelled":
        context.message = f"cancelled at step {result.final_step}"
    else:
        context.message = f"trained {result.final_step} steps"
    if isinstance(ppl, float):
        context.message += f", eval perplexity {ppl:.2f}"
    return {"steps": result.final_step, "final_perplexity": ppl, "stop_reason": result.reason}


def _watermark(context: JobContext) -> int:
    """The last step this run published before it was interrupted."""
    step = context.store.progress(context.run_id).get("step")
    return int(float(step)) if step is not None else -1


def _param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _float(value: JsonValue) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _int(value: JsonValue) -> int:
    return value if isinstance(value, int) else 0


def _load_tokenizer(root: Path, tokenizer_id: str) -> Tokenizer:
    directory = tokenizer_dir(root, tokenizer_id)
    if not (directory / "manifest.json").is_file():
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"tokenizer {tokenizer_id!r} not found; train one first (train_tokenizer)",
        )
    return load_tokenizer(directory)


def _encode(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)


def _resolve_pretrained(spec: ModelSpec, root: Path) -> ModelSpec:
    """A pretrained value naming a folder inside the data root becomes its absolute path;
    anything else is a hub id (looked up in the local cache first)."""
    if (
        spec.pretrained is None
        or spec.pretrained.count("/") > 1
        or not (root / spec.pretrained).exists()
    ):
        return spec
    return spec.model_copy(update={"pretrained": str(resolve_inside(root, spec.pretrained))})


def _samples(model: torch.nn.Module, tokenizer: Tokenizer, spec: TrainRunSpec) -> list[JsonObject]:
    model.eval()
    samples: list[JsonObject] = []
    for index, prompt in enumerate(spec.sample_prompts):
        request = GenerateRequest(
            prompt=prompt,
            max_new_tokens=spec.sample_max_new_tokens,
            temperature=0.8,
            top_k=50,
            seed=spec.train.seed + index,  # deterministic: same run, same samples
        )
        output = generate(model, tokenizer, request)
        samples.append({"prompt": prompt, "output": output.outputs[0], "seed": output.seed})
    return samples


def _metrics(result: TrainResult, history: list[JsonObject]) -> JsonObject:
    """The run's metrics summary; evals come from the history file, so a resumed run's
    summary covers its whole life."""
    losses = [float(str(row["eval_loss"])) for row in history]
    return {
        "steps": result.final_step,
        "final_loss": result.final_loss,
        "best_eval_loss": min(losses) if losses else None,
        "first_perplexity": history[0]["perplexity"] if history else None,
        "final_perplexity": history[-1]["perplexity"] if history else None,
        "final_eval_loss": history[-1]["eval_loss"] if history else None,
        "tokens_per_s": result.tokens_per_s,
        "eval_history": [*history],
    }


def _artifact_list(folder: Path) -> list[JsonValue]:
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return [*names]


def _versions() -> JsonObject:
    names = ("torch", "transformers", "tokenizers", "safetensors", "numpy")
    return {name: version(name) for name in names}


def _write_json(path: Path, value: JsonObject) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[JsonObject]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
