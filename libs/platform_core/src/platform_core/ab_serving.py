"""Online A/B serving of a registered model: the traffic split per model name, the stable
assignment of a caller to a version, the log of what each prediction answered and the true
labels that come back as feedback.

Redis holds it all, bounded:
- `ab:<name>:traffic`: the split (JSON); unset means all traffic to the production version.
- `ab:<name>:prediction:<id>`: one hash per prediction (version, then the predicted label and
  latency once the worker answered, then the true label once feedback came), expiring after
  `FEEDBACK_WINDOW_S`.
- `ab:<name>:log`: a stream of what was served and what was labelled, capped at `LOG_MAXLEN`.
- `ab:<name>:outcomes`: per version, how many predictions have a true label and how many of
  those were right. A prediction is counted once, by whichever of "answered" and "labelled"
  comes second (one Lua script each), so the counts never need the expired hashes.

No text of the caller's is stored: only ids, versions, labels and timings.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Final

import redis
from pydantic import ValidationError

from platform_core.ab_models import (
    TOTAL_WEIGHT,
    FeedbackRecorded,
    FeedbackRequest,
    Outcome,
    ServedModel,
    TrafficPublic,
    TrafficSplit,
)
from platform_core.errors import AppError, ErrorCode
from platform_core.inference_results import InferenceRecord, load_record
from platform_core.json_types import JsonObject
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry, semver_key

BUCKETS: Final = 10_000  # a caller's place in [0, 100) to 0.01 %: the split's resolution
FEEDBACK_WINDOW_S: Final = 30 * 24 * 3600  # true labels often come days later
LOG_MAXLEN: Final = 100_000  # log entries kept per model (MAXLEN ~): weeks of a busy model
CONFIG_FILE: Final = "config.json"  # transformers' config: the classifier's id2label


def traffic_key(name: str) -> str:
    return f"ab:{name}:traffic"


def prediction_key(name: str, prediction_id: str) -> str:
    return f"ab:{name}:prediction:{prediction_id}"


def log_key(name: str) -> str:
    return f"ab:{name}:log"


def outcomes_key(name: str) -> str:
    return f"ab:{name}:outcomes"  # hash "<version>:labelled" / "<version>:correct" -> count


# counting one outcome: shared by both scripts (whichever of answer and label comes second)
_COUNT = """
local function count(outcomes, version, right)
  redis.call('HINCRBY', outcomes, version .. ':labelled', 1)
  if right then redis.call('HINCRBY', outcomes, version .. ':correct', 1) end
end
"""

# KEYS: prediction, outcomes, log; ARGV: label, log maxlen, prediction id
_FEEDBACK = (
    _COUNT
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NO_PREDICTION') end
local version = redis.call('HGET', KEYS[1], 'version')
local predicted = redis.call('HGET', KEYS[1], 'predicted')
local existing = redis.call('HGET', KEYS[1], 'label')
if existing then
  if existing == ARGV[1] then return {0, version, predicted or false} end
  return redis.error_reply('LABELLED ' .. existing)
end
redis.call('HSET', KEYS[1], 'label', ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'event', 'feedback',
  'prediction_id', ARGV[3], 'version', version, 'label', ARGV[1])
if predicted then count(KEYS[2], version, predicted == ARGV[1]) end
return {1, version, predicted or false}
"""
)

# KEYS: prediction, outcomes, log; ARGV: predicted, latency ms, log maxlen, prediction id
_SERVED = (
    _COUNT
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'predicted') == 1 then return 0 end
local version = redis.call('HGET', KEYS[1], 'version')
redis.call('HSET', KEYS[1], 'predicted', ARGV[1], 'latency_ms', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'event', 'served',
  'prediction_id', ARGV[4], 'version', version, 'predicted', ARGV[1], 'latency_ms', ARGV[2])
