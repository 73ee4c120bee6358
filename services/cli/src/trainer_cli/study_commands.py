"""`trainctl study hpo|list|status|cancel|evaluate|plots`: Optuna studies through the API.

Exit codes follow the seed's HPO contract:
- `hpo`: 0 queued (with `--wait`: every trial completed or pruned), 1 some trials failed or
  the study was cancelled, 2 a configuration error (a bad spec or search space), 3 the study
  could not be created (its tokenizer or corpus missing, an id taken), 4 storage exhausted.
- `list` (`list-studies`): 0, or the API error's code; `--format table|json|csv`,
  `--filter-status`.
- `evaluate` (`evaluate-study`): 0 evaluated, 2 study not found or not finished, 3 the best
  trial has no checkpoint (no trial completed).
- `plots`: 0 the drawn plots saved (their paths printed), 3 an unknown study or none drawn
  yet (NOT_FOUND, as `status` of an unknown study).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from platform_core.errors import AppError, ErrorCode, ExitCode, invalid_input
from platform_core.http_client import TrainerClient
from platform_core.run_state import RunStatus
from platform_core.settings import Settings
from platform_core.study_api import (
    StudyCreate,
    StudyPublic,
    StudyQuery,
    StudySummary,
    cancel_study,
    create_study,
    evaluate_study,
    get_study,
    list_studies,
    study_plot,
)
from trainer_cli import remote

POLL_S = 1.0
FORMATS: Final = ("table", "json", "csv")
# flag dest -> the spec field it overrides
_SPEC_FLAGS: Final = {
    "name": ("name",),
    "trials": ("n_trials",),
    "parallelism": ("parallelism",),
    "timeout": ("timeout_s",),
    "seed": ("sampler", "seed"),
}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    study = commands.add_parser("study", help="Optuna studies: hpo, list, status, cancel")
    actions = study.add_subparsers(dest="action", required=True)
    hpo = actions.add_parser("hpo", help="start a study from a JSON spec (see docs/studies.md)")
    hpo.add_argument("--spec", type=Path, required=True, help="the study spec, a JSON file")
    hpo.add_argument("--id", help="the study id (default: generated)")
    hpo.add_argument("--user-id", type=int, help="Discord owner to notify")
    hpo.add_argument("--name", help="overrides the spec's name")
    hpo.add_argument("--trials", type=int, help="overrides n_trials")
    hpo.add_argument("--parallelism", type=int, help="overrides parallelism")
    hpo.add_argument("--timeout", type=float, help="overrides timeout_s")
    hpo.add_argument("--seed", type=int, help="overrides the sampler's seed")
    hpo.add_argument("--wait", type=float, help="then wait up to this many seconds for its end")
    hpo.add_argument("--json", action="store_true")

    listing = actions.add_parser("list", aliases=["list-studies"], help="studies, newest first")
    listing.add_argument("--format", choices=FORMATS, default="table")
    listing.add_argument("--filter-status", choices=[s.value for s in RunStatus])
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)

    for name, aliases, text in (
        ("status", [], "a study's trials and best so far"),
        ("cancel", [], "queue no more trials and stop the running ones"),
        ("evaluate", ["evaluate-study"], "evaluate a finished study's best trial again"),
    ):
        parser = actions.add_parser(name, aliases=aliases, help=text)
        parser.add_argument("study_id")
        parser.add_argument("--json", action="store_true")
        if name == "evaluate":
            parser.add_argument("--wait", type=float, default=300.0)

    plots = actions.add_parser("plots", help="save a finished study's plots (PNG) in a folder")
    plots.add_argument("study_id")
    plots.add_argument("--dir", type=Path, default=Path(), help="where (default: here)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    handlers = {
        "hpo": _hpo,
        "list": _list,
        "list-studies": _list,
        "status": _status,
        "cancel": _cancel,
        "evaluate": _evaluate,
        "evaluate-study": _evaluate,
        "plots": _plots,
    }
    return remote.with_client(settings, lambda client: handlers[args.action](client, args))


def _hpo(client: TrainerClient, args: argparse.Namespace) -> int:
    spec = remote.read_spec(args.spec)
    for dest, path in _SPEC_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            node = spec
            for part in path[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise AppError(ErrorCode.CONFIG_INVALID, f"{part} must be a JSON object")
                node = child
            node[path[-1]] = value
    try:
        body = StudyCreate.model_validate(
            {"spec": spec, "study_id": args.id, "user_id": args.user_id}
        )
    except ValidationError as exc:
        raise invalid_input(exc, what="study spec") from exc
    try:
        accepted = client.call(create_study(body))
    except remote.ApiError as error:
        if error.code != ErrorCode.CONFLICT:
            raise
        print(f"trainctl: {error.code}: {error.message}", file=sys.stderr)
        return ExitCode.DATA  # the seed's 3: the study could not be created
    if args.json:
        print(accepted.model_dump_json())
    else:
        print(f"study {accepted.study_id} queued ({len(accepted.trial_run_ids)} trials started)")
    if args.wait is None:
        return ExitCode.OK
    study = _wait_for_end(client, accepted.study_id, args.wait)
    _print_study(study, as_json=args.json)
    return _outcome_code(study)


def _outcome_code(study: StudyPublic) -> int:
    """0: every trial completed or pruned; 1: a partial success (failures, a cancellation)."""
    if study.status == RunStatus.COMPLETED and study.n_failed == 0:
        return ExitCode.OK
    return ExitCode.TRAINING


def _wait_for_end(client: TrainerClient, study_id: str, wait_s: float) -> StudyPublic:
    deadline = time.monotonic() + wait_s
    while True:
        study = client.call(get_study(study_id))
        if study.status.is_terminal:
            return study
        if time.monotonic() > deadline:
            raise AppError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"study {study_id} is still {study.status} after {wait_s:g} s; are workers "
                "running on the training queue?",
            )
        time.sleep(POLL_S)


def _list(client: TrainerClient, args: argparse.Namespace) -> int:
    try:
        query = StudyQuery(status=args.filter_status, limit=args.limit, offset=args.offset)
    except ValidationError as exc:
        raise invalid_input(exc, what="studies query") from exc
    page = client.call(list_studies(query))
    if args.format == "json":
        print(page.model_dump_json(indent=2))
        return ExitCode.OK
    header = ("Study ID", "Name", "Trials", "Best Metric", "Status", "Created")
    rows = [_row(item) for item in page.items]
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return ExitCode.OK
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("─" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(rows)} of {page.total} studies")
    return ExitCode.OK


def _row(study: StudySummary) -> tuple[str, str, str, str, str, str]:
    best = "-" if study.best_value is None else f"{study.best_value:.4f}"
    created = "-"
    if study.created_at is not None:
        created = datetime.fromtimestamp(study.created_at, UTC).strftime("%Y-%m-%d")
    trials = f"{study.trials_done}/{study.n_trials}"
    return (study.study_id, study.name, trials, best, study.status.value, created)


def _status(client: TrainerClient, args: argparse.Namespace) -> int:
    _print_study(client.call(get_study(args.study_id)), as_json=args.json)
    return ExitCode.OK


def _print_study(study: StudyPublic, *, as_json: bool) -> None:
    if as_json:
        print(study.model_dump_json(indent=2))
        return
    print(f"study     {study.study_id} ({study.name})")
    print(f"status    {study.status}  {study.message or ''}".rstrip())
    print(
        f"trials    {study.trials_done}/{study.n_trials}: {study.n_complete} completed, "
        f"{study.n_pruned} pruned, {study.n_failed} failed"
    )
    if study.best is not None:
        print(
            f"best      trial {study.best.trial_number} ({study.best.run_id}): "
            f"{study.metric} {study.best_value:.4f} {json.dumps(study.best.params)}"
        )
    for trial in study.trials:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        print(f"  {trial.run_id}  #{trial.trial_number}  {trial.state:<8} {value}")


def _cancel(client: TrainerClient, args: argparse.Namespace) -> int:
    result = client.call(cancel_study(args.study_id))
    if args.json:
        print(result.model_dump_json())
    else:
        stopped = ", ".join(result.cancelled_trials) or "none running"
        print(f"study {result.study_id}: no more trials; stopping {stopped}")
    return ExitCode.OK


def _evaluate(client: TrainerClient, args: argparse.Namespace) -> int:
    """The seed's exit codes: 2 not found or not finished, 3 no best checkpoint."""
    try:
        before = client.call(get_study(args.study_id))
        client.call(evaluate_study(args.study_id))
    except remote.ApiError as error:
        if error.code in (ErrorCode.NOT_FOUND, ErrorCode.CONFLICT):
            print(f"trainctl: {error.code}: {error.message}", file=sys.stderr)
            return ExitCode.CONFIG
        raise
    if before.best is None:
        print(
            f"trainctl: study {args.study_id} has no completed trial to evaluate", file=sys.stderr
        )
        return ExitCode.DATA
    previous = before.report.get("evaluated_at") if before.report else None
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        study = client.call(get_study(args.study_id))
        if study.report is not None and study.report.get("evaluated_at") != previous:
            print(json.dumps(study.report, indent=2) if args.json else _report_text(study))
            return ExitCode.OK
        time.sleep(POLL_S)
    raise AppError(
        ErrorCode.UPSTREAM_UNAVAILABLE,
        f"no evaluation of {args.study_id} within {args.wait:g} s; are workers running?",
    )


def _report_text(study: StudyPublic) -> str:
    report = study.report or {}
    metrics = report.get("test_metrics")
    checkpoint = report.get("checkpoint")
    lines = [f"study {study.study_id}: best trial {study.best.trial_number if study.best else '-'}"]
    if isinstance(metrics, dict):
        lines += [f"  test {name}: {value}" for name, value in metrics.items()]
    if isinstance(checkpoint, dict):
        lines.append(f"  checkpoint {checkpoint.get('path')} sha256 {checkpoint.get('sha256')}")
    return "\n".join(lines)


def _plots(client: TrainerClient, args: argparse.Namespace) -> int:
    """Each plot the study's end drew, as `<dir>/<study>-<name>`, one path a line."""
    study = client.call(get_study(args.study_id))
    if not study.plots:
        raise AppError(
            ErrorCode.NOT_FOUND,
            f"study {study.study_id} ({study.status}) has no plots yet: its end draws them",
        )
    args.dir.mkdir(parents=True, exist_ok=True)
    for name in study.plots:
        path = args.dir / f"{study.study_id}-{name}"
        path.write_bytes(client.read_bytes(study_plot(study.study_id, name)))
        print(path)
    return ExitCode.OK
