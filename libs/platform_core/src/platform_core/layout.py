"""Where everything lives under the data root, declared once for the worker, the API and the
CLI.

```
<root>/tokenizers/<id>/manifest.json        a trained tokenizer (the folder appears whole)
<root>/runs/<id>/manifest.json              a run's manifest (platform_core.manifests)
<root>/runs/<id>/checkpoints/step-NNNNNNNN/ its checkpoints
<root>/runs/<id>/eval/                      metrics.json (summary), history.jsonl (every eval),
                                            samples.jsonl, evaluations.jsonl (later evaluations)
<root>/runs/<id>/model/                     its final weights
<root>/runs/<id>/logs.jsonl                 its log
<root>/runs/<id>/tracking/                  mlflow.json (its MLflow run), buffer.jsonl (metrics
                                            not yet confirmed by MLflow)
<root>/mlflow/                              the default MLflow store (mlflow.db, artifacts/)
<root>/studies/<id>/                        a study's report and storage
<root>/datasets/<id>/manifest.json          a prepared classification dataset (appears whole):
                                            train/val/test.jsonl, report.json, eval/baseline.json
<root>/models/<name>/<version>/             a registered model version: transformers files and
                                            metadata.json; models/<name>/history.jsonl its log
<root>/spool/<id>.events.jsonl              a run's events held while Redis was down
```

Ids name folders, so every id is checked against `ID_PATTERN` (the rule of RQ job ids, which
run ids are) before it becomes a path, and every path is resolved inside the root without
following a link out of it (`resolve_inside`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from platform_core.errors import AppError, ErrorCode
from platform_core.paths import resolve_inside
from platform_core.specs import ID_REGEX, SEMVER_REGEX

# ID_REGEX (platform_core.specs): what RQ accepts as a job id, and safe as a folder name on
# every file system
ID_PATTERN: Final = re.compile(ID_REGEX)
SEMVER_PATTERN: Final = re.compile(SEMVER_REGEX)

RUNS: Final = "runs"
TOKENIZERS: Final = "tokenizers"
STUDIES: Final = "studies"
SPOOL: Final = "spool"
DATASETS: Final = "datasets"
MODELS: Final = "models"
MANIFEST_FILE: Final = "manifest.json"
LOG_FILE: Final = "logs.jsonl"
CHECKPOINTS: Final = "checkpoints"
EVAL: Final = "eval"
MODEL: Final = "model"
TRACKING: Final = "tracking"
MLFLOW: Final = "mlflow"


def check_id(value: str, *, what: str = "run id") -> str:
    """`value` when it is a valid id; INVALID_INPUT naming the rule otherwise."""
    if not ID_PATTERN.fullmatch(value):
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"{what} {value!r} must be 1-64 letters, digits, '_' or '-', starting with a "
            "letter or digit",
        )
    return value


@dataclass(frozen=True, slots=True)
class DataLayout:
    """The folders of one data root. Methods that take an id check it and return a path
    inside the root (a link that leads out of it is PATH_OUTSIDE_DATA_ROOT)."""

    root: Path

    def _inside(self, *parts: str) -> Path:
        return resolve_inside(self.root, "/".join(parts))

    # ---- runs ----------------------------------------------------------------------------

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS

    def run_dir(self, run_id: str) -> Path:
        return self._inside(RUNS, check_id(run_id))

    def run_manifest(self, run_id: str) -> Path:
        return self.run_dir(run_id) / MANIFEST_FILE

    def run_log(self, run_id: str) -> Path:
        return self.run_dir(run_id) / LOG_FILE

    def checkpoints_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / CHECKPOINTS

    def eval_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / EVAL

    def model_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / MODEL

    def eval_history(self, run_id: str) -> Path:
        return self.eval_dir(run_id) / "history.jsonl"

    def eval_metrics(self, run_id: str) -> Path:
        return self.eval_dir(run_id) / "metrics.json"

    def eval_samples(self, run_id: str) -> Path:
        return self.eval_dir(run_id) / "samples.jsonl"

    def evaluations(self, run_id: str) -> Path:
        return self.eval_dir(run_id) / "evaluations.jsonl"

    def tracking_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / TRACKING

    def tracking_record(self, run_id: str) -> Path:
        """The run's MLflow run (manifests.TrackingRecord), written when MLflow created it."""
        return self.tracking_dir(run_id) / "mlflow.json"

    def tracking_buffer(self, run_id: str) -> Path:
        """Append-only JSONL of what MLflow has not confirmed yet (trainer_worker.tracking)."""
        return self.tracking_dir(run_id) / "buffer.jsonl"

    # ---- tokenizers ----------------------------------------------------------------------

    @property
    def tokenizers_dir(self) -> Path:
        return self.root / TOKENIZERS

    def tokenizer_dir(self, tokenizer_id: str) -> Path:
        return self._inside(TOKENIZERS, check_id(tokenizer_id, what="tokenizer id"))

    def tokenizer_manifest(self, tokenizer_id: str) -> Path:
        return self.tokenizer_dir(tokenizer_id) / MANIFEST_FILE

    # ---- studies -------------------------------------------------------------------------

    @property
    def studies_dir(self) -> Path:
        return self.root / STUDIES

    def study_dir(self, study_id: str) -> Path:
        return self._inside(STUDIES, check_id(study_id, what="study id"))

    # ---- classification datasets ---------------------------------------------------------

    @property
    def datasets_dir(self) -> Path:
        return self.root / DATASETS

    def dataset_dir(self, dataset_id: str) -> Path:
        return self._inside(DATASETS, check_id(dataset_id, what="dataset id"))

    def dataset_manifest(self, dataset_id: str) -> Path:
        return self.dataset_dir(dataset_id) / MANIFEST_FILE

    def dataset_work_dir(self, dataset_id: str) -> Path:
        """Where a preparation collects (saved arXiv pages, the folder being written) before
        its dataset folder appears whole; not an id, so never listed as a dataset."""
        return self._inside(DATASETS, f".work-{check_id(dataset_id, what='dataset id')}")

    def dataset_split(self, dataset_id: str, split: str) -> Path:
        return self.dataset_dir(dataset_id) / f"{split}.jsonl"

    def dataset_report(self, dataset_id: str) -> Path:
        return self.dataset_dir(dataset_id) / "report.json"

    def dataset_baseline(self, dataset_id: str) -> Path:
        return self.dataset_dir(dataset_id) / EVAL / "baseline.json"

    # ---- model registry ------------------------------------------------------------------

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS

    def registered_model_dir(self, name: str) -> Path:
        return self._inside(MODELS, check_id(name, what="model name"))

    def model_version_dir(self, name: str, version: str) -> Path:
        if not SEMVER_PATTERN.fullmatch(version):
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"version {version!r} must be a semantic version MAJOR.MINOR.PATCH, e.g. 1.2.0",
            )
        return self.registered_model_dir(name) / version

    def model_history(self, name: str) -> Path:
        return self.registered_model_dir(name) / "history.jsonl"

    # ---- the default MLflow store ----------------------------------------------------------

    @property
    def mlflow_dir(self) -> Path:
        return self.root / MLFLOW

    # ---- worker state ---------------------------------------------------------------------

    def spool_file(self, run_id: str) -> Path:
        return self._inside(SPOOL, f"{check_id(run_id)}.events.jsonl")

    # ---- what the API names artifacts by -------------------------------------------------

    def relative(self, path: Path) -> str:
        """`path` relative to the root, as events and manifests name artifacts."""
        return path.relative_to(resolve_inside(self.root, ".")).as_posix()
