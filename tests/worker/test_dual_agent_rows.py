"""ReDSM5-format posts and where they come from: every bad row names its JSONL line or CSV
record and the problem; the file-level refusals (suffix, encoding, empty, too many posts, a
split left empty); a hub dataset read from the local hub cache; a missing file and the
generator. No model, no torch: the data alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import DualAgentOptions
from tests.worker.classify.test_hub_dataset import _cached_dataset
from trainer_worker.dual_agent import data
from trainer_worker.dual_agent.data import read_posts, split_posts
from trainer_worker.dual_agent.sources import load_splits

TEXT = "Work was fine. I can't sleep at night."
SPAN = {"criterion": "SLEEP_ISSUES", "start": 15, "end": 38, "text": TEXT[15:]}
GOOD: dict[str, object] = {
    "post_id": "p1",
    "text": TEXT,
    "criteria": ["SLEEP_ISSUES"],
    "evidence": [SPAN],
}


def _jsonl(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(AppError) as refused:
        read_posts(path)
    assert refused.value.code is ErrorCode.DATA_INVALID
    return refused.value.message


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (["p2", TEXT], "a row must be a JSON object"),
        ({**GOOD, "post_id": ""}, "post_id is missing"),
        ({**GOOD, "post_id": None}, "post_id is missing"),
        ({**GOOD, "text": "x" * (data.MAX_POST_CHARS + 1)}, "text has 20001 characters"),
        ({**GOOD, "criteria": "SLEEP_ISSUES"}, "criteria must be a list of criterion names"),
        ({**GOOD, "criteria": [1]}, "criteria must be a list of criterion names"),
        ({**GOOD, "evidence": SPAN}, "evidence must be a list of spans"),
        ({**GOOD, "criteria": ["FATIGUE"]}, "evidence for SLEEP_ISSUES but the post is not"),
        ({**GOOD, "evidence": ["15..38"]}, "evidence[0]: a span must be an object"),
        ({**GOOD, "evidence": [{**SPAN, "criterion": "SADNESS"}]}, "unknown criterion 'SADNESS'"),
        ({**GOOD, "evidence": [{**SPAN, "start": "15"}]}, "offsets '15'..38 are out of range"),
        ({**GOOD, "evidence": [{**SPAN, "start": 20, "end": 20}]}, "offsets 20..20 are out of"),
        ({**GOOD, "evidence": [{**SPAN, "start": -1}]}, "offsets -1..38 are out of range"),
    ],
)
def test_a_bad_jsonl_row_names_its_line_and_the_problem(
    tmp_path: Path, row: object, problem: str
) -> None:
    message = _refusal(_jsonl(tmp_path, json.dumps({**GOOD, "post_id": "p0"}), json.dumps(row)))
    assert message.startswith("posts.jsonl line 2")
    assert problem in message


def test_blank_lines_are_skipped_and_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    """Line numbers count the blank lines, so the number is the one an editor shows."""
    posts = read_posts(
        _jsonl(tmp_path, json.dumps(GOOD), "", "   ", json.dumps(GOOD | {"post_id": 7}))
    )
    assert [post.post_id for post in posts] == ["p1", "7"]  # a numeric id is read as text
    message = _refusal(_jsonl(tmp_path, json.dumps(GOOD), "", '{"post_id": "p2",'))
    assert message.startswith("posts.jsonl line 3: not JSON")


def test_csv_records_with_bad_evidence_offsets_or_duplicates_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    header = "post_id,text,criteria,evidence\n"
    evidence = json.dumps([SPAN]).replace('"', '""')
    good = f'p1,"{TEXT}",SLEEP_ISSUES;,"{evidence}"\n'
    unlabelled = f'p2,"{TEXT}",,\n'  # no criteria, no evidence: a post with no criterion

    path.write_text(header + good + unlabelled, encoding="utf-8")
    first, second = read_posts(path)
    assert (first.criteria, second.criteria, second.evidence) == (("SLEEP_ISSUES",), (), ())
    assert second.label_key == "NONE"

    shifted = json.dumps([{**SPAN, "start": 14}]).replace('"', '""')
    path.write_text(header + good + f'p2,"{TEXT}",SLEEP_ISSUES,"{shifted}"\n', encoding="utf-8")
    message = _refusal(path)
    assert message.startswith("posts.csv record 2 evidence[0]")
    assert "span text does not match the text at offsets 14..38" in message

    path.write_text(header + good + f'p2,"{TEXT}",SLEEP_ISSUES,"[{{15, 38}}"\n', encoding="utf-8")
    assert _refusal(path).startswith("posts.csv record 2: evidence is not a JSON list")

    path.write_text(header + good + unlabelled + good, encoding="utf-8")
    assert _refusal(path) == "posts.csv row 3: duplicated post_id 'p1'"


def test_files_that_are_not_posts_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text_file = tmp_path / "posts.txt"
    text_file.write_text(json.dumps(GOOD), encoding="utf-8")
    assert _refusal(text_file) == "posts.txt: posts must be .jsonl or .csv"

    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(
        json.dumps({**GOOD, "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    )
    assert _refusal(latin1) == "latin1.jsonl is not UTF-8 text"

    assert _refusal(_jsonl(tmp_path, "", " ")) == "posts.jsonl holds no posts"

    monkeypatch.setattr(data, "MAX_POSTS", 2)
    rows = [json.dumps({**GOOD, "post_id": f"p{i}"}) for i in range(3)]
    assert _refusal(_jsonl(tmp_path, *rows)) == "posts.jsonl: more than 2 posts"


def test_a_split_that_leaves_val_empty_is_refused() -> None:
    posts = [data.parse_post({**GOOD, "post_id": f"p{i}"}, f"row {i}") for i in range(2)]
    with pytest.raises(AppError) as refused:
        split_posts(posts, val_fraction=0.1, test_fraction=0.0, seed=1)
    assert refused.value.code is ErrorCode.DATA_INVALID
    assert refused.value.message.startswith("2 posts leave an empty train or val split")


def test_hub_dataset_rows_are_read_from_the_local_hub_cache(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub dataset of posts, as huggingface_hub caches it, read with no network: its first
    .jsonl/.csv file is the posts; a dataset holding neither is refused by name."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rows = [{**GOOD, "post_id": f"p{i}"} for i in range(10)]
    jsonl = "".join(json.dumps(row) + "\n" for row in rows)
    _cached_dataset(tmp_path / "hub", "someone/posts", {"data/posts.jsonl": jsonl})
    loaded = load_splits(DualAgentOptions(hf_dataset="someone/posts", split_seed=1), data_root)
    assert loaded.source == "hf:someone/posts"
    assert loaded.sha256 == hashlib.sha256(jsonl.encode()).hexdigest()
    splits = loaded.splits
    ids = sorted(p.post_id for p in (*splits.train, *splits.val, *splits.test))
    assert ids == sorted(f"p{i}" for i in range(10))

    _cached_dataset(tmp_path / "hub", "someone/parquet", {"data/train.parquet": "PAR1"})
    with pytest.raises(AppError) as refused:
        load_splits(DualAgentOptions(hf_dataset="someone/parquet"), data_root)
    assert refused.value.code is ErrorCode.DATA_INVALID
    assert refused.value.message == "dataset 'someone/parquet' holds no .jsonl or .csv"


def test_a_missing_posts_file_and_the_generator_as_sources(data_root: Path) -> None:
    with pytest.raises(AppError) as missing:
        load_splits(DualAgentOptions(path="posts/missing.jsonl"), data_root)
    assert missing.value.code is ErrorCode.DATA_NOT_FOUND
    assert missing.value.message == "posts file 'posts/missing.jsonl' not found"

    options = DualAgentOptions(generated_posts=40, split_seed=3)
    first, again = load_splits(options, data_root), load_splits(options, data_root)
    assert first.source == f"generated:40:3:{options.val_fraction}"
    assert first.sha256 == hashlib.sha256(first.source.encode()).hexdigest()
    assert first.splits == again.splits  # the generator is seeded
