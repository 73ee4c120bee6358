"""Checkpoints on a real filesystem: atomic writes, hashes, verified loads, the index, and
writes in the background."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.serialization import config as serialization_config

from platform_core.errors import AppError, ErrorCode
from platform_core.specs import ModelSpec, TrainConfig
from tests.worker.train_helpers import train_eval_split
from trainer_worker import checkpoints
from trainer_worker.checkpoints import (
    INDEX_FILE,
    MODEL_FILE,
    CheckpointMeta,
    CheckpointWriter,
    hashed_io,
    list_checkpoints,
    load_checkpoint,
    load_model_file,
    read_meta,
    safetensors_format,
    save_checkpoint,
    snapshot,
    verify_checkpoint,
    verify_model_file,
    write_model,
)
from trainer_worker.models.registry import build_model
from trainer_worker.training.callbacks import Callbacks, CheckpointInfo
from trainer_worker.training.loop import train
from trainer_worker.training.state import TrainState


def _trained(steps: int = 3) -> tuple[torch.nn.Module, TrainState]:
    """A tiny GPT-2 (tied embedding and head) after a few real steps, and its state."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(family="gpt2", preset="tiny"), vocab_size=256, eos_id=0)
    captured: list[TrainState] = []

    def keep(info: CheckpointInfo) -> None:
        captured.append(info.state)

    train_ids, eval_ids = train_eval_split(8_000)
    config = TrainConfig(
        max_steps=steps, batch_size=2, block_size=16, eval_every=100, warmup_steps=1, device="cpu"
    )
    train(model, train_ids, eval_ids, config, Callbacks(on_checkpoint=keep))
    return model, captured[-1]


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, TrainState]:
    return _trained()


def test_round_trip_restores_weights_tied_weights_and_state(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=2.5)
    assert meta.step == state.step and meta.eval_loss == 2.5
    assert meta.size_bytes == sum(
        p.stat().st_size for p in (tmp_path / meta.name).iterdir() if p.name != "meta.json"
    )
    fresh = build_model(ModelSpec(family="gpt2", preset="tiny"), vocab_size=256, eos_id=0)
    restored = load_checkpoint(tmp_path / meta.name, fresh)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    head, embedding = (
        fresh.state_dict()["hf.lm_head.weight"],
        fresh.state_dict()["hf.transformer.wte.weight"],
    )
    assert head.data_ptr() == embedding.data_ptr()  # still tied after loading
    assert restored.step == state.step and restored.tokens_seen == state.tokens_seen
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_checkpoints_weights_load_with_the_safetensors_library(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=None)
    loaded = load_file(tmp_path / meta.name / MODEL_FILE)
    live = model.state_dict()
    assert "hf.lm_head.weight" not in loaded  # tied to the embedding: stored once
    assert set(loaded) | {"hf.lm_head.weight"} == set(live)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, live[name]), name
    # the training state (saved without the zip CRC-32s) reads back with a plain torch.load
    raw = torch.load(tmp_path / meta.name / "train_state.pt", weights_only=True)
    assert TrainState.from_state_dict(raw).step == state.step
    assert serialization_config.save.compute_crc32  # the process-wide default is restored


def test_checkpoints_with_whole_file_digests_still_verify(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    """Checkpoints written before piece hashing record the SHA-256 of each whole file."""
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=None)
    folder = tmp_path / meta.name
    legacy = {
        name: {
            "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
            "size": rec["size"],
        }
        for name, rec in meta.files.items()
    }
    raw = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**raw, "files": legacy}))
    assert verify_checkpoint(folder).files == legacy
    load_checkpoint(folder, build_model(ModelSpec(family="gpt2", preset="tiny"), 256, 0))
    (folder / "meta.json").write_text(
        json.dumps(
            {
                **raw,
                "files": {
                    **legacy,
                    MODEL_FILE: meta.files[MODEL_FILE] | {"sha256": legacy[MODEL_FILE]["sha256"]},
                },
            }
        )
    )
    with pytest.raises(AppError, match=r"model\.safetensors: hash mismatch"):
        verify_checkpoint(folder)  # a whole-file digest labelled as a piece tree never passes


