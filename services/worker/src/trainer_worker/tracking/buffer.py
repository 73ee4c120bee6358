"""The outage buffer: an append-only JSONL file in the run folder
(`runs/<id>/tracking/buffer.jsonl`) holding every metric MLflow has not confirmed yet.

The sender appends each batch before it tries to send it and truncates the file only after
MLflow confirmed everything in it, so a crash at any point leaves nothing unsent behind: at
worst rows that MLflow already has, which replay recognises by their (key, step) and skips.
A line cut short by a crash is skipped when the file is read back: only a row whose very
write the process died in can be lost (appends are not fsynced; a power cut may lose the
last second). Past 100 MB the buffer warns, once, and keeps growing: training never
waits for MLflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from trainer_worker.tracking.event_metrics import MetricRow

_log = logging.getLogger(__name__)
WARN_BYTES: Final = 100 * 1024 * 1024  # the seed's threshold (000 §4)


class MetricBuffer:
    """The rows of one run that MLflow has not confirmed, on disk."""

    def __init__(self, path: Path, *, warn_bytes: int = WARN_BYTES) -> None:
        self._path = path
        self._warn_bytes = warn_bytes
        self._warned = False

    @property
    def path(self) -> Path:
        return self._path

    def size_bytes(self) -> int:
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0

    def load(self) -> list[MetricRow]:
        """Every whole row the file holds, oldest first."""
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        rows: list[MetricRow] = []
        for line in text.splitlines():
            try:
                rows.append(MetricRow.from_json(line))
            except (ValueError, KeyError, TypeError):  # a line cut by a crash
                _log.warning(
                    "unreadable buffered metric skipped",
                    extra={"event": "tracking.buffer.unreadable"},
                )
        return rows

    def append(self, rows: list[MetricRow]) -> None:
        if not rows:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as handle:
            handle.write("".join(row.to_json() + "\n" for row in rows))
        size = self.size_bytes()
        if size > self._warn_bytes and not self._warned:
            self._warned = True
            _log.warning(
                "tracking buffer past %d MB: MLflow has not answered for a while",
                self._warn_bytes // (1024 * 1024),
                extra={"event": "tracking.buffer.large", "size_bytes": size},
            )

    def clear(self) -> None:
        """Everything was confirmed: empty the file (it stays, for the next rows)."""
        if self._path.exists():
            self._path.write_bytes(b"")
        self._warned = False
