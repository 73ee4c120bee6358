"""Small real inputs for the training-engine tests: a text, its byte ids, a character codec.

The text is Python's own help topics (`pydoc_data.topics`): real English prose and code,
always installed, never downloaded. The codec meets the tokenizer Protocol without
depending on any tokenizer backend.
"""

from __future__ import annotations

import json
import pydoc_data.topics
from pathlib import Path

import torch

from trainer_worker.tokenizers.protocol import Tokenizer


def corpus_text(chars: int = 40_000) -> str:
    topics = pydoc_data.topics.topics
    return "\n".join(topics[name] for name in sorted(topics))[:chars]


def byte_ids(text: str) -> torch.Tensor:
    """UTF-8 bytes as token ids: a 256-token vocabulary with no tokenizer at all."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def train_eval_split(chars: int = 40_000) -> tuple[torch.Tensor, torch.Tensor]:
    ids = byte_ids(corpus_text(chars))
    cut = int(ids.numel() * 0.9)
    return ids[:cut], ids[cut:]


class CharCodec:
    """One id per character seen in `alphabet`, plus an end-of-text id after them."""

    def __init__(self, alphabet: str) -> None:
        self._chars = sorted(set(alphabet))
        self._index = {c: i for i, c in enumerate(self._chars)}

    @property
    def kind(self) -> str:
        return "char"

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + 1

    @property
    def eos_id(self) -> int | None:
        return len(self._chars)

    @property
    def pad_id(self) -> int | None:
        return None

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in text if c in self._index]

    def decode(self, ids: list[int]) -> str:
        return "".join(self._chars[i] for i in ids if i < len(self._chars))

    def save(self, directory: Path) -> None:
        (directory / "chars.json").write_text(json.dumps(self._chars), encoding="utf-8")


def char_codec(text: str) -> Tokenizer:
    """Typed as the Protocol, so mypy checks the codec really meets it."""
    return CharCodec(text)
