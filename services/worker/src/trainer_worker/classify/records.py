"""The one row every collector yields and preparation consumes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabelledText:
    text: str
    label: str
    id: str | None = None  # the source's id (arXiv id, a file's id column); None: none given
