"""Text generation for any model with the forward contract, through the tokenizer Protocol.

Autoregressive sampling as nanoGPT's `generate`: crop the context to the model's limit, take
the last position's logits, apply temperature / top-k / top-p, draw (or argmax when the
temperature is 0), append. `num_return_sequences` rows decode as one batch. No key/value
cache: the prompt is re-read each step, which is simple and fast enough for 512 new tokens
on the models this engine trains.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import MAX_SEED, GenerateRequest, GenerateResult, GenerationStopReason
from trainer_worker.models.registry import context_size, model_device, require_vocab
from trainer_worker.tokenizers.protocol import Tokenizer
from trainer_worker.training.evaluate import forward_logits, output_vocab_size


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Tokenizer, request: GenerateRequest) -> GenerateResult:
    prompt_ids = tokenizer.encode(request.prompt)
    if not prompt_ids:
        if tokenizer.eos_id is None:
            raise AppError(
                ErrorCode.INVALID_INPUT,
                "the prompt is empty and this tokenizer has no end-of-text token to start from",
            )
        prompt_ids = [tokenizer.eos_id]
    eos_id = tokenizer.eos_id if request.stop_on_eos else None
    device = model_device(model)
    require_vocab(output_vocab_size(model, device), max(prompt_ids))
    limit = context_size(model)
    generator = torch.Generator(device=device)
    # a fresh seed within the request's own bound, so passing it back reproduces the output
    seed = request.seed if request.seed is not None else generator.seed() % (MAX_SEED + 1)
    generator.manual_seed(seed)

    n = request.num_return_sequences
    idx = torch.tensor([prompt_ids] * n, dtype=torch.long, device=device)  # (N, P)
    new_ids: list[list[int]] = [[] for _ in range(n)]
    reasons: list[GenerationStopReason | None] = [None] * n
    steps = [0] * n
    was_training = model.training
    model.eval()
    try:
        for _ in range(request.max_new_tokens):
            cond = idx if limit is None else idx[:, -limit:]  # (N, <=L)
            logits = forward_logits(model, cond)[:, -1, :].float()  # (N, V)
            next_ids = _pick_next(logits, request, generator)  # (N,)
            idx = torch.cat([idx, next_ids[:, None]], dim=1)
            for row, token in enumerate(next_ids.tolist()):
                if reasons[row] is not None:
                    continue  # finished rows keep decoding in the batch; ignore their tokens
                steps[row] += 1
                if token == eos_id:
                    reasons[row] = "eos"
                    continue
                new_ids[row].append(token)
                if request.stop_sequences and _find_stop(
                    tokenizer.decode(new_ids[row]), request.stop_sequences
                ):
                    reasons[row] = "stop_sequence"
            if all(reason is not None for reason in reasons):
                break
    finally:
        model.train(was_training)

    outputs = [_cut_at_stop(tokenizer.decode(ids), request.stop_sequences) for ids in new_ids]
    final: list[GenerationStopReason] = [r if r is not None else "max_new_tokens" for r in reasons]
    return GenerateResult(
        outputs=outputs,
        steps=steps,
        eos_terminated=[r == "eos" for r in final],
        stop_reasons=final,
        prompt_tokens=len(prompt_ids),
        seed=seed,
    )


def _pick_next(logits: Tensor, request: GenerateRequest, generator: torch.Generator) -> Tensor:
    """Next token per row from last-position logits (N, V) -> (N,)."""
    if request.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / request.temperature
    if request.top_k is not None and request.top_k < logits.size(-1):
        kth = torch.topk(logits, request.top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if request.top_p is not None and request.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token once the mass before it already reaches p; the top token always stays
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= request.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _find_stop(text: str, stops: tuple[str, ...]) -> bool:
    return any(stop in text for stop in stops)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """Text before the earliest stop sequence (the stop itself is not returned)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
