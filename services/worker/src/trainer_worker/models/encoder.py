"""The BERT-like encoder of the dual-agent and classifier families (issues #12 and #14).

Either built from a preset and trained from scratch (with the family's own WordPiece), or
loaded pretrained from a local folder: a `data:` folder under the data root, a hub id's
snapshot in the local cache (`fetch_pretrained`: cache first, bounded retries, an offline
error that says how to fetch it by hand), or a packaged model such as the `minilm` extra's
MiniLM. A pretrained encoder always comes with its folder's own tokenizer (the families'
runs load it from the same folder).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, PreTrainedModel

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import PACKAGED_MODELS


@dataclass(frozen=True)
class EncoderPreset:
    """A small BERT trained from scratch (nanoGPT-style config: one default per field)."""

    hidden_size: int = 64  # width of every token state
    num_layers: int = 2  # transformer blocks
    num_heads: int = 2  # attention heads (hidden_size / num_heads per head)
    intermediate_size: int = 128  # feed-forward width
    max_positions: int = 128  # longest input, tokens ([CLS] and [SEP] included)
    dropout: float = 0.1  # hidden and attention dropout


# platform_core.specs.PRESET_SHAPES["dual_agent"] and ["classifier"] mirror these (tests keep
# them equal)
ENCODER_PRESETS = {
    "tiny": EncoderPreset(),
    "small": EncoderPreset(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_positions=256
    ),
}


def encoder_config(
    preset: EncoderPreset,
    vocab_size: int,
    pad_id: int,
    *,
    dropout: float | None = None,
    max_positions: int | None = None,
) -> BertConfig:
    """The BERT config of `preset` over a tokenizer's vocabulary; `dropout` and
    `max_positions` override the preset's (a spec's `dropout` and `context_size`)."""
    rate = preset.dropout if dropout is None else dropout
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=max_positions or preset.max_positions,
        hidden_dropout_prob=rate,
        attention_probs_dropout_prob=rate,
        pad_token_id=pad_id,
    )


def load_pretrained(
    auto_class: type[AutoModel] | type[AutoModelForSequenceClassification],
    folder: Path,
    **options: object,
) -> PreTrainedModel:
    """`auto_class.from_pretrained` on a local folder (never the network: `fetch_pretrained`
    already placed a hub model's files there); a folder that holds no such model is
    MODEL_NOT_FOUND, naming what is wrong without the server's paths."""
    try:
        # from_pretrained is untyped in transformers; both auto classes build a PreTrainedModel
        model: PreTrainedModel = auto_class.from_pretrained(
            str(folder), local_files_only=True, **options
        )
    except (OSError, ValueError) as exc:
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"pretrained folder {folder.name!r} holds no model {auto_class.__name__} can load "
            f"({type(exc).__name__}: no config.json or weights, or an architecture without "
            "that head)",
        ) from exc
    return model


def packaged_model_folder(name: str) -> Path:
    """The model folder inside an installed package named by `PACKAGED_MODELS` (found
    without importing it); MODEL_NOT_FOUND with the extra to install when it is missing."""
    packaged = PACKAGED_MODELS[name]
    found = importlib.util.find_spec(packaged.module)
    if found is None or found.origin is None:
        raise AppError(
            ErrorCode.MODEL_NOT_FOUND,
            f"pretrained model {name!r} is a Python package that is not installed on this "
            f"worker: pip install 'trainer-worker[{packaged.extra}]' (or `{name}=="
            f"{packaged.version}`) and restart the worker",
        )
    return Path(found.origin).parent / packaged.folder


def freeze_lower_layers(model: PreTrainedModel, layers: int) -> None:
    """Keep the embeddings and the lowest `layers` encoder blocks of a BERT-like model as
    they are (`requires_grad` off; the loop's optimizer takes trainable parameters only):
    no gradient flows below the first trainable block, so a step's backward pass costs only
    the blocks above it. INVALID_INPUT when the model has fewer blocks than `layers`."""
    if layers == 0:
        return
    blocks = int(model.config.num_hidden_layers)
    if layers > blocks:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"classifier.freeze_layers ({layers}) exceeds the model's {blocks} encoder blocks",
        )
    base = model.base_model_prefix  # "bert" for BERT-like encoders such as MiniLM
    frozen = (f"{base}.embeddings.", *(f"{base}.encoder.layer.{i}." for i in range(layers)))
    for name, parameter in model.named_parameters():
        if name.startswith(frozen):
            parameter.requires_grad = False