def test_index_lists_every_checkpoint(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    save_checkpoint(tmp_path, model, state, eval_loss=None)
    later = TrainState(**{**state.__dict__, "step": state.step + 5})
    save_checkpoint(tmp_path, model, later, eval_loss=1.0)
    rows = json.loads((tmp_path / INDEX_FILE).read_text())
    assert [r["step"] for r in rows] == [state.step, state.step + 5]
    assert rows[1]["eval_loss"] == 1.0
    assert rows[1]["sha256"] == read_meta(tmp_path / rows[1]["name"]).files[MODEL_FILE]["sha256"]
    assert all(r["size_bytes"] > 0 for r in rows)


@pytest.mark.parametrize("victim", [MODEL_FILE, "train_state.pt"])
def test_flipped_bytes_are_caught_before_loading(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState], victim: str
) -> None:
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=None)
    path = tmp_path / meta.name / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AppError) as info:
        verify_checkpoint(tmp_path / meta.name)
    assert info.value.code is ErrorCode.CHECKPOINT_CORRUPT
    assert victim in info.value.message


def test_missing_files_and_meta_are_corrupt(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=None)
    (tmp_path / meta.name / MODEL_FILE).unlink()
    with pytest.raises(AppError, match="unreadable"):
        verify_checkpoint(tmp_path / meta.name)
    (tmp_path / meta.name / "meta.json").write_text("{broken")
    with pytest.raises(AppError, match="unreadable meta"):
        read_meta(tmp_path / meta.name)
    assert json.loads((tmp_path / INDEX_FILE).read_text())  # written before the damage
    checkpoints.write_index(tmp_path)
    assert json.loads((tmp_path / INDEX_FILE).read_text()) == []  # unreadable ones are left out


