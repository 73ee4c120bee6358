"""Which collector reads a dataset spec's source, and how its origin is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from platform_core.layout import DataLayout
from platform_core.paths import resolve_inside
from platform_core.settings import ClassifySettings
from platform_core.specs import ArxivSource, BuiltinSource, DatasetSource, FileSource, HubSource
from trainer_worker.classify.arxiv import ArxivCollector, RateLimiter
from trainer_worker.classify.builtin_botocore import botocore_rows, source_description
from trainer_worker.classify.hub_dataset import hub_rows
from trainer_worker.classify.local_files import file_rows
from trainer_worker.classify.records import LabelledText


@dataclass(frozen=True, slots=True)
class Collected:
    rows: Iterator[LabelledText]
    description: str  # the manifest's `source`


def collect(
    source: DatasetSource, layout: DataLayout, work_dir: Path, settings: ClassifySettings
) -> Collected:
    """The source's rows (read lazily) and where they come from. `work_dir` keeps what a
    later attempt resumes from (arXiv pages)."""
    if isinstance(source, BuiltinSource):
        return Collected(botocore_rows(source.max_per_class), source_description())
    if isinstance(source, FileSource):
        path = resolve_inside(layout.root, source.path)
        return Collected(file_rows(path, source.format), f"file:{source.path}")
    if isinstance(source, ArxivSource):
        collector = ArxivCollector(
            base_url=settings.arxiv_url,
            work_dir=work_dir / "arxiv",
            limiter=RateLimiter(settings.arxiv_min_interval_s),
        )
        return Collected(collector.rows(source), f"arxiv:{','.join(source.categories)}")
    if isinstance(source, HubSource):
        return Collected(hub_rows(source), f"hub:{source.dataset_id}")
    assert_never(source)
