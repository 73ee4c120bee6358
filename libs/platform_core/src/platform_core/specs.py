"""Job specs and inference requests: what the API, the CLI and the bot send, validated the
same way everywhere, importable without torch.

The worker builds from these (tokenizers, models, the training loop, inference); the API
validates requests with them before anything is queued, so a bad value is refused with a
typed error in the caller's own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from platform_core.errors import AppError, ErrorCode, invalid_input

# byte-level BPE starts from the 256 byte symbols plus its two special tokens
BPE_MIN_VOCAB_SIZE = 258
# preset names per model family; the worker maps each to its architecture
MODEL_PRESETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("tiny", "small", "124M"),
    "char_lstm": ("tiny", "small", "medium"),
}

# ---- from trainer_worker.tokenizers.artifacts ----------------------------------------


TokenizerKind = Literal["bpe", "char", "sentencepiece"]


class CorpusOptions(BaseModel):
    """The corpus part of a request; validated form of `CorpusSpec`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, min_length=1, max_length=1024)  # None = demo corpus
    normalize_nfc: bool = True
    lowercase: bool = False
    holdout_fraction: float = Field(default=0.1, gt=0.0, le=0.5)
    seed: int = Field(default=1337, ge=0, le=2**63 - 1)

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute():
            raise ValueError("must be relative to the data root")
        return value


class TokenizerSpec(BaseModel):
    """What to train. Fields that do not apply to `kind` are ignored (see their comments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TokenizerKind
    vocab_size: int = Field(default=8000, ge=32, le=200_000)  # ignored for char
    min_frequency: int = Field(default=2, ge=1, le=1_000_000)  # bpe only
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece only
    byte_fallback: bool = True  # sentencepiece only
    num_threads: int | None = Field(default=None, ge=1, le=256)  # sentencepiece; None = all
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


@dataclass(frozen=True)
class TrainConfig:
    # data
    block_size: int = 128  # tokens per training sequence (T); must fit the model's context
    batch_size: int = 8  # sequences per micro-batch on each process (B)
    grad_accum_steps: int = 1  # micro-batches per optimizer step; global batch = B x accum x world
    # optimizer (nanoGPT's AdamW settings)
    max_steps: int = 1000  # optimizer steps to run in total (a resumed run counts from its step)
    learning_rate: float = 3e-4  # peak learning rate, reached at the end of warmup
    min_lr: float = 3e-5  # floor of the cosine decay; nanoGPT uses learning_rate / 10
    warmup_steps: int = 100  # linear warmup from ~0 to learning_rate
    lr_decay_steps: int | None = None  # step where the cosine reaches min_lr; None = max_steps
    weight_decay: float = 0.1  # applied to 2-D weights only (not biases, norms)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay; 0.95 is steadier than 0.999 for LMs
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    # evaluation, early stopping, checkpoints
    eval_every: int = 100  # steps between evaluations on the holdout (and one at step 0)
    eval_batches: int = 20  # holdout micro-batches per evaluation; bounds its cost
    early_stopping_patience: int | None = None  # evals without improvement before stopping
    early_stopping_min_delta: float = 0.0  # improvement smaller than this does not count
    # steps between interval checkpoints; None = only the final one. 200 bounds what a crash
    # loses to 200 steps, is a multiple of eval_every (each save carries a fresh eval loss for
    # keep_best_k) and gives the default 1000-step run 4 saves, of which retention keeps 1-2.
    checkpoint_every: int | None = 200
    # progress reports: whichever comes first
    progress_every_steps: int = 10  # report at least every this many steps
    progress_every_s: float = 30.0  # and at least this often on slow steps
    # compute
    device: DeviceChoice = "auto"  # auto = CUDA when present, else CPU
    precision: PrecisionChoice = "auto"  # auto = bf16 (or fp16 + GradScaler) on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile: faster steps on GPU after a slow first step
    seed: int = 1337  # seeds Python, NumPy, torch and the batch sampler

    def __post_init__(self) -> None:
        positive = {
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "grad_accum_steps": self.grad_accum_steps,
            "max_steps": self.max_steps,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
            "progress_every_steps": self.progress_every_steps,
        }
        for name, value in positive.items():
            if value < 1:
                _invalid(f"{name} must be >= 1, got {value}")
        for name, opt in (
            ("lr_decay_steps", self.lr_decay_steps),
            ("early_stopping_patience", self.early_stopping_patience),
            ("checkpoint_every", self.checkpoint_every),
        ):
            if opt is not None and opt < 1:
                _invalid(f"{name} must be >= 1 when set, got {opt}")
        if self.learning_rate < 0 or self.min_lr < 0 or self.min_lr > self.learning_rate:
            _invalid("need 0 <= min_lr <= learning_rate")
        if self.warmup_steps < 0:
            _invalid(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr_decay_steps is not None and self.lr_decay_steps <= self.warmup_steps:
            _invalid("lr_decay_steps must be greater than warmup_steps")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            _invalid("beta1 and beta2 must lie in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.early_stopping_min_delta < 0:
            _invalid("weight_decay, grad_clip and early_stopping_min_delta must be >= 0")
        if self.progress_every_s <= 0:
            _invalid("progress_every_s must be > 0")
        if self.seed < 0:
            _invalid("seed must be >= 0")

    @property
    def decay_steps(self) -> int:
        return self.lr_decay_steps if self.lr_decay_steps is not None else self.max_steps

    def to_dict(self) -> dict[str, object]:
        """JSON-safe copy for manifests, checkpoints and tracking params."""
        return asdict(self)


def _invalid(message: str) -> None:
    raise AppError(ErrorCode.CONFIG_INVALID, message)


# ---- from trainer_worker.models.registry ----------------------------------------


ModelFamily = Literal["gpt2", "char_lstm"]


class ModelSpec(BaseModel):
    """What model to build; JSON-safe so it travels in job specs and manifests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: ModelFamily
    preset: str = "tiny"
    # gpt2 only: a local folder written by save_pretrained, or a hub id such as "gpt2"
    pretrained: str | None = Field(default=None, min_length=1, max_length=500)
    # overrides the preset's dropout (fresh models only)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    # gpt2 only: overrides the preset's n_positions (fresh models only)
    context_size: int | None = Field(default=None, ge=8, le=8192)

    @model_validator(mode="after")
    def _check_family_fields(self) -> ModelSpec:
        presets = preset_names(self.family)
        if self.pretrained is None and self.preset not in presets:
            raise ValueError(
                f"unknown {self.family} preset {self.preset!r}; choose one of {sorted(presets)}"
            )
        if self.family == "char_lstm" and self.pretrained is not None:
            raise ValueError("pretrained weights are only available for the gpt2 family")
        if self.family == "char_lstm" and self.context_size is not None:
            raise ValueError("context_size applies to gpt2 only; an LSTM has no context limit")
        if self.pretrained is not None and (self.dropout is not None or self.context_size):
            raise ValueError("dropout and context_size cannot override a pretrained model")
        return self


