"""Load a UTF-8 text corpus from inside the data root and split off a deterministic holdout.

A corpus is a single `.txt` file, a folder of `*.txt` files (searched recursively, in sorted
order) or, when no path is given, the built-in demo corpus: the topic texts of the standard
library's `pydoc_data.topics` (~465 KB of English, one document per topic).

The holdout is split at document boundaries: each file of a folder is a document; a single
file is cut into blank-line-separated paragraphs (or into lines when it has no blank lines).
Document indices are shuffled with `random.Random(seed)`, so the same spec always gives the
same split, and a corpus of two or more documents always keeps at least one on each side.

Error messages name files, never their content: a corpus can be private text.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics  # stdlib: the demo corpus

from platform_core.errors import AppError, ErrorCode
from platform_core.paths import resolve_inside
from platform_core.specs import CorpusOptions

logger = logging.getLogger(__name__)

DEMO_SOURCE = "demo:pydoc_data.topics"
# Documents are joined with a blank line, which is also what separates paragraphs in a file.
DOCUMENT_SEPARATOR = "\n\n"
# A blank line: a newline, optional horizontal whitespace, and another newline.
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    path: str | None = None  # relative to the data root; None = built-in demo corpus
    normalize_nfc: bool = True  # Unicode NFC, so "é" is one code point whatever the editor wrote
    lowercase: bool = False  # fold case before training (smaller vocabularies, lossy)
    holdout_fraction: float = 0.1  # share of documents kept out of training for the stats
    seed: int = 1337  # shuffles document indices for the holdout split

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise AppError(
                ErrorCode.CONFIG_INVALID,
                f"holdout_fraction must be between 0 and 1 (exclusive), "
                f"got {self.holdout_fraction}",
            )


@dataclass(frozen=True, slots=True)
class Corpus:
    """A loaded, normalised corpus. The texts are joined on access from the documents."""

    train_documents: tuple[str, ...]
    holdout_documents: tuple[str, ...]
    sha256: str  # of the raw bytes of the files in sorted order (or of the demo texts)
    source: str  # the relative path the user gave, or DEMO_SOURCE

    @property
    def num_documents(self) -> int:
        return len(self.train_documents) + len(self.holdout_documents)

    @property
    def train_text(self) -> str:
        return DOCUMENT_SEPARATOR.join(self.train_documents)

    @property
    def holdout_text(self) -> str:
        return DOCUMENT_SEPARATOR.join(self.holdout_documents)


def load_corpus(spec: CorpusSpec, data_root: Path) -> Corpus:
    """Read, normalise and split the corpus that `spec` names.

    Raises AppError: PATH_OUTSIDE_DATA_ROOT for paths (or symlinks) leaving the data root,
    DATA_NOT_FOUND for a missing path, DATA_INVALID for files that are not UTF-8 or are empty,
    or a folder without `.txt` files.
    """
    if spec.path is None:
        source = DEMO_SOURCE
        raw_parts, texts = _demo_texts()
    else:
        source = spec.path
        raw_parts, texts = _read_files(spec.path, data_root)

    digest = hashlib.sha256()
    for raw in raw_parts:
        digest.update(raw)

    texts = [_normalize(text, spec) for text in texts]
    # One text (a single file) is split into paragraphs so that the holdout has documents.
    documents = texts if len(texts) > 1 else _split_single_text(texts[0])
    train, holdout = _split_holdout(documents, spec.holdout_fraction, spec.seed)
    corpus = Corpus(
        train_documents=train,
        holdout_documents=holdout,
        sha256=digest.hexdigest(),
        source=source,
    )
    logger.info(
        "corpus loaded",
        extra={
            "event": "corpus_loaded",
            "source": source,
            "sha256": corpus.sha256,
            "num_documents": corpus.num_documents,
            "num_holdout_documents": len(holdout),
        },
    )
    return corpus


def _demo_texts() -> tuple[list[bytes], list[str]]:
    texts = [topics[key] for key in sorted(topics)]
    return [text.encode("utf-8") for text in texts], texts


def _read_files(user_path: str, data_root: Path) -> tuple[list[bytes], list[str]]:
    root = data_root.resolve()
    target = resolve_inside(root, user_path)
    if not target.exists():
        raise AppError(ErrorCode.DATA_NOT_FOUND, f"corpus path {user_path!r} does not exist")
    if target.is_file():
        files = [target]
    elif target.is_dir():
        files = _list_text_files(target, root)
        if not files:
            raise AppError(
                ErrorCode.DATA_INVALID, f"corpus folder {user_path!r} contains no .txt files"
            )
    else:
        raise AppError(ErrorCode.DATA_INVALID, f"corpus path {user_path!r} is not a file")

    raw_parts: list[bytes] = []
    texts: list[str] = []
    for file in files:
        label = file.relative_to(root).as_posix()
        raw = _read_bytes(file, label)
        raw_parts.append(raw)
        texts.append(_decode(raw, label))
    return raw_parts, texts


def _list_text_files(folder: Path, root: Path) -> list[Path]:
    """`*.txt` files below `folder`, sorted by relative path. Symlinked folders are not
    followed; a symlinked file is checked against the data root like any user path."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".txt"):
                continue
            relative = (Path(dirpath) / name).relative_to(root).as_posix()
            resolved = resolve_inside(root, relative)
            if resolved.is_file():
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_bytes(file: Path, label: str) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise AppError(
            ErrorCode.DATA_INVALID, f"corpus file {label!r} cannot be read ({exc.strerror})"
        ) from exc


def _decode(raw: bytes, label: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"corpus file {label!r} is not valid UTF-8 (first bad byte at offset {exc.start})",
        ) from exc
    text = text.removeprefix("\ufeff")  # a byte-order mark is an encoding detail, not text
    if not text.strip():
        raise AppError(ErrorCode.DATA_INVALID, f"corpus file {label!r} is empty")
    return text


def _normalize(text: str, spec: CorpusSpec) -> str:
    if spec.lowercase:
        text = text.lower()
    if spec.normalize_nfc:
        # After lowercasing: lower() can produce combining sequences that NFC recomposes.
        text = unicodedata.normalize("NFC", text)
    return text


def _split_single_text(text: str) -> list[str]:
    """Blank-line-separated paragraphs; lines when the text has no blank line."""
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paragraphs) >= 2:
        return paragraphs
    return [line for line in text.splitlines() if line.strip()] or [text]


def _split_holdout(
    documents: list[str], fraction: float, seed: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Shuffle document indices with `seed`; the first round(n * fraction) are the holdout,
    at least one and at most n - 1 when n >= 2. Both sides keep the original order."""
    n = len(documents)
    if n < 2:
        return tuple(documents), ()
    num_holdout = min(max(round(n * fraction), 1), n - 1)
    indices = list(range(n))
    random.Random(seed).shuffle(indices)  # noqa: S311 - a reproducible split, not security
    holdout_indices = set(indices[:num_holdout])
    train = tuple(doc for i, doc in enumerate(documents) if i not in holdout_indices)
    holdout = tuple(doc for i, doc in enumerate(documents) if i in holdout_indices)
    return train, holdout


def corpus_spec(options: CorpusOptions) -> CorpusSpec:
    """The loader's spec for the corpus part of a validated request."""
    return CorpusSpec(
        path=options.path,
        normalize_nfc=options.normalize_nfc,
        lowercase=options.lowercase,
        holdout_fraction=options.holdout_fraction,
        seed=options.seed,
    )
