"""`trainctl study` against the live API, the paths `test_study_commands.py` leaves: `hpo
--wait` while a worker runs the study (0 when every trial completed, 1 when a trial failed,
a timeout with no worker), `evaluate` waiting for the new report, a study with no completed
trial to evaluate (3), the text of a study and its report, a listing row with no creation
time, and the refusals made before any request (2)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import redis

from platform_core.errors import ExitCode
from platform_core.http_client import TrainerClient
from platform_core.queue import TRAINING_QUEUE
from platform_core.run_state import meta_key
from platform_core.study_api import StudyPublic
from tests.api.conftest import char_tokenizer, work
from tests.api.test_studies import study_spec
from tests.cli.test_remote import Cli, cli, while_working

__all__ = ["cli"]
pytestmark = pytest.mark.integration


def _spec_file(tmp_path: Path, spec: object, name: str = "study.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec), encoding="utf-8")
    return str(path)


@pytest.fixture
def spec(client: TrainerClient, redis_client: redis.Redis, corpus: str, tmp_path: Path) -> str:
    """A trained char tokenizer `tok`, and a study spec file of tiny trials on it."""
    client.train_tokenizer(char_tokenizer(corpus, "tok"))
    work(redis_client)
    return _spec_file(tmp_path, study_spec("tok", corpus))


def test_hpo_waits_for_a_completed_study_then_evaluate_waits_for_its_new_report(
    cli: Cli, redis_client: redis.Redis, spec: str, data_root: Path
) -> None:
    flags = ("--trials", "1", "--parallelism", "1", "--seed", "7", "--name", "waited")
    waited = while_working(
        cli, redis_client, TRAINING_QUEUE,
        "study", "hpo", "--spec", spec, "--id", "st-wait", *flags, "--timeout", "600",
        "--wait", "120",
    )  # fmt: skip
    assert waited.code == ExitCode.OK, waited.err
    lines = waited.out.splitlines()
    assert lines[0] == "study st-wait queued (1 trials started)"
    assert lines[1] == "study     st-wait (waited)"
    assert lines[2].startswith("status    completed  1 completed, 0 pruned, 0 failed; best trial 0")
    assert lines[3] == "trials    1/1: 1 completed, 0 pruned, 0 failed"
    assert lines[4].startswith("best      trial 0 (st-wait-t0001): eval_loss ")
    assert lines[5].split()[:3] == ["st-wait-t0001", "#0", "COMPLETE"]
    shown = StudyPublic.model_validate_json(cli("study", "status", "st-wait", "--json").out)
    assert shown.report is not None and shown.best is not None
    assert shown.n_trials == 1 and shown.name == "waited"

    evaluated = while_working(
        cli, redis_client, TRAINING_QUEUE, "study", "evaluate", "st-wait", "--wait", "120"
    )
    assert evaluated.code == ExitCode.OK, evaluated.err
    header, *rest = evaluated.out.splitlines()
    assert header == "study st-wait: best trial 0"
    after = StudyPublic.model_validate_json(cli("study", "status", "st-wait", "--json").out)
    assert after.report is not None
    assert after.report["evaluated_at"] != shown.report["evaluated_at"]  # a new report
    metrics = after.report["test_metrics"]
    assert isinstance(metrics, dict) and "eval_loss" in metrics
    assert rest[:-1] == [f"  test {name}: {value}" for name, value in metrics.items()]
    checkpoint = shown.report["checkpoint"]
    assert isinstance(checkpoint, dict)
    assert rest[-1] == f"  checkpoint {checkpoint['path']} sha256 {checkpoint['sha256']}"

    # a report without test metrics or a checkpoint (a worker that could not measure them)
    # prints its header alone
    report = data_root / "studies" / "st-wait" / "evaluation_report.json"
    bare = while_working(
        cli, redis_client, TRAINING_QUEUE, "study", "evaluate", "st-wait", "--wait", "60",
        then=lambda: report.write_text(json.dumps({"evaluated_at": "later"}), encoding="utf-8"),
    )  # fmt: skip
    assert bare.code == ExitCode.OK, bare.err
    assert bare.out.splitlines() == ["study st-wait: best trial 0"]

    # a study record without its creation time lists "-" for it
    redis_client.hdel(meta_key("st-wait"), "created_at")
    rows = list(csv.reader(io.StringIO(cli("study", "list", "--format", "csv").out)))
    assert rows[1][0] == "st-wait" and rows[1][2] == "1/1" and rows[1][5] == "-"
    assert float(rows[1][3]) == pytest.approx(shown.best_value, abs=1e-4)


def test_hpo_wait_answers_1_when_a_trial_failed(
    cli: Cli, redis_client: redis.Redis, spec: str, corpus: str, data_root: Path
) -> None:
    """The corpus disappears after the study was accepted: its trial fails, the study ends,
    and `hpo --wait` answers the seed's 1 (not every trial completed)."""
    args = ("study", "hpo", "--spec", spec, "--id", "st-fail", "--trials", "1", "--wait", "120")

    def corpus_gone_then_work() -> None:
        (data_root / corpus).unlink()
        work(redis_client)

    failed = while_working(cli, redis_client, TRAINING_QUEUE, *args, then=corpus_gone_then_work)
    assert failed.code == ExitCode.TRAINING, failed.err
    assert "1 failed" in failed.out


def test_a_study_with_no_completed_trial_has_nothing_to_evaluate(
    cli: Cli, redis_client: redis.Redis, spec: str
) -> None:
    assert cli("study", "hpo", "--spec", spec, "--id", "st-none").code == ExitCode.OK

    timed_out = cli("study", "hpo", "--spec", spec, "--id", "st-late", "--wait", "0")
    assert timed_out.code == ExitCode.TRAINING  # queued, but no worker ended it within 0 s
    assert "study st-late is still queued after 0 s" in timed_out.err

    cancelled = cli("study", "cancel", "st-none", "--json")
    assert cancelled.code == ExitCode.OK
    assert json.loads(cancelled.out)["study_id"] == "st-none"
    work(redis_client)  # the cancelled trials end, and the finalization
    nothing = cli("study", "evaluate-study", "st-none")
    assert nothing.code == ExitCode.DATA, nothing.err  # seed: 3, no best checkpoint
    assert "study st-none has no completed trial to evaluate" in nothing.err

    malformed = cli("study", "evaluate", "bad id!")
    assert malformed.code == ExitCode.CONFIG  # refused by the API as invalid input
    assert "INVALID_INPUT" in malformed.err


def test_refusals_made_before_any_request(cli: Cli, corpus: str, tmp_path: Path) -> None:
    not_an_object = study_spec("tok", corpus, sampler=5)
    sampler = cli("study", "hpo", "--spec", _spec_file(tmp_path, not_an_object), "--seed", "1")
    assert sampler.code == ExitCode.CONFIG
    assert "sampler must be a JSON object" in sampler.err

    no_trials = cli(
        "study", "hpo", "--spec", _spec_file(tmp_path, study_spec("tok", corpus)), "--trials", "0"
    )
    assert no_trials.code == ExitCode.CONFIG
    assert "n_trials" in no_trials.err

    page = cli("study", "list", "--limit", "0")
    assert page.code == ExitCode.CONFIG
    assert "limit" in page.err
