"""`trainctl dataset prepare|list|show` against a real API server, Redis and an in-process
worker: what a user types, what they read, the exit codes of their mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from platform_core.api_models import DatasetPublic, JobAccepted
from platform_core.errors import ExitCode
from tests.api.conftest import work
from tests.classify_models import save_tiny_classifier
from tests.cli.test_remote import Cli, cli

__all__ = ["cli"]
pytestmark = pytest.mark.integration


def test_prepare_list_and_show_a_file_dataset(
    cli: Cli, redis_client: redis.Redis, data_root: Path
) -> None:
    rows = [
        {"id": f"{label}{i}", "text": f"a note {i} about {topic} and more", "label": label}
        for label, topic in (("cats", "whiskers purring"), ("dogs", "barking fetch"))
        for i in range(12)
    ]
    (data_root / "notes.json").write_text(json.dumps(rows))
    submitted = cli(
        "dataset", "prepare", "--source", "file", "--path", "notes.json", "--id", "ds-n", "--json"
    )
    assert submitted.code == 0, submitted.err
    accepted = JobAccepted.model_validate(submitted.json())
    assert (accepted.run_id, accepted.kind) == ("ds-n", "prepare_dataset")
    work(redis_client)

    shown = cli("dataset", "show", "ds-n")
    assert shown.code == 0, shown.err
    assert "rows       24 kept of 24 read" in shown.out
    assert "cats" in shown.out and "baseline   TF-IDF + logistic regression" in shown.out
    as_json = DatasetPublic.model_validate(cli("dataset", "show", "ds-n", "--json").json())
    assert as_json.report is not None and as_json.report.class_counts == {"cats": 12, "dogs": 12}

    listed = cli("dataset", "list")
    assert listed.code == 0 and "ds-n" in listed.out and "completed" in listed.out


def test_mistakes_exit_with_their_codes(cli: Cli) -> None:
    missing = cli("dataset", "prepare", "--source", "file", "--path", "absent.csv")
    assert missing.code == ExitCode.DATA and "DATA_NOT_FOUND" in missing.err
    bad = cli("dataset", "prepare", "--source", "arxiv", "--categories", "cs.LG")
    assert bad.code == ExitCode.CONFIG and "INVALID_INPUT" in bad.err
    unknown = cli("dataset", "show", "ds-none")
    assert unknown.code != 0 and "NOT_FOUND" in unknown.err


def test_models_register_promote_rollback_and_list(cli: Cli, data_root: Path) -> None:
    save_tiny_classifier(data_root, "run-c")
    for version in ("1.0.0", "1.1.0"):
        done = cli("models", "register", "clf", "--run", "run-c", "--version", version)
        assert done.code == 0, done.err
        assert done.out.strip() == f"clf {version}: staging"
    promoted = cli("models", "promote", "clf", "1.0.0", "--actor", "ana", "--reason", "good")
    assert promoted.out.strip() == "clf 1.0.0: staging -> production"
    promoted = cli("models", "promote", "clf", "1.1.0")
    assert promoted.out.strip() == "clf 1.1.0: staging -> production (was 1.0.0)"
    back = cli("models", "rollback", "clf", "--reason", "worse online")
    assert back.out.strip() == "clf 1.0.0: archived -> production (was 1.1.0)"
    versions = cli("models", "versions", "clf")
    assert versions.out.splitlines() == [
        "1.0.0      production  from run run-c",
        "1.1.0      archived    from run run-c",
    ]
    assert "production 1.0.0" in cli("models", "list").out

    again = cli("models", "promote", "clf", "1.0.0")
    assert again.code == ExitCode.CONFIG and "CONFLICT" in again.err
    missing = cli("models", "versions", "nothing")
    assert missing.code != 0 and "NOT_FOUND" in missing.err
    bad = cli("models", "register", "clf", "--run", "run-c", "--version", "v2")
    assert bad.code == ExitCode.CONFIG and "INVALID_INPUT" in bad.err
