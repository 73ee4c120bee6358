"""ReDSM5-format posts: the record, reading and validating JSONL / CSV files, the seeded
split by post stratified by label set, and the data report.

A JSONL row (a CSV row has the same columns; `criteria` is `;`-separated there and
`evidence` a JSON list):

    {"post_id": "p1", "text": "...", "criteria": ["FATIGUE"],
     "evidence": [{"criterion": "FATIGUE", "start": 12, "end": 48, "text": "..."}]}

Validation names the row (file line or CSV record) and the problem; nothing is ever logged
of the text itself.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from platform_core.errors import AppError, ErrorCode
from trainer_worker.dual_agent.criteria import CRITERIA, CRITERION_INDEX

MAX_POSTS = 200_000  # bounds memory: a post is at most MAX_POST_CHARS characters
MAX_POST_CHARS = 20_000


@dataclass(frozen=True)
class EvidenceSpan:
    criterion: str
    start: int  # character offsets into the post's text, end exclusive
    end: int
    text: str  # == post.text[start:end], checked on load


@dataclass(frozen=True)
class Post:
    post_id: str
    text: str
    criteria: tuple[str, ...]  # in CRITERIA order, no repeats
    evidence: tuple[EvidenceSpan, ...]  # sorted by start

    @property
    def label_key(self) -> str:
        """The label set as one string: the stratum of the split."""
        return "+".join(self.criteria) or "NONE"


@dataclass(frozen=True)
class Splits:
    train: tuple[Post, ...]
    val: tuple[Post, ...]
    test: tuple[Post, ...]


def _bad(where: str, problem: str) -> AppError:
    return AppError(ErrorCode.DATA_INVALID, f"{where}: {problem}")


def parse_post(row: object, where: str) -> Post:
    """One row as read from JSON (or a CSV record made into one); DATA_INVALID names `where`."""
    if not isinstance(row, dict):
        raise _bad(where, "a row must be a JSON object")
    post_id, text = row.get("post_id"), row.get("text")
    if not isinstance(post_id, str | int) or str(post_id) == "":
        raise _bad(where, "post_id is missing")
    if not isinstance(text, str) or not text.strip():
        raise _bad(where, "text is empty")
    if len(text) > MAX_POST_CHARS:
        raise _bad(where, f"text has {len(text)} characters; at most {MAX_POST_CHARS}")
    labels = row.get("criteria", [])
    if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
        raise _bad(where, "criteria must be a list of criterion names")
    for name in labels:
        if name not in CRITERION_INDEX:
            raise _bad(where, f"unknown criterion {name!r}; expected one of {list(CRITERIA)}")
    raw_spans = row.get("evidence", [])
    if not isinstance(raw_spans, list):
        raise _bad(where, "evidence must be a list of spans")
    spans = [_parse_span(span, text, f"{where} evidence[{i}]") for i, span in enumerate(raw_spans)]
    for span in spans:
        if span.criterion not in labels:
            raise _bad(where, f"evidence for {span.criterion} but the post is not labelled so")
    criteria = tuple(c for c in CRITERIA if c in labels)
    return Post(str(post_id), text, criteria, tuple(sorted(spans, key=lambda s: s.start)))


def _parse_span(span: object, text: str, where: str) -> EvidenceSpan:
    if not isinstance(span, dict):
        raise _bad(where, "a span must be an object with criterion, start, end, text")
    criterion, start, end, quoted = (span.get(k) for k in ("criterion", "start", "end", "text"))
    if not isinstance(criterion, str) or criterion not in CRITERION_INDEX:
        raise _bad(where, f"unknown criterion {criterion!r}")
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end <= len(text):
        raise _bad(where, f"offsets {start!r}..{end!r} are out of range for {len(text)} chars")
    if quoted is not None and quoted != text[start:end]:
        raise _bad(where, f"span text does not match the text at offsets {start}..{end}")
    return EvidenceSpan(criterion, start, end, text[start:end])


def check_unique(posts: list[Post], source: str) -> None:
    seen: set[str] = set()
    for index, post in enumerate(posts):
        if post.post_id in seen:
            raise _bad(f"{source} row {index + 1}", f"duplicated post_id {post.post_id!r}")
        seen.add(post.post_id)


def read_posts(path: Path) -> list[Post]:
    """A `.jsonl` or `.csv` file of posts, every row validated."""
    if path.suffix not in (".jsonl", ".csv"):
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name}: posts must be .jsonl or .csv")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name} is not UTF-8 text") from exc
    posts = _read_csv(raw, path.name) if path.suffix == ".csv" else _read_jsonl(raw, path.name)
    if not posts:
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name} holds no posts")
    if len(posts) > MAX_POSTS:
        raise AppError(ErrorCode.DATA_INVALID, f"{path.name}: more than {MAX_POSTS} posts")
    check_unique(posts, path.name)
    return posts


def _read_jsonl(raw: str, name: str) -> list[Post]:
    posts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(where, f"not JSON ({exc.msg})") from exc
        posts.append(parse_post(row, where))
    return posts


def _read_csv(raw: str, name: str) -> list[Post]:
    posts = []
    for number, record in enumerate(csv.DictReader(io.StringIO(raw)), start=1):
        where = f"{name} record {number}"
        labels = record.get("criteria") or ""
        try:
            evidence = json.loads(record.get("evidence") or "[]")
        except json.JSONDecodeError as exc:
            raise _bad(where, f"evidence is not a JSON list ({exc.msg})") from exc
        row = {
            "post_id": record.get("post_id"),
            "text": record.get("text"),
            "criteria": [c for c in labels.split(";") if c],
            "evidence": evidence,
        }
        posts.append(parse_post(row, where))
    return posts


def write_jsonl(posts: list[Post], path: Path) -> None:
    lines = [json.dumps(post_row(post)) for post in posts]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def post_row(post: Post) -> dict[str, object]:
    return {
        "post_id": post.post_id,
        "text": post.text,
        "criteria": list(post.criteria),
        "evidence": [
            {"criterion": s.criterion, "start": s.start, "end": s.end, "text": s.text}
            for s in post.evidence
        ],
    }


def split_posts(posts: list[Post], val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Deterministic split by post, stratified by label set: each stratum is shuffled with
    the seed and dealt out by fraction (a post lands in exactly one split)."""
    strata: dict[str, list[Post]] = defaultdict(list)
    for post in sorted(posts, key=lambda p: p.post_id):
        strata[post.label_key].append(post)
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not security
    train: list[Post] = []
    val: list[Post] = []
    test: list[Post] = []
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        n_val = round(len(group) * val_fraction)
        test += group[:n_test]
        val += group[n_test : n_test + n_val]
        train += group[n_test + n_val :]
    if not train or not val:
        raise AppError(
            ErrorCode.DATA_INVALID,
            f"{len(posts)} posts leave an empty train or val split; add posts or change "
            "the fractions",
        )
    return Splits(tuple(train), tuple(val), tuple(test))


def data_report(splits: Splits) -> dict[str, dict[str, int]]:
    """Posts per criterion per split, and posts with no criterion."""
    report: dict[str, dict[str, int]] = {}
    for name, posts in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        counts = {criterion: 0 for criterion in CRITERIA}
        for post in posts:
            for criterion in post.criteria:
                counts[criterion] += 1
        counts["NO_CRITERION"] = sum(1 for post in posts if not post.criteria)
        counts["POSTS"] = len(posts)
        report[name] = counts
    return report
