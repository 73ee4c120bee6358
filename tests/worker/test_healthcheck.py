"""The worker container's health check against a real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue, Worker
from rq.cron import CronScheduler

from trainer_worker import healthcheck
from trainer_worker.healthcheck import MAX_HEARTBEAT_AGE, healthy_workers

pytestmark = pytest.mark.integration


@pytest.fixture
def registered(redis_client: redis.Redis) -> Worker:
    worker = Worker([Queue("training", connection=redis_client)], connection=redis_client)
    worker.register_birth()  # type: ignore[no-untyped-call]  # rq leaves it unannotated
    return worker


def test_a_registered_worker_of_this_host_with_a_fresh_heartbeat_is_healthy(
    registered: Worker, redis_client: redis.Redis
) -> None:
    now = datetime.now(UTC)
    assert healthy_workers(redis_client, socket.gethostname(), now) == [registered.name]
    assert healthy_workers(redis_client, "another-host", now) == []
    stale = now + MAX_HEARTBEAT_AGE + timedelta(seconds=1)
    assert healthy_workers(redis_client, socket.gethostname(), stale) == []


def test_the_command_exits_0_with_a_live_worker_and_1_without(
    registered: Worker,
    redis_url: str,
    data_root: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert healthcheck.main() == 0
    assert registered.name in capsys.readouterr().out
    registered.register_death()  # type: ignore[no-untyped-call]  # rq leaves it unannotated
    assert healthcheck.main() == 1
    assert "no live worker" in capsys.readouterr().out


def test_without_redis_configured_or_reachable_it_fails_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "APP__REDIS__URL"}}
    unset = subprocess.run(
        [sys.executable, "-m", "trainer_worker.healthcheck"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unset.returncode == 2 and "not set" in unset.stderr
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert healthcheck.main() == 1
    assert "REDIS_UNAVAILABLE" in capsys.readouterr().err


def test_the_scheduler_check_exits_0_with_a_live_scheduler_of_this_host_and_1_without(
    redis_url: str,
    redis_client: redis.Redis,
    data_root: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    scheduler = CronScheduler(redis_client, name="sched-1")
    scheduler.register_birth()
    assert healthcheck.main(["scheduler"]) == 0
    assert "healthy: sched-1" in capsys.readouterr().out
    scheduler.register_death()
    assert healthcheck.main(["scheduler"]) == 1
    assert "no live scheduler" in capsys.readouterr().out
