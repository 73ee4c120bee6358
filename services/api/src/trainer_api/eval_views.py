"""A run's evaluation artifacts: `eval/metrics.json` (the training's eval history),
`eval/samples.jsonl` (text from fixed prompts) and `eval/evaluations.jsonl` (one line per
POST /runs/{id}/evaluate). Read leniently: a line that does not parse is skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from platform_core.api_models import EvalSample, EvaluationResult, RunEval
from platform_core.errors import AppError
from platform_core.layout import EVAL
from platform_core.manifests import MetricsSummary, read_metrics_summary
from platform_core.paths import read_regular_text

ModelT = TypeVar("ModelT", bound=BaseModel)


def _json_lines(path: Path) -> Iterator[object]:
    try:
        text = read_regular_text(path)
    except (OSError, UnicodeDecodeError):
        return
    for line in text.splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def _parsed(path: Path, model: type[ModelT]) -> list[ModelT]:
    found: list[ModelT] = []
    for row in _json_lines(path):
        if not isinstance(row, dict):
            continue
        known = {key: value for key, value in row.items() if key in model.model_fields}
        try:  # fields a newer worker adds are dropped, not a reason to hide the row
            found.append(model.model_validate(known))
        except ValidationError:
            continue
    return found


def load_eval(folder: Path, run_id: str) -> RunEval:
    """Everything evaluated about the run in `folder` so far (empty lists before that)."""
    try:
        metrics: MetricsSummary | None = read_metrics_summary(folder / EVAL / "metrics.json")
    except AppError:  # not written yet (the run is training), or unreadable
        metrics = None
    return RunEval(
        run_id=run_id,
        history=[] if metrics is None else metrics.eval_history,
        best_eval_loss=None if metrics is None else metrics.best_eval_loss,
        final_perplexity=None if metrics is None else metrics.final_perplexity,
        samples=_parsed(folder / EVAL / "samples.jsonl", EvalSample),
        evaluations=_parsed(folder / EVAL / "evaluations.jsonl", EvaluationResult),
    )
