"""The worker-side commands (`trainctl worker`, `list-checkpoints`, `cleanup`), found in the
worker package when it is installed.

They need torch and the training engine, which an operator's laptop does not: this package
never imports the worker. The worker declares each command as an entry point of the group
`trainctl.commands`; the installed packages are searched for it, and it is loaded, only once
its command is chosen: it is called with the command's parser (it adds its arguments) and
returns the function that runs the command with the settings and the parsed arguments.
Without the worker package the command still exists, and says how to install it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from platform_core.errors import AppError, ErrorCode, ExitCode
from platform_core.settings import Settings

GROUP: Final = "trainctl.commands"
Runner = Callable[[Settings, argparse.Namespace], int]
# The worker's commands, listed by `trainctl --help` whether or not the worker is installed.
WORKER_COMMANDS: Final = {
    "worker": "run a worker on the training and inference queues",
    "list-checkpoints": "a run's checkpoints and their retention",
    "cleanup": "apply retention, remove unfinished or corrupt writes",
    "sync-tracking": "send MLflow what a finished run's tracking buffer still holds",
    "scheduler": "RQ's cron scheduler: retrain models on their schedules",
}
INSTALL_HINT: Final = (
    "pip install ./libs/platform_core ./services/worker (from a checkout of the repository; "
    "it brings torch), or run the command where a worker is installed"
)


def find(name: str) -> EntryPoint | None:
    """The entry point of the command `name`, when an installed package declares it."""
    for entry in entry_points(group=GROUP, name=name):
        return entry
    return None


def load(entry: EntryPoint, parser: argparse.ArgumentParser) -> Runner:
    """Load a chosen command: it adds its arguments to `parser` and returns its runner."""
    loaded: object = entry.load()
    if not callable(loaded):
        raise AppError(ErrorCode.INTERNAL, f"{entry.value} ({GROUP}) is not callable")
    runner: object = loaded(parser)
    if not callable(runner):
        raise AppError(ErrorCode.INTERNAL, f"{entry.value} returned no command to run")

    def run(settings: Settings, args: argparse.Namespace) -> int:
        code = runner(settings, args)
        if not isinstance(code, int):
            raise AppError(ErrorCode.INTERNAL, f"{entry.value} returned {code!r}, no exit code")
        return code

    return run


def not_installed(name: str) -> Runner:
    """The runner of a command whose package is not installed: it says what to install."""

    def explain(settings: Settings, args: argparse.Namespace) -> int:
        message = f"trainctl: `trainctl {name}` needs the worker package: {INSTALL_HINT}"
        print(message, file=sys.stderr)
        return ExitCode.CONFIG

    return explain
