"""`Idempotency-Key` for POSTs that start work: the same key with the same body answers what
the first request answered, without queuing anything again; the same key with another body
is a 409. Keys live in Redis for a day, per endpoint (`scope`).

The first request claims the key (SET NX) before it acts, so two copies racing each other
cannot both act: the loser sees the claim and answers 409 until the winner has stored its
answer. A request that fails releases the key, so the caller may retry it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

import redis
from pydantic import BaseModel, ConfigDict

from platform_core.errors import AppError, ErrorCode

IDEMPOTENCY_TTL_S = 24 * 3600  # a client retries within minutes; a day covers any outage
_log = logging.getLogger(__name__)
AnswerT = TypeVar("AnswerT", bound=BaseModel)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fingerprint: str  # sha256 of the request body as parsed
    answer: str | None = None  # the answer's JSON; None while the first request works


def _key(scope: str, idempotency_key: str) -> str:
    # hashed: the header's text never becomes part of a Redis key as it is
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    return f"idempotency:{scope}:{digest}"


def fingerprint(body: BaseModel) -> str:
    return hashlib.sha256(body.model_dump_json().encode("utf-8")).hexdigest()


def once(
    client: redis.Redis,
    scope: str,
    *,
    idempotency_key: str | None,
    body: BaseModel,
    act: Callable[[], AnswerT],
    answer_model: type[AnswerT],
) -> AnswerT:
    """`act()`, unless a request with this key already acted: then its answer."""
    if idempotency_key is None:
        return act()
    key = _key(scope, idempotency_key)
    entry = _Entry(fingerprint=fingerprint(body))
    if not client.set(key, entry.model_dump_json(), nx=True, ex=IDEMPOTENCY_TTL_S):
        return _replay(client, key, entry.fingerprint, answer_model)
    try:
        answer = act()
    except BaseException:
        client.delete(key)
        raise
    stored = entry.model_copy(update={"answer": answer.model_dump_json()})
    client.set(key, stored.model_dump_json(), ex=IDEMPOTENCY_TTL_S)
    return answer


def _replay(
    client: redis.Redis, key: str, fingerprint: str, answer_model: type[AnswerT]
) -> AnswerT:
    raw = client.get(key)
    if raw is None:  # expired or released between our SET and GET: the caller may retry
        raise AppError(ErrorCode.CONFLICT, "a request with this Idempotency-Key just failed")
    entry = _Entry.model_validate_json(raw)
    if entry.fingerprint != fingerprint:
        raise AppError(
            ErrorCode.CONFLICT, "this Idempotency-Key was used with a different request body"
        )
    if entry.answer is None:
        raise AppError(
            ErrorCode.CONFLICT, "a request with this Idempotency-Key is still being handled"
        )
    _log.info("idempotent replay", extra={"event": "api.idempotent_replay"})
    return answer_model.model_validate_json(entry.answer)
