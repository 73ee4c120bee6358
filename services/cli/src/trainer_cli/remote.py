"""The `trainctl` commands that work through the trainer API: submit, runs, status, follow,
cancel, generate, score, predict, logs.

They reach the API at APP__API__BASE_URL (default http://APP__API__HOST:APP__API__PORT) with
APP__SECURITY__API_KEY when set, print readable text, or with `--json` the API's answer as
JSON (event and log streams: one JSON document a line). A failed call prints its error code
and message and exits with the code's exit code (`platform_core.errors`). Nothing here
loads torch: these commands start in well under a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from pydantic import BaseModel, ValidationError

from platform_core.api_models import (
    GenerateRecord,
    JobAccepted,
    LogLine,
    PredictRecord,
    RunCreate,
    RunPublic,
    RunQuery,
    ScoreRecord,
    TokenizerCreate,
)
from platform_core.errors import AppError, ErrorCode, ExitCode, invalid_input
from platform_core.events import Event
from platform_core.http_client import ApiError, TrainerClient

__all__ = ["ApiError", "read_spec", "with_client"]
from platform_core.run_state import RunStatus
from platform_core.settings import Settings
from platform_core.specs import (
    MODEL_PRESETS,
    ClassifierPrediction,
    validate_generate_request,
    validate_predict_request,
    validate_score_request,
)
from trainer_cli.follow import follow_run
from trainer_cli.progress import (
    ProgressView,
    format_duration,
    format_number,
    format_status,
)

COMMANDS: Final = (
    "submit",
    "runs",
    "status",
    "follow",
    "cancel",
    "generate",
    "score",
    "predict",
    "logs",
)
POLL_INTERVAL_S = 0.2  # generate / score results: a tiny model answers within a few polls

BodyT = TypeVar("BodyT", bound=BaseModel)
RecordT = TypeVar("RecordT", GenerateRecord, ScoreRecord, PredictRecord)
Handler = Callable[[TrainerClient, argparse.Namespace], int]
# flag dest -> where its value goes in the request body (overriding a --spec file)
TOKENIZER_FLAGS: Final = {
    "kind": ("spec", "kind"),
    "vocab_size": ("spec", "vocab_size"),
    "min_frequency": ("spec", "min_frequency"),
    "corpus": ("spec", "corpus", "path"),
    "id": ("tokenizer_id",),
    "user_id": ("user_id",),
}
MODEL_FLAGS: Final = {
    "family": ("spec", "model", "family"),
    "preset": ("spec", "model", "preset"),
    "tokenizer": ("spec", "tokenizer_id"),
    "dataset": ("spec", "classifier", "dataset_id"),
    "corpus": ("spec", "corpus", "path"),
    "steps": ("spec", "train", "max_steps"),
    "batch_size": ("spec", "train", "batch_size"),
    "block_size": ("spec", "train", "block_size"),
    "learning_rate": ("spec", "train", "learning_rate"),
    "eval_every": ("spec", "train", "eval_every"),
    "device": ("spec", "train", "device"),
    "seed": ("spec", "train", "seed"),
    "id": ("run_id",),
    "user_id": ("user_id",),
}


# ---- arguments ------------------------------------------------------------------------------


def json_parent() -> argparse.ArgumentParser:
    """The parent parser of every command that can print the API's answer as it came."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    return common


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = json_parent()

    submit = commands.add_parser("submit", help="queue a tokenizer or model training")
    kinds = submit.add_subparsers(dest="what", required=True)
    tokenizer = kinds.add_parser("tokenizer", parents=[common], help="train a tokenizer")
    tokenizer.add_argument("--kind", choices=["bpe", "char", "sentencepiece"])
    tokenizer.add_argument("--vocab-size", type=int)
    tokenizer.add_argument("--min-frequency", type=int, help="bpe only")
    _add_submit_arguments(tokenizer, "tokenizer")
    model = kinds.add_parser("model", parents=[common], help="train a model")
    model.add_argument(
        "--tokenizer",
        help="id of a trained (or queued) tokenizer (not for dual_agent or classifier)",
    )
    model.add_argument("--dataset", help="classifier: id of a prepared (or queued) dataset")
    model.add_argument("--family", choices=list(MODEL_PRESETS))
    model.add_argument("--preset", help="size preset of the family (default tiny)")
    model.add_argument("--steps", type=int, help="optimizer steps")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--block-size", type=int)
    model.add_argument("--learning-rate", type=float)
    model.add_argument("--eval-every", type=int)
    model.add_argument("--device", choices=["auto", "cpu", "cuda"])
    model.add_argument("--seed", type=int)
    _add_submit_arguments(model, "run")

    runs = commands.add_parser("runs", parents=[common], help="list runs, newest first")
    runs.add_argument("--status", choices=[status.value for status in RunStatus])
    runs.add_argument("--kind", choices=["train_tokenizer", "train_model"])
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--offset", type=int, default=0)

    for name, text in (
        ("status", "a run's status, progress and metrics"),
        ("follow", "stream a run's events with a progress bar until it ends"),
        ("cancel", "cancel a queued run, or ask a running one to stop"),
    ):
        commands.add_parser(name, parents=[common], help=text).add_argument("run_id")

    _add_inference_commands(commands, common)

    logs = commands.add_parser("logs", parents=[common], help="a run's last log lines")
    logs.add_argument("run_id")
    logs.add_argument("--tail", type=int, default=100, help="how many last lines")
    logs.add_argument("--follow", action="store_true", help="then new lines until the run ends")


