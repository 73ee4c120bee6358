"""The API test fixtures (a live uvicorn server on the real Redis, the project's client on it,
a corpus), for the worker's jobs and inference tests."""

from __future__ import annotations

from tests.api.conftest import api_settings, client, corpus, live_api

__all__ = ["api_settings", "client", "corpus", "live_api"]
