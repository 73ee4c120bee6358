"""The online A/B analysis: accuracy on labelled outcomes, the two-proportion test against
a hand computation, and "not enough data" below the floor."""

from __future__ import annotations

import math

import pytest

from platform_core.ab_analysis import MIN_LABELLED, analyse
from platform_core.ab_models import Outcome


def test_two_proportions_match_a_hand_computation() -> None:
    found = [
        Outcome(version="1.0.0", labelled=100, correct=60),
        Outcome(version="1.1.0", labelled=100, correct=75),
    ]
    report = analyse("m", {"1.0.0": 50, "1.1.0": 50}, found, production="1.0.0")
    (comparison,) = report.comparisons
    # pooled p = 135/200; se = sqrt(p (1 - p) (1/100 + 1/100)); z = 0.15 / se
    pooled = 135 / 200
    z = 0.15 / math.sqrt(pooled * (1 - pooled) * 0.02)
    assert comparison.z == pytest.approx(z)
    assert comparison.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert comparison.p_value == pytest.approx(0.0235, abs=1e-4)
    half = 1.959964 * math.sqrt(0.6 * 0.4 / 100 + 0.75 * 0.25 / 100)
    assert comparison.low == pytest.approx(0.15 - half, abs=1e-5)
    assert comparison.high == pytest.approx(0.15 + half, abs=1e-5)
    assert comparison.significant and "1.1.0 is more accurate than 1.0.0" in comparison.message


def test_equal_or_perfect_arms_are_no_difference() -> None:
    found = [
        Outcome(version="1.0.0", labelled=40, correct=40),
        Outcome(version="1.1.0", labelled=50, correct=50),
    ]
    (comparison,) = analyse("m", {"1.0.0": 90, "1.1.0": 10}, found, production=None).comparisons
    assert (comparison.z, comparison.p_value, comparison.significant) == (0.0, 1.0, False)
    assert comparison.message.startswith("no significant difference")


def test_not_enough_data_says_how_much_is_missing() -> None:
    found = [Outcome(version="1.0.0", labelled=MIN_LABELLED, correct=20)]
    report = analyse("m", {"1.0.0": 80, "1.1.0": 20}, found, production="1.0.0")
    assert [(arm.version, arm.labelled, arm.accuracy) for arm in report.arms] == [
        ("1.0.0", MIN_LABELLED, 20 / MIN_LABELLED),
        ("1.1.0", 0, None),
    ]
    (comparison,) = report.comparisons
    assert not comparison.enough_data and comparison.accuracy_difference is None
    assert f"1.1.0 has 0 (needs {MIN_LABELLED} more)" in comparison.message


def test_a_version_no_longer_served_still_reports() -> None:
    found = [Outcome(version="0.9.0", labelled=5, correct=5)]
    report = analyse("m", {"1.0.0": 100}, found, production="1.0.0")
    assert [(arm.version, arm.weight) for arm in report.arms] == [("1.0.0", 100), ("0.9.0", 0)]
    assert report.control == "1.0.0" and report.comparisons[0].candidate == "0.9.0"
