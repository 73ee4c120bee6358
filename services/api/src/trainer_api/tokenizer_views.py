"""What the API knows of a tokenizer: its folder's `manifest.json` once trained, else the
live state of the run that trains it (a tokenizer's id is its run's id)."""

from __future__ import annotations

from pathlib import Path

import redis
from pydantic import ValidationError

from platform_core.api_models import TokenizerList, TokenizerPublic
from platform_core.errors import AppError, ErrorCode
from platform_core.layout import MANIFEST_FILE, DataLayout
from platform_core.manifests import TokenizerManifest, read_tokenizer_manifest
from platform_core.paths import id_folders
from platform_core.run_index import index_key
from platform_core.run_state import RunStatus, spec_key
from platform_core.specs import TokenizerKind, TokenizerSpec
from trainer_api.live_state import live_state


def tokenizer_folder(data_root: Path, tokenizer_id: str) -> Path:
    return DataLayout(data_root).tokenizer_dir(tokenizer_id)


def read_manifest(data_root: Path, tokenizer_id: str) -> TokenizerManifest | None:
    """The tokenizer's manifest, or None while it has none (training) or an unreadable one."""
    try:
        return read_tokenizer_manifest(DataLayout(data_root).tokenizer_manifest(tokenizer_id))
    except AppError:
        return None


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
    manifest = read_manifest(data_root, tokenizer_id)
    if manifest is not None:
        return TokenizerPublic(
            tokenizer_id=tokenizer_id,
            status=RunStatus.COMPLETED,
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
    """Folders under `tokenizers/` and tokenizer runs in the run index, sorted. A folder
    whose name is not an id (left by hand) is not a tokenizer."""
    ids: set[str] = set()
    folder = DataLayout(data_root).tokenizers_dir
    ids.update(name for name in id_folders(folder) if (folder / name / MANIFEST_FILE).is_file())
    runs = client.zrange(index_key(kind="train_tokenizer"), 0, -1)
    ids.update(raw.decode() for raw in runs if isinstance(raw, bytes))
    return sorted(ids)


def list_tokenizers(client: redis.Redis, data_root: Path) -> TokenizerList:
    items: list[TokenizerPublic] = []
    for tokenizer_id in tokenizer_ids(client, data_root):
        try:
            items.append(load_tokenizer(client, data_root, tokenizer_id))
        except AppError:  # a folder whose manifest no longer parses: not a usable tokenizer
            continue
    return TokenizerList(items=items)
