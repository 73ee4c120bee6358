"""JSON, JSON Lines and CSV files: rows read, ids optional, bad rows reported by number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from platform_core.errors import AppError, ErrorCode
from trainer_worker.classify.local_files import file_rows
from trainer_worker.classify.records import LabelledText

EXPECTED = [
    LabelledText(text="first text", label="a", id="1"),
    LabelledText(text="second, with a comma", label="b", id=None),
]


def test_the_three_formats_read_the_same_rows(tmp_path: Path) -> None:
    objects = [
        {"id": 1, "text": "first text", "label": "a"},
        {"text": "second, with a comma", "label": "b"},
    ]
    (tmp_path / "rows.json").write_text(json.dumps(objects))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(o) + "\n\n" for o in objects))
    (tmp_path / "rows.csv").write_text('id,text,label\n1,first text,a\n,"second, with a comma",b\n')
    for name in ("rows.json", "rows.jsonl", "rows.csv"):
        assert list(file_rows(tmp_path / name)) == EXPECTED, name


def test_named_columns_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "hub.jsonl"
    path.write_text(json.dumps({"sentence": "hello there", "category": 3}) + "\n")
    rows = list(file_rows(path, text_field="sentence", label_field="category"))
    assert rows == [LabelledText(text="hello there", label="3")]


def test_bad_rows_are_listed_by_number(tmp_path: Path) -> None:
    rows = [
        {"text": "ok", "label": "a"},
        {"text": "no label"},
        ["not", "an", "object"],
        {"text": "x", "label": ""},
        {"text": "x", "label": "a", "id": 2.5},
    ]
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(AppError) as caught:
        list(file_rows(tmp_path / "bad.json"))
    assert caught.value.code is ErrorCode.DATA_INVALID
    assert caught.value.message == (
        "bad.json: 4 invalid row(s): row 2: missing label; row 3: must be an object with "
        "text and label, not list; row 4: label must be a non-empty string or an integer; "
        "row 5: id must be a non-empty string or an integer when given"
    )


def test_broken_json_line_csv_header_and_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "t", "label": "a"}\n{oops\n')
    with pytest.raises(AppError, match="row 2 is not JSON"):
        list(file_rows(tmp_path / "a.jsonl"))
    (tmp_path / "b.csv").write_text("body,label\nx,a\n")
    with pytest.raises(AppError, match="header must name text and label"):
        list(file_rows(tmp_path / "b.csv"))
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(AppError, match=r"set source\.format") as caught:
        list(file_rows(tmp_path / "c.txt"))
    assert caught.value.code is ErrorCode.INVALID_INPUT
    with pytest.raises(AppError) as missing:
        list(file_rows(tmp_path / "absent.csv"))
    assert missing.value.code is ErrorCode.DATA_NOT_FOUND
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "\xff", "label": "a"}\n')
    with pytest.raises(AppError, match="not UTF-8"):
        list(file_rows(tmp_path / "d.jsonl"))