class _GivenStates(nn.Module):
    """Stands in for the embeddings while `FrozenPrefix.upper` runs: the hidden states the
    caller passes as `inputs_embeds` enter the first trainable block as they are. It holds
    the modules swapped out (`kept`: the embeddings and the frozen blocks), never running
    them, so the model's buffers stay reachable: a DDP wrapper reads them again at every
    forward to broadcast them, and a model left with none fails its internal assert."""

    def __init__(self, kept: list[nn.Module]) -> None:
        super().__init__()
        self.kept = nn.ModuleList(kept)

    def forward(self, inputs_embeds: Tensor | None = None, **_: object) -> Tensor:
        if inputs_embeds is None:
            raise ValueError("the frozen prefix's states go in as inputs_embeds")
        return inputs_embeds


_HEAD_SHAPE = ("num_attention_heads", "attention_head_size")  # a BERT attention's ints


class _FirstTokenBlock(nn.Module):
    """A BERT block that computes the first token's output only, for a head that reads
    nothing else (a `[CLS]` pooler): its keys and values still come from every token, but
    its query, attention output and feed-forward run on one token instead of T, so a top
    block costs about a fifth at 32 tokens. Its output is (B, 1, H): what the whole block
    gives at position 0, with the same parameters and, in training, the same dropouts."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    @staticmethod
    def fits(block: nn.Module) -> bool:
        """Whether `block` is laid out as transformers' `BertLayer` (and its RoBERTa-like
        copies): attention.self.{query,key,value,dropout}, attention.output, intermediate
        and output, and no cross-attention."""
        attention = getattr(block, "attention", None)
        heads = getattr(attention, "self", None)
        return (
            all(isinstance(getattr(heads, n, None), nn.Linear) for n in ("query", "key", "value"))
            and isinstance(getattr(heads, "dropout", None), nn.Dropout)
            and all(isinstance(getattr(heads, n, None), int) for n in _HEAD_SHAPE)
            and isinstance(getattr(heads, "scaling", None), float)
            and all(
                isinstance(getattr(block, n, None), nn.Module) for n in ("intermediate", "output")
            )
            and isinstance(getattr(attention, "output", None), nn.Module)
            and not getattr(block, "add_cross_attention", False)
        )

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, *_: object, **__: object
    ) -> Tensor:
        block = self.block
        attention = block.get_submodule("attention")
        heads = attention.get_submodule("self")
        batch, tokens, _width = hidden_states.shape
        first = hidden_states[:, :1]
        count, size = (int(_number(heads, n)) for n in _HEAD_SHAPE)
        query = heads.get_submodule("query")(first).view(batch, 1, count, size).transpose(1, 2)
        key, value = (
            heads.get_submodule(n)(hidden_states).view(batch, tokens, count, size).transpose(1, 2)
            for n in ("key", "value")
        )
        mask = attention_mask  # the model's own 4-D mask (B, 1, T or 1, T), or None
        if mask is not None and mask.dim() == 4 and mask.size(-2) == tokens:
            mask = mask[:, :, :1]  # the first token's row
        dropout = heads.get_submodule("dropout")
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=_number(dropout, "p") if dropout.training else 0.0,
            scale=_number(heads, "scaling"),
        )
        mixed = attention.get_submodule("output")(
            context.transpose(1, 2).reshape(batch, 1, -1), first
        )
        out: Tensor = block.get_submodule("output")(
            block.get_submodule("intermediate")(mixed), mixed
        )
        return out


def _number(module: nn.Module, name: str) -> float:
    value = getattr(module, name)
    if not isinstance(value, int | float):
        raise TypeError(f"{type(module).__name__}.{name} is not a number")
    return value


class FrozenPrefix:
    """The embeddings and the lowest `layers` blocks of a BERT-like model, frozen by
    `freeze_lower_layers`, used as a fixed feature extractor: `states` runs them once per
    text in eval mode (no dropout, no autograd), and inside `upper()` the model's own
    forward, `model(inputs_embeds=states, attention_mask=mask)`, runs only the blocks above
    them, the pooler and the head; the top block computes the first token only
    (`_FirstTokenBlock`) while `first_token` holds. In eval mode the two halves compute
    what one forward does (`splits_exactly` checks it on the model at hand, and turns
    `first_token` off for a head that reads more than the first token)."""

    def __init__(
        self, model: PreTrainedModel, layers: int, blocks: nn.ModuleList, *, first_token: bool
    ) -> None:
        self.layers = layers
        self._module: nn.Module = model  # nn.Module's typed train() / eval()
        self._base: nn.Module = model.base_model
        self._encoder = self._base.get_submodule("encoder")
        self._blocks = blocks  # the encoder's own list of blocks
        self.first_token = (
            first_token and layers < len(blocks) and _FirstTokenBlock.fits(blocks[-1])
        )

    @classmethod
    def of(
        cls, model: PreTrainedModel, layers: int, *, first_token: bool = True
    ) -> FrozenPrefix | None:
        """The prefix, or None when nothing is frozen or the model is not laid out as a
        BERT-like encoder (`<base>.embeddings`, `<base>.encoder.layer`); `first_token`
        False keeps the whole top block (to measure what the first-token one saves)."""
        if layers == 0:
            return None
        base = model.base_model
        blocks = getattr(getattr(base, "encoder", None), "layer", None)
        if not isinstance(getattr(base, "embeddings", None), nn.Module):
            return None
        if not isinstance(blocks, nn.ModuleList) or len(blocks) < layers:
            return None
        return cls(model, layers, blocks, first_token=first_token)

    @contextmanager
    def _swapped(self, embeddings: nn.Module, blocks: list[nn.Module]) -> Iterator[None]:
        """The base model with other embeddings and blocks for the duration (the same
        parameters: nothing is copied, and the state dict is whole again afterwards)."""
        base = self._base
        kept_embeddings, kept_blocks = base.get_submodule("embeddings"), self._blocks
        base.embeddings, self._encoder.layer = embeddings, nn.ModuleList(blocks)
        try:
            yield
        finally:
            base.embeddings, self._encoder.layer = kept_embeddings, kept_blocks

    @torch.no_grad()
    def states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T, H) hidden states after the frozen blocks, in eval mode."""
        was_training = self._module.training
        self._module.eval()
        try:
            with self._swapped(self._base.get_submodule("embeddings"), self._lower()):
                out = self._base(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            self._module.train(was_training)
        states: Tensor = out.last_hidden_state
        return states

    @contextmanager
    def upper(self) -> Iterator[None]:
        """Inside, `model(inputs_embeds=states, attention_mask=mask)` runs the blocks above
        the prefix, the pooler and the head on `states`."""
        upper = list(self._blocks)[self.layers :]
        if self.first_token:
            upper[-1] = _FirstTokenBlock(upper[-1])
        kept = [self._base.get_submodule("embeddings"), *self._lower()]
        with self._swapped(_GivenStates(kept), upper):
            yield

    def _lower(self) -> list[nn.Module]:
        return list(self._blocks)[: self.layers]

    def splits_exactly(self, input_ids: Tensor, attention_mask: Tensor) -> bool:
        """Whether the prefix's states through `upper()` give one eval-mode forward's
        logits (to float32 rounding) on these rows: first with the first-token top block,
        then, when that differs (a head that pools every token), with the whole top block,
        which `upper()` then keeps."""
        was_training = self._module.training
        self._module.eval()
        try:
            with torch.no_grad():
                whole = self._module(input_ids=input_ids, attention_mask=attention_mask).logits
                states = self.states(input_ids, attention_mask)
                while True:
                    with self.upper():
                        split = self._module(inputs_embeds=states, attention_mask=attention_mask)
                    logits = split.logits  # a per-token head's differ in shape
                    if logits.shape == whole.shape and torch.allclose(
                        whole, logits, rtol=1e-4, atol=1e-5
                    ):
                        return True
                    if not self.first_token:
                        return False
                    self.first_token = False
        finally:
            self._module.train(was_training)
