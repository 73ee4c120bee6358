"""One language-model training run (GPT-2, Char-LSTM), from a JSON spec to `runs/<run_id>/`.

Everything the user can get wrong (spec, tokenizer, corpus, pretrained weights) is checked
before the run folder exists, so a bad request fails fast as USER_INPUT and leaves nothing
behind. A later attempt resumes from the newest valid checkpoint, or trains from step 0 in
the same folder (its logs and eval history are kept; nothing is published twice). The start
and the end are every family's (`family_run`): the shared loop trains, its callbacks publish
progress, eval and checkpoint events and save checkpoints; this family adds deterministic
samples before `eval/metrics.json`, the final weights (hashed in the manifest) and
`manifest.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, invalid_input
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.manifests import CorpusRecord, TokenizerRef
from platform_core.specs import GenerateRequest, TrainRunSpec, sample_seed
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.data.corpus import corpus_spec, load_corpus
from trainer_worker.family_run import (
    RunStart,
    Trained,
    finish_run,
    run_family,
    starting_manifest,
)
from trainer_worker.inference.generate import generate
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.models.registry import build_model, resolve_pretrained
from trainer_worker.tokenizers.artifacts import load_tokenizer
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.training.callbacks import EvalInfo
from trainer_worker.training.lm_task import LanguageModelTask, LMBatch
from trainer_worker.training.seeding import seed_everything


def parse_spec(spec: JsonObject) -> TrainRunSpec:
    try:
        return TrainRunSpec.model_validate(spec)
    except ValidationError as exc:
        raise invalid_input(exc, what="training spec") from exc


@dataclass(frozen=True)
class LanguageModelRun:
    """A prepared language-model run (a `family_run.FamilyRun`): its start, and the
    tokenizer its samples are decoded with."""

    start: RunStart[LMBatch]
    tokenizer: Tokenizer

    def finish(self, context: JobContext, trained: Trained) -> Outcome:
        """Deterministic samples, then the shared end; the outcome names the perplexity."""
        spec, model, result = self.start.spec, self.start.model, trained.result
        samples = _samples(model, self.tokenizer, spec)
        _write_jsonl(context.layout.eval_samples(context.run_id), samples)
        done = finish_run(context, trained, model)
        metrics, cancelled = done.metrics, done.cancelled
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
            artifact_dir=done.artifact_dir,
            cancelled_at_step=result.final_step if cancelled else None,
            pruned=pruned,
        )


def train_model_body(
    spec_json: JsonObject,
    context: JobContext,
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> Outcome:
    """A language-model run from its JSON spec: prepare, resume or start, train, publish (a
    `train_model` job reaches the same through `families.train_run_body`). A study trial
    passes its pruner, asked at each eval (the run ends "pruned"), and its view of the disk
    (its share of the study's checkpoint budget)."""
    return run_family(
        parse_spec(spec_json),
        context,
        prepare_language_model,
        should_prune=should_prune,
        disk_probe=disk_probe,
    )


def prepare_language_model(spec: TrainRunSpec, context: JobContext) -> LanguageModelRun:
    """Everything a user can get wrong (tokenizer, corpus, model), checked and built."""
    layout = context.layout
    tokenizer = _load_tokenizer(layout, spec.lm_tokenizer_id)
    corpus = load_corpus(corpus_spec(spec.corpus), layout.root)
    train_ids = _encode(tokenizer, corpus.train_text)
    eval_ids = _encode(tokenizer, corpus.holdout_text) if corpus.holdout_documents else None
    model_spec = resolve_pretrained(spec.model, layout.root)  # data: folders inside the root
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators too
    model = build_model(model_spec, tokenizer.vocab_size, tokenizer.eos_id)
    manifest = starting_manifest(
        context,
        spec,
        model,
        CorpusRecord(source=corpus.source, sha256=corpus.sha256),
        TokenizerRef(id=spec.lm_tokenizer_id, vocab_size=tokenizer.vocab_size),
    )
    task = LanguageModelTask(train_ids, eval_ids)
    vocab, tokenizer_id = tokenizer.vocab_size, spec.lm_tokenizer_id
    start = RunStart(spec, model, task, manifest, vocab, tokenizer_id=tokenizer_id)
    return LanguageModelRun(start, tokenizer)


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


def _write_jsonl(path: Path, rows: list[JsonObject]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