def _add_inference_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    generate = commands.add_parser("generate", parents=[common], help="generate text from a run")
    generate.add_argument("run_id")
    generate.add_argument("prompt")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--num", type=int, default=1, help="how many sequences")
    add_wait_argument(generate)

    score = commands.add_parser("score", parents=[common], help="a run's loss on a text")
    score.add_argument("run_id")
    score.add_argument("text")
    score.add_argument("--per-token", action="store_true", help="show each token's surprisal")
    score.add_argument("--top-k", type=int, default=0, help="predictions listed per token")
    add_wait_argument(score)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="labels of texts by a classifier run, or criteria and evidence by a dual_agent run",
    )
    predict.add_argument("run_id")
    predict.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    add_wait_argument(predict)


def _add_submit_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--corpus", help="corpus file, relative to the data root")
    add_submission_arguments(parser, what)


def add_submission_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--id, --user-id, --spec and --follow, as every submission takes them."""
    parser.add_argument("--id", help=f"the {what} id (default: generated)")
    parser.add_argument("--user-id", type=int, help="Discord owner to notify")
    parser.add_argument(
        "--spec", type=Path, help="a JSON file with the whole request body; flags override it"
    )
    parser.add_argument("--follow", action="store_true", help="then follow the run")


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", type=float, default=300.0, help="seconds to wait for the result (default 300)"
    )


# ---- running --------------------------------------------------------------------------------


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one remote command; API errors become their exit code."""
    return run_handler(settings, args, _HANDLERS[args.command])


def run_handler(settings: Settings, args: argparse.Namespace, handler: Handler) -> int:
    """`handler` with a client on the configured API; API errors become their exit code."""
    return with_client(settings, lambda client: handler(client, args))


def with_client(settings: Settings, command: Callable[[TrainerClient], int]) -> int:
    """Run `command` with a client on the configured API; API errors become their exit
    code."""
    api_key = settings.security.api_key
    secret = api_key.get_secret_value() if api_key is not None else None
    try:
        with TrainerClient(settings.api_base_url, api_key=secret) as client:
            return command(client)
    except ApiError as error:
        print(f"trainctl: {error.code}: {error.message}", file=sys.stderr)
        if error.status == 0:
            print(
                "trainctl: is the API running? Start it with `python -m trainer_api`, or set "
                "APP__API__BASE_URL to where it runs.",
                file=sys.stderr,
            )
        else:  # the id the API logged the request under
            print(f"trainctl: request id {error.request_id}", file=sys.stderr)
        return exit_code_for(error.code)


def exit_code_for(code: str) -> int:
    """The exit code of an error code the API sent; a code newer than this CLI is a failure."""
    try:
        return ErrorCode(code).exit_code
    except ValueError:
        return ExitCode.TRAINING


def _submit(client: TrainerClient, args: argparse.Namespace) -> int:
    key = uuid.uuid4().hex  # the POST may then be retried without queuing twice
    if args.what == "tokenizer":
        body = request_body(TokenizerCreate, args, TOKENIZER_FLAGS, {"spec": {"kind": "bpe"}})
        accepted = client.train_tokenizer(body, idempotency_key=key)
    else:
        defaults: dict[str, object] = {"spec": {"model": {"family": "gpt2", "preset": "tiny"}}}
        run_body = request_body(RunCreate, args, MODEL_FLAGS, defaults)
        accepted = client.train_model(run_body, idempotency_key=key)
    return report_accepted(client, args, accepted, "follow it with: trainctl follow")


def report_accepted(
    client: TrainerClient, args: argparse.Namespace, accepted: JobAccepted, hint: str
) -> int:
    """Say what was queued; then follow its events (--follow) or print `hint` with the run
    id: the command that shows it later."""
    if args.json:
        print(accepted.model_dump_json())
    else:
        print(f"{accepted.kind} {accepted.run_id}: {accepted.status}")
    if args.follow:
        return follow_events(client, accepted.run_id, json_lines=args.json)
    if not args.json:
        print(f"{hint} {accepted.run_id}")
    return ExitCode.OK