def test_a_failed_write_leaves_nothing_and_disk_full_is_storage_full(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, state = trained
    real = hashed_io.write_hashed
    calls: list[Path] = []

    def fail_second(
        path: Path,
        fill: Callable[[BinaryIO], object],
        *,
        piece_bytes: int | None = None,
        sync: bool = True,
    ) -> dict[str, int | str]:
        calls.append(path)
        if len(calls) == 2:  # the weights are written, the training state fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, fill, piece_bytes=piece_bytes, sync=sync)

    monkeypatch.setattr(hashed_io, "write_hashed", fail_second)
    with pytest.raises(AppError) as info:
        save_checkpoint(tmp_path, model, state, eval_loss=None)
    assert info.value.code is ErrorCode.STORAGE_FULL
    assert list(tmp_path.iterdir()) == []  # no partial checkpoint, no temporary folder

    def interrupted(
        path: Path,
        fill: Callable[[BinaryIO], object],
        *,
        piece_bytes: int | None = None,
        sync: bool = True,
    ) -> dict[str, int | str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(hashed_io, "write_hashed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, state, eval_loss=None)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(
        hashed_io,
        "write_hashed",
        lambda *_, **__: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")),
    )
    with pytest.raises(AppError) as info:
        save_checkpoint(tmp_path, model, state, eval_loss=None)
    assert info.value.code is ErrorCode.TRAINING_FAILED


def test_saving_the_same_step_again_replaces_it(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    save_checkpoint(tmp_path, model, state, eval_loss=3.0)
    save_checkpoint(tmp_path, model, state, eval_loss=2.0)
    (only,) = list_checkpoints(tmp_path)
    assert read_meta(only).eval_loss == 2.0


def test_background_writer_snapshots_before_training_moves_on(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snap = snapshot(model, state)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # training goes on while the snapshot is written
    written: list[CheckpointMeta] = []
    writer = CheckpointWriter()
    writer.submit(tmp_path, snap, eval_loss=1.5, on_written=written.append)
    writer.wait()
    writer.wait()  # idempotent
    fresh = build_model(ModelSpec(family="gpt2", preset="tiny"), vocab_size=256, eos_id=0)
    load_checkpoint(tmp_path / written[0].name, fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sub_(1.0)


def test_the_writer_refills_the_last_snapshot_instead_of_allocating(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    writer = CheckpointWriter()
    first = writer.snapshot(model, state)
    writer.submit(tmp_path, first, eval_loss=None, on_written=lambda _m: None)
    pointers = {name: t.data_ptr() for name, t in first.tensors.items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(2.0)  # training moved on
    later = TrainState(**{**state.__dict__, "step": state.step + 1})
    second = writer.snapshot(model, later)  # waits for the first write, then refills it
    assert {name: t.data_ptr() for name, t in second.tensors.items()} == pointers
    live = model.state_dict()
    assert all(torch.equal(second.tensors[name], live[name]) for name in second.tensors)
    # the first checkpoint on disk still holds the weights of its own step
    fresh = build_model(ModelSpec(family="gpt2", preset="tiny"), vocab_size=256, eos_id=0)
    load_checkpoint(tmp_path / checkpoints.checkpoint_name(state.step), fresh)
    assert all(torch.equal(fresh.state_dict()[n], live[n] / 2) for n in second.tensors)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.div_(2.0)
    # a tensor whose shape changed gets a new buffer
    grown = {**first.tensors, "extra": torch.zeros(3)}
    reshaped = checkpoints.Snapshot(first.step, grown, first.aliases, first.state)
    third = snapshot(torch.nn.Linear(2, 3), state, reuse=reshaped)
    assert third.tensors["weight"].shape == (3, 2)


def test_background_write_errors_reach_the_training_thread(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, state = trained
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.submit(blocker, snapshot(model, state), eval_loss=None, on_written=lambda _m: None)
    with pytest.raises(FileExistsError):
        writer.wait()
    writer.wait()  # the error is reported once


@pytest.mark.parametrize("change", ["truncated", "extended"])
def test_a_file_of_another_size_is_corrupt_even_with_a_matching_prefix(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState], change: str
) -> None:
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=None)
    path = tmp_path / meta.name / "train_state.pt"
    data = path.read_bytes()
    path.write_bytes(data[:-1] if change == "truncated" else data + b"\0")
    with pytest.raises(AppError, match=r"train_state\.pt: hash mismatch"):
        verify_checkpoint(tmp_path / meta.name)


def test_weights_are_standard_safetensors_of_every_dtype(tmp_path: Path) -> None:
    """The hand-written layout reads back with the safetensors library itself."""
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "f16": torch.randn(2, 2).to(torch.float16),
        "i64": torch.arange(7),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 4),
        "scalar": torch.tensor(2.5),
    }
    path = tmp_path / "w.safetensors"
    record = safetensors_format.write_safetensors(path, tensors, {"alias": "f32"}, piece_bytes=None)
    assert record["size"] == path.stat().st_size
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_file(path)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0  # the data starts 8-byte aligned
    with pytest.raises(AppError, match="cannot save"):
        safetensors_format.write_safetensors(path, {"c": torch.zeros(2, dtype=torch.complex64)}, {})


def test_write_model_is_atomic_and_loads_back(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    model, _ = trained
    path = tmp_path / "model.safetensors"
    record = write_model(path, model)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    fresh = build_model(ModelSpec(family="gpt2", preset="tiny"), vocab_size=256, eos_id=0)
    load_model_file(fresh, path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name


def test_final_model_files_verify_against_their_sha256_once_per_version(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = trained
    path = tmp_path / "model.safetensors"
    record = write_model(path, model)
    expected = str(record["sha256"])
    hashed: list[Path] = []
    real = hashed_io.file_digest

    def counting(target: Path, rec: dict[str, int | str]) -> str | None:
        hashed.append(target)
        return real(target, rec)

    monkeypatch.setattr(hashed_io, "file_digest", counting)
    verify_model_file(path, expected)
    assert hashed == []  # just written: its digest is known
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    verify_model_file(copy, expected)
    verify_model_file(copy, expected)
    assert hashed == [copy]  # hashed once, then remembered by (path, mtime, size)
    data = bytearray(copy.read_bytes())
    data[-3] ^= 0x40  # an exponent bit of the last weight: loads fine, generates garbage
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(1, 1))  # a different version, whatever the clock did
    with pytest.raises(AppError, match="hash mismatch") as info:
        verify_model_file(copy, expected)
    assert info.value.code is ErrorCode.CHECKPOINT_CORRUPT
    with pytest.raises(AppError, match="hash mismatch"):
        verify_model_file(copy, expected)  # a failure is never remembered as a pass
    with pytest.raises(AppError, match="unreadable"):
        verify_model_file(tmp_path / "missing.safetensors", expected)


@pytest.mark.parametrize(
    "damage",
    [
        b"\xff" * 8,  # a header length past the end
        (5).to_bytes(8, "little") + b"[1,2]",  # a header that is not an object
        (3).to_bytes(8, "little") + b"{no",  # not JSON
    ],
)
def test_weights_that_do_not_parse_are_corrupt(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(damage)
    with pytest.raises(AppError, match="unreadable safetensors") as info:
        load_model_file(torch.nn.Linear(2, 2), path)
    assert info.value.code is ErrorCode.CHECKPOINT_CORRUPT


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 20]},  # bytes past the end
        {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]},  # an unknown dtype
        "not an entry",
    ],
)
def test_tensor_entries_outside_the_file_or_of_unknown_dtype_are_corrupt(
    tmp_path: Path, entry: object
) -> None:
    header = json.dumps({"w": entry}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(AppError, match="unreadable safetensors") as info:
        load_model_file(torch.nn.Linear(2, 2), path)
    assert info.value.code is ErrorCode.CHECKPOINT_CORRUPT


def test_an_empty_weights_file_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(AppError, match="empty") as info:
        load_model_file(torch.nn.Linear(2, 2), tmp_path / "model.safetensors")
    assert info.value.code is ErrorCode.CHECKPOINT_CORRUPT


def test_a_training_state_that_verifies_but_does_not_load_is_corrupt(
    tmp_path: Path, trained: tuple[torch.nn.Module, TrainState]
) -> None:
    """Meta and file replaced together (hashes match): torch.load's refusal is still typed."""
    model, state = trained
    meta = save_checkpoint(tmp_path, model, state, eval_loss=None)
    folder = tmp_path / meta.name
    junk = b"not a torch file"
    (folder / "train_state.pt").write_bytes(junk)
    files = {
        **meta.files,
        "train_state.pt": {"sha256": hashlib.sha256(junk).hexdigest(), "size": len(junk)},
    }
    raw = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**raw, "files": files}))
    fresh = build_model(ModelSpec(family="gpt2", preset="tiny"), vocab_size=256, eos_id=0)
    with pytest.raises(AppError, match=r"train_state\.pt: unreadable") as info:
        load_checkpoint(folder, fresh)
    assert info.value.code is ErrorCode.CHECKPOINT_CORRUPT


