"""Every event type: encode -> decode round trip, golden JSON, and typed decode failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from platform_core.events import (
    EVENT_TYPES,
    Event,
    EventDecodeError,
    JobFailed,
    JobStarted,
    JobStartedPayload,
    decode_event,
    encode_event,
)
from tests.platform_core.event_samples import samples

GOLDEN = Path(__file__).parent / "golden_events"


def _ids(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def test_samples_cover_every_event_type() -> None:
    sample_types = {type(e) for e in samples()}
    assert sample_types == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 17


@pytest.mark.parametrize("event", samples(), ids=_ids(samples()))
def test_round_trip(event: Event) -> None:
    raw = encode_event(event)
    assert decode_event(raw) == event
    assert decode_event(raw.decode("utf-8")) == event


@pytest.mark.parametrize("event", samples(), ids=_ids(samples()))
def test_golden_json(event: Event) -> None:
    """The wire format of each event is pinned in a file: a schema change shows up in review.
    Regenerate deliberately with UPDATE_GOLDEN=1."""
    path = GOLDEN / f"{event.type}.json"
    rendered = json.dumps(json.loads(encode_event(event)), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(rendered, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == rendered
    assert decode_event(path.read_bytes()) == event


def test_events_are_frozen() -> None:
    event = samples()[1]
    with pytest.raises(ValueError, match="frozen"):
        event.run_id = "other"  # type: ignore[misc]  # assigning to a frozen model is the point


def test_only_the_last_lifecycle_event_ends_a_run() -> None:
    ending = {type(event).__name__ for event in samples() if event.ends_run}
    # a study is a run without lifecycle events of its own: its completion ends it
    assert ending == {"JobCompleted", "JobCancelled", "JobFailed", "StudyCompleted"}
    failed = next(event for event in samples() if isinstance(event, JobFailed))
    payload = failed.payload.model_copy(update={"retrying": True})
    retried = failed.model_copy(update={"payload": payload})
    assert failed.ends_run != retried.ends_run and not retried.ends_run


def _started() -> dict[str, object]:
    event = JobStarted(
        run_id="r", payload=JobStartedPayload(kind="train_model", worker="w", attempt=1)
    )
    data: dict[str, object] = json.loads(encode_event(event))
    return data


def _with(**changes: object) -> bytes:
    data = _started()
    data.update(changes)
    return json.dumps(data).encode()


def _without(field: str) -> bytes:
    data = _started()
    del data[field]
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"run_id": "r"}', "no 'type' field"),
        (
            _with(type="trainer.job.started.v2"),
            "unknown version of event type 'trainer.job.started'",
        ),
        (_with(type="trainer.job.exploded.v1"), "unknown event type 'trainer.job.exploded.v1'"),
        (_with(type=7), "unknown event type 7"),
        (_with(surprise=1), "surprise: Extra inputs are not permitted"),
        (_without("run_id"), "run_id: Field required"),
        (_with(payload={"kind": "train_model", "worker": "w", "attempt": 0}), "payload.attempt"),
        (_with(payload={"kind": "dance", "worker": "w", "attempt": 1}), "payload.kind"),
        (_with(ts="yesterday"), "ts:"),
    ],
)
def test_decode_failures_raise_one_typed_error(raw: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(raw)
    assert reason in info.value.message
    assert info.value.code.value == "EVENT_DECODE_FAILED"


def test_decode_error_never_echoes_values() -> None:
    secret_text = "the owner's private corpus line"
    with pytest.raises(EventDecodeError) as info:
        decode_event(_with(payload={"kind": "train_model", "worker": secret_text, "attempt": -1}))
    assert secret_text not in str(info.value)
