"""Tokenizer artifacts: spec validation, manifest contents, atomic publication, loading."""

from __future__ import annotations

import errno
import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from pydoc_data.topics import topics

import pytest
from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode
from platform_core.layout import DataLayout
from platform_core.manifests import TokenizerManifest, read_tokenizer_manifest
from platform_core.specs import TokenizerSpec
from trainer_worker.data.corpus import corpus_spec
from trainer_worker.tokenizers import artifacts
from trainer_worker.tokenizers.artifacts import load_tokenizer, train_tokenizer_artifact

CORPUS_TEXT = "\n\n".join(topics[key] for key in sorted(topics)[:12])  # ~50 KB, 12 topics


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "corpus").mkdir(parents=True)
    (root / "corpus" / "topics.txt").write_text(CORPUS_TEXT, encoding="utf-8")
    return root


def spec(kind: str, **overrides: object) -> TokenizerSpec:
    base: dict[str, object] = {
        "kind": kind,
        "vocab_size": 400,
        "num_threads": 1,
        "corpus": {"path": "corpus/topics.txt", "seed": 3},
    }
    return TokenizerSpec.model_validate(base | overrides)


def leftovers(data_root: Path) -> list[str]:
    folder = data_root / "tokenizers"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_bpe_artifact_writes_backend_files_and_a_complete_manifest(data_root: Path) -> None:
    manifest = train_tokenizer_artifact("bpe-small", spec("bpe"), data_root)

    folder = data_root / "tokenizers" / "bpe-small"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "tokenizer.json"]
    assert manifest.files == ["tokenizer.json"]
    assert (manifest.id, manifest.kind) == ("bpe-small", "bpe")
    assert manifest.config["vocab_size"] == 400
    assert manifest.config["special_tokens"] == ["<|endoftext|>", "<pad>"]
    raw = (data_root / "corpus" / "topics.txt").read_bytes()
    assert manifest.corpus.source == "corpus/topics.txt"
    assert manifest.corpus.sha256 == hashlib.sha256(raw).hexdigest()
    assert (manifest.corpus.num_holdout_documents or 0) >= 1
    assert manifest.stats.coverage == 1.0
    assert manifest.stats.num_holdout_tokens > 0
    assert manifest.library_versions["tokenizers"] == version("tokenizers")
    assert manifest.library_versions["sentencepiece"] == version("sentencepiece")
    assert manifest.created_at.tzinfo is not None
    assert manifest.duration_s > 0.0
    assert (manifest.eos_id, manifest.pad_id, manifest.unk_id) == (0, 1, None)
    # The file on disk is the same manifest, as plain JSON.
    on_disk = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["spec"]["corpus"]["seed"] == 3
    assert read_tokenizer_manifest(folder / "manifest.json") == manifest


@pytest.mark.parametrize("kind", ["bpe", "char", "sentencepiece"])
def test_each_kind_trains_and_loads_back(data_root: Path, kind: str) -> None:
    manifest = train_tokenizer_artifact(f"tok-{kind}", spec(kind), data_root)

    tokenizer = load_tokenizer(data_root / "tokenizers" / f"tok-{kind}")

    assert tokenizer.kind == kind
    assert tokenizer.vocab_size == manifest.vocab_size
    assert tokenizer.eos_id == manifest.eos_id
    sample = CORPUS_TEXT[:2000]
    assert tokenizer.decode(tokenizer.encode(sample)) == sample


def test_char_artifact_on_the_demo_corpus(tmp_path: Path) -> None:
    manifest = train_tokenizer_artifact("demo-char", TokenizerSpec(kind="char"), tmp_path)

    assert manifest.corpus.source == "demo:pydoc_data.topics"
    assert manifest.corpus.num_documents == len(topics)
    assert manifest.unk_id == 2
    assert 0.99 < manifest.stats.coverage <= 1.0
    assert manifest.stats.tokens_per_char == 1.0


def test_same_id_twice_is_a_conflict_and_keeps_the_first(data_root: Path) -> None:
    first = train_tokenizer_artifact("same", spec("char"), data_root)

    with pytest.raises(AppError) as info:
        train_tokenizer_artifact("same", spec("bpe"), data_root)

    assert info.value.code is ErrorCode.CONFLICT
    assert read_tokenizer_manifest(data_root / "tokenizers" / "same" / "manifest.json") == first


