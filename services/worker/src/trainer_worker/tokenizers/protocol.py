"""The one contract every tokenizer backend meets, and the one the models and inference use."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Tokenizer(Protocol):
    """A trained tokenizer: text <-> token ids. Loaded from its artifact folder."""

    @property
    def kind(self) -> str:
        """Backend name: "bpe", "char" or "sentencepiece"."""
        ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-text token, when the vocabulary has one."""
        ...

    @property
    def pad_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, directory: Path) -> None:
        """Write the backend's own files into `directory` (the manifest is written beside)."""
        ...
