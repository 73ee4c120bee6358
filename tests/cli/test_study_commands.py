"""`trainctl study ...` against the live API: hpo, list-studies in three formats with a status
filter, status, evaluate, cancel, and the seed's exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import redis

from platform_core.errors import ExitCode
from platform_core.http_client import TrainerClient
from platform_core.study_api import STUDY_PLOTS
from tests.api.conftest import char_tokenizer, work
from tests.api.test_studies import study_spec
from tests.cli.test_remote import Cli, cli

__all__ = ["cli"]
pytestmark = pytest.mark.integration


def _spec_file(tmp_path: Path, spec: object) -> str:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return str(path)


def test_hpo_list_status_evaluate_and_cancel(
    cli: Cli, client: TrainerClient, redis_client: redis.Redis, corpus: str, tmp_path: Path
) -> None:
    client.train_tokenizer(char_tokenizer(corpus, "tok"))
    work(redis_client)
    spec = _spec_file(tmp_path, study_spec("tok", corpus))

    started = cli("study", "hpo", "--spec", spec, "--id", "st-cli", "--trials", "2", "--json")
    assert started.code == ExitCode.OK, started.err
    assert json.loads(started.out)["trial_run_ids"] == ["st-cli-t0001", "st-cli-t0002"]
    queued = cli("study", "list-studies", "--filter-status", "queued", "--format", "json")
    assert [s["study_id"] for s in json.loads(queued.out)["items"]] == ["st-cli"]

    work(redis_client)  # both trials, then the finalization
    table = cli("study", "list", "--filter-status", "completed")
    assert table.code == ExitCode.OK
    header, rule, row, footer = table.out.splitlines()
    assert footer == "1 of 1 studies" and set(rule) == {"─"}
    assert header.split() == [
        "Study",
        "ID",
        "Name",
        "Trials",
        "Best",
        "Metric",
        "Status",
        "Created",
    ]
    assert row.split()[:3] == ["st-cli", "api-study", "2/2"] and "completed" in row
    rows = list(csv.reader(io.StringIO(cli("study", "list", "--format", "csv").out)))
    assert rows[0][0] == "Study ID" and rows[1][0] == "st-cli" and rows[1][4] == "completed"
    assert cli("study", "list", "--filter-status", "failed").out.splitlines()[-1] == (
        "0 of 0 studies"
    )

    status = cli("study", "status", "st-cli")
    assert status.code == ExitCode.OK and "2/2: 2 completed" in status.out
    plots = cli("study", "plots", "st-cli", "--dir", str(tmp_path / "plots"))
    assert plots.code == ExitCode.OK, plots.err
    saved = [Path(line) for line in plots.out.splitlines()]
    assert [p.name for p in saved] == [f"st-cli-{name}" for name in STUDY_PLOTS]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in saved)

    before = json.loads(cli("study", "status", "st-cli", "--json").out)["report"]
    evaluated = cli("study", "evaluate-study", "st-cli", "--json", "--wait", "0")
    assert evaluated.code == ExitCode.TRAINING  # queued, but no worker ran it within 0 s
    work(redis_client)  # the evaluation, once more
    after = json.loads(cli("study", "status", "st-cli", "--json").out)["report"]
    assert after["evaluated_at"] > before["evaluated_at"]
    assert after["checkpoint"] == before["checkpoint"]

    assert cli("study", "cancel", "st-cli").code == ExitCode.CONFIG  # 409: it has finished
    assert cli("study", "evaluate", "nope").code == ExitCode.CONFIG  # seed: 2, not found
    assert cli("study", "status", "nope").code != ExitCode.OK


def test_hpo_waits_for_the_end_and_refuses_bad_specs(
    cli: Cli, client: TrainerClient, redis_client: redis.Redis, corpus: str, tmp_path: Path
) -> None:
    bad = study_spec("tok", corpus)
    bad["search_space"] = {"train.nope": {"type": "uniform", "low": 0.0, "high": 1.0}}
    refused = cli("study", "hpo", "--spec", _spec_file(tmp_path, bad))
    assert refused.code == ExitCode.CONFIG, refused.err  # seed: 2, configuration error
    assert "train.nope" in refused.err
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    assert cli("study", "hpo", "--spec", str(broken)).code == ExitCode.CONFIG
    missing = cli("study", "hpo", "--spec", _spec_file(tmp_path, study_spec("no-tok", corpus)))
    assert missing.code == ExitCode.DATA  # seed: 3, the study could not be created

    client.train_tokenizer(char_tokenizer(corpus, "tok"))
    work(redis_client)
    spec = _spec_file(tmp_path, study_spec("tok", corpus))
    assert cli("study", "hpo", "--spec", spec, "--id", "st-w").code == ExitCode.OK
    cancelled = cli("study", "cancel", "st-w")
    assert cancelled.code == ExitCode.OK and "st-w-t0001" in cancelled.out
    not_drawn = cli("study", "plots", "st-w")
    assert not_drawn.code == ExitCode.DATA and "has no plots yet" in not_drawn.err
    work(redis_client)
    assert "cancelled" in cli("study", "status", "st-w").out
    assert cli("study", "plots", "nope").code == ExitCode.DATA  # as `status` of an unknown one
    taken = cli("study", "hpo", "--spec", spec, "--id", "st-w", "--wait", "5")
    assert taken.code == ExitCode.DATA, taken.err  # the id is taken: seed's 3
