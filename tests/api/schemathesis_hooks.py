"""Hooks for the schemathesis run in test_schema.py (loaded through SCHEMATHESIS_HOOKS).

One hook, and only for `positive_data_acceptance` (ST202, "schema-valid request rejected"):
a 422 is not counted against the API when EVERY problem it names is a rule that JSON Schema
cannot state, so that schemathesis cannot know the request was invalid:

- a rule comparing two numbers of the request (`min_lr <= learning_rate`,
  `lr_decay_steps > warmup_steps`, a study distribution's `low < high`,
  `batch_size x block_size <= 131072`, `train.block_size <= model.context_size`): each is
  in the fields' descriptions and refused with a 422 naming both fields and both values;
- a study's search-space path naming a field of its base spec: which fields the base holds
  depends on the base itself (a family's options exist for that family only);
- the activation bound, which depends on the tokenizer's vocabulary and on the server's
  `training.max_activation_gib`, not on the request alone;
- the values of a retrain policy's cron fields (minute 0-59, month 1-12 or jan-dec, ...): the
  schema states the five fields' shape, croniter reads their values.

Every other check, and every other ST202, stays on. A new cross-field rule that the schema
can state belongs in the schema (`platform_core.specs.when`), not here.
"""

from __future__ import annotations

import json
import re

import schemathesis
from schemathesis import HookContext, Response
from schemathesis.core.failures import Failure

# how each rule that JSON Schema cannot state reads in its 422 message
UNSTATABLE_RULES = (
    "must be <= learning_rate",
    "must be greater than warmup_steps",
    "must be < high",  # a study's uniform / log-uniform / int bounds
    "is not a field of the base spec",  # a study's search path names a field its base holds
    "tokens) must be <=",
    "must be <= model.context_size",
    "training.max_activation_gib",
    "is not a valid cron expression",
)


@schemathesis.hook
def filter_failure(
    context: HookContext, failure: Failure, case: object, response: Response
) -> bool:
    """False (drop) for an ST202 whose 422 names only rules schemathesis cannot see."""
    if failure.code != "ST202" or response.status_code != 422:
        return True
    message = str(json.loads(response.content).get("message", ""))
    # problems are joined by "; ", and a problem's own text may hold one ("... must be <=
    # 131072; raise grad_accum_steps instead"): a new problem starts with its field's path
    problems = re.split(r"; (?=[\w.\[\]-]+: )", message.removeprefix("invalid request: "))
    return not all(any(rule in p for rule in UNSTATABLE_RULES) for p in problems)
