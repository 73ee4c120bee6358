"""The classifier's top block computing the first token only (`models/encoder.
_FirstTokenBlock`) against the whole top block, side by side: seconds per training step of
the classifier family's task through the shared loop, on the MiniLM-shaped BERT of
bench/cpu_bf16.py (6 x 384, batch 32 x 32 tokens, fp32), with the embeddings and the lower
`--frozen` blocks frozen and cached, for each `--frozen` given.

A [CLS] head reads one position, so the top block needs every token's keys and values but
its query, attention output and feed-forward on [CLS] alone; the gradients are the whole
block's (tests/worker/classify/test_frozen_prefix.py). The two variants alternate which goes
first, repetition by repetition; a figure is the median over the repetitions of the loop's
own seconds per step (two evals over 64 texts included, the cache outside the clock).

Usage: python bench/first_token.py [--repeats 3] [--steps 40] [--frozen 3 5] [--threads 1]
The last line printed is one JSON object: {"bench": "first_token", "speedup": {frozen:
whole / first-token seconds a step}, "whole_step_s": {...}, "first_token_step_s": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from cpu_bf16 import step_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--frozen", type=int, nargs="+", default=[3, 5], help="of the 6 blocks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    whole: dict[int, list[float]] = {frozen: [] for frozen in args.frozen}
    first: dict[int, list[float]] = {frozen: [] for frozen in args.frozen}
    for repeat in range(args.repeats):
        for frozen in args.frozen:
            order = [False, True] if repeat % 2 == 0 else [True, False]
            for first_token in order:
                step_s = step_seconds("fp32", args.steps, frozen, first_token=first_token)
                (first if first_token else whole)[frozen].append(step_s)
                variant = "first-token" if first_token else "whole"
                print(
                    f"repeat {repeat + 1}, {frozen} frozen: {variant} top block "
                    f"{step_s * 1000:.1f} ms a step",
                    flush=True,
                )
    whole_s = {f: statistics.median(t) for f, t in whole.items()}
    first_s = {f: statistics.median(t) for f, t in first.items()}
    print(
        json.dumps(
            {
                "bench": "first_token",
                "speedup": {f: round(whole_s[f] / first_s[f], 3) for f in args.frozen},
                "whole_step_s": {f: round(s, 4) for f, s in whole_s.items()},
                "first_token_step_s": {f: round(s, 4) for f, s in first_s.items()},
                "threads": args.threads,
                "steps": args.steps,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
