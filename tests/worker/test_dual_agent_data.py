"""ReDSM5-format data: validation that names the row and the problem, the split, the
generator's offsets, the metrics and the keyword baseline (fast: no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import PRESET_SHAPES, DualAgentOptions, TrainRunSpec
from trainer_worker.dual_agent.baseline import keyword_baseline
from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.data import data_report, read_posts, split_posts, write_jsonl
from trainer_worker.dual_agent.generator import TEST_TEMPLATES, TRAIN_TEMPLATES, generate_splits
from trainer_worker.dual_agent.metrics import criteria_metrics, evidence_metrics, tune_thresholds
from trainer_worker.dual_agent.model import DUAL_AGENT_PRESETS
from trainer_worker.dual_agent.sources import load_splits

TEXT = "Work was fine. I can't sleep at night."
GOOD = {
    "post_id": "p1",
    "text": TEXT,
    "criteria": ["SLEEP_ISSUES"],
    "evidence": [{"criterion": "SLEEP_ISSUES", "start": 15, "end": 38, "text": TEXT[15:]}],
}


def _write(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"evidence": [{**GOOD["evidence"][0], "end": 99}]}, "out of range"),  # type: ignore[dict-item]  # a JSON row
        ({"evidence": [{**GOOD["evidence"][0], "text": "other"}]}, "does not match"),  # type: ignore[dict-item]  # a JSON row
        ({"criteria": ["SADNESS"]}, "unknown criterion 'SADNESS'"),
        ({"text": "  "}, "text is empty"),
    ],
)
def test_a_bad_row_is_refused_naming_the_line_and_the_problem(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    path = _write(tmp_path, GOOD, {**GOOD, "post_id": "p2", **change})
    with pytest.raises(AppError) as err:
        read_posts(path)
    assert err.value.code is ErrorCode.DATA_INVALID
    assert err.value.message.startswith("posts.jsonl line 2")
    assert problem in err.value.message


def test_duplicated_post_ids_and_csv_records(tmp_path: Path) -> None:
    with pytest.raises(AppError, match="row 2: duplicated post_id 'p1'"):
        read_posts(_write(tmp_path, GOOD, GOOD))
    csv = tmp_path / "posts.csv"
    evidence = json.dumps(GOOD["evidence"]).replace('"', '""')
    csv.write_text(f'post_id,text,criteria,evidence\np1,"{TEXT}",SLEEP_ISSUES,"{evidence}"\n')
    [post] = read_posts(csv)
    assert post.criteria == ("SLEEP_ISSUES",) and post.evidence[0].text == TEXT[15:]


def test_the_split_is_by_post_stratified_and_seeded(tmp_path: Path) -> None:
    splits = generate_splits(300, seed=3)
    posts = [*splits.train, *splits.val]
    a, b = split_posts(posts, 0.2, 0.2, seed=5), split_posts(posts, 0.2, 0.2, seed=5)
    assert a == b
    ids = [{p.post_id for p in part} for part in (a.train, a.val, a.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(i) for i in ids) == len(posts)
    report = data_report(a)
    assert report["val"]["POSTS"] == len(a.val)
    assert set(report["train"]) == {*CRITERIA, "NO_CRITERION", "POSTS"}
    # a written file reads back to the same posts, and a spec can point at it
    write_jsonl(list(posts), tmp_path / "posts.jsonl")
    loaded = load_splits(DualAgentOptions(path="posts.jsonl", split_seed=5), tmp_path)
    assert len(loaded.splits.train) + len(loaded.splits.val) + len(loaded.splits.test) == 300


def test_generated_evidence_offsets_and_held_out_templates() -> None:
    splits = generate_splits(200, seed=1)
    for post in [*splits.train, *splits.val, *splits.test]:
        for span in post.evidence:
            assert post.text[span.start : span.end] == span.text
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)
    assert len(splits.test) == 40 and any(post.criteria for post in splits.test)


def test_metrics_and_the_baseline_on_known_answers() -> None:
    labels = torch.zeros((4, len(CRITERIA)))
    labels[0, 3] = labels[1, 3] = 1.0  # two SLEEP_ISSUES posts
    scores = labels * 0.9 + 0.05
    perfect = criteria_metrics(scores, labels, [0.5] * len(CRITERIA), "val/criteria_matcher")
    assert perfect["val/criteria_matcher/f1/SLEEP_ISSUES"] == 1.0
    assert perfect["val/criteria_matcher/auc/SLEEP_ISSUES"] == 1.0
    assert tune_thresholds(scores, labels)[3] == 0.5  # F1 1.0 from 0.1 to 0.9: the middle
    texts = [TEXT, "Nothing here."]
    gold = [[(15, 38)], []]
    exact = evidence_metrics(texts, [(15, 38), None], gold, "e")
    assert exact == {
        "e/exact_match": 1.0,
        "e/has_answer": 1.0,
        "e/char_f1": 1.0,
        "e/char_precision": 1.0,
        "e/char_recall": 1.0,
    }
    half = evidence_metrics(texts[:1], [(0, 38)], gold[:1], "e")
    assert half["e/char_recall"] == 1.0 and 0.6 < half["e/char_precision"] < 0.62
    hits, spans = keyword_baseline(["My mom is tired. I feel sad and empty today."])
    assert hits[0, CRITERIA.index("FATIGUE")] == 1 and hits[0, 0] == 2
    assert spans == [(17, 44)]  # the sentence with the most hits


def test_spec_rules_and_presets() -> None:
    spec = TrainRunSpec.model_validate({"model": {"family": "dual_agent"}})
    assert spec.dual_agent == DualAgentOptions() and spec.tokenizer_id is None
    with pytest.raises(ValueError, match="leave tokenizer_id out"):
        TrainRunSpec.model_validate({"model": {"family": "dual_agent"}, "tokenizer_id": "t"})
    with pytest.raises(ValueError, match="dual_agent family only"):
        TrainRunSpec.model_validate(
            {"model": {"family": "gpt2"}, "tokenizer_id": "t", "dual_agent": {}}
        )
    with pytest.raises(ValueError, match="not both"):
        DualAgentOptions(path="a.jsonl", hf_dataset="org/posts")
    with pytest.raises(ValueError, match="task weight"):
        TrainRunSpec.model_validate(
            {
                "model": {"family": "dual_agent"},
                "dual_agent": {"task_weights": {"criteria_matcher": 0.0, "evidence_binder": 0.0}},
            }
        )
    for name, preset in DUAL_AGENT_PRESETS.items():
        shape = PRESET_SHAPES["dual_agent"][name]
        assert (shape.n_layer, shape.width, shape.n_head, shape.context) == (
            preset.num_layers,
            preset.hidden_size,
            preset.num_heads,
            preset.max_positions,
        )
