"""Synthetic ReDSM5-format posts, in the project's own words, for the demo and the tests.

A post is a few filler sentences, at most one first-person symptom sentence (its criterion
is the post's label, the sentence its evidence) and often a hard negative: someone else's
symptom, a past and resolved one, a negation, or a one-off bad day. Filler mentions food,
beds and tiredness of the everyday kind, and sentences get Reddit-style noise (lower case,
"tbh", missing apostrophes). Symptom templates are split: the test split uses sentence
shapes the model never saw in training, so it measures generalisation. Every evidence
offset is checked against the text it points at.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.data import EvidenceSpan, Post, Splits, split_posts


@dataclass(frozen=True)
class Symptom:
    base: str  # after "I" in the present: "feel empty inside"
    third: str  # after "she": "feels empty inside"
    past: str  # after "I" in the past: "felt empty inside"


SYMPTOMS: dict[str, tuple[Symptom, ...]] = {
    "DEPRESSED_MOOD": (
        Symptom("feel empty and hopeless", "feels empty and hopeless", "felt empty and hopeless"),
        Symptom("cry for no reason", "cries for no reason", "cried for no reason"),
        Symptom("feel down all day", "feels down all day", "felt down all day"),
    ),
    "ANHEDONIA": (
        Symptom("can't enjoy anything", "can't enjoy anything", "couldn't enjoy anything"),
        Symptom(
            "have lost interest in my hobbies",
            "has lost interest in her hobbies",
            "lost interest in my hobbies",
        ),
        Symptom("don't care about music anymore", "doesn't care about music", "stopped caring"),
    ),
    "APPETITE_CHANGE": (
        Symptom("barely eat anything", "barely eats anything", "barely ate anything"),
        Symptom("have no appetite", "has no appetite", "had no appetite"),
        Symptom("keep losing weight", "keeps losing weight", "lost a lot of weight"),
    ),
    "SLEEP_ISSUES": (
        Symptom("lie awake until 4am", "lies awake until 4am", "lay awake until 4am"),
        Symptom("can't sleep at night", "can't sleep at night", "couldn't sleep at night"),
        Symptom("sleep fourteen hours a day", "sleeps fourteen hours a day", "slept all day"),
    ),
    "PSYCHOMOTOR": (
        Symptom("feel restless and keep pacing", "feels restless and paces", "felt restless"),
        Symptom("move and talk so slow", "moves and talks so slow", "moved so slow"),
        Symptom("can't sit still", "can't sit still", "couldn't sit still"),
    ),
    "FATIGUE": (
        Symptom("am exhausted no matter what", "is exhausted no matter what", "was exhausted"),
        Symptom("have zero energy", "has zero energy", "had zero energy"),
        Symptom("feel drained after tiny tasks", "feels drained after tiny tasks", "felt drained"),
    ),
    "WORTHLESSNESS": (
        Symptom("feel worthless", "feels worthless", "felt worthless"),
        Symptom("feel like a burden to everyone", "feels like a burden", "felt like a burden"),
        Symptom("blame myself for everything", "blames herself for everything", "blamed myself"),
    ),
    "COGNITIVE_ISSUES": (
        Symptom("can't focus on anything", "can't focus on anything", "couldn't focus"),
        Symptom("can't make simple decisions", "can't make simple decisions", "couldn't decide"),
        Symptom("forget things constantly", "forgets things constantly", "forgot everything"),
    ),
    "SUICIDAL_THOUGHTS": (
        Symptom("think about ending my life", "thinks about ending her life", "thought about it"),
        Symptom("wish I could just not be here", "wishes she were not here", "wished to die"),
        Symptom(
            "think everyone would be better off without me",
            "says she wants to die",
            "wanted to die",
        ),
    ),
}

# first-person, current, persistent: {s} is a Symptom.base, {d} a duration
TRAIN_TEMPLATES = (
    "For {d} now I {s} almost every day.",
    "Lately I {s} and it just won't stop.",
    "I {s} pretty much all the time these days.",
    "Honestly I {s} and I don't know why anymore.",
    "Every morning I {s}, and then the day starts.",
    "I {s} most days now and nobody notices.",
)
TEST_TEMPLATES = (
    "It's been {d} and I still {s} constantly.",
    "Nowadays I {s} nearly every single day.",
)
HARD_NEGATIVES = (
    "My {o} {t} lately and I'm worried about her.",  # someone else's symptom
    "Back in {y} I {p}, but that passed and I'm doing well now.",  # past and resolved
    "Last {w} was one bad day where I {p}, but it was only that day.",  # one-off
    "To be clear, I'm fine, my {o} is the one who {t}.",  # someone else's, again
    # the training templates' own wrappers around someone else's symptom: the subject and
    # the verb decide, not the wrapper words
    "For {d} now my {o} {t} almost every day.",
    "Lately my {o} {t} and it just won't stop.",
)
NEGATIONS = (  # plain negations of the criterion's first symptom
    "It's not true that I {s}, thankfully.",
    "People ask if I {s}, but no, not at all.",
)
FILLER = (
    "I work at a warehouse and the shifts are long.",
    "We got food from the new taco place on friday.",
    "My dog loves sleeping on my bed.",
    "Anyway, the weather here has been weird.",
    "I started a new show on netflix last week.",
    "My roommate is always tired after the gym, which is funny.",
    "Not sure if this is the right sub for this.",
    "I have a big exam coming up in march.",
    "We went hiking and everyone was exhausted but happy.",
    "My mom called to ask about my plans for the holidays.",
    "Thanks for reading this far.",
    "Idk what else to say really.",
)
DURATIONS = ("two weeks", "a month", "three months", "half a year", "weeks")
OTHERS = ("sister", "mom", "best friend", "girlfriend", "coworker", "aunt")
YEARS = ("2015", "high school", "college", "my first job")
WEEKDAYS = ("monday", "tuesday", "weekend", "friday")


def _noise(sentence: str, rng: random.Random) -> str:
    """Reddit-style noise that keeps the words: lower case, fillers, lost apostrophes."""
    roll = rng.random()
    if roll < 0.15:
        sentence = sentence.lower()
    elif roll < 0.25:
        sentence = sentence.replace("'", "")
    if rng.random() < 0.1:
        sentence = sentence.rstrip(".") + " tbh."
    return sentence


def _positive(criterion: str, templates: tuple[str, ...], rng: random.Random) -> str:
    symptom = rng.choice(SYMPTOMS[criterion])
    return rng.choice(templates).format(d=rng.choice(DURATIONS), s=symptom.base)


def _hard_negative(criterion: str, rng: random.Random) -> str:
    symptom = rng.choice(SYMPTOMS[criterion])
    if rng.random() < 0.25:
        return rng.choice(NEGATIONS).format(s=SYMPTOMS[criterion][0].base)
    return rng.choice(HARD_NEGATIVES).format(
        d=rng.choice(DURATIONS),
        o=rng.choice(OTHERS),
        t=symptom.third,
        p=symptom.past,
        y=rng.choice(YEARS),
        w=rng.choice(WEEKDAYS),
    )


def generate_post(post_id: str, rng: random.Random, templates: tuple[str, ...]) -> Post:
    """One post: filler, maybe a symptom sentence (the label and evidence), maybe a hard
    negative; the sentences shuffled and joined, the evidence offset checked."""
    sentences = [_noise(s, rng) for s in rng.sample(FILLER, rng.randint(1, 2))]
    criterion = rng.choice(CRITERIA) if rng.random() < 0.6 else None
    if rng.random() < 0.5 or (criterion is None and rng.random() < 0.7):
        sentences.append(_noise(_hard_negative(rng.choice(CRITERIA), rng), rng))
    evidence_sentence = None
    if criterion is not None:
        evidence_sentence = _noise(_positive(criterion, templates, rng), rng)
        sentences.insert(rng.randint(0, len(sentences)), evidence_sentence)
    else:
        rng.shuffle(sentences)
    text = " ".join(sentences)
    if criterion is None or evidence_sentence is None:
        return Post(post_id, text, (), ())
    start = text.index(evidence_sentence)
    span = EvidenceSpan(criterion, start, start + len(evidence_sentence), evidence_sentence)
    if text[span.start : span.end] != span.text:  # the contract every reader relies on
        raise AssertionError(f"generated evidence offsets drifted in post {post_id}")
    return Post(post_id, text, (criterion,), (span,))


def generate_splits(num_posts: int, seed: int, val_fraction: float = 0.15) -> Splits:
    """`num_posts` posts from the training templates (split into train and val, stratified
    by label set) and a test split a fifth that size from the held-out templates."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not security
    seen = [generate_post(f"gen-{i}", rng, TRAIN_TEMPLATES) for i in range(num_posts)]
    held_out = [
        generate_post(f"gen-test-{i}", rng, TEST_TEMPLATES) for i in range(max(1, num_posts // 5))
    ]
    splits = split_posts(seen, val_fraction, 0.0, seed)
    return Splits(splits.train, splits.val, tuple(held_out))
