"""`trainctl retrain NAME`, `trainctl retrain-policy NAME` and `trainctl models compare NAME
CANDIDATE`: retraining a registered classifier and comparing two of its versions offline,
through the API (platform_core.retraining)."""

from __future__ import annotations

import argparse
from typing import Final, TypeVar

from pydantic import ValidationError

from platform_core import api_calls
from platform_core.errors import ExitCode, invalid_input
from platform_core.http_client import ApiError, TrainerClient
from platform_core.retrain_specs import (
    CompareRequest,
    RetrainPolicy,
    RetrainPolicyPublic,
    RetrainRequest,
)
from platform_core.settings import Settings
from trainer_cli.remote import Handler, run_handler

COMMANDS: Final = ("retrain", "retrain-policy")
BodyT = TypeVar("BodyT", RetrainRequest, RetrainPolicy, CompareRequest)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retrain = commands.add_parser(
        "retrain", help="retrain a model on newer data; promote only when better"
    )
    retrain.add_argument("name")
    retrain.add_argument("--dataset", help="a prepared dataset (default: prepare it again)")
    retrain.add_argument("--user-id", type=int, help="the Discord user told of the verdict")
    retrain.add_argument("--actor", default="trainctl", help="who asks (goes into the history)")
    retrain.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    policy = commands.add_parser(
        "retrain-policy", help="show or set a model's retraining schedule and threshold"
    )
    policy.add_argument("name")
    policy.add_argument("--cron", help="5-field cron in UTC, e.g. '0 3 * * 1' ('' removes it)")
    policy.add_argument("--growth", type=float, help="retrain on this much more data (0.1)")
    policy.add_argument("--no-growth", action="store_true", help="no data-growth trigger")
    policy.add_argument("--min-gain", type=float, help="accuracy gain a promotion needs (0.02)")
    policy.add_argument("--alpha", type=float, help="McNemar's significance level (0.05)")
    policy.add_argument("--owner", type=int, help="the Discord user told of each verdict")
    policy.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def add_model_actions(registry: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`trainctl models compare`, beside the registry's other actions."""
    compare = registry.add_parser(
        "compare", help="compare two versions on a labelled test split (offline A/B)"
    )
    compare.add_argument("name")
    compare.add_argument("candidate", help="the version that might replace the current one")
    compare.add_argument("--current", help="the version to beat (default: production)")
    compare.add_argument("--dataset", help="whose test split (default: the candidate's dataset)")
    compare.add_argument("--min-gain", type=float, help="accuracy gain PROMOTE needs (0.02)")
    compare.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_handler(settings, args, _HANDLERS[args.command])


def _retrain(client: TrainerClient, args: argparse.Namespace) -> int:
    fields = {"dataset_id": args.dataset, "user_id": args.user_id, "actor": args.actor}
    body = _validated(RetrainRequest, fields)
    accepted = client.call(api_calls.retrain_model(args.name, body))
    if args.json:
        print(accepted.model_dump_json())
    else:
        links = [accepted.dataset_run, accepted.train_run, accepted.run_id]
        print(
            f"retraining {accepted.name} (production {accepted.production_version}): "
            + " -> ".join(link for link in links if link)
        )
        print(f"follow it with: trainctl follow {accepted.run_id}")
    return ExitCode.OK


def _policy(client: TrainerClient, args: argparse.Namespace) -> int:
    changes: dict[str, object] = {}
    if args.cron is not None:
        changes["cron"] = args.cron or None
    if args.no_growth:
        changes["growth_threshold"] = None
    elif args.growth is not None:
        changes["growth_threshold"] = args.growth
    numbers = {"min_accuracy_gain": args.min_gain, "alpha": args.alpha, "owner_id": args.owner}
    changes.update({field: value for field, value in numbers.items() if value is not None})
    if not changes:
        stored = client.call(api_calls.get_retrain_policy(args.name))
    else:
        base = _current_policy(client, args.name)
        policy = _validated(RetrainPolicy, {**base.model_dump(), **changes})
        stored = client.call(api_calls.set_retrain_policy(args.name, policy))
    _print_policy(stored, as_json=args.json)
    return ExitCode.OK


def _current_policy(client: TrainerClient, name: str) -> RetrainPolicy:
    """The stored policy, or the defaults for a model that has none yet."""
    try:
        return client.call(api_calls.get_retrain_policy(name)).policy
    except ApiError as error:
        if error.status != 404:
            raise
        return RetrainPolicy()


def _print_policy(stored: RetrainPolicyPublic, *, as_json: bool) -> None:
    if as_json:
        print(stored.model_dump_json(indent=2))
        return
    policy = stored.policy
    growth = "off" if policy.growth_threshold is None else f"+{policy.growth_threshold:.0%} rows"
    print(
        f"{stored.name}: schedule {policy.cron or 'none'}, data growth {growth}, promote at "
        f"+{policy.min_accuracy_gain:.3f} accuracy with McNemar p < {policy.alpha:g}, owner "
        f"{policy.owner_id or '-'}"
    )


def compare(client: TrainerClient, args: argparse.Namespace) -> int:
    """`trainctl models compare`."""
    fields: dict[str, object] = {
        "candidate": args.candidate,
        "current": args.current,
        "dataset_id": args.dataset,
    }
    if args.min_gain is not None:
        fields["min_accuracy_gain"] = args.min_gain
    accepted = client.call(api_calls.compare_models(args.name, _validated(CompareRequest, fields)))
    if args.json:
        print(accepted.model_dump_json())
    else:
        print(f"{accepted.kind} {accepted.run_id}: {accepted.status}")
        print(f"its report: GET /models/{args.name}/comparisons/{accepted.run_id}")
    return ExitCode.OK


def _validated(model: type[BodyT], fields: dict[str, object]) -> BodyT:
    """The request body from the flags; a flag the API would refuse is refused here, with
    the same typed error (exit code 2)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid_input(exc, what="the options") from exc


_HANDLERS: Final[dict[str, Handler]] = {"retrain": _retrain, "retrain-policy": _policy}
