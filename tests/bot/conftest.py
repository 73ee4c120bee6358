"""The bot's commands talk to a real API server: the API tests' fixtures, reused."""

from tests.api.conftest import api_settings, corpus, known, live_api

__all__ = ["api_settings", "corpus", "known", "live_api"]
