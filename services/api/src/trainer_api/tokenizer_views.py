"""What the API knows of a tokenizer: its folder's `manifest.json` once trained, else the
live state of the run that trains it (a tokenizer's id is its run's id)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import redis
from pydantic import BaseModel, ConfigDict, ValidationError

from platform_core.api_models import TokenizerList, TokenizerPublic, TokenizerStats
from platform_core.errors import AppError, ErrorCode
from platform_core.paths import id_folders, resolve_inside
from platform_core.run_state import INDEX_KEY, meta_key, spec_key
from platform_core.specs import TokenizerKind, TokenizerSpec
from trainer_api.live_state import live_state
from trainer_api.run_views import read_model


class _Corpus(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    source: str
    sha256: str


class TokenizerManifest(BaseModel):
    """The part of `tokenizers/<id>/manifest.json` the API shows."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: TokenizerKind
    vocab_size: int
    stats: TokenizerStats
    corpus: _Corpus
    created_at: datetime
    duration_s: float


def tokenizer_folder(data_root: Path, tokenizer_id: str) -> Path:
    return resolve_inside(data_root, f"tokenizers/{tokenizer_id}")


def read_tokenizer_manifest(data_root: Path, tokenizer_id: str) -> TokenizerManifest | None:
    path = tokenizer_folder(data_root, tokenizer_id) / "manifest.json"
    return read_model(path, TokenizerManifest)


def _spec_kind(client: redis.Redis, tokenizer_id: str) -> TokenizerKind | None:
    raw = client.get(spec_key(tokenizer_id))
    if raw is None:
        return None
    try:
        return TokenizerSpec.model_validate_json(raw).kind
    except ValidationError:
        return None


def load_tokenizer(client: redis.Redis, data_root: Path, tokenizer_id: str) -> TokenizerPublic:
    """NOT_FOUND unless trained or being trained."""
    live = live_state(client, tokenizer_id)
    manifest = read_tokenizer_manifest(data_root, tokenizer_id)
    if manifest is not None:
        return TokenizerPublic(
            tokenizer_id=tokenizer_id,
            status="completed",
            message=live.message,
            kind=manifest.kind,
            vocab_size=manifest.vocab_size,
            stats=manifest.stats,
            corpus_source=manifest.corpus.source,
            corpus_sha256=manifest.corpus.sha256,
            created_at=manifest.created_at,
            duration_s=manifest.duration_s,
        )
    if live.status is None or live.kind != "train_tokenizer":
        raise AppError(ErrorCode.NOT_FOUND, f"tokenizer {tokenizer_id} does not exist")
    return TokenizerPublic(
        tokenizer_id=tokenizer_id,
        status=live.status,
        message=live.message,
        kind=_spec_kind(client, tokenizer_id),
    )


def tokenizer_ids(client: redis.Redis, data_root: Path) -> list[str]:
    """Folders under `tokenizers/` and tokenizer runs in the run index, sorted."""
    ids: set[str] = set()
    folder = data_root / "tokenizers"
    ids.update(name for name in id_folders(folder) if (folder / name / "manifest.json").is_file())
    runs = [raw.decode() for raw in client.zrange(INDEX_KEY, 0, -1) if isinstance(raw, bytes)]
    pipe = client.pipeline(transaction=False)
    for run_id in runs:
        pipe.hget(meta_key(run_id), "kind")
    kinds = pipe.execute()
    ids.update(
        run_id for run_id, kind in zip(runs, kinds, strict=True) if kind == b"train_tokenizer"
    )
    return sorted(ids)


def list_tokenizers(client: redis.Redis, data_root: Path) -> TokenizerList:
    items: list[TokenizerPublic] = []
    for tokenizer_id in tokenizer_ids(client, data_root):
        try:
            items.append(load_tokenizer(client, data_root, tokenizer_id))
        except AppError:  # a folder whose manifest no longer parses: not a usable tokenizer
            continue
    return TokenizerList(items=items)
