"""Starting training jobs: check what the worker would trip over later (ids, paths, the
tokenizer a model run needs), claim the run id, queue the job.

With an `Idempotency-Key`, a retried submission gets the first one's answer. Everything a
user can get wrong is refused here with a typed error before anything is queued: an id
already taken (409), a corpus or pretrained path outside the data root (422) or missing
(404), a tokenizer that is neither trained nor being trained (404).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Literal

import redis
from pydantic import BaseModel, ValidationError

from platform_core.api_models import DatasetCreate, JobAccepted, RunCreate, TokenizerCreate
from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.json_types import JsonObject
from platform_core.layout import ID_PATTERN, DataLayout
from platform_core.manifests import read_tokenizer_manifest
from platform_core.paths import exists, read_regular_text, resolve_inside
from platform_core.queue import enqueue_job
from platform_core.run_state import INDEX_KEY, RunStateStore, RunStatus
from platform_core.settings import TrainingSettings
from platform_core.specs import (
    CorpusOptions,
    FileSource,
    PresetShape,
    TokenizerSpec,
    TrainRunSpec,
    pretrained_shape,
)
from trainer_api.idempotency import once
from trainer_api.live_state import live_state
from trainer_api.run_views import run_folder
from trainer_api.tokenizer_views import tokenizer_folder

TrainingKind = Literal["train_tokenizer", "train_model", "prepare_dataset"]
Submission = TokenizerCreate | RunCreate | DatasetCreate


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def submit(
    client: redis.Redis,
    data_root: Path,
    body: Submission,
    idempotency_key: str | None,
    bus: EventBus,
    *,
    max_activation_gib: float = TrainingSettings().max_activation_gib,
) -> JobAccepted:
    """Queue a tokenizer training or a model run, once per idempotency key; its queued event
    goes to `bus` (the configured stream). A model run whose activation estimate exceeds
    `max_activation_gib` is refused."""
    scope = {RunCreate: "runs", TokenizerCreate: "tokenizers", DatasetCreate: "datasets"}[
        type(body)
    ]
    return once(
        client,
        scope,
        idempotency_key=idempotency_key,
        body=body,
        act=lambda: _checked_submit(client, data_root, body, bus, max_activation_gib),
        answer_model=JobAccepted,
    )


def _checked_submit(
    client: redis.Redis,
    data_root: Path,
    body: Submission,
    bus: EventBus,
    max_activation_gib: float,
) -> JobAccepted:
    if isinstance(body, DatasetCreate):
        source = body.spec.source
        if isinstance(source, FileSource) and not exists(
            resolve_inside(data_root, source.path), regular_file=True
        ):
            raise AppError(
                ErrorCode.DATA_NOT_FOUND,
                f"spec.source.path {source.path!r} is not a file in the data root",
            )
        dataset_id = body.dataset_id or new_id("ds")
        return _submit(bus, data_root, "prepare_dataset", dataset_id, body.spec, body.user_id)
    check_corpus(data_root, body.spec.corpus)
    if isinstance(body, TokenizerCreate):
        tokenizer_id = body.tokenizer_id or new_id("tok")
        return _submit(bus, data_root, "train_tokenizer", tokenizer_id, body.spec, body.user_id)
    check_train_spec(client, data_root, body.spec, max_activation_gib)
    run_id = body.run_id or new_id("run")
    return _submit(bus, data_root, "train_model", run_id, body.spec, body.user_id)


def check_train_spec(
    client: redis.Redis, data_root: Path, spec: TrainRunSpec, max_activation_gib: float
) -> None:
    """What a model run needs before it is queued (a run's spec, a study's base at its
    largest corner): its tokenizer, data, pretrained folder and memory."""
    if spec.tokenizer_id is not None:  # language models; the other families bring their own
        check_tokenizer(client, data_root, spec.tokenizer_id)
    if spec.dual_agent is not None and spec.dual_agent.path is not None:
        check_corpus(data_root, CorpusOptions(path=spec.dual_agent.path))
    if spec.classifier is not None:
        check_dataset(client, data_root, spec.classifier.dataset_id)
    shape = check_pretrained(data_root, spec)  # None for a preset, or a hub model
    # encoder families (dual_agent, classifier) emit no vocabulary-sized logits
    vocab_size = (
        0
        if spec.tokenizer_id is None
        else tokenizer_vocab_size(client, data_root, spec.tokenizer_id)
    )
    check_memory(spec, max_activation_gib, vocab_size=vocab_size, shape=shape)


def check_corpus(data_root: Path, corpus: CorpusOptions) -> None:
    if corpus.path is None:  # the demo corpus
        return
    if not exists(resolve_inside(data_root, corpus.path)):
        raise AppError(
            ErrorCode.DATA_NOT_FOUND, f"corpus {corpus.path!r} does not exist in the data root"
        )


def check_pretrained(data_root: Path, spec: TrainRunSpec) -> PresetShape | None:
    """A `data:` folder must lie inside the data root (links out of it refused), exist and
    hold a GPT-2 `config.json` whose context fits `train.block_size`: its shape is returned
    for the memory estimate. A hub id (the spec's grammar already checked it) is left to the
    worker's model cache, its size known only once loaded there: None."""
    folder = spec.model.pretrained_folder
    if folder is None:
        return None
    found = resolve_inside(data_root, folder)
    if not found.is_dir():
        raise AppError(
            ErrorCode.DATA_NOT_FOUND,
            f"spec.model.pretrained: folder {folder!r} does not exist in the data root",
        )
    try:
        config = json.loads(read_regular_text(found / "config.json"))
        shape = pretrained_shape(config if isinstance(config, dict) else {}, spec.model.family)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        # an OSError's text would name the server's paths: its reason alone
        reason = (e.strerror or "unreadable") if isinstance(e, OSError) else str(e)
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"spec.model.pretrained: folder {folder!r} has no readable config.json ({reason})",
        ) from e
    if shape.context is not None and spec.train.block_size > shape.context:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"spec.train.block_size ({spec.train.block_size}) exceeds the context of "
            f"spec.model.pretrained {folder!r} (n_positions {shape.context})",
        )
    return shape


