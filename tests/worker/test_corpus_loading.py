"""Corpus loading: files, folders, the demo corpus, path safety, normalisation, holdout."""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from platform_core.errors import AppError, ErrorCode
from trainer_worker.data.corpus import DEMO_SOURCE, CorpusSpec, load_corpus

PARAGRAPHS = [f"Paragraph {i} says something about topic {i}.\nSecond line {i}." for i in range(20)]


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_single_file_is_split_into_paragraphs_with_a_holdout(data_root: Path) -> None:
    file = write(data_root / "corpus" / "book.txt", "\n\n\n".join(PARAGRAPHS) + "\n")

    corpus = load_corpus(CorpusSpec(path="corpus/book.txt", holdout_fraction=0.2), data_root)

    assert corpus.source == "corpus/book.txt"
    assert corpus.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert corpus.num_documents == 20
    assert len(corpus.holdout_documents) == 4
    # Every paragraph lands on exactly one side, unchanged apart from the trailing newline.
    together = sorted(d.strip() for d in corpus.train_documents + corpus.holdout_documents)
    assert together == sorted(PARAGRAPHS)
    assert corpus.train_text == "\n\n".join(corpus.train_documents)
    assert corpus.holdout_text.count("Paragraph") == 4


def test_file_without_blank_lines_is_split_into_lines(data_root: Path) -> None:
    write(data_root / "lines.txt", "\n".join(f"line {i}" for i in range(10)))

    corpus = load_corpus(CorpusSpec(path="lines.txt"), data_root)

    assert corpus.num_documents == 10
    assert corpus.holdout_documents  # round(10 * 0.1) == 1


def test_folder_reads_txt_files_recursively_in_sorted_order(data_root: Path) -> None:
    files = {
        "set/b.txt": "bravo text",
        "set/a.txt": "alpha text",
        "set/sub/c.txt": "charlie text",
        "set/sub/deeper/d.txt": "delta text",
    }
    for name, text in files.items():
        write(data_root / name, text)
    write(data_root / "set" / "notes.md", "not part of the corpus")

    corpus = load_corpus(CorpusSpec(path="set", holdout_fraction=0.25), data_root)

    ordered = ["set/a.txt", "set/b.txt", "set/sub/c.txt", "set/sub/deeper/d.txt"]
    expected_sha = hashlib.sha256(b"".join((data_root / n).read_bytes() for n in ordered))
    assert corpus.sha256 == expected_sha.hexdigest()
    assert corpus.num_documents == 4  # one document per file; the .md file is ignored
    assert len(corpus.holdout_documents) == 1
    assert sorted(corpus.train_documents + corpus.holdout_documents) == sorted(files.values())


def test_demo_corpus_is_pydoc_topics_in_key_order() -> None:
    corpus = load_corpus(CorpusSpec(normalize_nfc=False), Path("/nonexistent"))

    texts = [topics[key] for key in sorted(topics)]
    assert corpus.source == DEMO_SOURCE
    assert corpus.num_documents == len(topics)
    expected = hashlib.sha256("".join(texts).encode("utf-8")).hexdigest()
    assert corpus.sha256 == expected
    assert len(corpus.holdout_documents) == round(len(topics) * 0.1)
    assert len(corpus.train_text) > 300_000  # the bulk of ~465 KB stays for training
    # Each side is a subsequence of the topics: documents keep their relative order.
    for side in (corpus.train_documents, corpus.holdout_documents):
        remaining = iter(texts)
        assert all(doc in remaining for doc in side)


@pytest.mark.parametrize("path", ["../outside.txt", "corpus/../../outside.txt", "/etc/hosts"])
def test_paths_leaving_the_data_root_are_refused(data_root: Path, path: str) -> None:
    write(data_root.parent / "outside.txt", "secret text")

    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path=path), data_root)

    assert info.value.code is ErrorCode.PATH_OUTSIDE_DATA_ROOT


def test_symlink_escaping_the_data_root_is_refused(data_root: Path) -> None:
    outside = write(data_root.parent / "private" / "diary.txt", "private words")
    (data_root / "diary.txt").symlink_to(outside)

    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path="diary.txt"), data_root)

    assert info.value.code is ErrorCode.PATH_OUTSIDE_DATA_ROOT


def test_symlink_inside_a_folder_escaping_the_data_root_is_refused(data_root: Path) -> None:
    outside = write(data_root.parent / "private" / "diary.txt", "private words")
    write(data_root / "set" / "a.txt", "fine text")
    (data_root / "set" / "b.txt").symlink_to(outside)

    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path="set"), data_root)

    assert info.value.code is ErrorCode.PATH_OUTSIDE_DATA_ROOT


