"""`trainctl scheduler`: RQ's cron scheduler (`rq.cron`), ticking once a minute.

Each tick is a short job on the inference queue (`retrain_jobs.scheduled_tick`) that queues a
retraining of every model whose policy's cron expression came due (each slot once, however
many schedulers run). The per-model schedules live in Redis (`PUT /models/{name}/retrain-
policy`), so changing one needs no restart of the scheduler.
"""

from __future__ import annotations

import argparse
import logging

import redis
from rq.cron import CronScheduler

from platform_core.errors import ExitCode
from platform_core.queue import INFERENCE_QUEUE
from platform_core.retraining import TICK_CRON
from platform_core.settings import Settings
from trainer_worker.classify.retrain_jobs import scheduled_tick
from trainer_worker.cli.commands import Runner, service_connection

TICK_TIMEOUT_S = 60  # a tick reads the policies and queues a few runs: seconds at most


def add_arguments(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--name", default="", help="scheduler name (default: host and pid)")
    return run_scheduler_command


def build_scheduler(client: redis.Redis, name: str = "") -> CronScheduler:
    """The scheduler with its one cron job: the retraining tick."""
    scheduler = CronScheduler(connection=client, logging_level=logging.WARNING, name=name)
    scheduler.register(scheduled_tick, INFERENCE_QUEUE, cron=TICK_CRON, job_timeout=TICK_TIMEOUT_S)
    return scheduler


def run_scheduler_command(settings: Settings, args: argparse.Namespace) -> int:
    """Tick until SIGTERM."""
    with service_connection(settings, "model-trainer-scheduler") as client:
        build_scheduler(client, args.name).start()  # type: ignore[no-untyped-call]  # rq leaves start() unannotated
    return ExitCode.OK
