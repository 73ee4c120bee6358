"""Text classification on the built-in dataset (issue 14's benchmark): the botocore API
documentation, labelled by AWS service with the names masked, prepared as the
`prepare_dataset` job prepares it (cleaning, dedup, filters, stratified 80/10/10 split with
the seed); the TF-IDF + logistic-regression baseline fitted on train and scored on test; then
the classifier family's default preset (tiny BERT from scratch with its own WordPiece) trained
by the shared loop (early stopping with patience 2, best weights by validation accuracy) and
reported as a classifier run reports: test accuracy / macro F1, p95 single-text CPU latency
in fp32 and dynamic int8, and int8's accuracy change.

Usage: python bench/classify.py [--max-per-class 150] [--seed 1337] [--steps 3000]
                                [--eval-every 250] [--block-size 64] [--preset tiny]
                                [--threads 1]
The last line printed is one JSON object with the figures issue 14 names.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from platform_core.specs import BuiltinSource, DatasetSpec, TrainRunSpec
from trainer_worker.classify.baseline import train_baseline
from trainer_worker.classify.builtin_botocore import botocore_rows, source_description
from trainer_worker.classify.model import CLASSIFIER_PRESETS, build_classifier
from trainer_worker.classify.preparation import prepare_rows
from trainer_worker.classify.records import LabelledText
from trainer_worker.classify.report import quantized_report, score, single_text_latency
from trainer_worker.classify.task import ClassifierTask, TextBatch, encode_split
from trainer_worker.dual_agent.tokenizer import train_wordpiece
from trainer_worker.training.loop import train_task
from trainer_worker.training.seeding import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-class", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--preset", default="tiny", choices=sorted(CLASSIFIER_PRESETS))
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--block-size", type=int, default=64, help="the texts' median: ~33 tokens")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = DatasetSpec(source=BuiltinSource(max_per_class=args.max_per_class), seed=args.seed)
    started = time.monotonic()
    prepared = prepare_rows(botocore_rows(args.max_per_class), spec)
    prepare_s = time.monotonic() - started
    report = prepared.report
    baseline = train_baseline(prepared.splits, report.labels, seed=args.seed)
    print(
        f"{source_description()}: {report.rows_kept} rows, {len(report.labels)} classes, "
        f"splits {[sum(report.split_counts[s].values()) for s in ('train', 'val', 'test')]}, "
        f"prepared in {prepare_s:.1f} s; baseline fitted in {baseline.train_s:.1f} s, "
        f"val accuracy {baseline.val.accuracy:.4f}"
    )
    run = TrainRunSpec.model_validate(
        {
            "model": {"family": "classifier", "preset": args.preset, "dropout": 0.1},
            "classifier": {"dataset_id": "bench", "vocab_size": 4000},
            "train": {
                "max_steps": args.steps,
                "batch_size": 32,
                "block_size": args.block_size,
                "learning_rate": 5e-3 if args.preset == "tiny" else 1e-3,
                "min_lr": 5e-4 if args.preset == "tiny" else 1e-4,
                "warmup_steps": 50,
                "weight_decay": 0.01,
                "eval_every": args.eval_every,
                "device": "cpu",
                "seed": args.seed,
            },
        }
    )
    labels = list(report.labels)
    index = {label: i for i, label in enumerate(labels)}
    width = run.train.block_size
    with tempfile.TemporaryDirectory() as scratch:
        texts = [row.text for row in prepared.splits["train"]]
        tokenizer = train_wordpiece(texts, run.classifier_options.vocab_size, Path(scratch))

    def encode(rows: list[LabelledText]) -> TextBatch:
        return encode_split(
            tokenizer, [r.text for r in rows], [r.label for r in rows], index, width
        )

    seed_everything(args.seed)
    preset = CLASSIFIER_PRESETS[args.preset]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = build_classifier(preset, len(tokenizer), pad, labels, dropout=run.model.dropout)
    task = ClassifierTask(
        train=encode(prepared.splits["train"]),
        val=encode(prepared.splits["val"]),
        labels=labels,
        source=model,
    )
    started = time.monotonic()
    result = train_task(model, task, run.train)
    train_s = time.monotonic() - started
    if task.best_state is not None:
        model.load_state_dict(task.best_state)
    test = encode(prepared.splits["test"])
    test_texts = [row.text for row in prepared.splits["test"]]
    metrics, _ = score(model, test, labels)
    latency = single_text_latency(model, tokenizer, test_texts, width, samples=200)
    int8 = quantized_report(
        model,
        tokenizer,
        test,
        test_texts,
        labels,
        fp32=(metrics, latency),
        width=width,
        samples=200,
    )
    print(
        f"classifier {args.preset}: {result.final_step} steps ({result.reason}) "
        f"in {train_s:.0f} s, "
        f"best val accuracy {task.best_accuracy:.4f}; test accuracy {metrics.accuracy:.4f} "
        f"(baseline {baseline.test.accuracy:.4f}); p50/p95 {latency.p50_ms:.2f}/"
        f"{latency.p95_ms:.2f} ms fp32, {int8.latency.p50_ms:.2f}/{int8.latency.p95_ms:.2f} ms "
        f"int8 ({int8.speedup:.2f}x), {args.threads} thread(s)"
    )
    print(
        json.dumps(
            {
                "bench": "classify",
                "accuracy": round(metrics.accuracy, 4),
                "baseline_accuracy": round(baseline.test.accuracy, 4),
                "macro_f1": round(metrics.macro_f1, 4),
                "baseline_macro_f1": round(baseline.test.macro_f1, 4),
                "p95_ms_fp32": round(latency.p95_ms, 3),
                "p95_ms_int8": round(int8.latency.p95_ms, 3),
                "int8_accuracy_delta": round(int8.accuracy_delta, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