def test_symlink_inside_the_data_root_is_followed(data_root: Path) -> None:
    target = write(data_root / "real" / "text.txt", "one\n\ntwo")
    (data_root / "alias.txt").symlink_to(target)

    corpus = load_corpus(CorpusSpec(path="alias.txt"), data_root)

    assert corpus.num_documents == 2


def test_missing_path_is_data_not_found(data_root: Path) -> None:
    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path="nope/missing.txt"), data_root)

    assert info.value.code is ErrorCode.DATA_NOT_FOUND
    assert "nope/missing.txt" in info.value.message


def test_invalid_utf8_names_the_file_but_not_its_content(data_root: Path) -> None:
    write(data_root / "set" / "good.txt", "confidential good text")
    write(data_root / "set" / "bad.txt", b"confidential \xff\xfe broken")

    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path="set"), data_root)

    assert info.value.code is ErrorCode.DATA_INVALID
    assert "set/bad.txt" in info.value.message
    assert "UTF-8" in info.value.message
    assert "confidential" not in info.value.message


@pytest.mark.parametrize("content", ["", "  \n\n \t\n"])
def test_empty_file_is_data_invalid(data_root: Path, content: str) -> None:
    write(data_root / "empty.txt", content)

    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path="empty.txt"), data_root)

    assert info.value.code is ErrorCode.DATA_INVALID
    assert "empty.txt" in info.value.message


def test_folder_without_txt_files_is_data_invalid(data_root: Path) -> None:
    write(data_root / "set" / "readme.md", "no text files here")

    with pytest.raises(AppError) as info:
        load_corpus(CorpusSpec(path="set"), data_root)

    assert info.value.code is ErrorCode.DATA_INVALID


def test_nfc_and_lowercase_options(data_root: Path) -> None:
    decomposed = "Cafe\u0301 E\u0301COLE"  # "é" written as "e" + combining acute accent
    write(data_root / "t.txt", "\ufeff" + decomposed + "\n\nSecond PARAGRAPH")

    raw = load_corpus(CorpusSpec(path="t.txt", normalize_nfc=False), data_root)
    nfc = load_corpus(CorpusSpec(path="t.txt", normalize_nfc=True), data_root)
    lower = load_corpus(CorpusSpec(path="t.txt", normalize_nfc=True, lowercase=True), data_root)

    every = "\n\n".join([*raw.train_documents, *raw.holdout_documents])
    assert decomposed in every
    assert "\ufeff" not in every  # the byte-order mark is not text
    nfc_text = "\n\n".join([*nfc.train_documents, *nfc.holdout_documents])
    assert "Caf\u00e9 \u00c9COLE" in nfc_text
    assert unicodedata.is_normalized("NFC", nfc_text)
    lower_text = "\n\n".join([*lower.train_documents, *lower.holdout_documents])
    assert "caf\u00e9 \u00e9cole" in lower_text
    assert "second paragraph" in lower_text
    # Normalisation changes the text, never the digest of the raw input.
    assert raw.sha256 == nfc.sha256 == lower.sha256


def test_holdout_is_deterministic_by_seed(data_root: Path) -> None:
    write(data_root / "book.txt", "\n\n".join(PARAGRAPHS))

    def holdout(seed: int) -> tuple[str, ...]:
        spec = CorpusSpec(path="book.txt", holdout_fraction=0.25, seed=seed)
        return load_corpus(spec, data_root).holdout_documents

    assert holdout(7) == holdout(7)
    assert holdout(7) != holdout(8)
    assert len(holdout(7)) == len(holdout(8)) == 5


def test_two_documents_always_keep_one_in_the_holdout(data_root: Path) -> None:
    write(data_root / "two.txt", "first\n\nsecond")

    corpus = load_corpus(CorpusSpec(path="two.txt", holdout_fraction=0.01), data_root)

    assert len(corpus.train_documents) == 1
    assert len(corpus.holdout_documents) == 1


def test_one_document_has_an_empty_holdout(data_root: Path) -> None:
    write(data_root / "one.txt", "just a single line")

    corpus = load_corpus(CorpusSpec(path="one.txt"), data_root)

    assert corpus.train_documents == ("just a single line",)
    assert corpus.holdout_text == ""


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_holdout_fraction_outside_zero_one_is_a_config_error(fraction: float) -> None:
    with pytest.raises(AppError) as info:
        CorpusSpec(holdout_fraction=fraction)

    assert info.value.code is ErrorCode.CONFIG_INVALID
