"""The async client covers every endpoint too: one pass over all of them against the live
server, on a known tokenizer and run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from platform_core.api_models import RunQuery
from platform_core.http_client import ApiError, AsyncTrainerClient
from platform_core.specs import GenerateRequest, ScoreRequest
from tests.api.conftest import LiveApi, char_tokenizer, tiny_run

pytestmark = pytest.mark.integration


def test_every_endpoint_through_the_async_client(
    live_api: LiveApi, known: None, corpus: str, tmp_path: Path
) -> None:
    async def tour() -> dict[str, object]:
        async with AsyncTrainerClient(live_api.base_url) as client:
            tokenizer = await client.train_tokenizer(char_tokenizer(corpus), idempotency_key="k")
            run = await client.train_model(tiny_run("tok-1", corpus, "run-2"))
            with pytest.raises(ApiError) as finished:
                await client.cancel_run("run-1")
            archive = await client.download_artifact("tokenizers", "tok-1", tmp_path / "t.tgz")
            return {
                "tokenizers": [t.tokenizer_id for t in (await client.list_tokenizers()).items],
                "new tokenizer": tokenizer.run_id,
                "vocab": (await client.get_tokenizer("tok-1")).vocab_size,
                "model runs": (await client.list_runs(RunQuery(kind="train_model"))).total,
                "run": (await client.get_run(run.run_id)).status,
                "cancel": (await client.cancel_run("run-2")).outcome,
                "cancel finished": finished.value.status,
                "logs": [line.message for line in (await client.run_logs("run-1")).lines],
                "log stream": [line.message async for line in client.stream_logs("run-1")],
                "events": [s.event.type async for s in client.stream_events("run-1")],
                "evaluate": (await client.evaluate("run-1")).kind,
                "eval": (await client.get_eval("run-1", request_id="eval-1")).samples[0].output,
                "generate": (await client.generate("run-1", GenerateRequest(prompt="a"))).kind,
                "generated": (await client.get_generate("run-1", "gen-1")).request.prompt,
                "score": (await client.score("run-1", ScoreRequest(text="a"))).kind,
                "scored": (await client.get_score("run-1", "score-1")).status,
                "archive": archive.stat().st_size > 0,
            }

    found = asyncio.run(tour())
    assert found.pop("tokenizers") == sorted(["tok-1", str(found.pop("new tokenizer"))])
    assert found == {
        "vocab": 40,
        "model runs": 2,
        "run": "queued",
        "cancel": "cancelled",
        "cancel finished": 409,
        "logs": ["hello"],
        "log stream": ["hello"],
        "events": ["trainer.job.completed.v1"],
        "evaluate": "evaluate",
        "eval": "b",
        "generate": "generate",
        "generated": "a",
        "score": "score",
        "scored": "queued",
        "archive": True,
    }
