"""How trainctl finds the worker-side commands: through `trainctl.commands` entry points,
loaded only once chosen; without the worker package they say what to install."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from platform_core.settings import Settings
from tests.cli.test_remote import restored_logging
from trainer_cli import worker_commands
from trainer_cli.main import main

NOT_CALLABLE = 42


def _entry(attribute: str) -> EntryPoint:
    return EntryPoint(name="worker", value=f"{__name__}:{attribute}", group=worker_commands.GROUP)


def seven_command(parser: argparse.ArgumentParser) -> worker_commands.Runner:
    parser.add_argument("--times", type=int, required=True)

    def run(settings: Settings, args: argparse.Namespace) -> int:
        assert settings.data_root.name == "data"
        return 7 * int(args.times)

    return run


def wordy_command(parser: argparse.ArgumentParser) -> object:
    return lambda settings, args: "done"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A data root, and the test runner's log handlers back after trainctl replaced them."""
    monkeypatch.setenv("APP__DATA_ROOT", str(tmp_path / "data"))
    with restored_logging():
        yield monkeypatch


def test_a_declared_command_gets_its_arguments_and_runs(env: pytest.MonkeyPatch) -> None:
    env.setattr(worker_commands, "find", lambda name: _entry("seven_command"))
    assert main(["worker", "--times", "3"]) == 21
    with pytest.raises(SystemExit):  # its own arguments, checked by argparse
        main(["worker", "--days", "3"])


def test_without_the_worker_package_its_commands_say_what_to_install(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setattr(worker_commands, "find", lambda name: None)
    for argv in (["worker", "--burst"], ["cleanup", "--help"], ["list-checkpoints"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"trainctl: `trainctl {argv[0]}` needs the worker package: "), err
        assert "pip install ./libs/platform_core ./services/worker" in err
    assert main(["demo"]) == 2  # it would start a worker
    assert "`trainctl demo` starts a worker and needs the worker package" in (
        capsys.readouterr().err
    )


def test_a_broken_entry_point_is_an_internal_error(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setattr(worker_commands, "find", lambda name: _entry("NOT_CALLABLE"))
    assert main(["worker"]) == 1
    assert "is not callable" in capsys.readouterr().err
    env.setattr(worker_commands, "find", lambda name: _entry("wordy_command"))
    assert main(["worker"]) == 1
    assert "returned 'done', no exit code" in capsys.readouterr().err


def test_the_worker_package_declares_its_commands() -> None:
    for name in worker_commands.WORKER_COMMANDS:
        entry = worker_commands.find(name)
        assert entry is not None and entry.module == "trainer_worker.cli.commands", name
