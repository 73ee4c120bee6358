"""One dual-agent training run, from a `TrainRunSpec` (family `dual_agent`) to
`runs/<run_id>/`, on the same lifecycle and loop as the language models.

Data, tokenizer and model are built before the run folder exists (a bad request fails as
USER_INPUT and leaves nothing). The shared loop trains with the run's callbacks (events,
checkpoints, retention, resume); then the criteria thresholds are tuned on validation, the
model and the keyword baseline are measured on the test split, and the final weights, the
tokenizer and the encoder's config go to `model/` for predict.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from platform_core.manifests import CorpusRecord, DualAgentRecord, write_atomic
from platform_core.specs import DualAgentOptions, TrainRunSpec
from trainer_worker.dual_agent.baseline import BASELINE_THRESHOLDS, keyword_baseline
from trainer_worker.dual_agent.criteria import CRITERIA
from trainer_worker.dual_agent.data import Post, Splits, data_report
from trainer_worker.dual_agent.encoding import Encoded, encode_posts
from trainer_worker.dual_agent.metrics import (
    CharSpan,
    criteria_metrics,
    evidence_metrics,
    tune_thresholds,
)
from trainer_worker.dual_agent.model import (
    DUAL_AGENT_PRESETS,
    DualAgentModel,
    build_encoder,
    load_encoder,
)
from trainer_worker.dual_agent.sources import load_splits
from trainer_worker.dual_agent.task import DualAgentTask, DualBatch
from trainer_worker.family_run import (
    TOKENIZER_DIR,
    RunStart,
    Trained,
    encoder_tokenizer,
    finish_run,
    headline_outcome,
    starting_manifest,
)
from trainer_worker.job_context import JobContext, Outcome
from trainer_worker.models.gpt2 import fetch_pretrained
from trainer_worker.models.registry import resolve_pretrained
from trainer_worker.training.seeding import seed_everything

ENCODER_DIR = "encoder"  # in model/: the encoder's config.json (predict rebuilds from it)
REPORT_FILE = "dual_agent.json"  # in eval/
# the completed event's headline figures (the manifest holds every one)
HEADLINE = (
    "criteria_matcher/f1",
    "criteria_matcher/precision",
    "criteria_matcher/recall",
    "criteria_matcher/auc",
    "evidence_binder/char_f1",
    "evidence_binder/exact_match",
    "evidence_binder/has_answer",
)


@dataclass(frozen=True)
class DualAgentRun:
    """A prepared dual-agent run (a `family_run.FamilyRun`): its start, and what the
    thresholds and the test report need once it has trained."""

    start: RunStart[DualBatch]
    options: DualAgentOptions
    splits: Splits
    tokenizer: PreTrainedTokenizerFast
    model: DualAgentModel  # start's, typed
    task: DualAgentTask  # start's, typed
    test: Encoded

    def finish(self, context: JobContext, trained: Trained) -> Outcome:
        """The report, `model/` for predict, then the shared end with the dual-agent record
        and headline figures."""
        layout, run_id = context.layout, context.run_id
        # thresholds on val, then the test split: the model and the keyword baseline
        record = measure(self)
        report = record.model_dump_json(indent=2).encode()
        write_atomic(layout.eval_dir(run_id) / REPORT_FILE, report)
        model_dir = layout.model_dir(run_id)
        model_dir.mkdir(exist_ok=True)
        self.tokenizer.save_pretrained(str(model_dir / TOKENIZER_DIR))
        self.model.encoder.config.save_pretrained(str(model_dir / ENCODER_DIR))
        headline = headline_metrics(record)
        update: dict[str, object] = {"dual_agent": record}
        done = finish_run(context, trained, self.model, update=update, final_metrics=headline)
        return headline_outcome(trained, done, headline, summary_line(headline))


def gold_spans(posts: tuple[Post, ...]) -> list[list[CharSpan]]:
    return [[(s.start, s.end) for s in post.evidence] for post in posts]


def prepare_dual_agent(spec: TrainRunSpec, context: JobContext) -> DualAgentRun:
    options = spec.dual_agent_options
    loaded = load_splits(options, context.layout.root)
    splits = loaded.splits
    texts = [post.text for post in splits.train]
    tokenizer = encoder_tokenizer(spec, context.layout, context.run_id, texts, options.vocab_size)
    seed_everything(spec.train.seed)  # the initial weights come from the seeded generators
    if spec.model.pretrained is not None:
        resolved = resolve_pretrained(spec.model, context.layout.root).pretrained
        encoder = load_encoder(fetch_pretrained(str(resolved), None))
    else:
        preset = DUAL_AGENT_PRESETS[spec.model.preset]
        if spec.model.context_size is not None:
            preset = preset.__class__(
                **{**preset.__dict__, "max_positions": spec.model.context_size}
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        encoder = build_encoder(preset, len(tokenizer), pad, spec.model.dropout)
    model = DualAgentModel(encoder, options.criteria_head)
    width = spec.train.block_size
    train, val = (
        encode_posts(tokenizer, splits.train, width),
        encode_posts(tokenizer, splits.val, width),
    )
    task = DualAgentTask(
        train=train,
        val=val,
        val_texts=[post.text for post in splits.val],
        val_gold=gold_spans(splits.val),
        head=options.criteria_head,
        weights=options.task_weights,
        pos_weight=dual_pos_weight(train) if options.class_weights else None,
    )
    corpus = CorpusRecord(
        source=loaded.source,
        sha256=loaded.sha256,
        num_documents=len(splits.train) + len(splits.val) + len(splits.test),
        num_train_documents=len(splits.train),
        num_holdout_documents=len(splits.val),
    )
    manifest = starting_manifest(context, spec, model, corpus)
    start = RunStart(spec, model, task, manifest, len(tokenizer), keep_tokenizer=tokenizer)
    test = encode_posts(tokenizer, splits.test, width)
    return DualAgentRun(start, options, splits, tokenizer, model, task, test)


def dual_pos_weight(train: Encoded) -> torch.Tensor:
    """negatives / positives per criterion, within [1, 100] (1 for a criterion never seen)."""
    positives = train.labels.sum(dim=0)  # (C,)
    negatives = len(train) - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1), 1.0).clamp(1.0, 100.0)


def measure(run: DualAgentRun) -> DualAgentRecord:
    """Tune the thresholds on val, then score the model and the baseline on test."""
    task, device = run.task, next(run.model.parameters()).device
    batch = max(run.start.spec.train.batch_size, 32)
    val = task.predict(run.model, task.val, device, nullcontext, batch)
    thresholds = tune_thresholds(val.probs, task.val.labels)
    val_metrics = criteria_metrics(val.probs, task.val.labels, thresholds, "val/criteria_matcher")
    val_metrics.update(
        evidence_metrics(task.val_texts, val.spans, task.val_gold, "val/evidence_binder")
    )
    test_metrics: dict[str, float] = {}
    baseline_metrics: dict[str, float] = {}
    if len(run.test):
        texts, gold = [post.text for post in run.splits.test], gold_spans(run.splits.test)
        found = task.predict(run.model, run.test, device, nullcontext, batch)
        test_metrics = criteria_metrics(
            found.probs, run.test.labels, thresholds, "test/criteria_matcher"
        )
        test_metrics["test/criteria_matcher/loss"] = found.criteria_loss
        test_metrics.update(evidence_metrics(texts, found.spans, gold, "test/evidence_binder"))
        scores, spans = keyword_baseline(texts)
        baseline_metrics = criteria_metrics(
            scores, run.test.labels, BASELINE_THRESHOLDS, "test/criteria_matcher"
        )
        baseline_metrics.update(evidence_metrics(texts, spans, gold, "test/evidence_binder"))
    return DualAgentRecord(
        criteria=list(CRITERIA),
        criteria_head=run.options.criteria_head,
        thresholds=dict(zip(CRITERIA, thresholds, strict=True)),
        data_report=data_report(run.splits),
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        baseline_test_metrics=baseline_metrics,
    )


def headline_metrics(record: DualAgentRecord) -> dict[str, float]:
    """Macro test figures of the model ("test/...") and the baseline ("baseline/...")."""
    out: dict[str, float] = {}
    for name in HEADLINE:
        if f"test/{name}" in record.test_metrics:
            out[f"test/{name}"] = record.test_metrics[f"test/{name}"]
            out[f"baseline/{name}"] = record.baseline_test_metrics[f"test/{name}"]
    return out


def summary_line(headline: dict[str, float]) -> str:
    if "test/criteria_matcher/f1" not in headline:
        return "no test split"
    return (
        f"criteria macro F1 {headline['test/criteria_matcher/f1']:.3f} "
        f"(keyword baseline {headline['baseline/criteria_matcher/f1']:.3f}), "
        f"evidence char F1 {headline['test/evidence_binder/char_f1']:.3f} "
        f"(baseline {headline['baseline/evidence_binder/char_f1']:.3f})"
    )
