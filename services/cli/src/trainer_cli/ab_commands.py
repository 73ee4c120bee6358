"""`trainctl models traffic|predict|feedback|ab`: online A/B serving of a registered model
through the API. `traffic` shows or sets the split, `predict` labels texts for a caller with
the version the split assigns it (and waits for the answer), `feedback` sends a
prediction's true label, `ab` prints the analysis on labelled outcomes."""

from __future__ import annotations

import argparse
from typing import Final

from pydantic import BaseModel

from platform_core import api_calls
from platform_core.ab_analysis import ABReport
from platform_core.ab_models import FeedbackRequest, ServeRequest, TrafficPublic, TrafficSplit
from platform_core.errors import AppError, ErrorCode, ExitCode
from platform_core.http_client import TrainerClient
from trainer_cli.remote import (
    Handler,
    add_wait_argument,
    request_body,
    show_predictions,
    wait_for_record,
)


def add_actions(
    registry: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    traffic = registry.add_parser(
        "traffic", parents=[common], help="show or set a model's A/B traffic split"
    )
    traffic.add_argument("name")
    traffic.add_argument(
        "--set",
        nargs="+",
        metavar="VERSION=PERCENT",
        help="the new split, e.g. 1.0.0=90 1.1.0=10 (summing to 100)",
    )
    traffic.add_argument("--actor", default="trainctl", help="who sets it")
    predict = registry.add_parser(
        "predict", parents=[common], help="label texts with the version a caller is assigned"
    )
    predict.add_argument("name")
    predict.add_argument("texts", nargs="+", help="one or more texts")
    predict.add_argument("--caller", required=True, help="the caller's id (a user or session)")
    add_wait_argument(predict)
    feedback = registry.add_parser(
        "feedback", parents=[common], help="send a served prediction's true label"
    )
    feedback.add_argument("name")
    feedback.add_argument("prediction_id")
    feedback.add_argument("label")
    ab = registry.add_parser("ab", parents=[common], help="the online A/B analysis")
    ab.add_argument("name")


def _traffic(client: TrainerClient, args: argparse.Namespace) -> int:
    if args.set is None:
        split = client.call(api_calls.model_traffic(args.name))
    else:
        body = request_body(
            TrafficSplit, args, {}, {"weights": _weights(args.set), "actor": args.actor}
        )
        split = client.call(api_calls.set_model_traffic(args.name, body))
    return _print(split, args, _describe_split(split))


def _weights(pairs: list[str]) -> dict[str, str]:
    weights: dict[str, str] = {}
    for pair in pairs:
        version, equals, percent = pair.partition("=")
        if not equals or not version or not percent:
            raise AppError(
                ErrorCode.CONFIG_INVALID, f"{pair!r}: give VERSION=PERCENT, e.g. 1.0.0=90"
            )
        weights[version] = percent  # validated (a whole number 1-100) with the body
    return weights


def _describe_split(split: TrafficPublic) -> str:
    shares = ", ".join(f"{version} {weight}%" for version, weight in split.weights.items())
    how = f"set by {split.actor}" if split.configured else "default: all to production"
    return f"{split.name}: {shares} ({how})"


def _predict(client: TrainerClient, args: argparse.Namespace) -> int:
    body = request_body(
        ServeRequest, args, {}, {"caller_id": args.caller, "texts": list(args.texts)}
    )
    accepted = client.call(api_calls.serve_model(args.name, body))
    record = wait_for_record(
        lambda: client.call(api_calls.served_prediction(args.name, accepted.request_id)),
        args.wait,
    )
    if not args.json:
        print(
            f"{accepted.name} {accepted.version}: predictions {' '.join(accepted.prediction_ids)}"
        )
    return show_predictions(record, as_json=args.json)


def _feedback(client: TrainerClient, args: argparse.Namespace) -> int:
    body = request_body(
        FeedbackRequest, args, {}, {"prediction_id": args.prediction_id, "label": args.label}
    )
    recorded = client.call(api_calls.model_feedback(args.name, body))
    again = "" if recorded.recorded else " (already recorded)"
    text = f"{recorded.prediction_id} ({recorded.version}): label {recorded.label}{again}"
    return _print(recorded, args, text)


def _ab(client: TrainerClient, args: argparse.Namespace) -> int:
    report = client.call(api_calls.model_ab(args.name))
    return _print(report, args, _describe_report(report))


def _print(answer: BaseModel, args: argparse.Namespace, text: str) -> int:
    """The API's answer as JSON (--json), else `text` for a person."""
    print(answer.model_dump_json(indent=2) if args.json else text)
    return ExitCode.OK


def _describe_report(report: ABReport) -> str:
    lines = [f"{'VERSION':<10} {'TRAFFIC':>7} {'LABELLED':>8} {'ACCURACY':>8}"]
    for arm in report.arms:
        accuracy = "-" if arm.accuracy is None else f"{arm.accuracy:.3f}"
        control = "  (control)" if arm.version == report.control else ""
        lines.append(f"{arm.version:<10} {arm.weight:>6}% {arm.labelled:>8} {accuracy:>8}{control}")
    lines += [comparison.message for comparison in report.comparisons]
    return "\n".join(lines)


HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("models", "traffic"): _traffic,
    ("models", "predict"): _predict,
    ("models", "feedback"): _feedback,
    ("models", "ab"): _ab,
}