def check_memory(
    spec: TrainRunSpec,
    max_activation_gib: float,
    *,
    vocab_size: int,
    shape: PresetShape | None = None,
) -> None:
    """Refuse a run whose micro-batch would not fit: batch_size x block_size x model, the
    vocabulary-sized logits included. A hub model (no `shape`, no preset) is not estimated
    here: its size is known only once the worker loads it (OUT_OF_MEMORY there)."""
    needed = spec.activation_bytes(vocab_size, shape)
    if needed is None or needed <= max_activation_gib * 2**30:
        return
    model = spec.model.pretrained or f"{spec.model.family}/{spec.model.preset}"
    logits = spec.logits_bytes(vocab_size)
    raise AppError(
        ErrorCode.INVALID_INPUT,
        f"spec.train: batch_size x block_size ({spec.train.batch_size} x "
        f"{spec.train.block_size}) on {model} with a vocabulary of {vocab_size} needs about "
        f"{needed / 2**30:.3f} GiB of activations ({logits / 2**30:.3f} GiB of them logits "
        f"and their gradient), over this API's bound of {max_activation_gib:g} GiB "
        "(training.max_activation_gib); lower batch_size and raise grad_accum_steps instead",
    )


def tokenizer_vocab_size(client: redis.Redis, data_root: Path, tokenizer_id: str) -> int:
    """The width of a fresh model's logits: the trained tokenizer's vocabulary; for one still
    training, the vocab_size its spec asks for (a char tokenizer's is a stand-in: its
    vocabulary is the corpus' characters, known once trained)."""
    manifest = DataLayout(data_root).tokenizer_manifest(tokenizer_id)
    if manifest.is_file():
        return read_tokenizer_manifest(manifest).vocab_size
    queued = RunStateStore(client).spec_json(tokenizer_id)
    try:
        spec = TokenizerSpec.model_validate_json(queued or '{"kind": "char"}')
    except ValidationError:  # a spec of an older version: the default stands in
        spec = TokenizerSpec(kind="char")
    return spec.vocab_size


def check_dataset(client: redis.Redis, data_root: Path, dataset_id: str) -> None:
    """Prepared, or queued / preparing (a classifier run queued behind its dataset's run)."""
    if DataLayout(data_root).dataset_manifest(dataset_id).is_file():
        return
    live = live_state(client, dataset_id)
    if live.kind == "prepare_dataset" and live.status in ("queued", "running"):
        return
    raise AppError(
        ErrorCode.DATA_NOT_FOUND,
        f"dataset {dataset_id!r} not found; prepare it first (POST /datasets)",
    )


def check_tokenizer(client: redis.Redis, data_root: Path, tokenizer_id: str) -> None:
    """Trained, or queued / training (a model run queued behind its tokenizer's run)."""
    if not ID_PATTERN.fullmatch(tokenizer_id):
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"spec.tokenizer_id {tokenizer_id!r} must be 1-64 letters, digits, '_' or '-'",
        )
    if DataLayout(data_root).tokenizer_manifest(tokenizer_id).is_file():
        return
    live = live_state(client, tokenizer_id)
    if live.kind == "train_tokenizer" and live.status in ("queued", "running"):
        return
    raise AppError(
        ErrorCode.DATA_NOT_FOUND,
        f"tokenizer {tokenizer_id!r} not found; train it first (POST /tokenizers/train)",
    )


def _submit(  # noqa: PLR0917 - one private call site per kind, each reads as a sentence
    bus: EventBus,
    data_root: Path,
    kind: TrainingKind,
    run_id: str,
    spec: BaseModel,
    user_id: int | None,
) -> JobAccepted:
    client = bus.client
    # tokenizer, model and dataset runs share one id space (RQ job ids, runs:* keys)
    layout = DataLayout(data_root)
    taken = (
        run_folder(data_root, run_id).exists()
        or tokenizer_folder(data_root, run_id).exists()
        or layout.dataset_dir(run_id).exists()
    )
    # ZADD NX claims the id atomically: of two requests racing for it, one gets 0
    if taken or not client.zadd(INDEX_KEY, {run_id: time.time()}, nx=True):
        raise AppError(ErrorCode.CONFLICT, f"run {run_id} already exists; choose another id")
    spec_json: JsonObject = json.loads(spec.model_dump_json())
    try:
        enqueue_job(
            client,
            kind,
            run_id,
            spec_json,
            user_id=user_id,
            description=f"{kind} {run_id}",
            bus=bus,
        )
    except BaseException:
        client.zrem(INDEX_KEY, run_id)
        raise
    return JobAccepted(run_id=run_id, kind=kind, status=RunStatus.QUEUED)
