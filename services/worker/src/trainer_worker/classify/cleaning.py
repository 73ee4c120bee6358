"""Cleaning text for classification: URLs, LaTeX (math and commands), markup, whitespace;
and the normalised form whose hash finds duplicates that differ only in case, punctuation or
spacing."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from typing import Final

# a URL ends before trailing punctuation: "(see www.a.io)" keeps its ")"
_URL: Final = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]]", re.IGNORECASE)
_DISPLAY_MATH: Final = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]", re.DOTALL)
_INLINE_MATH: Final = re.compile(r"(?<!\\)\$(?:\\.|[^$\\])+\$|\\\(.+?\\\)", re.DOTALL)
# commands whose argument is a key, not prose: dropped with it
_KEY_COMMANDS: Final = re.compile(
    r"\\(?:cite[a-z]*|ref|eqref|label|url|href|includegraphics)\*?(?:\[[^\]]*\])?\{[^}]*\}"
)
# any other command: dropped, its braced argument (prose, e.g. \emph{...}) kept
_COMMAND: Final = re.compile(r"\\[A-Za-z]+\*?(?:\[[^\]]*\])?")
_ESCAPED: Final = re.compile(r"\\([$%&#_])")  # \$5 is a dollar sign in prose
_TAG: Final = re.compile(r"<[^>]{0,500}>")
_BRACES: Final = re.compile(r"[{}]")
_SPACE: Final = re.compile(r"\s+")
_WORD: Final = re.compile(r"\w+")


def clean_text(text: str) -> str:
    """`text` without URLs, math, LaTeX commands and markup, its whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = _URL.sub(" ", text)
    text = _DISPLAY_MATH.sub(" ", text)
    text = _INLINE_MATH.sub(" ", text)
    text = _ESCAPED.sub(r"\1", text)
    text = _KEY_COMMANDS.sub(" ", text)
    text = _COMMAND.sub(" ", text)
    text = html.unescape(_TAG.sub(" ", text))
    text = _BRACES.sub("", text)
    return _SPACE.sub(" ", text).strip()


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def text_key(text: str) -> str:
    """SHA-256 of the text's words, case-folded: equal for texts that differ only in case,
    punctuation or spacing."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()
