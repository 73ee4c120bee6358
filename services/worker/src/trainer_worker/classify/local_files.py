"""Rows from a file under the data root: a JSON array of objects, JSON Lines, or CSV with a
header; each row has `text`, `label` and optionally `id`. A bad row is reported with its
number (1 = the first row; for CSV the header is not counted), all bad rows at once (up to
a few), never with its text."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from platform_core.errors import AppError, ErrorCode
from trainer_worker.classify.records import LabelledText

FileFormat = Literal["json", "jsonl", "csv"]
_SUFFIXES: Final[dict[str, FileFormat]] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
MAX_ERRORS_LISTED: Final = 5
MAX_CSV_FIELD_CHARS: Final = 10_000_000  # one abstract or document; csv's default is 128 KiB


def file_format(path: Path, declared: str) -> FileFormat:
    """The declared format, or the one the suffix names for "auto"."""
    if declared in ("json", "jsonl", "csv"):
        return _SUFFIXES["." + declared]
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise AppError(
            ErrorCode.INVALID_INPUT,
            f"cannot tell the format of {path.name!r} from its suffix; set source.format to "
            "json, jsonl or csv",
        )
    return found


def file_rows(
    path: Path,
    declared_format: str = "auto",
    *,
    text_field: str = "text",
    label_field: str = "label",
) -> Iterator[LabelledText]:
    """Every row of the file, checked; DATA_INVALID listing the bad rows' numbers. A hub
    dataset names its columns (`text_field`, `label_field`)."""
    fmt = file_format(path, declared_format)
    if not path.is_file():
        raise AppError(ErrorCode.DATA_NOT_FOUND, f"dataset file {path.name!r} does not exist")
    raw_rows = {"json": _json_rows, "jsonl": _jsonl_rows, "csv": _csv_rows}[fmt](path)
    rows: list[LabelledText] = []
    errors: list[str] = []
    try:
        for number, raw in enumerate(raw_rows, start=1):
            problem = _check(_renamed(raw, text_field, label_field))
            if isinstance(problem, str):
                errors.append(f"row {number}: {problem}")
            else:
                rows.append(problem)
    except UnicodeDecodeError as exc:
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name} is not UTF-8 text") from exc
    if errors:
        listed = "; ".join(errors[:MAX_ERRORS_LISTED])
        more = len(errors) - MAX_ERRORS_LISTED
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"{path.name}: {len(errors)} invalid row(s): {listed}"
            + (f"; and {more} more" if more > 0 else ""),
        )
    yield from rows


def _check(raw: object) -> LabelledText | str:
    """The row, or what is wrong with it."""
    if not isinstance(raw, dict):
        return f"must be an object with text and label, not {type(raw).__name__}"
    missing = [key for key in ("text", "label") if key not in raw]
    if missing:
        return f"missing {' and '.join(missing)}"
    text, label, row_id = raw["text"], raw["label"], raw.get("id")
    if not isinstance(text, str):
        return f"text must be a string, not {type(text).__name__}"
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)  # numeric class ids, as many public datasets have
    if not isinstance(label, str) or not label.strip():
        return "label must be a non-empty string or an integer"
    if isinstance(row_id, int) and not isinstance(row_id, bool):
        row_id = str(row_id)
    if row_id is not None and (not isinstance(row_id, str) or not row_id):
        return "id must be a non-empty string or an integer when given"
    return LabelledText(text=text, label=label, id=row_id or None)


def _renamed(raw: object, text_field: str, label_field: str) -> object:
    """The row with its text and label columns named `text` and `label`."""
    if not isinstance(raw, dict) or (text_field, label_field) == ("text", "label"):
        return raw
    renamed = {key: value for key, value in raw.items() if key not in ("text", "label")}
    for field, name in ((text_field, "text"), (label_field, "label")):
        if field in raw:
            renamed[name] = raw[field]
    return renamed


def _json_rows(path: Path) -> Iterator[object]:
    try:
        loaded: object = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(loaded, list):
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name} must hold a JSON array of rows")
    yield from loaded


def _jsonl_rows(path: Path) -> Iterator[object]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise AppError(
                    ErrorCode.DATA_INVALID, f"{path.name}: row {number} is not JSON ({exc.args[0]})"
                ) from exc


def _csv_rows(path: Path) -> Iterator[object]:
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise AppError(
                ErrorCode.DATA_INVALID,
                f"{path.name}: the CSV header must name text and label columns (and may name id)",
            )
        for row in reader:
            # an empty id cell is no id (CSV cannot say null)
            yield {
                key: value
                for key, value in row.items()
                if key is not None and not (key == "id" and value == "")
            }
