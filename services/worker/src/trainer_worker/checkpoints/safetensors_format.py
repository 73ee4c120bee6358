"""The safetensors layout, written and read by hand so tensors' bytes stream between their
own memory and the file with no serialised copy in between.

Layout: 8-byte little-endian header length, a JSON header (padded with spaces to a multiple of
8 so the data starts aligned) mapping each name to its dtype, shape and byte range, an
optional `__metadata__` of strings, then the tensors' bytes. Files written here load with
`safetensors.torch.load_file`; tied weights are stored once and named in the metadata's
`aliases` (name -> the name whose tensor it shares).
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import BinaryIO

import torch

from platform_core.errors import AppError, ErrorCode
from trainer_worker.checkpoints import hashed_io
from trainer_worker.checkpoints.hashed_io import PIECE_BYTES, FileRecord

# safetensors' names of the dtypes a model or optimizer holds
_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}


def write_safetensors(
    path: Path,
    tensors: dict[str, torch.Tensor],
    aliases: dict[str, str],
    *,
    piece_bytes: int | None = PIECE_BYTES,
    sync: bool = True,
) -> FileRecord:
    """Write `tensors` (contiguous CPU tensors) to `path`, fsynced unless `sync=False`;
    return its record."""
    header: dict[str, object] = {"__metadata__": {"aliases": json.dumps(aliases)}}
    views: list[memoryview] = []
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise AppError(ErrorCode.TRAINING_FAILED, f"cannot save {name} of dtype {tensor.dtype}")
        view = tensor_bytes(tensor)
        header[name] = {
            "dtype": _DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + view.nbytes],
        }
        views.append(view)
        offset += view.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    def fill(out: BinaryIO) -> None:
        out.write(len(encoded).to_bytes(8, "little") + encoded)
        for view in views:
            out.write(view)

    return hashed_io.write_hashed(path, fill, piece_bytes=piece_bytes, sync=sync)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data.cast("B")


def parse_safetensors(
    data: bytearray | mmap.mmap,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors viewing `data` (no copy) and the metadata of a safetensors buffer;
    CHECKPOINT_CORRUPT when the bytes are not a well-formed file."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8 : 8 + header_len]))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        raw_metadata = header.pop("__metadata__", {})
        start = 8 + header_len
        tensors = {name: _view_tensor(data, start, record) for name, record in header.items()}
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"unreadable safetensors: {exc}") from exc
    metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _view_tensor(data: bytearray | mmap.mmap, start: int, record: object) -> torch.Tensor:
    if not isinstance(record, dict):
        raise TypeError("tensor entry is not an object")
    dtype = _DTYPES[str(record["dtype"])]
    begin, end = (int(v) for v in record["data_offsets"])
    shape = [int(v) for v in record["shape"]]
    if not start <= start + begin <= start + end <= len(data):
        raise ValueError("tensor bytes lie outside the file")
    if end == begin:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(data, dtype=torch.uint8, count=end - begin, offset=start + begin)
    return raw.view(dtype).reshape(shape)


def map_file(path: Path) -> mmap.mmap:
    """A private, copy-on-write mapping of `path`: writable for `torch.frombuffer`, never
    written back. CHECKPOINT_CORRUPT for an empty file (which cannot be mapped)."""
    try:
        with path.open("rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    except ValueError as exc:
        raise AppError(ErrorCode.CHECKPOINT_CORRUPT, f"{path.name}: empty") from exc


def load_weights(model: torch.nn.Module, data: bytearray | mmap.mmap) -> None:
    """Load safetensors bytes into `model`, tied weights restored from the aliases; the
    tensors view `data` until `load_state_dict` copies them into the model's own memory."""
    tensors, metadata = parse_safetensors(data)
    aliases: dict[str, str] = json.loads(metadata.get("aliases", "{}"))
    for alias, original in aliases.items():
        tensors[alias] = tensors[original]
    model.load_state_dict(tensors, strict=True)
