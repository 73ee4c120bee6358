"""The one place a model run's family is picked: the language models (gpt2, char_lstm), the
dual-agent model or the classifier, each a `prepare` that `family_run.run_family` starts,
trains and hands back to the family's `finish`. A `train_model` job and a study's trial both
go through `train_run_body`, so every family trains, resumes and is pruned the same way."""

from __future__ import annotations

from collections.abc import Callable

from platform_core.specs import TrainRunSpec
from trainer_worker.checkpoint_retention import DiskProbe
from trainer_worker.classify.run import prepare_classifier
from trainer_worker.dual_agent.run import prepare_dual_agent
from trainer_worker.family_run import run_family
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.model_run import prepare_language_model
from trainer_worker.training.callbacks import EvalInfo


def train_run_body(
    spec: TrainRunSpec,
    context: JobContext,
    *,
    should_prune: Callable[[EvalInfo], bool] | None = None,
    disk_probe: DiskProbe | None = None,
) -> Outcome:
    """Train `spec` as the run of `context`. A study trial passes its pruner (asked at each
    eval; the run then ends "pruned") and its share of the study's checkpoint budget."""
    if spec.model.family == "dual_agent":
        return run_family(
            spec, context, prepare_dual_agent, should_prune=should_prune, disk_probe=disk_probe
        )
    if spec.model.family == "classifier":
        return run_family(
            spec, context, prepare_classifier, should_prune=should_prune, disk_probe=disk_probe
        )
    return run_family(
        spec, context, prepare_language_model, should_prune=should_prune, disk_probe=disk_probe
    )
