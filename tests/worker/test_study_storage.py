"""A study's sampler in a process that runs several of its trials: kept from trial to trial
(what it inferred from the trials it saw is not inferred again), one per study and storage,
seeded by the first trial's ticket, a bounded number of studies kept."""

from __future__ import annotations

from pathlib import Path

import optuna

from platform_core.json_types import JsonObject
from platform_core.study_specs import StudySpec
from trainer_worker.studies import storage
from trainer_worker.studies.storage import make_storage, open_study


def _spec(seed: int = 5) -> StudySpec:
    base: JsonObject = {
        "model": {"family": "char_lstm", "preset": "tiny"},
        "tokenizer_id": "tok",
        "corpus": {"path": "corpus.txt"},
    }
    return StudySpec.model_validate(
        {
            "base": base,
            "search_space": {
                "train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-1}
            },
            "n_trials": 40,
            "sampler": {"seed": seed, "n_startup_trials": 3},
        }
    )


def _trial(study: optuna.Study) -> float:
    trial = study.ask()
    value = trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
    study.tell(trial, value)
    return value


def _inferred_up_to(study: optuna.Study) -> int:
    """The last trial number whose search space the study's sampler took in."""
    sampler = study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler)
    return sampler._search_space._cached_trial_number


def test_the_trials_of_one_study_share_one_sampler_that_keeps_what_it_inferred(
    tmp_path: Path,
) -> None:
    spec, place = _spec(), make_storage(tmp_path / "a")
    first = open_study("st-a", spec, place, sampler_offset=1)
    for _ in range(12):
        _trial(first)
    # its search space was inferred up to the last trial: the next ask reads on from there
    cursor = _inferred_up_to(first)
    assert cursor >= 11
    again = open_study("st-a", spec, place, sampler_offset=13)  # the 13th trial's job
    assert again.sampler is first.sampler
    _trial(again)
    assert _inferred_up_to(again) > cursor
    # another sampler config (a study re-created with another seed): a sampler of its own
    assert open_study("st-a", _spec(seed=6), place, sampler_offset=1).sampler is not first.sampler


def test_each_study_has_its_own_sampler_seeded_by_its_first_ticket_and_few_are_kept(
    tmp_path: Path,
) -> None:
    spec, place = _spec(), make_storage(tmp_path / "b")
    one = open_study("st-one", spec, place, sampler_offset=1)
    two = open_study("st-two", spec, place, sampler_offset=2)
    assert one.sampler is not two.sampler
    # parallel workers' first trials: different tickets, different random startup points
    assert _trial(one) != _trial(two)
    other_place = make_storage(tmp_path / "c")
    assert open_study("st-one", spec, other_place, sampler_offset=1).sampler is not one.sampler

    for n in range(storage.SAMPLERS_KEPT):
        open_study(f"st-more-{n}", spec, place, sampler_offset=1)
    assert len(storage._SAMPLERS) == storage.SAMPLERS_KEPT
    # the oldest went: st-one's next trial starts a sampler again
    assert open_study("st-one", spec, place, sampler_offset=9).sampler is not one.sampler
