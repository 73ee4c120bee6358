"""The default SQLite store is created whole or not at all: first runs racing to create it,
or a process killed while its migrations run, leave a store every later run can use."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform_core.layout import DataLayout
from platform_core.settings import TrackingSettings
from trainer_worker.tracking.backend import MlflowBackend, create_sqlite_store

WARM_UP = """
import sys
from pathlib import Path
from platform_core.layout import DataLayout
from platform_core.settings import TrackingSettings
from trainer_worker.tracking.backend import MlflowBackend
MlflowBackend(TrackingSettings(), DataLayout(Path(sys.argv[1]))).warm_up()
print("warm")
"""


def _tables(store: Path) -> set[str]:
    with sqlite3.connect(store) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _spawn(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WARM_UP, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_first_runs_racing_to_create_the_store_all_use_one_whole_store(tmp_path: Path) -> None:
    racers = [_spawn(tmp_path) for _ in range(3)]
    outcomes = [racer.communicate(timeout=180) for racer in racers]
    for racer, (out, err) in zip(racers, outcomes, strict=True):
        assert racer.returncode == 0 and out.strip() == "warm", err[-2000:]
    mlflow_dir = DataLayout(tmp_path).mlflow_dir
    assert sorted(p.name for p in mlflow_dir.iterdir() if p.is_file()) == ["mlflow.db"]
    tables = _tables(mlflow_dir / "mlflow.db")
    assert not {t for t in tables if t.startswith("_alembic_tmp")}
    assert {"experiments", "runs", "metrics", "registered_models"} <= tables
    backend = MlflowBackend(TrackingSettings(), DataLayout(tmp_path))
    record = backend.open_run("run-1", None, {})
    assert record.experiment_id == "1"  # the racers found one experiment, not three


@pytest.mark.parametrize("after_s", [0.1, 0.4])
def test_a_process_killed_while_creating_the_store_leaves_no_half_made_one(
    tmp_path: Path, after_s: float
) -> None:
    mlflow_dir = DataLayout(tmp_path).mlflow_dir
    creator = _spawn(tmp_path)
    deadline = time.monotonic() + 120
    # a store file (its own draft, with the fix) appears once the migrations have begun
    while not (mlflow_dir.is_dir() and any(mlflow_dir.iterdir())):
        assert creator.poll() is None, "the store was created before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(after_s)  # its migrations take about a second: kill it in the middle of them
    creator.send_signal(signal.SIGKILL)
    creator.wait(timeout=30)
    MlflowBackend(TrackingSettings(), DataLayout(tmp_path)).warm_up()  # a later run
    assert "_alembic_tmp_tags" not in _tables(mlflow_dir / "mlflow.db")
    assert "registered_models" in _tables(mlflow_dir / "mlflow.db")


def test_without_hard_links_the_finished_draft_is_moved_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # as FAT or an SMB mount says

    monkeypatch.setattr(os, "link", no_links)
    store = tmp_path / "mlflow" / "mlflow.db"
    create_sqlite_store(store)
    assert sorted(p.name for p in store.parent.iterdir()) == ["mlflow.db"]
    assert {"experiments", "registered_models"} <= _tables(store)
