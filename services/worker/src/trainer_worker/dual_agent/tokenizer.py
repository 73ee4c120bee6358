"""The encoder's tokenizer: a `transformers` fast tokenizer, so that every token carries its
character offsets (the evidence head's spans map back to the text through them).

A from-scratch encoder gets a lower-cased WordPiece vocabulary built with the `tokenizers`
library from the run's training texts and saved in the run folder (a resumed attempt loads it
back rather than training it again); a pretrained encoder brings its own.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from platform_core.errors import AppError, ErrorCode

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"  # BERT's specials
SPECIALS = (PAD, UNK, CLS, SEP, MASK)


def train_wordpiece(texts: list[str], vocab_size: int, folder: Path) -> PreTrainedTokenizerFast:
    """A BERT-style tokenizer ([CLS] text [SEP], lower case) over `texts`' vocabulary, saved
    in `folder` (tokenizer.json + tokenizer_config.json) and loaded back from it.

    The vocabulary is every character (alone and as a `##` continuation) and then the most
    frequent words, ties broken alphabetically: the same texts always give the same
    tokenizer (the `tokenizers` WordPiece trainer breaks ties in hash order, so two runs of
    one spec would differ), and no word is ever out of vocabulary.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] += 1
    chars = sorted({char for word in counts for char in word})
    vocab = [*SPECIALS, *chars, *(f"##{char}" for char in chars)]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: max(0, vocab_size - len(vocab))]
    backend = Tokenizer(
        models.WordPiece(vocab={token: i for i, token in enumerate(vocab)}, unk_token=UNK)
    )
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece()
    cls_id, sep_id = backend.token_to_id(CLS), backend.token_to_id(SEP)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)]
    )
    folder.mkdir(parents=True, exist_ok=True)
    backend.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": UNK,
        "pad_token": PAD,
        "cls_token": CLS,
        "sep_token": SEP,
        "mask_token": MASK,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return load_fast_tokenizer(folder)


def load_fast_tokenizer(source: str | Path) -> PreTrainedTokenizerFast:
    """A saved tokenizer folder (the run's, or a pretrained encoder's), fast ones only:
    a slow tokenizer has no offset mapping."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), use_fast=True)
    except (OSError, ValueError) as exc:
        raise AppError(
            ErrorCode.DATA_NOT_FOUND, f"no tokenizer could be loaded from {source}"
        ) from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise AppError(
            ErrorCode.CONFIG_INVALID,
            f"the tokenizer of {source} has no fast version (offset mappings are needed)",
        )
    if tokenizer.pad_token_id is None:
        raise AppError(ErrorCode.CONFIG_INVALID, f"the tokenizer of {source} has no pad token")
    return tokenizer