def preset_names(family: ModelFamily) -> set[str]:
    return set(MODEL_PRESETS[family])


# ---- from trainer_worker.inference.generate ----------------------------------------


MAX_PROMPT_CHARS = 20_000  # bounds the per-step cost of re-reading the prompt


MAX_STOP_SEQUENCES = 8


MAX_STOP_SEQUENCE_CHARS = 64


GenerationStopReason = Literal["eos", "stop_sequence", "max_new_tokens"]


class GenerateRequest(BaseModel):
    """What to generate; validated in full before a model is loaded or run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)  # "" starts from end-of-text
    max_new_tokens: int = Field(default=64, ge=1, le=512)
    temperature: float = Field(default=1.0, ge=0.0, le=5.0)  # 0 = greedy (argmax)
    top_k: int | None = Field(default=None, ge=1, le=100_000)  # keep the k likeliest tokens
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)  # keep the nucleus of mass p
    stop_sequences: tuple[str, ...] = Field(default=(), max_length=MAX_STOP_SEQUENCES)
    stop_on_eos: bool = True
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)  # None = a fresh random seed
    num_return_sequences: int = Field(default=1, ge=1, le=10)

    @field_validator("stop_sequences")
    @classmethod
    def _check_stop_sequences(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for stop in value:
            if not 1 <= len(stop) <= MAX_STOP_SEQUENCE_CHARS:
                raise ValueError(
                    f"each stop sequence must have 1 to {MAX_STOP_SEQUENCE_CHARS} characters"
                )
        return value


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


class ScoreRequest(BaseModel):
    """What to score; validated in full before a model is loaded or run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=MAX_SCORE_CHARS)
    top_k: int = Field(default=0, ge=0, le=20)  # predictions listed per position; 0 = none
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


# ---- from trainer_worker.model_run ----------------------------------------


# A fixed prompt set makes samples comparable across runs and checkpoints.
DEFAULT_PROMPTS = ("The ", "In Python, ", "A function ")


class RetentionSpec(BaseModel):
    """Which checkpoints a run keeps. The best ones are judged by eval loss (lower is
    better)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last_n: int = Field(default=1, ge=1, le=100)  # newest checkpoints kept: resume points
    keep_best_k: int = Field(default=1, ge=1, le=2)  # best by eval loss; the contract caps it at 2
    max_total_size_gb: float | None = Field(default=None, gt=0)  # None: bounded by the counts
    min_interval_steps: int | None = Field(default=None, ge=1)  # skip saves closer than this
    # prune proactively when free disk falls under this fraction of the filesystem
    min_free_disk_fraction: float = Field(default=0.10, ge=0.0, lt=1.0)


class TrainRunSpec(BaseModel):
    """What `POST /runs/train` and `trainctl` send for a model run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSpec
    tokenizer_id: str = Field(min_length=1, max_length=64)
    corpus: CorpusOptions = Field(default_factory=CorpusOptions)
    train: TrainConfig = Field(default_factory=TrainConfig)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    sample_prompts: tuple[str, ...] = Field(default=DEFAULT_PROMPTS, max_length=10)
    sample_max_new_tokens: int = Field(default=64, ge=1, le=512)
