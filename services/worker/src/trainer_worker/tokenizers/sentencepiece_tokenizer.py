"""SentencePiece (unigram or BPE) through the `sentencepiece` package, trained in memory.

Training reads the corpus line by line from an iterator and returns the serialised model
(`model_writer`), so nothing is written until the artifact folder is. The trainer is set up
to be lossless on ordinary text, unlike SentencePiece's defaults:

- identity normalisation and no whitespace collapsing or dummy prefix, so spacing survives;
- "\\n" is a user-defined symbol: lines are the trainer's sentences, yet text keeps newlines;
- byte fallback (on by default): characters outside the vocabulary become UTF-8 byte pieces
  instead of `<unk>`;
- `hard_vocab_limit=False`, so a small corpus that cannot fill `vocab_size` still trains.

`sentencepiece` has no type information; `_SpmModel` is the thin typed face the rest uses.
Artifact: `spm.model` (the standard protobuf model file).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from platform_core.errors import AppError, ErrorCode

MODEL_FILE = "spm.model"
EOS_SYMBOL = "<|endoftext|>"
PAD_SYMBOL = "<pad>"
UNK_SYMBOL = "<unk>"


@dataclass(frozen=True, slots=True)
class SentencePieceConfig:
    vocab_size: int = 8000  # a soft limit: small corpora may end with fewer pieces
    model_type: Literal["unigram", "bpe"] = "unigram"  # unigram is SentencePiece's default
    byte_fallback: bool = True  # unseen characters -> byte pieces (adds 256 pieces), lossless
    character_coverage: float = 0.9995  # share of characters kept as pieces; rest -> fallback
    num_threads: int | None = None  # trainer threads; None = all CPU cores
    input_sentence_size: int = 2_000_000  # lines sampled for training (memory bound); 0 = all
    max_sentence_length: int = 16_384  # bytes; longer lines are skipped by the trainer


class _SpmModel:
    """Typed adapter over `sentencepiece.SentencePieceProcessor`."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)

    def piece_size(self) -> int:
        return int(self._processor.get_piece_size())

    def unk_id(self) -> int | None:
        return _enabled(int(self._processor.unk_id()))

    def eos_id(self) -> int | None:
        return _enabled(int(self._processor.eos_id()))

    def pad_id(self) -> int | None:
        return _enabled(int(self._processor.pad_id()))

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._processor.encode(text)]

    def decode(self, ids: list[int]) -> str:
        return str(self._processor.decode(ids))


def _enabled(piece_id: int) -> int | None:
    return piece_id if piece_id >= 0 else None  # SentencePiece says -1 for "disabled"


def _train_model_proto(sentences: Iterator[str], config: SentencePieceConfig) -> bytes:
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences,
            model_writer=buffer,
            vocab_size=config.vocab_size,
            model_type=config.model_type,
            byte_fallback=config.byte_fallback,
            character_coverage=config.character_coverage,
            num_threads=config.num_threads or os.cpu_count() or 1,
            input_sentence_size=config.input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=config.max_sentence_length,
            hard_vocab_limit=False,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            user_defined_symbols=["\n"],
            unk_id=0,
            eos_id=1,
            pad_id=2,
            bos_id=-1,  # models add <|endoftext|> between documents; no BOS needed
            unk_piece=UNK_SYMBOL,
            eos_piece=EOS_SYMBOL,
            pad_piece=PAD_SYMBOL,
            minloglevel=2,  # the C++ trainer logs to stderr by default; keep warnings+errors
        )
    except RuntimeError as exc:
        # "INTERNAL: src/trainer_interface.cc(638) [...] Vocabulary size is smaller than ..."
        reason = str(exc).rsplit("] ", 1)[-1].strip()
        code = ErrorCode.CONFIG_INVALID if "vocab" in reason.lower() else ErrorCode.TRAINING_FAILED
        raise AppError(code, f"sentencepiece training failed: {reason}") from exc
    return buffer.getvalue()


def _lines(documents: Iterable[str]) -> Iterator[str]:
    for document in documents:
        for line in document.split("\n"):
            if line.strip():
                yield line


class SentencePieceTokenizer:
    """A trained SentencePiece model; implements the `Tokenizer` protocol."""

    def __init__(self, model: _SpmModel) -> None:
        self._model = model
        self._vocab_size = model.piece_size()

    @classmethod
    def train(cls, documents: Iterable[str], config: SentencePieceConfig) -> SentencePieceTokenizer:
        return cls(_SpmModel(_train_model_proto(_lines(documents), config)))

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        path = directory / MODEL_FILE
        if not path.is_file():
            raise AppError(ErrorCode.DATA_NOT_FOUND, f"{MODEL_FILE} missing in {directory}")
        try:
            model = _SpmModel(path.read_bytes())
        except RuntimeError as exc:  # the C++ side rejects a corrupt protobuf
            raise AppError(
                ErrorCode.DATA_INVALID, f"{MODEL_FILE} in {directory} cannot be loaded"
            ) from exc
        return cls(model)

    @property
    def kind(self) -> str:
        return "sentencepiece"

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eos_id(self) -> int | None:
        return self._model.eos_id()

    @property
    def pad_id(self) -> int | None:
        return self._model.pad_id()

    @property
    def unk_id(self) -> int | None:
        return self._model.unk_id()

    def encode(self, text: str) -> list[int]:
        return self._model.encode(text)

    def decode(self, ids: list[int]) -> str:
        if ids and (min(ids) < 0 or max(ids) >= self._vocab_size):
            raise AppError(ErrorCode.INVALID_INPUT, f"token ids must be in [0, {self._vocab_size})")
        return self._model.decode(ids)

    def save(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self._model.model_proto)
