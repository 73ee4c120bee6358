"""The offline comparison of two registered versions of a classifier: both label the same
labelled test split (a prepared dataset's `test.jsonl`), `ab_test.decide` judges them, and
the verdict is written for people and programs:

```
models/<name>/comparisons/<run_id>/report.json   ComparisonReport (versions, dataset, ABDecision)
models/<name>/comparisons/<run_id>/report.png    accuracy and macro F1 side by side, the
                                                  macro-F1 difference with its interval, and
                                                  the examples only one of them gets right
```
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.manifests import read_dataset_manifest, write_atomic
from platform_core.retrain_specs import CHART_FILE, COMPARISONS, REPORT_FILE, CompareSpec
from platform_core.specs import MAX_PREDICT_TEXTS
from trainer_worker.classify.ab_test import ABDecision, decide
from trainer_worker.classify.dataset_job import read_split
from trainer_worker.classify.predict import ClassifierPredictor


class ComparisonReport(BaseModel):
    """report.json: which versions, on which examples, and the decision with its numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    current: str
    candidate: str
    dataset_id: str
    decision: ABDecision


def comparison_dir(layout: DataLayout, name: str, run_id: str) -> Path:
    return layout.registered_model_dir(name) / COMPARISONS / run_id


def compare_versions(layout: DataLayout, spec: CompareSpec, run_id: str) -> ComparisonReport:
    """Label the dataset's test split with both versions, decide, write the report and its
    chart under `comparison_dir`."""
    dataset = read_dataset_manifest(layout.dataset_manifest(spec.dataset_id))
    rows = read_split(layout.dataset_split(spec.dataset_id, "test"))  # >= 1 row a class
    texts = [row.text for row in rows]
    truth = [row.label for row in rows]
    current = _labels(layout.model_version_dir(spec.name, spec.current), texts)
    candidate = _labels(layout.model_version_dir(spec.name, spec.candidate), texts)
    decision = decide(
        truth,
        current,
        candidate,
        dataset.report.labels,
        min_accuracy_gain=spec.min_accuracy_gain,
        alpha=spec.alpha,
    )
    report = ComparisonReport(
        name=spec.name,
        current=spec.current,
        candidate=spec.candidate,
        dataset_id=spec.dataset_id,
        decision=decision,
    )
    folder = comparison_dir(layout, spec.name, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / REPORT_FILE, report.model_dump_json(indent=2).encode())
    comparison_png(report, folder / CHART_FILE)
    return report


def _labels(folder: Path, texts: Sequence[str]) -> list[str]:
    """The version's label for each text, `MAX_PREDICT_TEXTS` texts per call."""
    if not folder.is_dir():
        raise AppError(ErrorCode.MODEL_NOT_FOUND, f"no registered model folder {folder.name}")
    predictor = ClassifierPredictor(folder)
    labels: list[str] = []
    for first in range(0, len(texts), MAX_PREDICT_TEXTS):
        labels += [p.label for p in predictor.predict(texts[first : first + MAX_PREDICT_TEXTS])]
    return labels


def comparison_png(report: ComparisonReport, path: Path) -> None:
    """Three panels: accuracy and macro F1 of each version; the macro-F1 difference with its
    bootstrap interval; the disagreement counts McNemar rests on."""
    import matplotlib  # noqa: PLC0415 - lazy: only a finished comparison draws

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415 - after the backend is chosen

    d = report.decision
    figure = Figure(figsize=(13, 4.5), dpi=100)  # a bare Figure: nothing global leaks
    scores, interval, disagreements = figure.subplots(1, 3)
    names = [f"current {report.current}", f"candidate {report.candidate}"]
    width = 0.38
    scores.bar(
        [0 - width / 2, 1 - width / 2],
        [d.current_accuracy, d.candidate_accuracy],
        width,
        label="accuracy",
    )
    scores.bar(
        [0 + width / 2, 1 + width / 2],
        [d.current_macro_f1, d.candidate_macro_f1],
        width,
        label="macro F1",
    )
    scores.set_xticks([0, 1], labels=names)
    scores.set_ylim(0, 1)
    scores.legend(loc="lower right")
    scores.set_title(f"test split of {report.dataset_id}\n{d.num_examples} examples", fontsize=10)
    ci = d.macro_f1_difference
    interval.errorbar(
        [0],
        [ci.observed],
        yerr=[[ci.observed - ci.low], [ci.high - ci.observed]],
        fmt="o",
        capsize=8,
    )
    interval.axhline(0, color="grey", linewidth=1)
    interval.set_xticks([0], labels=["candidate - current"])
    interval.set_title(f"macro-F1 difference, {ci.confidence:.0%} interval")
    counts = [d.mcnemar.candidate_only_correct, d.mcnemar.current_only_correct]
    disagreements.bar([0, 1], counts, color=["tab:green", "tab:red"])
    disagreements.set_xticks([0, 1], labels=["only candidate right", "only current right"])
    disagreements.set_title(f"McNemar exact p = {d.mcnemar.p_value:.3g}")
    figure.suptitle(f"{report.name}: {d.decision}")
    figure.tight_layout()
    figure.savefig(path, format="png")
