"""Seeds and random-number-generator states: what makes a run repeatable and resumable.

Every source of randomness the engine touches is seeded from one integer: Python's
`random`, NumPy's global generator, torch (CPU and every CUDA device), the batch sampler's
own `torch.Generator`, and DataLoader workers. `RngState` captures all of them so a run
resumed from a checkpoint draws exactly the numbers the uninterrupted run would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from platform_core.errors import AppError, ErrorCode


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Call before building the model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seed must fit 32 bits
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_generator(seed: int) -> torch.Generator:
    """A private generator, so batch sampling does not shift when the model draws numbers."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: derive each worker's Python/NumPy seeds from torch's
    per-worker seed (which the loader's generator fixes), as torch's docs recommend."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


@dataclass(frozen=True)
class RngState:
    python: tuple[object, ...]  # random.getstate()
    numpy_keys: Tensor  # MT19937 key (624,) as int64 so torch.load(weights_only=True) accepts it
    numpy_pos: int
    numpy_has_gauss: int
    numpy_cached_gauss: float
    torch_cpu: Tensor  # torch.get_rng_state(), uint8
    torch_cuda: list[Tensor]  # one state per visible CUDA device; empty on CPU
    sampler: Tensor  # the batch sampler generator's state

    def state_dict(self) -> dict[str, object]:
        return {
            "python": self.python,
            "numpy_keys": self.numpy_keys,
            "numpy_pos": self.numpy_pos,
            "numpy_has_gauss": self.numpy_has_gauss,
            "numpy_cached_gauss": self.numpy_cached_gauss,
            "torch_cpu": self.torch_cpu,
            "torch_cuda": list(self.torch_cuda),
            "sampler": self.sampler,
        }

    @staticmethod
    def from_state_dict(state: dict[str, object]) -> RngState:
        python = state.get("python")
        keys, cpu, sampler = state.get("numpy_keys"), state.get("torch_cpu"), state.get("sampler")
        pos, has_gauss = state.get("numpy_pos"), state.get("numpy_has_gauss")
        gauss, cuda = state.get("numpy_cached_gauss"), state.get("torch_cuda")
        if not (
            isinstance(python, tuple)
            and isinstance(keys, Tensor)
            and isinstance(cpu, Tensor)
            and isinstance(sampler, Tensor)
            and isinstance(pos, int)
            and isinstance(has_gauss, int)
            and isinstance(gauss, float)
            and isinstance(cuda, list)
            and all(isinstance(t, Tensor) for t in cuda)
        ):
            raise AppError(ErrorCode.CHECKPOINT_CORRUPT, "checkpoint RNG state is malformed")
        return RngState(
            python=python,
            numpy_keys=keys,
            numpy_pos=pos,
            numpy_has_gauss=has_gauss,
            numpy_cached_gauss=gauss,
            torch_cpu=cpu,
            torch_cuda=[t for t in cuda if isinstance(t, Tensor)],
            sampler=sampler,
        )


def capture_rng_state(sampler: torch.Generator) -> RngState:
    _name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    if not isinstance(keys, np.ndarray):
        raise AppError(ErrorCode.INTERNAL, "NumPy returned an unexpected RNG state layout")
    return RngState(
        python=random.getstate(),
        numpy_keys=torch.from_numpy(keys.astype(np.int64)),
        numpy_pos=int(pos),
        numpy_has_gauss=int(has_gauss),
        numpy_cached_gauss=float(cached),
        torch_cpu=torch.get_rng_state(),
        torch_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        sampler=sampler.get_state(),
    )


def restore_rng_state(state: RngState, sampler: torch.Generator) -> None:
    random.setstate(state.python)
    keys = state.numpy_keys.numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, state.numpy_pos, state.numpy_has_gauss, state.numpy_cached_gauss)
    )
    torch.set_rng_state(state.torch_cpu)
    # a checkpoint from a machine with a different GPU count restores what overlaps
    if state.torch_cuda and torch.cuda.is_available():
        count = min(len(state.torch_cuda), torch.cuda.device_count())
        for index in range(count):
            torch.cuda.set_rng_state(state.torch_cuda[index], index)
    sampler.set_state(state.sampler)
