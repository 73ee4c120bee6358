"""Byte-level BPE (GPT-2 style) trained with Hugging Face `tokenizers`.

Text is first mapped to bytes, so every string is encodable and decoding is lossless: there
is no unknown token. The trainer runs in Rust on all cores (rayon; `RAYON_NUM_THREADS` caps
it). Artifact: `tokenizer.json`, loadable by `tokenizers.Tokenizer.from_file` and by
transformers' `PreTrainedTokenizerFast(tokenizer_file=...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from platform_core.errors import AppError, ErrorCode

TOKENIZER_FILE = "tokenizer.json"
EOS_SYMBOL = "<|endoftext|>"
PAD_SYMBOL = "<pad>"
# 256 byte symbols form the initial alphabet; merges are learned on top of them.
BYTE_ALPHABET_SIZE = 256


@dataclass(frozen=True, slots=True)
class BPEConfig:
    vocab_size: int = 8000  # bytes + merges + special tokens; GPT-2 uses 50257
    min_frequency: int = 2  # a pair seen fewer times is never merged (noise guard)
    special_tokens: tuple[str, ...] = (EOS_SYMBOL, PAD_SYMBOL)  # get ids 0.. in this order

    def __post_init__(self) -> None:
        minimum = BYTE_ALPHABET_SIZE + len(self.special_tokens)
        if self.vocab_size < minimum:
            raise AppError(
                ErrorCode.CONFIG_INVALID,
                f"byte-level BPE needs vocab_size >= {minimum} "
                f"({BYTE_ALPHABET_SIZE} bytes + {len(self.special_tokens)} special tokens), "
                f"got {self.vocab_size}",
            )


class BPETokenizer:
    """A trained byte-level BPE tokenizer; implements the `Tokenizer` protocol."""

    def __init__(self, backend: HFTokenizer) -> None:
        self._backend = backend
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(cls, documents: Iterable[str], config: BPEConfig) -> BPETokenizer:
        backend = HFTokenizer(models.BPE())
        # No prefix space: " x" and "x" stay distinct, so decode(encode(text)) == text.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=list(config.special_tokens),
            # Every byte is in the vocabulary even if the corpus never shows it.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(documents, trainer=trainer)
        return cls(backend)

    @classmethod
    def load(cls, directory: Path) -> BPETokenizer:
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise AppError(ErrorCode.DATA_NOT_FOUND, f"{TOKENIZER_FILE} missing in {directory}")
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on bad JSON
            raise AppError(
                ErrorCode.DATA_INVALID, f"{TOKENIZER_FILE} in {directory} cannot be loaded"
            ) from exc
        return cls(backend)

    @property
    def kind(self) -> str:
        return "bpe"

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eos_id(self) -> int | None:
        return self._backend.token_to_id(EOS_SYMBOL)

    @property
    def pad_id(self) -> int | None:
        return self._backend.token_to_id(PAD_SYMBOL)

    @property
    def unk_id(self) -> int | None:
        return None  # byte-level: every byte has a token

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        if ids and (min(ids) < 0 or max(ids) >= self._vocab_size):
            raise AppError(ErrorCode.INVALID_INPUT, f"token ids must be in [0, {self._vocab_size})")
        # Special tokens are kept so that decode(encode(text)) == text even when the text
        # spells "<|endoftext|>" itself.
        return self._backend.decode(ids, skip_special_tokens=False)

    def save(self, directory: Path) -> None:
        self._backend.save(str(directory / TOKENIZER_FILE))
