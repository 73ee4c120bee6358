"""trainctl's worker-side commands: `worker`, `list-checkpoints`, `cleanup`,
`sync-tracking` and `scheduler`.

`trainctl` (the trainer-cli package) finds them through this package's `trainctl.commands`
entry points and loads one only once its command is chosen: each is called with the
command's parser, adds its arguments, and returns the function that runs the command with
the settings and the parsed arguments and returns its exit code. Only the checkpoint
commands load torch, and only then.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from platform_core.errors import ExitCode
from platform_core.event_bus import EventBus
from platform_core.logging import configure_logging
from platform_core.redis_connection import open_redis
from platform_core.settings import Settings

Runner = Callable[[Settings, argparse.Namespace], int]


def worker_command(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--queues", nargs="+", default=["training", "inference"])
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--name", default=None, help="worker name (default: host and pid)")
    return run_worker_command


def run_worker_command(settings: Settings, args: argparse.Namespace) -> int:
    """An RQ worker on the queues until SIGTERM (or, with --burst, until they are empty)."""
    # an idle worker waits minutes in one BLPOP
    with service_connection(settings, "model-trainer-worker", blocking_reads=True) as client:
        from trainer_worker.worker import run_worker  # noqa: PLC0415 - loads rq and the jobs

        bus = EventBus.from_settings(client, settings.redis)
        run_worker(client, args.queues, bus=bus, burst=args.burst, name=args.name)
    return ExitCode.OK


@contextmanager
def service_connection(
    settings: Settings, service: str, *, blocking_reads: bool = False
) -> Iterator[redis.Redis]:
    """A long-running command's set-up: its logs at the configured level and format, and its
    connection to the configured (or embedded) Redis."""
    configure_logging(
        service,
        level=settings.logging.level,
        fmt=settings.log_format,
        secret_values=settings.secret_values(),
    )
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url else None
    with open_redis(
        redis_url,
        settings.data_root,
        timeout_s=settings.redis.connect_timeout_s,
        blocking_reads=blocking_reads,
    ) as client:
        yield client


# The checkpoint commands work on the data root alone: they run while Redis is down.


def list_checkpoints_command(parser: argparse.ArgumentParser) -> Runner:
    from trainer_worker.cli import checkpoint_commands  # noqa: PLC0415 - loads torch

    checkpoint_commands.add_list_arguments(parser)
    return lambda settings, args: checkpoint_commands.list_checkpoints_command(
        settings.data_root, args
    )


def cleanup_command(parser: argparse.ArgumentParser) -> Runner:
    from trainer_worker.cli import checkpoint_commands  # noqa: PLC0415 - loads torch

    checkpoint_commands.add_cleanup_arguments(parser)
    return lambda settings, args: checkpoint_commands.cleanup_command(settings.data_root, args)


def sync_tracking_command(parser: argparse.ArgumentParser) -> Runner:
    from trainer_worker.cli import tracking_commands  # noqa: PLC0415 - loaded when chosen

    tracking_commands.add_arguments(parser)
    return tracking_commands.sync_tracking_command


def scheduler_command(parser: argparse.ArgumentParser) -> Runner:
    from trainer_worker.cli import scheduler_command  # noqa: PLC0415 - loaded when chosen

    return scheduler_command.add_arguments(parser)
