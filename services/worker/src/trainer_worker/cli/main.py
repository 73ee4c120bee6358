"""trainctl: run workers, and (until the API exists for it) drive runs straight on the queue.

Exit codes follow the seeds' CLI contract: 0 ok, 1 training error, 2 configuration error,
3 data error, 4 storage error, 5 tracking error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from platform_core.errors import AppError, ExitCode
from platform_core.logging import configure_logging
from platform_core.redis_connection import open_redis
from platform_core.settings import Settings, load_settings
from trainer_worker.cli import checkpoint_commands, demo
from trainer_worker.worker import run_worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainctl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker on the training and inference queues")
    worker.add_argument("--queues", nargs="+", default=["training", "inference"])
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.add_argument("--name", default=None, help="worker name (default: host and pid)")

    demo.add_arguments(commands.add_parser("demo", help=demo.__doc__.splitlines()[0]))
    checkpoint_commands.add_list_arguments(
        commands.add_parser("list-checkpoints", help="a run's checkpoints and their retention")
    )
    checkpoint_commands.add_cleanup_arguments(
        commands.add_parser("cleanup", help="apply retention, remove unfinished or corrupt writes")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _configure(settings, args.command)
        if args.command == "list-checkpoints":  # disk only: works while Redis is down
            return checkpoint_commands.list_checkpoints_command(settings.data_root, args)
        if args.command == "cleanup":
            return checkpoint_commands.cleanup_command(settings.data_root, args)
        redis_url = settings.redis.url.get_secret_value() if settings.redis.url else None
        with open_redis(
            redis_url, settings.data_root, timeout_s=settings.redis.connect_timeout_s
        ) as client:
            if args.command == "worker":
                run_worker(client, args.queues, burst=args.burst, name=args.name)
                return ExitCode.OK
            return demo.run(client, settings, args)
    except AppError as error:
        print(f"trainctl: {error.code}: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("trainctl: interrupted", file=sys.stderr)
        return 130


def _configure(settings: Settings, command: str) -> None:
    service = "model-trainer-worker" if command == "worker" else "trainctl"
    # The demo shows a progress display on the terminal: keep the logs to warnings there.
    level = settings.logging.level if command == "worker" else "WARNING"
    configure_logging(
        service, level=level, fmt=settings.log_format, secret_values=settings.secret_values()
    )


if __name__ == "__main__":
    sys.exit(main())
