"""Where training runs and in what precision, resolved once before the loop starts.

- device `auto` = CUDA when present, else CPU; `cuda` without a GPU is refused
  (DEVICE_UNAVAILABLE) rather than silently training on the CPU for hours.
- precision `auto` = bf16 on CUDA when the GPU supports it (no loss scaling needed), else
  fp16 with a GradScaler; fp32 on CPU, where autocast buys little for these models.
- DataLoader workers / pinned memory only pay off when batches cross to a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import DeviceChoice, PrecisionChoice

Precision = Literal["fp16", "bf16", "fp32"]

# GPU batch sizes below these leave most of the device idle
CUDA_MIN_BATCH_SIZE: dict[str, int] = {"gpt2": 32, "char_lstm": 64}
CUDA_MIN_BATCH_SIZE_OTHER = 16


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device  # where the model and batches live
    precision: Precision  # what autocast computes in
    autocast_dtype: torch.dtype | None  # None = autocast off (fp32)
    use_grad_scaler: bool  # fp16 only: scales the loss so small gradients do not underflow
    num_workers: int  # DataLoader worker processes
    pin_memory: bool  # page-locked host buffers for faster host -> GPU copies


def resolve_device(choice: DeviceChoice, cuda_available: bool | None = None) -> torch.device:
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if choice == "cuda" and not has_cuda:
        raise AppError(
            ErrorCode.DEVICE_UNAVAILABLE,
            "device 'cuda' was requested but no CUDA GPU is visible to this worker "
            "(use device 'auto' or 'cpu', or run the job on a GPU worker)",
        )
    if choice == "cuda" or (choice == "auto" and has_cuda):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_precision(
    choice: PrecisionChoice, device: torch.device, bf16_supported: bool
) -> Precision:
    """Pure: the precision to train in, given the device and whether it has bf16 (on a CPU:
    native bf16 instructions, `cpu_has_bf16`). On a CPU, `auto` stays fp32 and bf16 is asked
    for by name."""
    if device.type != "cuda":
        if choice == "fp16":
            raise AppError(
                ErrorCode.CONFIG_INVALID,
                "precision 'fp16' needs a CUDA device; use 'fp32', 'auto' or (on a CPU with "
                "AMX or AVX512-BF16) 'bf16' on CPU",
            )
        if choice == "bf16" and not bf16_supported:
            raise AppError(
                ErrorCode.CONFIG_INVALID,
                "this worker's CPU has no bf16 instructions (AMX or AVX512-BF16): bf16 would "
                "be emulated, slower than fp32; use 'fp32' or 'auto'",
            )
        return "bf16" if choice == "bf16" else "fp32"
    if choice == "auto":
        return "bf16" if bf16_supported else "fp16"
    if choice == "bf16" and not bf16_supported:
        raise AppError(
            ErrorCode.CONFIG_INVALID, "this GPU does not support bf16; use 'fp16' or 'auto'"
        )
    return choice


def loader_settings(device: torch.device, cpu_count: int | None = None) -> tuple[int, bool]:
    """(num_workers, pin_memory) for a DataLoader feeding `device`."""
    if device.type == "cuda":
        cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        return min(4, cpus), True
    return 0, False


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX512-BF16), where autocast to
    bf16 about halves a training step's time (docs/benchmarks.md); elsewhere oneDNN
    emulates it, slower than fp32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's own
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_device_setup(device: DeviceChoice, precision: PrecisionChoice) -> DeviceSetup:
    dev = resolve_device(device)
    bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_has_bf16()
    prec = resolve_precision(precision, dev, bf16)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[prec]
    num_workers, pin_memory = loader_settings(dev)
    return DeviceSetup(
        device=dev,
        precision=prec,
        autocast_dtype=dtype,
        use_grad_scaler=prec == "fp16",
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def suggested_batch_size(family: str, batch_size: int, device: torch.device) -> int:
    """On CUDA, raise small batch sizes to a size that keeps the GPU busy; CPU keeps the
    requested size. Callers apply this when the user left the batch size at its default."""
    if device.type != "cuda":
        return batch_size
    return max(batch_size, CUDA_MIN_BATCH_SIZE.get(family, CUDA_MIN_BATCH_SIZE_OTHER))
