"""trainctl: submit, follow and inspect runs through the trainer API; the demo; run workers.

Exit codes: 0 ok, 1 training error, 2 configuration error,
3 data error, 4 storage error, 5 tracking error.

The API commands must start fast and install without torch: the worker-side commands come
from the worker package (see `worker_commands`) and are loaded only when chosen.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from platform_core.errors import AppError
from platform_core.logging import configure_logging
from platform_core.settings import Settings, load_settings
from trainer_cli import classify, demo, remote, retrain_commands, study_commands, worker_commands
from trainer_cli.worker_commands import Runner

if TYPE_CHECKING:
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsersAction = argparse._SubParsersAction


class _Subcommands(_SubParsersAction):
    """Subcommands, each with the function that runs it. A worker command is looked up only
    once it is chosen (so the others never scan the installed packages); it then gets its
    arguments and runner from the worker package, or, without it, a runner that says what to
    install whatever the arguments."""

    runners: dict[str, Runner]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, list) and values and values[0] in worker_commands.WORKER_COMMANDS:
            name = values[0]
            entry = worker_commands.find(name)
            if entry is None:
                self.runners[name] = worker_commands.not_installed(name)
                values = values[:1]  # its arguments are the absent package's to define
            else:
                self.runners[name] = worker_commands.load(entry, self.choices[name])
        super().__call__(parser, namespace, values, option_string)


def _build() -> tuple[argparse.ArgumentParser, _Subcommands]:
    parser = argparse.ArgumentParser(prog="trainctl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, action=_Subcommands)
    assert isinstance(commands, _Subcommands)
    remote.add_commands(commands)
    classify.add_commands(commands)
    study_commands.add_commands(commands)
    retrain_commands.add_commands(commands)
    demo.add_arguments(commands.add_parser("demo", help=demo.__doc__.splitlines()[0]))
    commands.runners = {name: remote.run for name in remote.COMMANDS}
    commands.runners.update({name: classify.run for name in classify.COMMANDS})
    commands.runners["demo"] = demo.run
    commands.runners["study"] = study_commands.run
    commands.runners.update({name: retrain_commands.run for name in retrain_commands.COMMANDS})
    for name, text in worker_commands.WORKER_COMMANDS.items():
        commands.add_parser(name, help=text)
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _build()
    try:
        args = parser.parse_args(argv)  # a chosen worker command is loaded here
        settings = load_settings()
        _configure_logging(settings)
        return commands.runners[args.command](settings, args)
    except AppError as error:
        print(f"trainctl: {error.code}: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("trainctl: interrupted", file=sys.stderr)
        return 130


def _configure_logging(settings: Settings) -> None:
    # The commands print for a person: keep the logs to warnings (`trainctl worker` logs at
    # the configured level as its own service).
    configure_logging(
        "trainctl", level="WARNING", fmt=settings.log_format, secret_values=settings.secret_values()
    )


if __name__ == "__main__":
    sys.exit(main())