local label = redis.call('HGET', KEYS[1], 'label')
if label then count(KEYS[2], version, label == ARGV[1]) end
return 1
"""
)


# ---- the split ---------------------------------------------------------------------------------


def set_traffic(
    client: redis.Redis, registry: ModelRegistry, name: str, split: TrafficSplit
) -> TrafficPublic:
    """Store `split` after checking it: every version registered (NOT_FOUND) and not archived
    (CONFLICT), the weights summing to 100 (INVALID_INPUT)."""
    stages = {state.version: state.stage for state in registry.versions(name)}
    for version in split.weights:
        if version not in stages:
            raise AppError(ErrorCode.NOT_FOUND, f"model {name} has no version {version}")
        if stages[version] == "archived":
            raise AppError(
                ErrorCode.CONFLICT, f"version {version} of {name} is archived: it serves no traffic"
            )
    total = sum(split.weights.values())
    if total != TOTAL_WEIGHT:
        raise AppError(
            ErrorCode.INVALID_INPUT, f"the weights sum to {total}; they must sum to {TOTAL_WEIGHT}"
        )
    stored = TrafficPublic(
        name=name,
        weights=dict(sorted(split.weights.items(), key=lambda item: semver_key(item[0]))),
        configured=True,
        actor=split.actor,
        updated_at=time.time(),
    )
    client.set(traffic_key(name), stored.model_dump_json())
    return stored


def get_traffic(client: redis.Redis, registry: ModelRegistry, name: str) -> TrafficPublic:
    """The stored split, else all traffic to the production version; CONFLICT when there is
    neither (nothing to serve)."""
    registry.versions(name)  # NOT_FOUND for a name never registered
    raw = client.get(traffic_key(name))
    if raw is not None:
        return TrafficPublic.model_validate_json(raw)
    production = registry.production(name)
    if production is None:
        raise AppError(
            ErrorCode.CONFLICT,
            f"model {name} has no production version and no traffic split: "
            "promote a version or PUT /models/{name}/traffic",
        )
    return TrafficPublic(name=name, weights={production: TOTAL_WEIGHT}, configured=False)


def assign(name: str, caller_id: str, weights: dict[str, int]) -> str:
    """The version a caller gets: SHA-256 of name and caller id places it in [0, 100) and the
    versions, in semantic-version order, take consecutive shares. Stable across processes
    and restarts (unlike `hash()`) while the split is unchanged."""
    digest = hashlib.sha256(f"{name}\x00{caller_id}".encode()).digest()
    place = int.from_bytes(digest[:8], "big") % BUCKETS
    bound = 0
    ordered = sorted(weights.items(), key=lambda item: semver_key(item[0]))
    for version, weight in ordered[:-1]:
        bound += weight * BUCKETS // TOTAL_WEIGHT
        if place < bound:
            return version
    return ordered[-1][0]  # the last share ends at 100


# ---- predictions -------------------------------------------------------------------------------


def version_labels(layout: DataLayout, name: str, version: str) -> list[str]:
    """The labels a registered classifier predicts (its config's id2label); CONFLICT for a
    version that is no classifier."""
    path = layout.model_version_dir(name, version) / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AppError(
            ErrorCode.CONFLICT, f"version {version} of {name} has no readable {CONFIG_FILE}"
        ) from exc
    id2label = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(id2label, dict) or not id2label:
        raise AppError(
            ErrorCode.CONFLICT, f"version {version} of {name} is not a classifier (no labels)"
        )
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def record_assignments(
    client: redis.Redis, name: str, version: str, prediction_ids: list[str]
) -> None:
    """One hash per prediction, written before its job is queued so the worker finds it."""
    now = str(time.time())
    with client.pipeline(transaction=True) as pipe:
        for prediction_id in prediction_ids:
            key = prediction_key(name, prediction_id)
            pipe.hset(key, mapping={"version": version, "created_at": now})
            pipe.expire(key, FEEDBACK_WINDOW_S)
        pipe.execute()


def prediction_ids(request_id: str, count: int) -> list[str]:
    return [f"{request_id}-{index}" for index in range(count)]


def record_served(
    client: redis.Redis, name: str, request_id: str, *, latency_ms: float
) -> InferenceRecord | None:
    """After the worker answered `request_id`: each text's predicted label and the latency
    into its prediction and the model's log (a failed request logs its error instead)."""
    record = load_record(client, "predict", request_id)
    if record is None:
        return None
    result = record.result or {}
    raw = result.get("predictions")
    answers = raw if isinstance(raw, list) else []
    served = client.register_script(_SERVED)
    for prediction_id, answer in zip(
        prediction_ids(request_id, len(answers)), answers, strict=True
    ):
        label = answer.get("label") if isinstance(answer, dict) else None
        if isinstance(label, str):
            served(
                keys=[
                    prediction_key(name, prediction_id),
                    outcomes_key(name),
                    log_key(name),
                ],
                args=[label, f"{latency_ms:.3f}", LOG_MAXLEN, prediction_id],
            )
    if record.status == "failed" and record.error is not None:
        client.xadd(
            log_key(name),
            {"event": "failed", "request_id": request_id, "error_code": record.error.code.value},
            maxlen=LOG_MAXLEN,
            approximate=True,
        )
    return record


def record_feedback(
    client: redis.Redis, layout: DataLayout, name: str, feedback: FeedbackRequest
) -> FeedbackRecorded:
    """The true label of a prediction: NOT_FOUND for an unknown (or expired) prediction,
    INVALID_INPUT for a label the version does not know, CONFLICT for a different label than
    the one already recorded; the same label again is accepted and changes nothing."""
    key = prediction_key(name, feedback.prediction_id)
    version_raw = client.hget(key, "version")
    if not isinstance(version_raw, bytes):
        raise AppError(
            ErrorCode.NOT_FOUND,
            f"model {name} has no prediction {feedback.prediction_id} (or it is older than "
            f"{FEEDBACK_WINDOW_S // 86400} days)",
        )
    version = version_raw.decode()
    labels = version_labels(layout, name, version)
    if feedback.label not in labels:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"{feedback.label!r} is not a label of {name} {version}; one of: {', '.join(labels)}",
        )
    script = client.register_script(_FEEDBACK)
    try:
        answer = script(
            keys=[key, outcomes_key(name), log_key(name)],
            args=[feedback.label, LOG_MAXLEN, feedback.prediction_id],
        )
    except redis.ResponseError as exc:
        text = str(exc).strip()
        if text.startswith("LABELLED "):
            raise AppError(
                ErrorCode.CONFLICT,
                f"prediction {feedback.prediction_id} already has the label "
                f"{text.removeprefix('LABELLED ')!r}; feedback is recorded once",
            ) from exc
        raise AppError(
            ErrorCode.NOT_FOUND, f"model {name} has no prediction {feedback.prediction_id}"
        ) from exc
    recorded, _, predicted = answer
    return FeedbackRecorded(
        prediction_id=feedback.prediction_id,
        version=version,
        label=feedback.label,
        predicted=predicted.decode() if isinstance(predicted, bytes) else None,
        recorded=bool(recorded),
    )


def outcomes(client: redis.Redis, name: str) -> list[Outcome]:
    """Per version with any labelled outcome, in semantic-version order."""
    counts: dict[str, dict[str, int]] = {}
    for field, value in client.hgetall(outcomes_key(name)).items():
        text = field.decode() if isinstance(field, bytes) else field
        version, _, what = text.partition(":")
        counts.setdefault(version, {})[what] = int(value)
    return [
        Outcome(version=version, labelled=found.get("labelled", 0), correct=found.get("correct", 0))
        for version, found in sorted(counts.items(), key=lambda item: semver_key(item[0]))
    ]


def served_model(spec: JsonObject) -> tuple[str, str] | None:
    """The registered (name, version) a predict job's spec names, if any."""
    raw = spec.get("model")
    if raw is None:
        return None
    try:
        model = ServedModel.model_validate(raw)
    except ValidationError as exc:
        raise AppError(ErrorCode.INVALID_INPUT, "the predict job's model is malformed") from exc
    return model.name, model.version