def request_body(
    model: type[BodyT],
    args: argparse.Namespace,
    flags: dict[str, tuple[str, ...]],
    defaults: dict[str, object],
) -> BodyT:
    """The request body: the --spec file (or `defaults`), each flag given set on top."""
    spec = getattr(args, "spec", None)  # commands without a --spec file build from flags
    body = read_spec(spec) if spec is not None else defaults
    for dest, path in flags.items():
        value = getattr(args, dest)
        if value is None:
            continue
        node = body
        for depth, key in enumerate(path[:-1], start=1):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(path[:depth])
                raise AppError(ErrorCode.CONFIG_INVALID, f"{where} must be a JSON object")
            node = child
        node[path[-1]] = value
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_input(exc, what=f"{model.__name__} request") from exc


def read_spec(path: Path) -> dict[str, object]:
    try:
        found: object = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"cannot read the spec file {path}: {exc}"
        raise AppError(ErrorCode.CONFIG_INVALID, message) from exc
    if not isinstance(found, dict):
        raise AppError(ErrorCode.CONFIG_INVALID, f"the spec file {path} must hold a JSON object")
    return found


def _runs(client: TrainerClient, args: argparse.Namespace) -> int:
    try:
        query = RunQuery(status=args.status, kind=args.kind, limit=args.limit, offset=args.offset)
    except ValidationError as exc:
        raise invalid_input(exc, what="runs query") from exc
    page = client.list_runs(query)
    if args.json:
        print(page.model_dump_json(indent=2))
        return ExitCode.OK
    rows = [("RUN", "KIND", "STATUS", "PROGRESS", "MESSAGE")]
    rows += [
        (run.run_id, run.kind or "-", run.status, _percent(run), run.message or "")
        for run in page.items
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for *cells, message in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)), message
        )
    shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "none"
    print(f"{shown} of {page.total} runs")
    return ExitCode.OK


def _percent(run: RunPublic) -> str:
    fraction = run.progress.fraction if run.progress is not None else None
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def _status(client: TrainerClient, args: argparse.Namespace) -> int:
    run = client.get_run(args.run_id)
    if args.json:
        print(run.model_dump_json(indent=2))
        return ExitCode.OK
    fields = {"run": run.run_id, "kind": run.kind, "status": run.status, "message": run.message}
    if run.progress is not None:
        p = run.progress
        fraction, step = p.fraction or 0.0, p.step or 0
        line = format_status(
            fraction, step, p.total_steps, loss=p.loss, tokens_per_s=p.tokens_per_s, eta_s=run.eta_s
        )
        fields["progress"] = line.strip()
        if p.last_checkpoint_step is not None:
            fields["checkpoint"] = f"step {p.last_checkpoint_step}"
    if run.heartbeat_age_s is not None:
        fields["heartbeat"] = f"{run.heartbeat_age_s:.1f} s ago"
    if run.metrics is not None:
        m = run.metrics
        first, final = format_number(m.first_perplexity), format_number(m.final_perplexity)
        fields["perplexity"] = f"first {first} -> final {final}"
        fields["eval loss"] = f"best {format_number(m.best_eval_loss)}"
        fields["steps"] = f"{m.steps} in {format_duration(m.duration_s)} ({m.stop_reason})"
    if (tracking := run.tracking) is not None:
        fields["mlflow"] = tracking.mlflow_run_id or "never reached"
        fields["mlflow-ui"] = tracking.ui_url
        if tracking.synced is False:
            fields["tracking"] = f"{tracking.pending_metrics} metrics not in MLflow (buffered)"
    for name, value in fields.items():
        if value is not None:
            print(f"{name:<11}{value}")
    return ExitCode.OK


def _follow(client: TrainerClient, args: argparse.Namespace) -> int:
    return follow_events(client, args.run_id, json_lines=args.json)


def follow_events(client: TrainerClient, run_id: str, *, json_lines: bool) -> int:
    def print_json(event: Event) -> None:
        print(event.model_dump_json(), flush=True)

    on_event = print_json if json_lines else ProgressView(out=sys.stdout).handle
    return follow_run(client, run_id, on_event)


def _cancel(client: TrainerClient, args: argparse.Namespace) -> int:
    result = client.cancel_run(args.run_id)
    if args.json:
        print(result.model_dump_json())
    elif result.outcome == "cancelled":
        print(f"run {result.run_id} cancelled")
    else:
        print(f"cancel requested: run {result.run_id} stops at its next step")
    return ExitCode.OK