def _piece_tree(data: bytes, piece: int) -> str:
    digests = b"".join(
        hashlib.sha256(data[i : i + piece]).digest() for i in range(0, len(data), piece)
    )
    return hashlib.sha256(digests).hexdigest()


@pytest.mark.parametrize("size", [0, 100, 8 * 1024 * 1024, 20 * 1024 * 1024 + 123])
def test_pieces_hashed_in_parallel_give_the_documented_digests(tmp_path: Path, size: int) -> None:
    """Writes cut files into pieces hashed on the pool; the records are the SHA-256 of the
    concatenated piece digests (piece tree) or of the whole file, and verification agrees."""
    data = torch.randint(0, 256, (size,), dtype=torch.uint8).numpy().tobytes()
    path = tmp_path / "big.bin"

    def fill(out: BinaryIO) -> None:  # odd-sized writes straddle piece boundaries
        view = memoryview(data)
        for begin, end in ((0, 5), (5, 70_000), (70_000, 9_000_000), (9_000_000, len(data))):
            out.write(view[min(begin, len(data)) : min(end, len(data))])

    tree = hashed_io.write_hashed(path, fill)
    assert tree == {
        "sha256": _piece_tree(data, hashed_io.PIECE_BYTES),
        "size": size,
        "piece_bytes": hashed_io.PIECE_BYTES,
    }
    assert path.read_bytes() == data
    whole = hashed_io.write_file(tmp_path / "whole.bin", data, piece_bytes=None)
    assert whole == {"sha256": hashlib.sha256(data).hexdigest(), "size": size}
    small_pieces = hashed_io.write_file(tmp_path / "small.bin", data, piece_bytes=1 << 20)
    assert small_pieces["sha256"] == _piece_tree(data, 1 << 20)
    for name, record in (("big.bin", tree), ("whole.bin", whole), ("small.bin", small_pieces)):
        assert hashed_io.verify_file(tmp_path / name, record)
        assert not hashed_io.verify_file(tmp_path / name, {**record, "size": size + 1})
    if size:
        damaged = bytearray(data)
        damaged[-1] ^= 1
        path.write_bytes(bytes(damaged))
        assert not hashed_io.verify_file(path, tree)
    for refused in (0, 1, True, 1 << 30, "8388608"):  # sizes this code never writes
        assert not hashed_io.verify_file(path, {**tree, "piece_bytes": refused})


def test_our_reader_parses_every_dtype_the_writer_writes(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "empty": torch.empty(0, 4),
        "scalar": torch.tensor(2.5),
    }
    path = tmp_path / "w.safetensors"
    safetensors_format.write_safetensors(path, tensors, {"alias": "f32"})
    parsed, metadata = safetensors_format.parse_safetensors(bytearray(path.read_bytes()))
    assert json.loads(metadata["aliases"]) == {"alias": "f32"}
    for name, tensor in tensors.items():
        assert parsed[name].dtype == tensor.dtype and torch.equal(parsed[name], tensor), name


def test_a_forked_child_hashes_with_a_pool_of_its_own(tmp_path: Path) -> None:
    """RQ forks the work horse from a worker that may have hashed already: the child must
    not wait on the parent's pool threads, which do not exist in it."""
    data = bytes(range(256)) * 40_000  # 10 MB: more than one piece, on the pool
    record = hashed_io.write_file(tmp_path / "parent.bin", data)  # the parent's pool runs
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if hashing completes and agrees
        ok = hashed_io.verify_file(tmp_path / "parent.bin", record)
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung on the parent's hashing pool")
