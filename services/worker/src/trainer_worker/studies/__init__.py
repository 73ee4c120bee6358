"""Optuna studies across workers: each trial a `study_trial` job on the training queue,
running the model-run body with the trial's params and a pruner at each eval; the study's
shared decisions (next trial, finalization) are made atomically in Redis
(`platform_core.studies`), its trials and results kept in Optuna's storage (`storage`).

- `storage`: the Optuna storage (a journal file per study by default, PostgreSQL when set)
- `trial_job`: one trial: ask (or re-attach after a dead worker), train, tell, hand on
- `retention`: the study's checkpoints: the best trial's best, and each running trial's own
- `finalize`: the best trial evaluated once, `evaluation_report.json`, the study's PNGs
"""