def _generate(client: TrainerClient, args: argparse.Namespace) -> int:
    request = validate_generate_request(
        {
            "prompt": args.prompt,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "seed": args.seed,
            "num_return_sequences": args.num,
        }
    )
    accepted = client.generate(args.run_id, request, idempotency_key=uuid.uuid4().hex)
    record = wait_for_record(
        lambda: client.get_generate(args.run_id, accepted.request_id), args.wait
    )
    if args.json:
        print(record.model_dump_json(indent=2))
    elif record.result is not None:
        print("\n---\n".join(request.prompt + output for output in record.result.outputs))
    return _inference_exit_code(record)


def _score(client: TrainerClient, args: argparse.Namespace) -> int:
    detail = "per_token" if args.per_token else "summary"
    request = validate_score_request(
        {"text": args.text, "top_k": args.top_k, "detail_level": detail}
    )
    accepted = client.score(args.run_id, request, idempotency_key=uuid.uuid4().hex)
    record = wait_for_record(lambda: client.get_score(args.run_id, accepted.request_id), args.wait)
    if args.json:
        print(record.model_dump_json(indent=2))
    elif record.result is not None:
        r = record.result
        print(
            f"loss {r.loss:.4f} nats/token, perplexity {r.perplexity:.2f}, "
            f"{r.bits_per_token:.3f} bits/token over {r.num_predicted} predicted tokens"
        )
        for token in r.tokens:
            bits = "-" if token.surprisal_bits is None else f"{token.surprisal_bits:.2f}"
            expected = ", ".join(f"{p.text!r} {p.prob:.2f}" for p in token.topk)
            print(f"{token.position:>5} {token.text!r:<16} {bits:>7} bits  {expected}".rstrip())
    return _inference_exit_code(record)


def _predict(client: TrainerClient, args: argparse.Namespace) -> int:
    request = validate_predict_request({"texts": list(args.texts)})
    accepted = client.predict(args.run_id, request, idempotency_key=uuid.uuid4().hex)
    record = wait_for_record(
        lambda: client.get_predict(args.run_id, accepted.request_id), args.wait
    )
    return show_predictions(record, as_json=args.json)


def show_predictions(record: PredictRecord, *, as_json: bool) -> int:
    """A predict request's answer, per text (or as JSON); its exit code."""
    if as_json:
        print(record.model_dump_json(indent=2))
    elif record.result is not None:
        for index, prediction in enumerate(record.result.predictions, start=1):
            if isinstance(prediction, ClassifierPrediction):
                likely_labels = ", ".join(f"{p.label} {p.probability:.2f}" for p in prediction.top)
                print(f"[{index}] {prediction.label} ({likely_labels})")
                continue
            top = sorted(prediction.criteria, key=lambda c: -c.probability)[:3]
            likely = ", ".join(f"{c.criterion} {c.probability:.2f}" for c in top)
            print(f"[{index}] matched: {', '.join(prediction.matched) or 'none'} ({likely})")
            span = prediction.evidence
            where = "none" if span is None else f"{span.start}-{span.end} {span.text!r}"
            print(f"    evidence: {where}")
    return _inference_exit_code(record)


def wait_for_record(poll: Callable[[], RecordT], wait_s: float) -> RecordT:
    """Poll an inference request until it has finished."""
    deadline = time.monotonic() + wait_s
    while True:
        record = poll()
        if record.status in ("completed", "failed"):
            return record
        if time.monotonic() >= deadline:
            raise AppError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"request {record.request_id} is still {record.status} after {wait_s:g} s; "
                "is a worker running on the inference queue?",
            )
        time.sleep(POLL_INTERVAL_S)


def _inference_exit_code(record: GenerateRecord | ScoreRecord | PredictRecord) -> int:
    if record.error is None:
        return ExitCode.OK
    print(f"trainctl: {record.error.code}: {record.error.message}", file=sys.stderr)
    return exit_code_for(record.error.code)


def _logs(client: TrainerClient, args: argparse.Namespace) -> int:
    if args.follow:
        for line in client.stream_logs(args.run_id, tail=args.tail):
            print(line.model_dump_json() if args.json else _log_text(line), flush=True)
        return ExitCode.OK
    logs = client.run_logs(args.run_id, tail=args.tail)
    if args.json:
        print(logs.model_dump_json(indent=2))
    else:
        for line in logs.lines:
            print(_log_text(line))
    return ExitCode.OK


def _log_text(line: LogLine) -> str:
    return " ".join(part for part in (line.timestamp, line.level, line.message) if part)


_HANDLERS: Final[dict[str, Handler]] = {
    "submit": _submit,
    "runs": _runs,
    "status": _status,
    "follow": _follow,
    "cancel": _cancel,
    "generate": _generate,
    "score": _score,
    "predict": _predict,
    "logs": _logs,
}
