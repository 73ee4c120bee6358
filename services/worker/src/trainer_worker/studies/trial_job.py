"""One trial of a study: a `study_trial` job on the training queue, run as a run of its own.

The job asks Optuna for its trial (or, on a later attempt after its worker died, re-attaches
to the same trial, whose params are already fixed, and resumes from the run's checkpoint),
trains the base spec with the trial's params through the model-run body, reporting the
validation metric at each eval to the pruner, which may end the run "pruned". When the run
has ended, however it ended, the job tells Optuna, keeps only the study's retained
checkpoints, publishes `trainer.study.trial_completed.v1` and hands the study on
(`StudyStore.finish_trial`: the next trial, or the finalization).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from platform_core.errors import AppError, ErrorCode
from platform_core.event_bus import EventBus
from platform_core.events import (
    StudyStarted,
    StudyStartedPayload,
    StudyTrialCompleted,
    StudyTrialCompletedPayload,
)
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.logging import log_context
from platform_core.run_state import RunStatus
from platform_core.settings import load_settings
from platform_core.specs import TrainRunSpec
from platform_core.studies import StudyStore
from platform_core.study_api import TrialRecord
from platform_core.study_specs import (
    CategoricalParam,
    IntParam,
    LogUniformParam,
    ParamValue,
    SearchParam,
    StudySpec,
    trial_spec,
)
from trainer_worker import defaults
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.families import train_run_body
from trainer_worker.family_run import resume_hint
from trainer_worker.heartbeat import Heartbeat
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.jobs import current_job, lifecycle
from trainer_worker.studies.retention import (
    prune_given_up,
    retain_study_checkpoints,
    share_probe,
    study_lock,
)
from trainer_worker.studies.storage import make_storage, open_study
from trainer_worker.training.callbacks import EvalInfo

_log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """What the body learned that the trial's ending needs."""

    study: optuna.Study | None = None
    trial: optuna.Trial | None = None
    params: dict[str, ParamValue] = field(default_factory=dict)


Pruner = Callable[[EvalInfo], bool]
# what a trial runs: its spec, the run's context, its pruner and its view of the disk
TrainTrial = Callable[[TrainRunSpec, JobContext, Pruner, DiskProbe | None], Outcome]


def train_trial(
    train: TrainRunSpec, context: JobContext, should_prune: Pruner, probe: DiskProbe | None
) -> Outcome:
    """A trial: the run body of its model family, with the pruner and its disk share."""
    return train_run_body(train, context, should_prune=should_prune, disk_probe=probe)


def study_trial(run_id: str, spec: JsonObject, *, user_id: int | None = None) -> JsonObject:
    """Run the trial `spec` names ({"study_id", "ticket"}) as the run `run_id`."""
    return run_trial(run_id, spec, train=train_trial)


def run_trial(run_id: str, spec: JsonObject, *, train: TrainTrial) -> JsonObject:
    """The trial's lifecycle around `train` (see the module docstring)."""
    study_id, ticket = _reference(spec)
    settings = load_settings()
    client = current_job().connection
    bus = EventBus.from_settings(client, settings.redis)
    layout = DataLayout(settings.data_root.resolve())
    secret = settings.studies.storage_url
    url = None if secret is None else secret.get_secret_value()
    studies = StudyStore(client)
    study_spec = studies.spec(study_id)
    owner = _owner(studies, study_id)
    attempt = _Attempt()

    def body(context: JobContext) -> Outcome:
        if studies.cancel_requested(study_id):
            return Outcome({}, "its study was cancelled before it started", cancelled_at_step=0)
        _mark_study_running(studies, bus, study_id, study_spec, owner)
        prune_given_up(layout, studies, study_id)  # a trial given up on: its share is ours
        attempt.study = open_study(
            study_id,
            study_spec,
            make_storage(layout.study_dir(study_id), url),
            sampler_offset=ticket,
        )
        # a first attempt has no trial yet; a later one re-attaches to the one it asked
        earlier = studies.trial(study_id, run_id) if context.attempt > 1 else None
        attempt.trial = _trial_for(attempt.study, earlier)
        attempt.params = _suggest(attempt.trial, study_spec)
        studies.save_trial(
            study_id,
            TrialRecord(
                run_id=run_id,
                ticket=ticket,
                trial_number=attempt.trial.number,
                params=attempt.params,
            ),
        )
        applied = trial_spec(study_spec, attempt.params)
        share = study_spec.trial_share_gb()
        probe = share_probe(share, applied.retention.min_free_disk_fraction) if share else None
        return train(applied, context, _pruner(attempt.trial, study_spec), probe)

    # the study is alive while any of its trials runs: they beat for it
    beat = Heartbeat(studies.runs, study_id, defaults.HEARTBEAT_INTERVAL_S)
    with log_context(run_id=run_id), beat:
        result = lifecycle(
            "study_trial", run_id, body, user_id=None, resume_hint=resume_hint, settings=settings
        )
        ended = TrialRecord(run_id=run_id, ticket=ticket, params=attempt.params)
        record, is_best = _end_trial(studies, layout, study_id, ended, study_spec, attempt, result)
    if record.trial_number is not None:
        bus.publish(
            StudyTrialCompleted(
                run_id=study_id,
                user_id=owner,
                payload=StudyTrialCompletedPayload(
                    trial_number=record.trial_number,
                    state="FAIL" if record.state == "RUNNING" else record.state,
                    value=record.value,
                    params=record.params,
                    trial_run_id=run_id,
                    is_best=is_best,
                ),
            )
        )
    step = studies.finish_trial(study_id, run_id)
    _log.info("trial ended: %s", record.state, extra={"event": "study.trial_ended", "next": step})
    return {**result, "study_id": study_id, "trial_state": record.state, "next": step}