@pytest.mark.parametrize("bad_id", ["", "../escape", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_invalid_tokenizer_ids_are_refused(data_root: Path, bad_id: str) -> None:
    with pytest.raises(AppError) as info:
        train_tokenizer_artifact(bad_id, spec("char"), data_root)

    assert info.value.code is ErrorCode.INVALID_INPUT
    assert leftovers(data_root) == []


def test_tokenizer_dir_accepts_valid_ids(tmp_path: Path) -> None:
    expected = tmp_path.resolve() / "tokenizers" / "gpt2-v1_a-b"
    assert DataLayout(tmp_path).tokenizer_dir("gpt2-v1_a-b") == expected


def test_failure_while_writing_leaves_no_partial_folder(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(path: Path, manifest: TokenizerManifest) -> None:
        path.write_text("{", encoding="utf-8")  # half written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "write_manifest", disk_full)

    with pytest.raises(AppError) as info:
        train_tokenizer_artifact("doomed", spec("bpe"), data_root)

    assert info.value.code is ErrorCode.STORAGE_FULL
    assert leftovers(data_root) == []  # neither the tokenizer nor its staging folder


def test_unexpected_failure_propagates_and_cleans_up(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(path: Path, manifest: TokenizerManifest) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(artifacts, "write_manifest", crash)

    with pytest.raises(RuntimeError, match="boom"):
        train_tokenizer_artifact("doomed", spec("sentencepiece"), data_root)

    assert leftovers(data_root) == []
    # The id is still free: a retry after the fault succeeds.
    monkeypatch.undo()
    assert train_tokenizer_artifact("doomed", spec("char"), data_root).id == "doomed"


def test_missing_corpus_creates_nothing(data_root: Path) -> None:
    bad = spec("char", corpus={"path": "corpus/missing.txt"})

    with pytest.raises(AppError) as info:
        train_tokenizer_artifact("nothing", bad, data_root)

    assert info.value.code is ErrorCode.DATA_NOT_FOUND
    assert leftovers(data_root) == []


def test_sentencepiece_vocab_too_small_is_a_config_error(data_root: Path) -> None:
    with pytest.raises(AppError) as info:
        train_tokenizer_artifact("tiny", spec("sentencepiece", vocab_size=64), data_root)

    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert leftovers(data_root) == []


def test_load_without_manifest_is_data_not_found(tmp_path: Path) -> None:
    with pytest.raises(AppError) as info:
        load_tokenizer(tmp_path)

    assert info.value.code is ErrorCode.DATA_NOT_FOUND


def test_load_with_inconsistent_manifest_is_data_invalid(data_root: Path) -> None:
    train_tokenizer_artifact("tampered", spec("char"), data_root)
    path = data_root / "tokenizers" / "tampered" / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))

    manifest["vocab_size"] += 1
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(AppError) as info:
        load_tokenizer(path.parent)
    assert info.value.code is ErrorCode.DATA_INVALID

    manifest["kind"] = "wordpiece"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(AppError) as info:
        load_tokenizer(path.parent)
    assert info.value.code is ErrorCode.DATA_INVALID


# --- spec validation ----------------------------------------------------------------------


def test_spec_defaults_and_json_round_trip() -> None:
    parsed = TokenizerSpec.model_validate_json('{"kind": "sentencepiece"}')

    assert parsed.vocab_size == 8000
    assert parsed.model_type == "unigram"
    assert parsed.corpus.path is None
    assert corpus_spec(parsed.corpus).holdout_fraction == 0.1
    assert TokenizerSpec.model_validate_json(parsed.model_dump_json()) == parsed


@pytest.mark.parametrize(
    ("payload", "loc", "fragment"),
    [
        ({"kind": "wordpiece"}, ("kind",), "'bpe', 'char' or 'sentencepiece'"),
        ({"kind": "bpe", "vocab_size": 16}, ("vocab_size",), "greater than or equal to 32"),
        ({"kind": "bpe", "vocab_size": 300_000}, ("vocab_size",), "less than or equal"),
        ({"kind": "bpe", "vocab_size": 100}, (), "at least 258 for byte-level BPE"),
        ({"kind": "bpe", "min_frequency": 0}, ("min_frequency",), "greater than or equal"),
        ({"kind": "sentencepiece", "model_type": "word"}, ("model_type",), "'unigram' or 'bpe'"),
        ({"kind": "char", "vocab": 10}, ("vocab",), "Extra inputs are not permitted"),
        ({"kind": "char", "corpus": {"path": "/etc/passwd"}}, ("corpus", "path"), "relative"),
        ({"kind": "char", "corpus": {"path": ""}}, ("corpus", "path"), "at least 1 character"),
        (
            {"kind": "char", "corpus": {"holdout_fraction": 0.9}},
            ("corpus", "holdout_fraction"),
            "less than or equal to 0.5",
        ),
        ({"kind": "char", "corpus": {"sed": 1}}, ("corpus", "sed"), "Extra inputs"),
        ({"vocab_size": 500}, ("kind",), "Field required"),
    ],
)
def test_bad_specs_are_rejected_with_clear_errors(
    payload: dict[str, object], loc: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        TokenizerSpec.model_validate(payload)

    errors = info.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == loc
    assert fragment in errors[0]["msg"]


def test_spec_is_frozen() -> None:
    parsed = TokenizerSpec(kind="char")

    with pytest.raises(ValidationError):
        parsed.vocab_size = 100  # type: ignore[misc]  # asserting the runtime refusal
