"""The nine DSM-5 major-depression criteria as ReDSM5 labels them, in head order, and the
keyword lists of the baseline."""

from __future__ import annotations

from typing import Final

# the criteria head's output order; a post's labels are a subset of these
CRITERIA: Final = (
    "DEPRESSED_MOOD",
    "ANHEDONIA",
    "APPETITE_CHANGE",
    "SLEEP_ISSUES",
    "PSYCHOMOTOR",
    "FATIGUE",
    "WORTHLESSNESS",
    "COGNITIVE_ISSUES",
    "SUICIDAL_THOUGHTS",
)
CRITERION_INDEX: Final = {name: i for i, name in enumerate(CRITERIA)}

# the keyword baseline's lists: words a reader would search for first. They match hard
# negatives too (someone else's symptoms, negations), which is what the model must beat.
KEYWORDS: Final[dict[str, tuple[str, ...]]] = {
    "DEPRESSED_MOOD": ("sad", "empty", "hopeless", "down", "crying", "depressed"),
    "ANHEDONIA": ("enjoy", "interest", "fun", "pleasure", "care about", "hobbies"),
    "APPETITE_CHANGE": ("appetite", "eat", "eating", "weight", "food", "hungry"),
    "SLEEP_ISSUES": ("sleep", "insomnia", "awake", "nightmares", "oversleep", "bed"),
    "PSYCHOMOTOR": ("restless", "slow", "fidget", "sluggish", "pacing", "agitated"),
    "FATIGUE": ("tired", "exhausted", "energy", "drained", "fatigue", "worn out"),
    "WORTHLESSNESS": ("worthless", "guilt", "guilty", "failure", "burden", "useless"),
    "COGNITIVE_ISSUES": ("focus", "concentrate", "decide", "decisions", "memory", "think"),
    "SUICIDAL_THOUGHTS": ("die", "dying", "suicide", "kill myself", "end it", "not be here"),
}
