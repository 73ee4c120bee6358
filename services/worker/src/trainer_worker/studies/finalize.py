"""The end of a study, run once by whichever worker gets the finalization
(`StudyStore.finish_trial`), or again on request (`trainctl study evaluate`).

The checkpoints of trials the stale-run sweep gave up on are removed; trials an earlier crash
left running in Optuna are marked failed; the best trial's retained (best) checkpoint is
evaluated once on the test split (`evaluate_checkpoint`, one function per model family) into
`studies/<id>/evaluation_report.json`; the optimisation history and parameter importances are
drawn into the study folder; the study ends completed (cancelled when it was) and
`trainer.study.completed.v1` tells the bot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import StudyCompleted, StudyCompletedPayload
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.logging import log_context
from platform_core.manifests import read_run_manifest, write_atomic
from platform_core.run_state import RunStatus
from platform_core.settings import load_settings
from platform_core.studies import StudyStore
from platform_core.study_api import HISTORY_PNG, IMPORTANCE_PNG, TrialRecord, best_trial
from platform_core.study_specs import StudySpec, trial_spec
from trainer_worker.checkpoint_retention import best_of, entries_of
from trainer_worker.checkpoints import MODEL_FILE, load_checkpoint
from trainer_worker.classify.run import headline_metrics as classifier_headline
from trainer_worker.inference_jobs import evaluate_work
from trainer_worker.jobs import current_job
from trainer_worker.models.registry import build_model, resolve_pretrained
from trainer_worker.studies.retention import prune_given_up
from trainer_worker.studies.storage import configured_storage_url, make_storage, open_study
from trainer_worker.tokenizers.artifacts import load_tokenizer

_log = logging.getLogger(__name__)
REPORT_FILE = "evaluation_report.json"


def finalize_study(study_id: str) -> JsonObject:
    """The RQ job: finish the study `study_id` (see the module docstring)."""
    settings = load_settings()
    client = current_job().connection
    return finish_study(
        StudyStore(client),
        EventBus.from_settings(client, settings.redis),
        DataLayout(settings.data_root.resolve()),
        study_id,
        storage_url=configured_storage_url(),
    )


def finish_study(
    studies: StudyStore,
    bus: EventBus,
    layout: DataLayout,
    study_id: str,
    *,
    storage_url: str | None,
) -> JsonObject:
    """Evaluate, draw and end the study. A failure of the evaluation or of Optuna's storage
    still ends the study (failed, with the reason): nothing would end it otherwise."""
    with log_context(run_id=study_id):
        spec = studies.spec(study_id)
        folder = layout.study_dir(study_id)
        folder.mkdir(parents=True, exist_ok=True)  # on PostgreSQL, nothing else made it
        trials = studies.trials(study_id)
        best = best_trial(trials, spec.direction)
        counts = {s: sum(1 for t in trials if t.state == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
        message = (
            f"{counts['COMPLETE']} completed, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
        )
        if best is not None:
            message += f"; best trial {best.trial_number}: {spec.metric} {best.value:.4f}"
        cancelled = studies.cancel_requested(study_id)
        status = RunStatus.CANCELLED if cancelled else RunStatus.COMPLETED
        if best is None and not cancelled:
            status = RunStatus.FAILED
        report: JsonObject | None = None
        try:
            prune_given_up(layout, studies, study_id)  # the last trial may have been given up
            study = open_study(study_id, spec, make_storage(folder, storage_url))
            _fail_orphans(study)
            report = evaluate_best(layout, study_id, spec, best) if best is not None else None
            draw_plots(study, folder)
        except (AppError, OSError, ImportError, optuna.exceptions.OptunaError) as exc:
            reason = exc.message if isinstance(exc, AppError) else f"{type(exc).__name__}: {exc}"
            _log.error("study evaluation failed: %s", reason, extra={"event": "study.failed"})
            status, message = RunStatus.FAILED, f"{message}; evaluation failed: {reason}"
        if not studies.status(study_id).is_terminal:
            studies.runs.set_status(study_id, status, message=message)
        meta = studies.runs.meta(study_id)
        owner, created = meta.get("user_id"), meta.get("created_at")
        bus.publish(
            StudyCompleted(
                run_id=study_id,
                user_id=int(owner) if owner else None,
                payload=StudyCompletedPayload(
                    n_completed=counts["COMPLETE"],
                    n_pruned=counts["PRUNED"],
                    n_failed=counts["FAIL"],
                    duration_s=max(0.0, time.time() - float(created)) if created else 0.0,
                    best_trial_number=best.trial_number if best else None,
                    best_value=best.value if best else None,
                    best_params=best.params if best else {},
                ),
            )
        )
        _log.info(message, extra={"event": "study.completed"})
        return {"study_id": study_id, "status": status.value, "report": report}


def _fail_orphans(study: optuna.Study) -> None:
    """A trial asked by an attempt that died before it was recorded stays running in Optuna
    for ever; the study is over, so it failed."""
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(frozen.number, state=TrialState.FAIL)


def evaluate_best(
    layout: DataLayout, study_id: str, spec: StudySpec, best: TrialRecord
) -> JsonObject:
    """Evaluate the best trial's best checkpoint once; write and return the report."""
    directory = layout.checkpoints_dir(best.run_id)
    entries = entries_of(directory)
    if not entries:
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND, f"trial {best.run_id} has no checkpoint to evaluate"
        )
    checkpoint = directory / best_of(entries).name
    metrics = evaluate_checkpoint(layout, spec, best, checkpoint)
    weights = checkpoint / MODEL_FILE
    report: JsonObject = {
        "study_id": study_id,
        "study_name": spec.name,
        "model_family": spec.model_family,
        "metric": spec.metric,
        "direction": spec.direction,
        "best_trial": {
            "number": best.trial_number,
            "run_id": best.run_id,
            "value": best.value,
            "params": dict(best.params),
        },
        "test_metrics": metrics,
        "checkpoint": {
            "path": layout.relative(checkpoint),
            "sha256": _sha256(weights),
            "file": MODEL_FILE,
        },
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    write_atomic(layout.study_dir(study_id) / REPORT_FILE, json.dumps(report, indent=2).encode())
    return report


def evaluate_checkpoint(
    layout: DataLayout, spec: StudySpec, best: TrialRecord, checkpoint: Path
) -> JsonObject:
    """The test metrics of one checkpoint, per model family. The language-model families
    (gpt2, char_lstm) have no separate test split: their test is the held-out part of the
    corpus, every token predicted once (`evaluate_work`)."""
    train = trial_spec(spec, best.params)
    if train.tokenizer_id is None:
        return _measured_test_metrics(layout, best.run_id)
    tokenizer = load_tokenizer(layout.tokenizer_dir(train.tokenizer_id))
    model = build_model(
        resolve_pretrained(train.model, layout.root), tokenizer.vocab_size, tokenizer.eos_id
    )
    load_checkpoint(checkpoint, model)
    model.eval()
    return evaluate_work(model, tokenizer, {}, train, layout.run_dir(best.run_id))


def draw_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """The optimisation history and parameter importances as PNGs (matplotlib's Agg backend,
    imported here only); a plot Optuna cannot draw yet (importances need two completed
    trials that differ) is skipped with a log line."""
    import matplotlib  # noqa: PLC0415 - only a finished study draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after the backend is chosen
    from matplotlib.axes import Axes  # noqa: PLC0415 - matplotlib loads on first use
    from optuna.visualization import matplotlib as optuna_plots  # noqa: PLC0415 - pyplot

    drawn: list[Path] = []
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return drawn  # nothing to draw
    plots = {
        HISTORY_PNG: optuna_plots.plot_optimization_history,
        IMPORTANCE_PNG: optuna_plots.plot_param_importances,
    }
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # "experimental" since Optuna 2.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # optuna's @experimental_func decorator erases the plot functions' signatures
                axes: Axes = plot(study)  # type: ignore[operator]
            figure = axes.get_figure(root=True)
            if figure is None:
                continue
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            drawn.append(folder / name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            _log.warning("plot %s skipped: %s", name, exc, extra={"event": "study.plot_skipped"})
    return drawn


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _measured_test_metrics(layout: DataLayout, run_id: str) -> JsonObject:
    """The dual-agent and classifier families measure their test split as a run ends (the
    classifier with its best validation weights, the dual-agent model with its thresholds
    tuned on validation): the best trial's figures are read from its manifest, not measured
    again."""
    manifest = read_run_manifest(layout.run_manifest(run_id))
    if manifest.dual_agent is not None:
        return {key: value for key, value in manifest.dual_agent.test_metrics.items()}
    if manifest.classifier is not None:
        return {key: value for key, value in classifier_headline(manifest.classifier).items()}
    raise AppError(ErrorCode.DATA_NOT_FOUND, f"trial {run_id} has no test report in its manifest")
