"""How well a trained tokenizer fits text it has not seen: statistics on the holdout.

Definitions (all computed on the holdout text exactly as the tokenizer receives it):

- coverage: the fraction of holdout characters that are covered. A character is covered when
  encoding it on its own yields no unknown token and decoding gives the character back.
  Byte-level BPE (and SentencePiece with byte fallback) covers every character: 1.0.
- oov_rate: the fraction of whitespace-separated holdout words whose encoding contains the
  unknown token. 0.0 for a tokenizer without an unknown token.
- tokens_per_char: tokens of the whole holdout / its characters (lower = better compression).
- tokens_per_word: tokens of the whole holdout / its whitespace-separated words.
- num_holdout_chars, num_holdout_tokens: the counts behind the ratios.

An empty holdout (a one-document corpus) gives coverage 1.0 and all rates 0.0: there is
nothing the tokenizer failed on. Characters and words are counted once per distinct value and
weighted by frequency, so the cost grows with the vocabulary of the holdout, not its length.
"""

from __future__ import annotations

from collections import Counter

from platform_core.manifests import TokenizerStats
from trainer_worker.tokenizers.protocol import Tokenizer


def compute_stats(tokenizer: Tokenizer, holdout_text: str, unk_id: int | None) -> TokenizerStats:
    """Statistics of `tokenizer` on `holdout_text`; `unk_id` is the backend's unknown token
    (None when it has none, as byte-level BPE)."""
    num_chars = len(holdout_text)
    if num_chars == 0:
        return TokenizerStats(
            coverage=1.0,
            oov_rate=0.0,
            tokens_per_char=0.0,
            tokens_per_word=0.0,
            num_holdout_chars=0,
            num_holdout_tokens=0,
        )
    num_tokens = len(tokenizer.encode(holdout_text))
    words = Counter(holdout_text.split())
    num_words = sum(words.values())
    return TokenizerStats(
        coverage=_coverage(tokenizer, Counter(holdout_text), unk_id, num_chars),
        oov_rate=_oov_rate(tokenizer, words, unk_id, num_words),
        tokens_per_char=num_tokens / num_chars,
        tokens_per_word=num_tokens / num_words if num_words else 0.0,
        num_holdout_chars=num_chars,
        num_holdout_tokens=num_tokens,
    )


def _coverage(
    tokenizer: Tokenizer, chars: Counter[str], unk_id: int | None, num_chars: int
) -> float:
    covered = 0
    for char, count in chars.items():
        ids = tokenizer.encode(char)
        if (unk_id is None or unk_id not in ids) and tokenizer.decode(ids) == char:
            covered += count
    return covered / num_chars


def _oov_rate(
    tokenizer: Tokenizer, words: Counter[str], unk_id: int | None, num_words: int
) -> float:
    if unk_id is None or num_words == 0:
        return 0.0
    oov = sum(count for word, count in words.items() if unk_id in tokenizer.encode(word))
    return oov / num_words
