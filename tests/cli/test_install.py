"""trainctl as an operator installs it: `pip install ./libs/platform_core ./services/cli` into a
fresh virtual environment brings no torch, and its commands work against a live API; the
worker-side commands and the demo say what to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from platform_core.api_models import RunList
from tests.api.conftest import LiveApi

ROOT = Path(__file__).parents[2]
NOT_INSTALLED = ("torch", "transformers", "trainer_worker", "trainer_api", "fastapi")


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only platform_core and trainer_cli, with their declared dependencies
    from pip's configured indexes (this machine's local wheel folders first)."""
    base = tmp_path_factory.mktemp("operator")
    sources = []
    for package in ("libs/platform_core", "services/cli"):
        # a copy: building in place would leave build/ and *.egg-info in the checkout
        target = base / "src" / Path(package).name
        shutil.copytree(
            ROOT / package,
            target,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
        sources.append(str(target))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    done = subprocess.run(
        [*install, "--quiet", "-c", str(ROOT / "constraints.txt"), *sources],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _trainctl(venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APP__") and k != "REDIS_URL"}
    return subprocess.run(
        [str(venv / "bin" / "trainctl"), *args],
        env={**clean, **env},
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_the_operator_install_has_no_torch_and_lists_runs(
    operator_venv: Path, live_api: LiveApi
) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))\n"
    )
    found = subprocess.run(
        [str(operator_venv / "bin" / "python"), "-c", probe, "trainer_cli", *NOT_INSTALLED],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(found.stdout) == {"trainer_cli": True} | dict.fromkeys(NOT_INSTALLED, False)

    helped = _trainctl(operator_venv, "runs", "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: trainctl runs")

    listed = _trainctl(operator_venv, "runs", "--json", APP__API__BASE_URL=live_api.base_url)
    assert listed.returncode == 0, listed.stderr
    assert RunList.model_validate_json(listed.stdout).total == 0


@pytest.mark.integration
@pytest.mark.slow
def test_without_the_worker_its_commands_and_the_demo_say_what_to_install(
    operator_venv: Path,
) -> None:
    listed = _trainctl(operator_venv, "--help")
    assert "list-checkpoints" in listed.stdout and "worker" in listed.stdout
    for command in (["worker", "--burst"], ["list-checkpoints", "--run", "r"], ["cleanup"]):
        done = _trainctl(operator_venv, *command, APP__DATA_ROOT=str(operator_venv / "data"))
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith(f"trainctl: `trainctl {command[0]}` needs the worker package")
        assert "pip install ./libs/platform_core ./services/worker" in done.stderr
    demo = _trainctl(operator_venv, "demo", APP__DATA_ROOT=str(operator_venv / "data"))
    assert demo.returncode == 2
    assert "`trainctl demo` starts an API and needs the API package" in demo.stderr
    assert not (operator_venv / "data" / "logs").exists()  # nothing was started
