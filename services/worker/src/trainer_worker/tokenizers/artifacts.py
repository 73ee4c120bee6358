"""Train a tokenizer into `<data_root>/tokenizers/<id>/` and load it back.

`TokenizerSpec` is the validated request (the API checks job specs with it); training loads
the corpus, fits the backend on the training split, measures it on the holdout and writes the
backend's files plus `manifest.json`. The folder appears atomically: everything is written
into a hidden temporary sibling that is renamed into place only when complete, so a failure
leaves no partial tokenizer behind. The manifest is the source of truth for loading.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from pydantic import JsonValue

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import MANIFEST_FILE, DataLayout
from platform_core.manifests import (
    CorpusRecord,
    TokenizerManifest,
    read_tokenizer_manifest,
    storage_error,
    write_manifest,
)
from platform_core.specs import TokenizerSpec
from trainer_worker.data.corpus import Corpus, corpus_spec, load_corpus
from trainer_worker.tokenizers.bpe import BPEConfig, BPETokenizer
from trainer_worker.tokenizers.char import CharConfig, CharTokenizer
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.tokenizers.sentencepiece_tokenizer import (
    SentencePieceConfig,
    SentencePieceTokenizer,
)
from trainer_worker.tokenizers.stats import compute_stats

logger = logging.getLogger(__name__)


TrainedTokenizer = BPETokenizer | CharTokenizer | SentencePieceTokenizer
BackendConfig = BPEConfig | CharConfig | SentencePieceConfig


def train_tokenizer_artifact(
    tokenizer_id: str, spec: TokenizerSpec, data_root: Path
) -> TokenizerManifest:
    """Train `spec` on its corpus and publish `<data_root>/tokenizers/<id>/`.

    Raises AppError: INVALID_INPUT (bad id), CONFLICT (id taken), the corpus errors of
    `load_corpus`, CONFIG_INVALID / TRAINING_FAILED from a backend, STORAGE_FULL.
    """
    final_dir = DataLayout(data_root).tokenizer_dir(tokenizer_id)
    if final_dir.exists():
        raise AppError(ErrorCode.CONFLICT, f"tokenizer {tokenizer_id!r} already exists")
    started = time.monotonic()
    corpus = load_corpus(corpus_spec(spec.corpus), data_root)
    config = _backend_config(spec)
    tokenizer = _train(corpus, config)
    stats = compute_stats(tokenizer, corpus.holdout_text, tokenizer.unk_id)
    manifest = TokenizerManifest(
        id=tokenizer_id,
        kind=spec.kind,
        spec=spec,
        config=_config_json(config),
        corpus=CorpusRecord(
            source=corpus.source,
            sha256=corpus.sha256,
            num_documents=corpus.num_documents,
            num_train_documents=len(corpus.train_documents),
            num_holdout_documents=len(corpus.holdout_documents),
        ),
        stats=stats,
        vocab_size=tokenizer.vocab_size,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        unk_id=tokenizer.unk_id,
        files=[],  # filled in once the backend has saved
        library_versions={name: version(name) for name in ("tokenizers", "sentencepiece")},
        created_at=datetime.now(UTC),
        duration_s=time.monotonic() - started,
    )
    manifest = _publish(final_dir, tokenizer, manifest)
    logger.info(
        "tokenizer trained",
        extra={
            "event": "tokenizer_trained",
            "tokenizer_id": tokenizer_id,
            "kind": spec.kind,
            "vocab_size": manifest.vocab_size,
            "coverage": stats.coverage,
            "oov_rate": stats.oov_rate,
            "duration_s": round(manifest.duration_s, 3),
        },
    )
    return manifest


def load_tokenizer(directory: Path) -> Tokenizer:
    """Load the tokenizer in `directory`, dispatching on the manifest's kind."""
    manifest = read_tokenizer_manifest(directory / MANIFEST_FILE)
    tokenizer: TrainedTokenizer
    if manifest.kind == "bpe":
        tokenizer = BPETokenizer.load(directory)
    elif manifest.kind == "char":
        tokenizer = CharTokenizer.load(directory)
    else:
        tokenizer = SentencePieceTokenizer.load(directory)
    if tokenizer.vocab_size != manifest.vocab_size:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"tokenizer in {directory} has {tokenizer.vocab_size} tokens, "
            f"its manifest says {manifest.vocab_size}",
        )
    return tokenizer


def _backend_config(spec: TokenizerSpec) -> BackendConfig:
    if spec.kind == "bpe":
        return BPEConfig(vocab_size=spec.vocab_size, min_frequency=spec.min_frequency)
    if spec.kind == "char":
        return CharConfig()
    return SentencePieceConfig(
        vocab_size=spec.vocab_size,
        model_type=spec.model_type,
        byte_fallback=spec.byte_fallback,
        num_threads=spec.num_threads,
    )


def _train(corpus: Corpus, config: BackendConfig) -> TrainedTokenizer:
    if isinstance(config, BPEConfig):
        return BPETokenizer.train(corpus.train_documents, config)
    if isinstance(config, CharConfig):
        return CharTokenizer.train(corpus.train_text, config)
    return SentencePieceTokenizer.train(corpus.train_documents, config)


def _config_json(config: BackendConfig) -> dict[str, JsonValue]:
    # JSON has no tuples; special-token tuples become lists.
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in asdict(config).items()
    }


def _publish(
    final_dir: Path, tokenizer: TrainedTokenizer, manifest: TokenizerManifest
) -> TokenizerManifest:
    """Write everything into a hidden sibling, fsync it, then rename it into place."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    # Ids never start with ".", so the temporary name cannot collide with a tokenizer.
    staging = final_dir.parent / f".{final_dir.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    try:
        tokenizer.save(staging)
        files = sorted(p.name for p in staging.iterdir())
        manifest = manifest.model_copy(update={"files": files})
        write_manifest(staging / MANIFEST_FILE, manifest)
        _fsync_tree(staging)
        try:
            os.replace(staging, final_dir)
        except OSError as exc:  # a concurrent job published the same id first
            raise AppError(
                ErrorCode.CONFLICT, f"tokenizer {final_dir.name!r} already exists"
            ) from exc
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise storage_error(exc, "writing the tokenizer") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _fsync_tree(directory: Path) -> None:
    """Flush the files and the folder entry, so the rename never publishes empty files."""
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
