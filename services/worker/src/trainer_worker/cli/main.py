"""trainctl: submit, follow and inspect runs through the trainer API; run workers; the demo.

Exit codes follow the seeds' CLI contract: 0 ok, 1 training error, 2 configuration error,
3 data error, 4 storage error, 5 tracking error.

The API commands must start fast, so the modules that load torch (the checkpoint commands)
are imported only by the command that uses them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from platform_core.errors import AppError, ExitCode
from platform_core.event_bus import EventBus
from platform_core.logging import configure_logging
from platform_core.redis_connection import open_redis
from platform_core.settings import Settings, load_settings
from trainer_worker.cli import demo, remote

Configure = Callable[[argparse.ArgumentParser], None]
if TYPE_CHECKING:
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsersAction = argparse._SubParsersAction


class _Subcommands(_SubParsersAction):
    """Subcommands whose arguments may be added only once one is chosen (`deferred`)."""

    deferred: dict[str, Configure]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, list) and values and values[0] in self.deferred:
            name = values[0]
            self.deferred.pop(name)(self.choices[name])
        super().__call__(parser, namespace, values, option_string)


def _list_checkpoints_arguments(parser: argparse.ArgumentParser) -> None:
    from trainer_worker.cli import checkpoint_commands  # noqa: PLC0415 - loads torch

    checkpoint_commands.add_list_arguments(parser)


def _cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    from trainer_worker.cli import checkpoint_commands  # noqa: PLC0415 - loads torch

    checkpoint_commands.add_cleanup_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainctl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, action=_Subcommands)
    assert isinstance(commands, _Subcommands)
    remote.add_commands(commands)

    worker = commands.add_parser("worker", help="run a worker on the training and inference queues")
    worker.add_argument("--queues", nargs="+", default=["training", "inference"])
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.add_argument("--name", default=None, help="worker name (default: host and pid)")

    demo.add_arguments(commands.add_parser("demo", help=demo.__doc__.splitlines()[0]))
    commands.add_parser("list-checkpoints", help="a run's checkpoints and their retention")
    commands.add_parser("cleanup", help="apply retention, remove unfinished or corrupt writes")
    commands.deferred = {
        "list-checkpoints": _list_checkpoints_arguments,
        "cleanup": _cleanup_arguments,
    }
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _configure(settings, args.command)
        if args.command in remote.COMMANDS:
            return remote.run(settings, args)
        if args.command in ("list-checkpoints", "cleanup"):  # disk only: works while Redis is down
            return _checkpoint_command(settings, args)
        redis_url = settings.redis.url.get_secret_value() if settings.redis.url else None
        is_worker = args.command == "worker"
        with open_redis(
            redis_url,
            settings.data_root,
            timeout_s=settings.redis.connect_timeout_s,
            blocking_reads=is_worker,  # an idle worker waits minutes in one BLPOP
        ) as client:
            if is_worker:
                from trainer_worker.worker import run_worker  # noqa: PLC0415 - loads rq

                bus = EventBus.from_settings(client, settings.redis)
                run_worker(client, args.queues, bus=bus, burst=args.burst, name=args.name)
                return ExitCode.OK
            # the demo's API and worker processes share this Redis; holding it here keeps an
            # embedded one up from the first process's start to the last one's stop
            return demo.run(settings, args)
    except AppError as error:
        print(f"trainctl: {error.code}: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("trainctl: interrupted", file=sys.stderr)
        return 130


def _checkpoint_command(settings: Settings, args: argparse.Namespace) -> int:
    from trainer_worker.cli import checkpoint_commands  # noqa: PLC0415 - loads torch

    if args.command == "list-checkpoints":
        return checkpoint_commands.list_checkpoints_command(settings.data_root, args)
    return checkpoint_commands.cleanup_command(settings.data_root, args)


def _configure(settings: Settings, command: str) -> None:
    service = "model-trainer-worker" if command == "worker" else "trainctl"
    # The other commands print for a person: keep the logs to warnings there.
    level = settings.logging.level if command == "worker" else "WARNING"
    configure_logging(
        service, level=level, fmt=settings.log_format, secret_values=settings.secret_values()
    )


if __name__ == "__main__":
    sys.exit(main())
