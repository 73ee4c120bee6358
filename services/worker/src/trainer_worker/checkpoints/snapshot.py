"""Taking a checkpoint's content off the live model and optimizer.

`snapshot` copies the weights and the training state to CPU memory: the only part of a
checkpoint that blocks training. The copy is then written on another thread while training
goes on (`CheckpointWriter`). A snapshot whose write has finished lends its buffers to the
next one, so a run allocates checkpoint memory once, not once per checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer_worker.training.state import TrainState


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's content copied off the live model and optimizer (CPU memory)."""

    step: int
    tensors: dict[str, torch.Tensor]  # unique weights; tied ones listed in `aliases`
    aliases: dict[str, str]  # name -> the name whose tensor it shares
    state: dict[str, object]  # TrainState.state_dict() with every tensor copied


def snapshot(model: nn.Module, state: TrainState, *, reuse: Snapshot | None = None) -> Snapshot:
    """Copy what a checkpoint needs to CPU memory, so training can go on while it is written.
    `reuse`, an earlier snapshot whose write has finished, lends its buffers: each tensor of
    the same shape and dtype is refilled in place, which costs a fraction of allocating and
    first touching fresh memory (a second or more per GB on a virtual machine)."""
    weights, aliases = unique_tensors(model)
    previous = reuse.tensors if reuse is not None else {}
    tensors = {name: _copy_into(previous.get(name), t) for name, t in weights.items()}
    old_state = reuse.state if reuse is not None else {}
    state_copy = {k: _copy_tree(v, old_state.get(k)) for k, v in state.state_dict().items()}
    return Snapshot(state.step, tensors, aliases, state_copy)


def unique_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's weights (detached, where they live), tied ones (GPT-2's embedding and
    head) once, plus the names that alias them."""
    first_name: dict[tuple[int, int], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        tensors[name] = tensor.detach()
    return tensors, aliases


def _copy_into(buffer: object, value: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy of `value`: into `buffer` when it fits, else a new tensor."""
    if (
        isinstance(buffer, torch.Tensor)
        and buffer.shape == value.shape
        and buffer.dtype == value.dtype
    ):
        return buffer.copy_(value)
    return value.detach().to("cpu", copy=True).contiguous()


def _copy_tree(value: object, previous: object) -> object:
    """`value` (nested dicts, lists and tuples of tensors and scalars) with every tensor
    copied, into the matching tensor of `previous` where one fits."""
    if isinstance(value, torch.Tensor):
        return _copy_into(previous, value)
    if isinstance(value, dict):
        old = previous if isinstance(previous, dict) else {}
        return {k: _copy_tree(v, old.get(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        olds = list(previous) if isinstance(previous, list | tuple) else []
        olds += [None] * (len(value) - len(olds))
        return type(value)(_copy_tree(v, o) for v, o in zip(value, olds, strict=False))
    return value
