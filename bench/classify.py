"""Text classification on the built-in dataset (issue 14's benchmark): the botocore API
documentation, labelled by AWS service with the names masked, prepared as the
`prepare_dataset` job prepares it (cleaning, dedup, filters, stratified 80/10/10 split with
the seed), then the TF-IDF + logistic-regression baseline fitted on train and scored on test.

The classifier itself (its accuracy, p95 CPU latency fp32 / int8) is not built yet: those
keys are null until it is.

Usage: python bench/classify.py [--max-per-class 150] [--seed 1337]
The last line printed is one JSON object with the figures issue 14 names.
"""

from __future__ import annotations

import argparse
import json
import time

from platform_core.specs import BuiltinSource, DatasetSpec
from trainer_worker.classify.baseline import train_baseline
from trainer_worker.classify.builtin_botocore import botocore_rows, source_description
from trainer_worker.classify.preparation import prepare_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-class", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
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
    print(
        json.dumps(
            {
                "bench": "classify",
                "accuracy": None,
                "baseline_accuracy": round(baseline.test.accuracy, 4),
                "macro_f1": None,
                "baseline_macro_f1": round(baseline.test.macro_f1, 4),
                "p95_ms_fp32": None,
                "p95_ms_int8": None,
                "int8_accuracy_delta": None,
            }
        )
    )


if __name__ == "__main__":
    main()
