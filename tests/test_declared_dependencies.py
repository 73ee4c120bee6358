"""Every package declares in its pyproject.toml each distribution whose modules it imports, so
that installing it alone (an operator's `pip install ./libs/platform_core ./services/cli`, a
service's image) brings everything it needs, never by luck through another package."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = {
    "libs/platform_core": "platform_core",
    "services/api": "trainer_api",
    "services/worker": "trainer_worker",
    "services/bot": "trainer_bot",
    "services/cli": "trainer_cli",
}
TYPE_ONLY = {"_typeshed"}  # typeshed's own stubs: imported for type checking, never at run time


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(folder: str) -> set[str]:
    meta = tomllib.loads((ROOT / folder / "pyproject.toml").read_text(encoding="utf-8"))
    requirements: list[str] = meta["project"]["dependencies"]
    return {_normalized(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def imported_top_levels(source: Path) -> set[str]:
    """The top-level names of the absolute imports in every module under `source`."""
    found: set[str] = set()
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("folder", "package"), sorted(PACKAGES.items()))
def test_every_package_declares_what_it_imports(folder: str, package: str) -> None:
    distributions = packages_distributions()
    declared = _declared(folder)
    imported = imported_top_levels(ROOT / folder / "src" / package)
    third_party = imported - set(sys.stdlib_module_names) - TYPE_ONLY - {package}
    undeclared = []
    for module in sorted(third_party):
        providers = {_normalized(d) for d in distributions.get(module, [module])}
        if not providers & declared:
            undeclared.append(f"{module} (from {', '.join(sorted(providers))})")
    assert undeclared == [], f"{folder}/pyproject.toml does not declare {undeclared}"


def test_the_import_scan_sees_plain_and_from_imports(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import os.path, rq\nfrom redis.exceptions import RedisError\nfrom . import sibling\n"
    )
    assert imported_top_levels(tmp_path) == {"os", "rq", "redis"}