def _reference(spec: JsonObject) -> tuple[str, int]:
    study_id, ticket = spec.get("study_id"), spec.get("ticket")
    if not isinstance(study_id, str) or not isinstance(ticket, int) or ticket < 1:
        raise AppError(ErrorCode.INVALID_INPUT, "a trial spec is {study_id, ticket}")
    return study_id, ticket


def _owner(studies: StudyStore, study_id: str) -> int | None:
    raw = studies.runs.meta(study_id).get("user_id")
    return int(raw) if raw else None


def _mark_study_running(
    studies: StudyStore, bus: EventBus, study_id: str, spec: StudySpec, owner: int | None
) -> None:
    """The first trial to start moves the study to running and announces it (compare and
    set: exactly one trial does)."""
    if studies.runs.move(study_id, RunStatus.RUNNING, expected=RunStatus.QUEUED) != "moved":
        return
    payload = StudyStartedPayload(
        study_name=spec.name, n_trials=spec.n_trials, metric=spec.metric, direction=spec.direction
    )
    bus.publish(StudyStarted(run_id=study_id, user_id=owner, payload=payload))


def _trial_for(study: optuna.Study, record: TrialRecord | None) -> optuna.Trial:
    """A new trial, or, when an earlier attempt of this run asked one that is still running
    (its worker died), that same trial: its params are fixed, so the run resumes from its
    own checkpoints with them."""
    if record is not None and record.trial_number is not None:
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number == record.trial_number:
                # FrozenTrial names its storage id only privately; Trial(study, id) is public
                return optuna.Trial(study, frozen._trial_id)
    return study.ask()


def _suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, ParamValue]:
    return {path: _suggest_one(trial, path, param) for path, param in spec.search_space.items()}


def _suggest_one(trial: optuna.Trial, path: str, param: SearchParam) -> ParamValue:
    if isinstance(param, CategoricalParam):
        choice = trial.suggest_categorical(path, list(param.choices))
        if choice is None:  # the choices never hold None; Optuna's signature allows it
            raise AppError(ErrorCode.INTERNAL, f"{path}: Optuna chose no value")
        return choice
    if isinstance(param, IntParam):
        return trial.suggest_int(path, param.low, param.high, step=param.step, log=param.log)
    log = isinstance(param, LogUniformParam)
    return trial.suggest_float(path, float(param.low), float(param.high), log=log)


def _metric(info: EvalInfo, spec: StudySpec) -> float:
    return info.eval_loss if spec.metric == "eval_loss" else info.perplexity


def _pruner(trial: optuna.Trial, spec: StudySpec) -> Pruner:
    def should_prune(info: EvalInfo) -> bool:
        trial.report(_metric(info, spec), info.step)
        return trial.should_prune()

    return should_prune


def _end_trial(  # noqa: PLR0917 - one call site, each argument a different thing
    studies: StudyStore,
    layout: DataLayout,
    study_id: str,
    ended: TrialRecord,
    spec: StudySpec,
    attempt: _Attempt,
    result: JsonObject,
) -> tuple[TrialRecord, bool]:
    """Tell Optuna how the run ended, record it, and keep only the study's retained
    checkpoints; under the study's lock, so two trials ending at once judge "best" in turn.
    The record, and whether it is the study's new best."""
    status = RunStatus(str(result.get("status")))
    value = _value(result, spec) if status is RunStatus.COMPLETED else None
    state = "COMPLETE" if value is not None else "PRUNED" if status is RunStatus.PRUNED else "FAIL"
    with study_lock(studies.client, study_id):
        study, trial = attempt.study, attempt.trial
        if study is not None and trial is not None:
            if state == "COMPLETE":
                study.tell(trial, value)
            elif state == "PRUNED":
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, state=TrialState.FAIL)
        record = ended.model_copy(
            update={
                "trial_number": trial.number if trial is not None else None,
                "state": state,
                "value": value,
                "params": attempt.params,
            }
        )
        studies.save_trial(study_id, record)
        is_best = retain_study_checkpoints(layout, studies, study_id, spec, record)
    return record, is_best


def _value(result: JsonObject, spec: StudySpec) -> float | None:
    """The trial's objective: its best validation metric (None without a holdout)."""
    loss = result.get("best_eval_loss")
    if not isinstance(loss, int | float) or not math.isfinite(loss):
        return None
    return float(loss) if spec.metric == "eval_loss" else math.exp(min(float(loss), 700.0))
