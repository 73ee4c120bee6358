"""The classifier family's spec (presets mirrored in platform_core, its options, early
stopping with patience 2 by default) and the report's pure helpers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from platform_core.json_types import JsonObject
from platform_core.specs import PRESET_SHAPES, TrainRunSpec
from trainer_worker.classify.model import CLASSIFIER_PRESETS
from trainer_worker.classify.report import confusion_matrix, percentile


def _spec(**extra: object) -> JsonObject:
    spec: JsonObject = {
        "model": {"family": "classifier", "preset": "tiny"},
        "classifier": {"dataset_id": "ds-1"},
    }
    spec.update(extra)  # type: ignore[arg-type]  # test payloads: any JSON the API could get
    return spec


def test_the_specs_preset_shapes_are_the_workers_presets() -> None:
    assert set(PRESET_SHAPES["classifier"]) == set(CLASSIFIER_PRESETS)
    for name, preset in CLASSIFIER_PRESETS.items():
        shape = PRESET_SHAPES["classifier"][name]
        assert (shape.n_layer, shape.width, shape.n_head, shape.context) == (
            preset.num_layers,
            preset.hidden_size,
            preset.num_heads,
            preset.max_positions,
        )


def test_a_classifier_spec_stops_early_with_patience_two_unless_told() -> None:
    assert TrainRunSpec.model_validate(_spec()).train.early_stopping_patience == 2
    told = TrainRunSpec.model_validate(_spec(train={"early_stopping_patience": 5}))
    assert told.train.early_stopping_patience == 5
    off = TrainRunSpec.model_validate(_spec(train={"early_stopping_patience": None}))
    assert off.train.early_stopping_patience is None
    assert TrainRunSpec.model_validate(_spec()).classifier_options.quantize is True


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"model": {"family": "classifier"}}, "needs classifier options"),
        (_spec(tokenizer_id="tok-1"), "trains its own tokenizer"),
        (
            {"model": {"family": "gpt2"}, "tokenizer_id": "t", "classifier": {"dataset_id": "d"}},
            "apply to the classifier family only",
        ),
        (_spec(classifier={"dataset_id": "../etc"}), "dataset_id"),
        (_spec(classifier={"dataset_id": "d", "latency_samples": 10_000}), "latency_samples"),
        (_spec(classifier={"dataset_id": "d", "extra": 1}), "extra"),
        (_spec(train={"block_size": 256}), "exceeds the context"),
        (_spec(classifier={"dataset_id": "d", "freeze_layers": 2}), "needs model.pretrained"),
    ],
)
def test_bad_classifier_specs_are_refused(spec: JsonObject, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        TrainRunSpec.model_validate(spec)


def test_the_confusion_matrix_counts_true_by_predicted() -> None:
    truth = ["a", "a", "b", "c", "c", "c"]
    guess = ["a", "b", "b", "c", "a", "c"]
    assert confusion_matrix(truth, guess, ["a", "b", "c"]) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_thepercentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0], 0.5) == 1.0
