"""`trainctl models traffic|predict|feedback|ab` against the live API with a real worker:
the split shown and set, a caller's texts labelled by its version, feedback, the analysis,
and the seed's exit codes for what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from platform_core.ab_analysis import ABReport
from platform_core.errors import ExitCode
from platform_core.queue import INFERENCE_QUEUE
from tests.classify_models import save_servable_classifier
from tests.cli.test_remote import Cli, cli, while_working

pytestmark = pytest.mark.integration
__all__ = ["cli"]  # the fixture, imported for this module's tests


@pytest.fixture
def served(cli: Cli, data_root: Path) -> str:
    for run_id, seed, version in (("run-a", 0, "1.0.0"), ("run-b", 1, "1.1.0")):
        save_servable_classifier(data_root, run_id, seed=seed)
        registered = cli("models", "register", "clf", "--run", run_id, "--version", version)
        assert registered.code == 0, registered.err
    promoted = cli("models", "promote", "clf", "1.0.0")
    assert promoted.code == 0, promoted.err
    return "clf"


def test_traffic_is_shown_and_set(cli: Cli, served: str) -> None:
    shown = cli("models", "traffic", "clf")
    assert (shown.code, shown.out.strip()) == (
        0,
        "clf: 1.0.0 100% (default: all to production)",
    )
    changed = cli("models", "traffic", "clf", "--set", "1.0.0=70", "1.1.0=30", "--actor", "ana")
    assert (changed.code, changed.out.strip()) == (0, "clf: 1.0.0 70%, 1.1.0 30% (set by ana)")

    malformed = cli("models", "traffic", "clf", "--set", "1.0.0")
    assert malformed.code == ExitCode.CONFIG and "VERSION=PERCENT" in malformed.err
    not_whole = cli("models", "traffic", "clf", "--set", "1.0.0=x")
    assert not_whole.code == ExitCode.CONFIG
    short = cli("models", "traffic", "clf", "--set", "1.0.0=60", "1.1.0=30")
    assert short.code == ExitCode.CONFIG and "sum to 90" in short.err
    unknown = cli("models", "traffic", "nothing")
    assert unknown.code == ExitCode.DATA


def test_predict_feedback_and_the_analysis(
    cli: Cli, redis_client: redis.Redis, served: str
) -> None:
    answered = while_working(
        cli,
        redis_client,
        INFERENCE_QUEUE,
        "models",
        "predict",
        "clf",
        "alpha beta",
        "--caller",
        "u1",
    )
    assert answered.code == 0, answered.err
    first, second = answered.out.splitlines()[:2]
    assert first.startswith("clf 1.0.0: predictions ab-")
    prediction_id = first.split()[-1]
    label = second.split()[1]  # "[1] a (a 0.51, b 0.49)"
    assert second.startswith("[1] ") and label in ("a", "b")

    recorded = cli("models", "feedback", "clf", prediction_id, label)
    assert (recorded.code, recorded.out.strip()) == (
        0,
        f"{prediction_id} (1.0.0): label {label}",
    )
    again = cli("models", "feedback", "clf", prediction_id, label)
    assert again.code == 0 and again.out.strip().endswith("(already recorded)")
    other = cli("models", "feedback", "clf", prediction_id, {"a": "b", "b": "a"}[label])
    assert other.code == ExitCode.CONFIG and "CONFLICT" in other.err
    unknown = cli("models", "feedback", "clf", "ab-none-0", "a")
    assert unknown.code == ExitCode.DATA
    as_json = cli("models", "feedback", "clf", prediction_id, label, "--json")
    assert as_json.code == 0 and '"recorded": false' in as_json.out

    table = cli("models", "ab", "clf")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["VERSION", "TRAFFIC", "LABELLED", "ACCURACY"]
    assert lines[1].split() == ["1.0.0", "100%", "1", "1.000", "(control)"]
    report = ABReport.model_validate_json(cli("models", "ab", "clf", "--json").out)
    assert [(arm.version, arm.labelled) for arm in report.arms] == [("1.0.0", 1)]

    split = cli("models", "traffic", "clf", "--set", "1.0.0=50", "1.1.0=50", "--json")
    assert split.code == 0 and '"configured": true' in split.out
    compared = cli("models", "ab", "clf")
    assert "not enough data yet" in compared.out.splitlines()[-1]
    as_json_predict = while_working(
        cli,
        redis_client,
        INFERENCE_QUEUE,
        "models",
        "predict",
        "clf",
        "queue",
        "--caller",
        "u2",
        "--json",
    )
    assert as_json_predict.code == 0 and '"status": "completed"' in as_json_predict.out
