"""`trainctl dataset prepare|list|show` and `trainctl models list|versions|register|promote|
rollback` (and `traffic|predict|feedback|ab`, in `ab_commands`): text classification
datasets and the model registry, through the API.

`dataset prepare` sends a DatasetSpec (the built-in botocore dataset by default; a file under
the data root, arXiv categories or a hub dataset by flags or a --spec file) and may follow
the run; `dataset show` prints the preparation report and the baseline's scores. `models`
registers a run's saved model as a version and changes stages, with who (--actor) and why
(--reason) going into the registry's history."""

from __future__ import annotations

import argparse
import uuid
from typing import Final

from platform_core import api_calls
from platform_core.api_models import (
    DatasetCreate,
    DatasetPublic,
    ModelVersionCreate,
    PromoteRequest,
    RollbackRequest,
)
from platform_core.errors import ExitCode
from platform_core.http_client import TrainerClient
from platform_core.model_registry import RegistryChange
from platform_core.settings import Settings
from trainer_cli import ab_commands, retrain_commands
from trainer_cli.remote import (
    Handler,
    add_submission_arguments,
    json_parent,
    report_accepted,
    request_body,
    run_handler,
)

COMMANDS: Final = ("dataset", "models")
DATASET_FLAGS: Final = {
    "source": ("spec", "source", "kind"),
    "path": ("spec", "source", "path"),
    "categories": ("spec", "source", "categories"),
    "hub_id": ("spec", "source", "dataset_id"),
    "max_per_class": ("spec", "source", "max_per_class"),
    "labels": ("spec", "labels"),
    "min_words": ("spec", "min_words"),
    "seed": ("spec", "seed"),
    "id": ("dataset_id",),
    "user_id": ("user_id",),
}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = json_parent()
    dataset = commands.add_parser("dataset", help="prepare and inspect classification datasets")
    actions = dataset.add_subparsers(dest="action", required=True)
    prepare = actions.add_parser("prepare", parents=[common], help="queue a dataset preparation")
    prepare.add_argument("--source", choices=["builtin", "file", "arxiv", "hub"])
    prepare.add_argument("--path", help="file source: JSON, JSONL or CSV under the data root")
    prepare.add_argument("--categories", nargs="+", help="arxiv source: e.g. cs.LG cs.CV")
    prepare.add_argument("--hub-id", help="hub source: a dataset repository id")
    prepare.add_argument("--max-per-class", type=int, help="builtin source: rows per service")
    prepare.add_argument("--labels", nargs="+", help="the allowed labels (others fail the run)")
    prepare.add_argument("--min-words", type=int)
    prepare.add_argument("--seed", type=int)
    add_submission_arguments(prepare, "dataset")
    actions.add_parser("list", parents=[common], help="prepared datasets and those in progress")
    show = actions.add_parser("show", parents=[common], help="a dataset's report and baseline")
    show.add_argument("dataset_id")

    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--actor", default="trainctl", help="who asks (goes into the history)")
    who.add_argument("--reason", default="", help="why (goes into the history)")
    models = commands.add_parser("models", help="the model registry: versions and stages")
    registry = models.add_subparsers(dest="action", required=True)
    registry.add_parser("list", parents=[common], help="registered models and production")
    versions = registry.add_parser("versions", parents=[common], help="a model's versions")
    versions.add_argument("name")
    register = registry.add_parser(
        "register", parents=[common, who], help="register a run's saved model (in staging)"
    )
    register.add_argument("name")
    register.add_argument("--run", required=True, help="the run whose model/ folder to register")
    register.add_argument("--version", help="MAJOR.MINOR.PATCH (default: the next minor)")
    register.add_argument("--dataset", help="the dataset id it was trained on")
    promote = registry.add_parser("promote", parents=[common, who], help="move a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument(
        "--stage", default="production", choices=["staging", "production", "archived"]
    )
    rollback = registry.add_parser(
        "rollback", parents=[common, who], help="production back to the version it replaced"
    )
    rollback.add_argument("name")
    ab_commands.add_actions(registry, common)
    retrain_commands.add_model_actions(registry)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_handler(settings, args, _HANDLERS[args.command, args.action])


def _prepare(client: TrainerClient, args: argparse.Namespace) -> int:
    if args.source is None and args.spec is None:
        args.source = "builtin"
    body = request_body(DatasetCreate, args, DATASET_FLAGS, {})
    accepted = client.call(api_calls.prepare_dataset(body, idempotency_key=uuid.uuid4().hex))
    return report_accepted(client, args, accepted, "see it with: trainctl dataset show")


