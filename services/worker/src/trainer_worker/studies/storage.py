"""Optuna's storage for a study, and the study opened on it with the spec's sampler and pruner.

Default: `JournalStorage` on a journal file in the study's folder (`studies/<id>/optuna.
journal`): appends under a file lock, so trials in any number of processes sharing the data
root write it safely (measured against SQLite in docs/benchmarks.md). With
`APP__STUDIES__STORAGE_URL` (e.g. `postgresql://...`): `RDBStorage`, for workers on several
machines. Optuna's dashboard opens either as it is (docs/studies.md).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from platform_core.settings import load_settings
from platform_core.study_specs import SamplerSpec, StudySpec

JOURNAL_FILE = "optuna.journal"
SAMPLERS_KEPT = 8  # studies whose sampler a process keeps
_SAMPLERS: dict[tuple[str, BaseStorage, SamplerSpec], optuna.samplers.TPESampler] = {}
SCHEMA_ATTEMPTS = 5

optuna.logging.set_verbosity(optuna.logging.WARNING)  # our JSON log says what matters


@functools.cache
def make_storage(study_dir: Path, storage_url: str | None = None) -> BaseStorage:
    """The configured storage: RDB at `storage_url`, else the study folder's journal. One per
    process and place: a journal storage reads the log once and then only what was appended,
    an RDB storage keeps its connection pool (both stay safe across processes)."""
    if storage_url:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver installed is
        # psycopg2 (psycopg2-binary: no libpq needed on the machine)
        if storage_url.startswith(("postgresql://", "postgres://")):
            storage_url = "postgresql+psycopg2://" + storage_url.split("://", 1)[1]
        return _rdb_storage(storage_url)
    study_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(study_dir / JOURNAL_FILE)))


def _rdb_storage(url: str) -> RDBStorage:
    """RDBStorage creates its tables on first use; two workers doing so at once on a fresh
    database collide (a duplicate type or table): the loser finds them made on a retry."""
    attempt = 1
    while True:
        try:
            # pool_pre_ping: a worker idle between trials finds its connection dropped by the
            # server, and gets a fresh one instead of an error
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == SCHEMA_ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)
            attempt += 1


def configured_storage_url() -> str | None:
    secret = load_settings().studies.storage_url
    return None if secret is None else secret.get_secret_value()


def _sampler(
    study_id: str, storage: BaseStorage, config: SamplerSpec, sampler_offset: int
) -> optuna.samplers.TPESampler:
    """The TPE sampler of a study in this process, made by its first trial here and kept for
    the next ones (a worker that runs its jobs in-process). It carries what it learned of the
    study: the search space it already inferred from the trials it saw, so each trial reads
    only the trials that ended since, not the whole history again. `sampler_offset` (the
    first trial's ticket) shifts the seed: parallel workers' samplers start from different
    random points, where equal seeds would ask the same startup trials."""
    key = (study_id, storage, config)
    sampler = _SAMPLERS.pop(key, None)
    if sampler is None:
        sampler = optuna.samplers.TPESampler(
            seed=(config.seed + sampler_offset) % 2**32, n_startup_trials=config.n_startup_trials
        )
    _SAMPLERS[key] = sampler  # the newest last: the oldest goes first
    while len(_SAMPLERS) > SAMPLERS_KEPT:
        del _SAMPLERS[next(iter(_SAMPLERS))]
    return sampler


def open_study(
    study_id: str, spec: StudySpec, storage: BaseStorage, *, sampler_offset: int = 0
) -> optuna.Study:
    """The study `study_id` on `storage`, created by whoever comes first, with the sampler
    this process keeps for it (`_sampler`)."""
    sampler = _sampler(study_id, storage, spec.sampler, sampler_offset)
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if spec.pruner.type == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner.n_startup_trials,
            n_warmup_steps=spec.pruner.n_warmup_steps,
            interval_steps=spec.pruner.interval_steps,
        )
    try:  # loaded first: a journal appends (and fsyncs) a line for every create attempt
        return optuna.load_study(
            study_name=study_id, storage=storage, sampler=sampler, pruner=pruner
        )
    except KeyError:  # the first trial of the study
        return optuna.create_study(
            storage=storage,
            study_name=study_id,
            sampler=sampler,
            pruner=pruner,
            direction=spec.direction,
            load_if_exists=True,  # another trial may create it at the same moment
        )
