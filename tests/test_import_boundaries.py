"""The API, the bot, trainctl and platform_core start fast because they never load torch,
transformers or mlflow; services never import each other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "transformers", "mlflow")
SERVICES = ("trainer_api", "trainer_worker", "trainer_bot", "trainer_cli")


def _others(service: str) -> tuple[str, ...]:
    return tuple(name for name in SERVICES if name != service)


_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _modules_loaded_by(package: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, package],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("package", ["platform_core", "trainer_api", "trainer_bot", "trainer_cli"])
def test_light_packages_never_load_heavy_libraries(package: str) -> None:
    loaded = _modules_loaded_by(package)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"{package} (with every submodule) loaded {heavy[:5]}"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("platform_core", ("fastapi", "discord", *SERVICES)),
        ("trainer_api", ("discord", *_others("trainer_api"))),
        ("trainer_bot", ("fastapi", *_others("trainer_bot"))),
        ("trainer_worker", ("fastapi", "discord", *_others("trainer_worker"))),
        # an operator's CLI: no server frameworks, and no rq (it talks to the API only)
        ("trainer_cli", ("fastapi", "uvicorn", "discord", "rq", *_others("trainer_cli"))),
    ],
)
def test_packages_respect_their_boundaries(package: str, forbidden: tuple[str, ...]) -> None:
    loaded = _modules_loaded_by(package)
    crossed = sorted(m for m in loaded if m.split(".")[0] in forbidden)
    assert crossed == [], f"{package} imported {crossed[:5]}"


@pytest.mark.parametrize("package", ["trainer_api", "trainer_bot"])
def test_matplotlib_is_loaded_only_when_a_chart_is_drawn(package: str) -> None:
    loaded = _modules_loaded_by(package)  # every submodule, the chart's included
    assert sorted(m for m in loaded if m.split(".")[0] == "matplotlib") == []
