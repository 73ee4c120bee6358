"""The online A/B analysis: per served version, accuracy on labelled outcomes only (a
prediction counts once its true label came back as feedback; the model's own confidence is
never a stand-in for being right), and each candidate against the control.

The arms saw different callers, so the offline test's McNemar (paired: both versions on the
same examples, `trainer_worker.classify.ab_test`) does not apply. Two independent
proportions do: a two-sided two-proportion z-test (pooled standard error) for "is there a
difference", and a Wald interval (unpooled) on the accuracy difference for "how big".
Both rest on the normal approximation, so below `MIN_LABELLED` labelled outcomes in either
arm the analysis says there is not enough data yet instead of a number.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

from pydantic import BaseModel, ConfigDict

from platform_core.ab_models import Outcome

MIN_LABELLED: Final = 30  # per arm: the usual floor for the normal approximation of a proportion
ALPHA: Final = 0.05  # the same significance level as the offline A/B test
CONFIDENCE: Final = 0.95


class ArmReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    weight: int  # its share of traffic now (0: no longer served)
    labelled: int
    correct: int
    accuracy: float | None  # None before any labelled outcome


class Comparison(BaseModel):
    """A candidate against the control; numbers only when both have enough data."""

    model_config = ConfigDict(frozen=True)

    control: str
    candidate: str
    enough_data: bool
    message: str
    accuracy_difference: float | None = None  # candidate - control
    low: float | None = None
    high: float | None = None
    z: float | None = None
    p_value: float | None = None
    significant: bool | None = None


class ABReport(BaseModel):
    """`GET /models/{name}/ab`."""

    model_config = ConfigDict(frozen=True)

    name: str
    control: str | None  # production when it is served, else the heaviest arm
    arms: list[ArmReport]
    comparisons: list[Comparison]
    min_labelled: int
    alpha: float
    confidence: float


def analyse(
    name: str, weights: dict[str, int], found: list[Outcome], production: str | None
) -> ABReport:
    """Arms are the versions in the split and any with labelled outcomes; the control is the
    production version when it is served, else the heaviest arm."""
    by_version = {outcome.version: outcome for outcome in found}
    versions = list(weights) + [v for v in by_version if v not in weights]
    arms = [_arm(version, weights.get(version, 0), by_version.get(version)) for version in versions]
    control = production if production in weights else _heaviest(weights)
    base = next((arm for arm in arms if arm.version == control), None)
    comparisons = (
        [] if base is None else [compare(base, arm) for arm in arms if arm.version != control]
    )
    return ABReport(
        name=name,
        control=control,
        arms=arms,
        comparisons=comparisons,
        min_labelled=MIN_LABELLED,
        alpha=ALPHA,
        confidence=CONFIDENCE,
    )


def compare(control: ArmReport, candidate: ArmReport) -> Comparison:
    short = [arm for arm in (control, candidate) if arm.labelled < MIN_LABELLED]
    if short:
        needs = ", ".join(
            f"{arm.version} has {arm.labelled} (needs {MIN_LABELLED - arm.labelled} more)"
            for arm in short
        )
        return Comparison(
            control=control.version,
            candidate=candidate.version,
            enough_data=False,
            message=f"not enough data yet: at least {MIN_LABELLED} labelled outcomes per "
            f"version; {needs}",
        )
    p1, n1 = control.correct / control.labelled, control.labelled
    p2, n2 = candidate.correct / candidate.labelled, candidate.labelled
    difference = p2 - p1
    pooled = (control.correct + candidate.correct) / (n1 + n2)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = difference / pooled_se if pooled_se > 0 else 0.0  # both all right or all wrong
    p_value = 2 * (1 - NormalDist().cdf(abs(z)))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2) * se
    significant = p_value < ALPHA
    verdict = (
        f"{candidate.version} is {'more' if difference > 0 else 'less'} accurate than "
        f"{control.version}"
        if significant
        else f"no significant difference between {candidate.version} and {control.version}"
    )
    return Comparison(
        control=control.version,
        candidate=candidate.version,
        enough_data=True,
        message=f"{verdict}: accuracy {difference:+.4f} "
        f"[{difference - half:+.4f}, {difference + half:+.4f}], p = {p_value:.4g}",
        accuracy_difference=difference,
        low=difference - half,
        high=difference + half,
        z=z,
        p_value=p_value,
        significant=significant,
    )


def _arm(version: str, weight: int, outcome: Outcome | None) -> ArmReport:
    labelled = outcome.labelled if outcome else 0
    correct = outcome.correct if outcome else 0
    return ArmReport(
        version=version,
        weight=weight,
        labelled=labelled,
        correct=correct,
        accuracy=correct / labelled if labelled else None,
    )


def _heaviest(weights: dict[str, int]) -> str | None:
    return max(weights.items(), key=lambda item: item[1])[0] if weights else None
