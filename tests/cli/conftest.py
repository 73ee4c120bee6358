"""The API test fixtures (a live uvicorn server on the real Redis, the project's client on it,
a corpus), for trainctl's API commands and the demo."""

from __future__ import annotations

from tests.api.conftest import api_settings, client, corpus, live_api

__all__ = ["api_settings", "client", "corpus", "live_api"]
