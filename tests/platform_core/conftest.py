"""Fixtures of the platform_core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.platform_core.scripted_server import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