def _list(client: TrainerClient, args: argparse.Namespace) -> int:
    listed = client.call(api_calls.LIST_DATASETS)
    if args.json:
        print(listed.model_dump_json(indent=2))
        return ExitCode.OK
    rows = [("DATASET", "STATUS", "ROWS", "CLASSES", "BASELINE ACC", "SOURCE")]
    for item in listed.items:
        report = item.report
        rows.append(
            (
                item.dataset_id,
                item.status,
                str(report.rows_kept) if report else "-",
                str(len(report.labels)) if report else "-",
                f"{item.baseline.test.accuracy:.3f}" if item.baseline else "-",
                item.source or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return ExitCode.OK


def _show(client: TrainerClient, args: argparse.Namespace) -> int:
    dataset = client.call(api_calls.get_dataset(args.dataset_id))
    if args.json:
        print(dataset.model_dump_json(indent=2))
    else:
        print(_describe(dataset))
    return ExitCode.OK


def _describe(dataset: DatasetPublic) -> str:
    lines = [f"dataset    {dataset.dataset_id}", f"status     {dataset.status}"]
    if dataset.message:
        lines.append(f"message    {dataset.message}")
    report = dataset.report
    if report is None:
        return "\n".join(lines)
    lines += [
        f"source     {dataset.source}",
        f"rows       {report.rows_kept} kept of {report.rows_read} read; duplicates "
        f"{report.duplicates_by_id} by id, {report.duplicates_by_text} by text; filtered "
        f"{report.filtered_empty} empty, {report.filtered_too_short} too short",
        f"balance    largest / smallest class = {report.imbalance_ratio:.2f}",
        f"{'CLASS':<24}{'TRAIN':>7}{'VAL':>6}{'TEST':>6}",
    ]
    splits = report.split_counts
    for label in report.labels:
        counts = [splits[name].get(label, 0) for name in ("train", "val", "test")]
        lines.append(f"{label[:23]:<24}{counts[0]:>7}{counts[1]:>6}{counts[2]:>6}")
    if dataset.baseline is not None:
        test = dataset.baseline.test
        lines.append(
            f"baseline   TF-IDF + logistic regression: test accuracy {test.accuracy:.3f}, "
            f"macro F1 {test.macro_f1:.3f}"
        )
    return "\n".join(lines)


# ---- models -----------------------------------------------------------------------------------


def _models(client: TrainerClient, args: argparse.Namespace) -> int:
    listed = client.call(api_calls.LIST_MODELS)
    if args.json:
        print(listed.model_dump_json(indent=2))
    for item in [] if args.json else listed.items:
        print(f"{item.name:<24} production {item.production or '-':<10} {item.versions} versions")
    return ExitCode.OK


def _versions(client: TrainerClient, args: argparse.Namespace) -> int:
    listed = client.call(api_calls.model_versions(args.name))
    if args.json:
        print(listed.model_dump_json(indent=2))
        return ExitCode.OK
    for item in listed.items:
        source = item.metadata.source_run if item.metadata else "?"
        print(f"{item.version:<10} {item.stage:<11} from run {source}")
    return ExitCode.OK


def _register(client: TrainerClient, args: argparse.Namespace) -> int:
    body = request_body(
        ModelVersionCreate,
        args,
        {"run": ("source_run",), "version": ("version",), "dataset": ("dataset_id",)},
        {"actor": args.actor, "reason": args.reason},
    )
    created = client.call(api_calls.register_model_version(args.name, body))
    if args.json:
        print(created.model_dump_json(indent=2))
    else:
        print(f"{created.name} {created.version}: {created.stage}")
    return ExitCode.OK


def _promote(client: TrainerClient, args: argparse.Namespace) -> int:
    body = request_body(
        PromoteRequest,
        args,
        {},
        {"stage": args.stage, "actor": args.actor, "reason": args.reason},
    )
    return _print_change(client.call(api_calls.promote_model(args.name, args.version, body)), args)


def _rollback(client: TrainerClient, args: argparse.Namespace) -> int:
    body = request_body(RollbackRequest, args, {}, {"actor": args.actor, "reason": args.reason})
    return _print_change(client.call(api_calls.rollback_model(args.name, body)), args)


def _print_change(change: RegistryChange, args: argparse.Namespace) -> int:
    if args.json:
        print(change.model_dump_json(indent=2))
    else:
        replaced = f" (was {change.previous_production})" if change.previous_production else ""
        print(f"{change.name} {change.version}: {change.from_stage} -> {change.to_stage}{replaced}")
    return ExitCode.OK


_HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("dataset", "prepare"): _prepare,
    ("dataset", "list"): _list,
    ("dataset", "show"): _show,
    ("models", "list"): _models,
    ("models", "versions"): _versions,
    ("models", "register"): _register,
    ("models", "promote"): _promote,
    ("models", "rollback"): _rollback,
    **ab_commands.HANDLERS,
    ("models", "compare"): retrain_commands.compare,
}
