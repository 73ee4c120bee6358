"""Reading a run's `logs.jsonl`: the last lines (tail), and lines as they are appended
(follow, for the SSE stream). Positions are byte offsets, so a reconnecting reader resumes
exactly after the last line it got (its SSE id)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from platform_core.api_models import LogLine
from platform_core.paths import open_regular

LOG_FILE = "logs.jsonl"
MAX_TAIL_LINES = 1000  # bounds the memory and time of one GET
_BLOCK = 64 * 1024  # read backwards this much at a time to find the last lines
_MAX_READ = 4 * 1024 * 1024  # read at most this much per follow step


def tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last `lines` complete lines of `path` start: 0 for a file
    with fewer (or none), the end of its last complete line for `lines` = 0."""
    try:
        handle = open_regular(path)
    except OSError:
        return 0
    with handle:
        end = handle.seek(0, os.SEEK_END)
        # the last newline ends the last complete line (a line still being written after it
        # does not count); each newline before it starts one more line
        position, found = end, -1
        while position > 0:
            start = max(0, position - _BLOCK)
            handle.seek(start)
            block = handle.read(position - start)
            stop = len(block)
            while (index := block.rfind(b"\n", 0, stop)) != -1:
                stop = index
                found += 1
                if found == lines:
                    return start + index + 1
            position = start
        return 0


def line_start(path: Path, offset: int) -> int:
    """Where a reader that asks for `offset` resumes: never past the end of the file (a
    larger offset waits for new lines there) and always at the start of a line (an offset
    inside one goes back to its start), so no half line is ever sent."""
    try:
        handle = open_regular(path)
    except OSError:
        return 0
    with handle:
        position = min(offset, handle.seek(0, os.SEEK_END))
        while position > 0:
            start = max(0, position - _BLOCK)
            handle.seek(start)
            block = handle.read(position - start)
            index = block.rfind(b"\n")
            if index != -1:
                return start + index + 1
            position = start
        return 0


def read_lines(path: Path, offset: int) -> tuple[list[tuple[int, LogLine]], int]:
    """Complete lines from `offset` on, each with the offset just after it, and the offset to
    read from next (a partly written last line waits for its end)."""
    try:
        handle = open_regular(path)
    except OSError:
        return [], offset
    with handle:
        handle.seek(offset)
        data = handle.read(_MAX_READ)
    complete = data[: data.rfind(b"\n") + 1]
    lines: list[tuple[int, LogLine]] = []
    position = offset
    for raw in complete.splitlines(keepends=True):
        position += len(raw)
        text = raw.decode("utf-8", errors="replace").strip()
        if text:
            lines.append((position, parse_line(text)))
    return lines, offset + len(complete)


def parse_line(text: str) -> LogLine:
    """One JSON log record as a LogLine; anything else keeps its text as the message."""
    try:
        record: object = json.loads(text)
    except ValueError:
        return LogLine(message=text)
    if not isinstance(record, dict):
        return LogLine(message=text)
    return LogLine(
        message=_str(record.get("message")) or "",
        timestamp=_str(record.get("timestamp")),
        level=_str(record.get("level")),
        logger=_str(record.get("logger")),
        event=_str(record.get("event")),
        step=_int(record.get("step")),
        loss=_float(record.get("loss")),
        error_code=_str(record.get("error_code")),
    )


def tail(path: Path, lines: int) -> list[LogLine]:
    found, _ = read_lines(path, tail_offset(path, lines))
    return [line for _, line in found]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if abs(value) < float("inf") else None
