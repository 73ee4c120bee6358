"""Tokenizer backends: train on a slice of the demo corpus, round-trip, save/load, statistics."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics

import pytest

from platform_core.errors import AppError, ErrorCode
from trainer_worker.tokenizers.bpe import BPEConfig, BPETokenizer
from trainer_worker.tokenizers.char import VOCAB_FILE, CharConfig, CharTokenizer
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.tokenizers.sentencepiece_tokenizer import (
    SentencePieceConfig,
    SentencePieceTokenizer,
)
from trainer_worker.tokenizers.stats import compute_stats

DOCS = [topics[key] for key in sorted(topics)]
TRAIN_DOCS = DOCS[:15]  # ~60 KB: enough to learn merges, fast to train
HOLDOUT = "\n\n".join(DOCS[60:63])
# Characters the training slice does not contain, plus spacing that must survive.
EXOTIC = "  naïve café — ☃ 中文\ttab\n\n  indented <|endoftext|>\n"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TRAIN_DOCS, BPEConfig(vocab_size=600, min_frequency=2))


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer.train("\n\n".join(TRAIN_DOCS), CharConfig())


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def spm_tok(request: pytest.FixtureRequest) -> SentencePieceTokenizer:
    config = SentencePieceConfig(vocab_size=600, model_type=request.param, num_threads=2)
    return SentencePieceTokenizer.train(TRAIN_DOCS, config)


@pytest.fixture(scope="module")
def spm_unigram() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(TRAIN_DOCS, SentencePieceConfig(vocab_size=600))


def assert_save_load_identical(tokenizer: Tokenizer, loaded: Tokenizer, text: str) -> None:
    assert loaded.kind == tokenizer.kind
    assert loaded.vocab_size == tokenizer.vocab_size
    assert (loaded.eos_id, loaded.pad_id) == (tokenizer.eos_id, tokenizer.pad_id)
    assert loaded.encode(text) == tokenizer.encode(text)


# --- byte-level BPE ---------------------------------------------------------------------


def test_bpe_round_trips_any_text_losslessly(bpe: BPETokenizer) -> None:
    for text in (HOLDOUT, EXOTIC):
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_vocabulary_and_special_tokens(bpe: BPETokenizer) -> None:
    assert 258 < bpe.vocab_size <= 600
    assert (bpe.eos_id, bpe.pad_id, bpe.unk_id) == (0, 1, None)
    # Learned merges compress: far fewer tokens than bytes on English text.
    assert len(bpe.encode(HOLDOUT)) < 0.5 * len(HOLDOUT.encode("utf-8"))


def test_bpe_save_load_gives_identical_ids(bpe: BPETokenizer, tmp_path: Path) -> None:
    bpe.save(tmp_path)

    assert (tmp_path / "tokenizer.json").is_file()
    assert_save_load_identical(bpe, BPETokenizer.load(tmp_path), HOLDOUT + EXOTIC)


def test_bpe_stats_cover_every_character(bpe: BPETokenizer) -> None:
    stats = compute_stats(bpe, HOLDOUT + EXOTIC, bpe.unk_id)

    assert stats.coverage == 1.0
    assert stats.oov_rate == 0.0
    assert stats.num_holdout_chars == len(HOLDOUT + EXOTIC)
    assert stats.num_holdout_tokens == len(bpe.encode(HOLDOUT + EXOTIC))
    assert 0.1 < stats.tokens_per_char < 0.5
    assert stats.tokens_per_word > 1.0


def test_bpe_vocab_smaller_than_the_byte_alphabet_is_refused() -> None:
    with pytest.raises(AppError) as info:
        BPEConfig(vocab_size=200)

    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert "258" in info.value.message


def test_bpe_load_of_a_corrupt_file_is_data_invalid(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(AppError) as info:
        BPETokenizer.load(tmp_path)

    assert info.value.code is ErrorCode.DATA_INVALID


# --- character level ----------------------------------------------------------------------


def test_char_vocabulary_is_specials_then_sorted_characters() -> None:
    tok = CharTokenizer.train("cab bac", CharConfig())

    assert tok.vocab_size == 3 + 4  # <|endoftext|> <pad> <unk> + " ", "a", "b", "c"
    assert (tok.eos_id, tok.pad_id, tok.unk_id) == (0, 1, 2)
    assert tok.encode(" abc") == [3, 4, 5, 6]


def test_char_maps_unseen_characters_to_unk(char: CharTokenizer) -> None:
    seen = TRAIN_DOCS[3]
    assert char.decode(char.encode(seen)) == seen  # training text: every character is known
    ids = char.encode("a☃b")
    assert ids[1] == char.unk_id
    assert char.decode(ids) == "a<unk>b"


def test_char_stats_count_unseen_characters_and_words() -> None:
    tok = CharTokenizer.train("abc abc", CharConfig())

    stats = compute_stats(tok, "abd ab", tok.unk_id)

    assert stats.coverage == pytest.approx(5 / 6)  # only "d" is unknown
    assert stats.oov_rate == pytest.approx(1 / 2)  # "abd" contains <unk>, "ab" does not
    assert stats.tokens_per_char == 1.0
    assert stats.tokens_per_word == 3.0
    assert (stats.num_holdout_chars, stats.num_holdout_tokens) == (6, 6)


def test_char_stats_on_demo_holdout_with_unseen_characters(char: CharTokenizer) -> None:
    stats = compute_stats(char, HOLDOUT + EXOTIC, char.unk_id)

    assert 0.98 < stats.coverage < 1.0
    assert stats.oov_rate > 0.0


def test_char_save_load_gives_identical_ids(char: CharTokenizer, tmp_path: Path) -> None:
    char.save(tmp_path)

    assert_save_load_identical(char, CharTokenizer.load(tmp_path), HOLDOUT + EXOTIC)


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '{"special_tokens": ["<unk>"], "unk_token": "<unk>", "tokens": ["<unk>", "ab"]}',
        '{"special_tokens": ["<unk>"], "unk_token": "<pad>", "tokens": ["<unk>", "a"]}',
    ],
)
def test_char_load_of_a_malformed_vocab_is_data_invalid(tmp_path: Path, content: str) -> None:
    (tmp_path / VOCAB_FILE).write_text(content, encoding="utf-8")

    with pytest.raises(AppError) as info:
        CharTokenizer.load(tmp_path)

    assert info.value.code is ErrorCode.DATA_INVALID


def test_char_config_requires_unk_among_special_tokens() -> None:
    with pytest.raises(AppError) as info:
        CharConfig(special_tokens=("<pad>",))

    assert info.value.code is ErrorCode.CONFIG_INVALID


# --- SentencePiece ------------------------------------------------------------------------


def test_sentencepiece_round_trips_text_losslessly(spm_tok: SentencePieceTokenizer) -> None:
    for text in (HOLDOUT, EXOTIC):
        assert spm_tok.decode(spm_tok.encode(text)) == text


def test_sentencepiece_vocabulary_and_special_tokens(spm_tok: SentencePieceTokenizer) -> None:
    assert spm_tok.vocab_size == 600
    assert (spm_tok.unk_id, spm_tok.eos_id, spm_tok.pad_id) == (0, 1, 2)
    assert len(spm_tok.encode(HOLDOUT)) < 0.5 * len(HOLDOUT)


def test_sentencepiece_save_load_gives_identical_ids(
    spm_tok: SentencePieceTokenizer, tmp_path: Path
) -> None:
    spm_tok.save(tmp_path)

    assert (tmp_path / "spm.model").is_file()
    loaded = SentencePieceTokenizer.load(tmp_path)
    assert_save_load_identical(spm_tok, loaded, HOLDOUT + EXOTIC)
    assert loaded.unk_id == spm_tok.unk_id


def test_sentencepiece_with_byte_fallback_covers_everything(
    spm_tok: SentencePieceTokenizer,
) -> None:
    stats = compute_stats(spm_tok, HOLDOUT + EXOTIC, spm_tok.unk_id)

    assert stats.coverage == 1.0
    assert stats.oov_rate == 0.0


def test_sentencepiece_without_byte_fallback_reports_unknowns() -> None:
    config = SentencePieceConfig(vocab_size=300, byte_fallback=False, num_threads=1)
    tok = SentencePieceTokenizer.train(TRAIN_DOCS[:5], config)

    stats = compute_stats(tok, "plain words and a snowman ☃ here", tok.unk_id)

    assert stats.coverage == pytest.approx(31 / 32)  # the snowman alone is not covered
    assert stats.oov_rate == pytest.approx(1 / 7)


def test_sentencepiece_vocab_too_small_for_the_alphabet_is_a_config_error() -> None:
    with pytest.raises(AppError) as info:
        SentencePieceTokenizer.train(TRAIN_DOCS[:3], SentencePieceConfig(vocab_size=64))

    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert "Vocabulary size is smaller than required_chars" in info.value.message
    assert "trainer_interface.cc" not in info.value.message  # no C++ source locations


def test_sentencepiece_load_of_a_corrupt_model_is_data_invalid(tmp_path: Path) -> None:
    (tmp_path / "spm.model").write_bytes(b"definitely not a protobuf")

    with pytest.raises(AppError) as info:
        SentencePieceTokenizer.load(tmp_path)

    assert info.value.code is ErrorCode.DATA_INVALID


# --- shared behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["bpe", "char", "spm_unigram"])
def test_decode_refuses_ids_outside_the_vocabulary(
    backend: str, request: pytest.FixtureRequest
) -> None:
    tokenizer: Tokenizer = request.getfixturevalue(backend)

    for ids in ([tokenizer.vocab_size], [-1]):
        with pytest.raises(AppError) as info:
            tokenizer.decode(ids)
        assert info.value.code is ErrorCode.INVALID_INPUT
    assert tokenizer.decode([]) == ""


def test_stats_of_an_empty_holdout_are_neutral(char: CharTokenizer) -> None:
    stats = compute_stats(char, "", char.unk_id)

    assert (stats.coverage, stats.oov_rate, stats.num_holdout_tokens) == (1.0, 0.0, 0)
