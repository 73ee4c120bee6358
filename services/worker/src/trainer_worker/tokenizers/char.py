"""Character-level tokenizer: one token per Unicode code point seen in training.

The vocabulary is the special tokens (ids 0..k-1, in config order) followed by the sorted set
of characters of the training text, so the same corpus always gives the same ids. Characters
never seen map to `<unk>`; that makes encoding lossy for them, which the holdout statistics
measure. Special tokens are not parsed out of text: "<pad>" in the input is five characters.
Artifact: `vocab.json`, the tokens in id order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from platform_core.errors import AppError, ErrorCode

VOCAB_FILE = "vocab.json"
EOS_SYMBOL = "<|endoftext|>"
PAD_SYMBOL = "<pad>"
UNK_SYMBOL = "<unk>"


@dataclass(frozen=True, slots=True)
class CharConfig:
    special_tokens: tuple[str, ...] = (EOS_SYMBOL, PAD_SYMBOL, UNK_SYMBOL)  # ids 0.. in this order
    unk_token: str = UNK_SYMBOL  # what unseen characters become; must be a special token

    def __post_init__(self) -> None:
        if self.unk_token not in self.special_tokens:
            raise AppError(
                ErrorCode.CONFIG_INVALID,
                f"unk_token {self.unk_token!r} must be one of the special tokens",
            )
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise AppError(ErrorCode.CONFIG_INVALID, "special tokens must be distinct")


class _VocabFile(BaseModel):
    """On-disk layout of `vocab.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["char-v1"] = "char-v1"
    special_tokens: list[str]
    unk_token: str
    tokens: list[str]  # id -> token; special tokens first, then single characters


class CharTokenizer:
    """A character vocabulary; implements the `Tokenizer` protocol."""

    def __init__(self, tokens: list[str], special_tokens: tuple[str, ...], unk_token: str) -> None:
        self._tokens = tokens
        self._special_tokens = special_tokens
        self._index = {token: i for i, token in enumerate(tokens)}
        self._unk_id = self._index[unk_token]

    @classmethod
    def train(cls, text: str, config: CharConfig) -> CharTokenizer:
        specials = set(config.special_tokens)
        # Sorted, not first-seen order: ids depend only on the set of characters.
        chars = sorted(set(text) - specials)
        return cls([*config.special_tokens, *chars], config.special_tokens, config.unk_token)

    @classmethod
    def load(cls, directory: Path) -> CharTokenizer:
        path = directory / VOCAB_FILE
        if not path.is_file():
            raise AppError(ErrorCode.DATA_NOT_FOUND, f"{VOCAB_FILE} missing in {directory}")
        try:
            vocab = _VocabFile.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise AppError(
                ErrorCode.DATA_INVALID, f"{VOCAB_FILE} in {directory} is malformed"
            ) from exc
        specials = tuple(vocab.special_tokens)
        regular = vocab.tokens[len(specials) :]
        if (
            tuple(vocab.tokens[: len(specials)]) != specials
            or vocab.unk_token not in specials
            or any(len(token) != 1 for token in regular)
            or len(set(vocab.tokens)) != len(vocab.tokens)
        ):
            raise AppError(ErrorCode.DATA_INVALID, f"{VOCAB_FILE} in {directory} is inconsistent")
        return cls(list(vocab.tokens), specials, vocab.unk_token)

    @property
    def kind(self) -> str:
        return "char"

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def eos_id(self) -> int | None:
        return self._index.get(EOS_SYMBOL)

    @property
    def pad_id(self) -> int | None:
        return self._index.get(PAD_SYMBOL)

    @property
    def unk_id(self) -> int:
        return self._unk_id

    def encode(self, text: str) -> list[int]:
        index, unk = self._index, self._unk_id
        return [index.get(char, unk) for char in text]

    def decode(self, ids: list[int]) -> str:
        if ids and (min(ids) < 0 or max(ids) >= len(self._tokens)):
            raise AppError(
                ErrorCode.INVALID_INPUT, f"token ids must be in [0, {len(self._tokens)})"
            )
        tokens = self._tokens
        return "".join(tokens[i] for i in ids)

    def save(self, directory: Path) -> None:
        vocab = _VocabFile(
            special_tokens=list(self._special_tokens),
            unk_token=self._tokens[self._unk_id],
            tokens=self._tokens,
        )
        # ensure_ascii=False keeps the file readable for non-Latin vocabularies.
        (directory / VOCAB_FILE).write_text(
            json.dumps(vocab.model_dump(), ensure_ascii=False, indent=1), encoding="utf-8"
        )
