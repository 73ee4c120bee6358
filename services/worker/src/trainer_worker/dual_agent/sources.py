"""Where a run's posts come from: a file under the data root, a hub dataset (local cache
first, bounded retries, a clear error offline), or the built-in generator."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from platform_core.errors import AppError, ErrorCode
from platform_core.paths import resolve_inside
from platform_core.specs import DualAgentOptions
from trainer_worker.dual_agent.data import Splits, read_posts, split_posts
from trainer_worker.dual_agent.generator import generate_splits
from trainer_worker.models.gpt2 import fetch_pretrained


@dataclass(frozen=True)
class LoadedData:
    splits: Splits
    source: str  # what the manifest records: the relative path, hf:<id> or generated:<n>
    sha256: str  # of the raw file bytes, or of the generator's settings


def load_splits(options: DualAgentOptions, data_root: Path) -> LoadedData:
    if options.path is not None:
        path = resolve_inside(data_root, options.path)
        if not path.is_file():
            raise AppError(ErrorCode.DATA_NOT_FOUND, f"posts file {options.path!r} not found")
        return _from_file(path, options, options.path)
    if options.hf_dataset is not None:
        folder = fetch_pretrained(options.hf_dataset, None, repo_type="dataset")
        files = sorted([*folder.rglob("*.jsonl"), *folder.rglob("*.csv")])
        if not files:
            raise AppError(
                ErrorCode.DATA_INVALID, f"dataset {options.hf_dataset!r} holds no .jsonl or .csv"
            )
        return _from_file(files[0], options, f"hf:{options.hf_dataset}")
    splits = generate_splits(options.generated_posts, options.split_seed, options.val_fraction)
    settings = f"generated:{options.generated_posts}:{options.split_seed}:{options.val_fraction}"
    return LoadedData(splits, settings, hashlib.sha256(settings.encode()).hexdigest())


def _from_file(path: Path, options: DualAgentOptions, source: str) -> LoadedData:
    posts = read_posts(path)
    splits = split_posts(posts, options.val_fraction, options.test_fraction, options.split_seed)
    return LoadedData(splits, source, hashlib.sha256(path.read_bytes()).hexdigest())
