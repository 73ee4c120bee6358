"""Generation and scoring for both model families, through the tokenizer Protocol."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import (
    GenerateRequest,
    ModelSpec,
    ScoreRequest,
    TrainConfig,
    validate_generate_request,
    validate_score_request,
)
from tests.worker.train_helpers import char_codec, corpus_text
from trainer_worker.inference.generate import generate
from trainer_worker.inference.score import score
from trainer_worker.models.char_lstm import CharLSTM
from trainer_worker.models.registry import build_model
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.training.data import eval_loader
from trainer_worker.training.evaluate import estimate_loss
from trainer_worker.training.loop import train
from trainer_worker.training.seeding import seed_everything

TEXT = corpus_text(30_000)
TOKENIZER = char_codec(TEXT)
FAMILIES = ["gpt2", "char_lstm"]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest) -> nn.Module:
    """A briefly trained model of each family: generations are text-like, not uniform noise."""
    seed_everything(0)
    built = build_model(ModelSpec(family=request.param), TOKENIZER.vocab_size, TOKENIZER.eos_id)
    ids = torch.tensor(TOKENIZER.encode(TEXT), dtype=torch.long)
    config = TrainConfig(
        block_size=32,
        batch_size=8,
        max_steps=25,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_every=1000,
        device="cpu",
    )
    train(built, ids, None, config)
    return built.eval()


def _generate(model: nn.Module, **fields: object) -> list[str]:
    return generate(model, TOKENIZER, GenerateRequest.model_validate(fields)).outputs


# --- generation ---------------------------------------------------------------------------


def test_greedy_generation_is_deterministic(model: nn.Module) -> None:
    first = generate(
        model,
        TOKENIZER,
        GenerateRequest(prompt="The ", max_new_tokens=20, temperature=0, num_return_sequences=3),
    )
    again = _generate(model, prompt="The ", max_new_tokens=20, temperature=0)
    assert first.outputs == [again[0]] * 3
    assert first.steps == [20, 20, 20]
    assert first.stop_reasons == ["max_new_tokens"] * 3
    assert first.eos_terminated == [False] * 3
    assert first.prompt_tokens == 4
    assert len(again[0]) == 20  # one character per token with the char codec


def test_sampling_repeats_with_its_seed(model: nn.Module) -> None:
    request = GenerateRequest(prompt="def ", max_new_tokens=30, seed=5, num_return_sequences=2)
    first = generate(model, TOKENIZER, request)
    assert first.seed == 5
    assert generate(model, TOKENIZER, request).outputs == first.outputs
    other = generate(model, TOKENIZER, request.model_copy(update={"seed": 6}))
    assert other.outputs != first.outputs
    unseeded = generate(model, TOKENIZER, request.model_copy(update={"seed": None}))
    replayed = generate(model, TOKENIZER, request.model_copy(update={"seed": unseeded.seed}))
    assert replayed.outputs == unseeded.outputs


def test_top_k_one_and_a_tiny_nucleus_are_greedy(model: nn.Module) -> None:
    greedy = _generate(model, prompt="for ", max_new_tokens=15, temperature=0)
    assert _generate(model, prompt="for ", max_new_tokens=15, top_k=1, seed=1) == greedy
    assert _generate(model, prompt="for ", max_new_tokens=15, top_p=1e-6, seed=1) == greedy


def test_stop_sequence_cuts_the_output(model: nn.Module) -> None:
    full = _generate(model, prompt="The ", max_new_tokens=40, temperature=0)[0]
    stop = full[10:12]
    cut_at = full.find(stop)
    result = generate(
        model,
        TOKENIZER,
        GenerateRequest(prompt="The ", max_new_tokens=40, temperature=0, stop_sequences=(stop,)),
    )
    assert result.outputs == [full[:cut_at]]
    assert result.stop_reasons == ["stop_sequence"]
    assert result.steps == [cut_at + len(stop)]


def test_eos_stops_generation_unless_told_otherwise() -> None:
    seed_everything(0)
    lstm = build_model(ModelSpec(family="char_lstm"), TOKENIZER.vocab_size, TOKENIZER.eos_id)
    assert isinstance(lstm, CharLSTM) and TOKENIZER.eos_id is not None
    with torch.no_grad():
        lstm.head.bias[TOKENIZER.eos_id] = 1e4  # the model now always predicts end-of-text
    stopped = generate(lstm, TOKENIZER, GenerateRequest(prompt="a", temperature=0))
    assert (stopped.outputs, stopped.steps, stopped.eos_terminated) == ([""], [1], [True])
    assert stopped.stop_reasons == ["eos"]
    ignored = generate(
        lstm, TOKENIZER, GenerateRequest(prompt="a", max_new_tokens=5, stop_on_eos=False)
    )
    assert ignored.steps == [5] and ignored.stop_reasons == ["max_new_tokens"]


def test_prompt_longer_than_the_context_is_cropped() -> None:
    gpt2 = build_model(ModelSpec(family="gpt2"), TOKENIZER.vocab_size, TOKENIZER.eos_id)
    prompt = TEXT[:300]  # the tiny GPT-2 has 128 positions
    # an untrained model samples end-of-text now and then: not what this test is about
    request = GenerateRequest(prompt=prompt, max_new_tokens=3, stop_on_eos=False)
    result = generate(gpt2, TOKENIZER, request)
    assert result.prompt_tokens == 300 and result.steps == [3]


def test_empty_prompt_starts_from_end_of_text(model: nn.Module) -> None:
    result = generate(model, TOKENIZER, GenerateRequest(prompt="", max_new_tokens=4))
    assert result.prompt_tokens == 1 and sum(result.steps) >= 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 513}, "max_new_tokens"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"num_return_sequences": 11}, "num_return_sequences"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"stop_sequences": ["x"] * 9}, "stop_sequences"),
        ({"seed": -1}, "seed"),
        ({"prompt": "x" * 20_001}, "prompt"),
        ({"beam_width": 4}, "beam_width"),
    ],
)
def test_bad_generate_requests_are_refused_before_any_work(
    payload: dict[str, object], field: str
) -> None:
    with pytest.raises(AppError) as err:
        validate_generate_request({"prompt": "hi", **payload})
    assert err.value.code is ErrorCode.INVALID_INPUT
    assert err.value.message.startswith(f"invalid generate request: {field}")


def test_generate_request_is_frozen_and_accepts_json_lists() -> None:
    request = validate_generate_request({"prompt": "a", "stop_sequences": ["\n\n", "END"]})
    assert request.stop_sequences == ("\n\n", "END")
    with pytest.raises(ValidationError):
        request.max_new_tokens = 3  # type: ignore[misc]  # asserting the request is frozen


# --- scoring ------------------------------------------------------------------------------


def test_score_loss_is_the_training_loss_on_the_same_ids(model: nn.Module) -> None:
    # windows match the holdout blocks: 128 positions for the tiny GPT-2, 1024 for the LSTM
    window = 128 if not isinstance(model, CharLSTM) else 1024
    text = TEXT[5000 : 5000 + 2 * window + 1]
    ids = torch.tensor(TOKENIZER.encode(text), dtype=torch.long)
    assert ids.numel() == 2 * window + 1
    training = estimate_loss(
        model, eval_loader(ids, window, 2, 1), torch.device("cpu"), nullcontext
    )
    result = score(model, TOKENIZER, ScoreRequest(text=text, detail_level="summary"))
    assert result.loss == pytest.approx(training.mean, abs=1e-6)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.bits_per_token == pytest.approx(result.loss / math.log(2))
    assert (result.num_tokens, result.num_predicted) == (2 * window + 1, 2 * window)
    assert result.tokens == []


def test_score_reports_surprisal_in_bits_and_top_predictions(model: nn.Module) -> None:
    text = "The for loop repeats a block."
    result = score(model, TOKENIZER, ScoreRequest(text=text, top_k=3))
    assert [t.text for t in result.tokens] == list(text)
    first, rest = result.tokens[0], result.tokens[1:]
    assert first.surprisal_bits is None and first.topk == []
    bits = [t.surprisal_bits for t in rest if t.surprisal_bits is not None]
    assert len(bits) == len(rest)
    assert sum(bits) / len(bits) * math.log(2) == pytest.approx(result.loss, rel=1e-6)
    for token in rest:
        probs = [p.prob for p in token.topk]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        for prediction in token.topk:
            if prediction.token_id == token.token_id and token.surprisal_bits is not None:
                assert token.surprisal_bits == pytest.approx(-math.log2(prediction.prob), rel=1e-4)


def test_scoring_a_long_text_in_windows_covers_every_token(model: nn.Module) -> None:
    text = TEXT[:1500]  # several GPT-2 windows; one LSTM window
    result = score(model, TOKENIZER, ScoreRequest(text=text))
    assert result.num_predicted == 1499 and len(result.tokens) == 1500
    assert all(math.isfinite(t.surprisal_bits or 0.0) for t in result.tokens)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "x" * 100_001}, "text"),
        ({"text": "ab", "top_k": 21}, "top_k"),
        ({"text": "ab", "top_k": -1}, "top_k"),
        ({"text": "ab", "detail_level": "per_char"}, "detail_level"),
        ({"text": "ab", "path": "corpus.txt"}, "path"),
    ],
)
def test_bad_score_requests_are_refused(payload: dict[str, object], field: str) -> None:
    with pytest.raises(AppError) as err:
        validate_score_request(payload)
    assert err.value.code is ErrorCode.INVALID_INPUT
    assert err.value.message.startswith(f"invalid score request: {field}")


def test_scoring_needs_two_known_tokens_and_a_matching_vocabulary(model: nn.Module) -> None:
    with pytest.raises(AppError) as short:
        score(model, TOKENIZER, ScoreRequest(text="a"))
    assert short.value.code is ErrorCode.INVALID_INPUT
    small = build_model(ModelSpec(family="char_lstm"), 5, None)
    with pytest.raises(AppError) as mismatch:
        score(small, TOKENIZER, ScoreRequest(text="The end"))
    assert mismatch.value.code is ErrorCode.DATA_INVALID
    with pytest.raises(AppError) as generating:
        generate(small, TOKENIZER, GenerateRequest(prompt="The end"))
    assert generating.value.code is ErrorCode.DATA_INVALID


def test_protocol_typed_codec_round_trips() -> None:
    codec: Tokenizer = TOKENIZER
    assert codec.decode(codec.encode("for x in y:")) == "for x in y:"
    assert replace(TrainConfig(), max_steps=2).max_steps == 2  # configs copy cleanly for jobs
