"""GET /artifacts/{kind}/{id}: a folder as a streamed tar.gz, resolved inside the data root,
with symbolic links left out."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from platform_core.errors import AppError, ErrorCode
from platform_core.http_client import ApiError, AsyncTrainerClient, TrainerClient
from tests.api.conftest import LiveApi
from trainer_api import archive

pytestmark = pytest.mark.integration


@pytest.fixture
def tokenizer_folder(data_root: Path, tmp_path: Path) -> Path:
    folder = data_root / "tokenizers" / "tok-1"
    (folder / "nested").mkdir(parents=True)
    (folder / "manifest.json").write_text('{"id": "tok-1"}')
    (folder / "vocab.json").write_bytes(os.urandom(3000))  # not a multiple of 512
    (folder / "nested" / "notes.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside the data root")
    os.symlink(tmp_path / "secret.txt", folder / "leak.txt")
    os.symlink(tmp_path, folder / "leak-dir")
    return folder


def test_a_tokenizer_folder_downloads_as_tar_gz(
    client: TrainerClient, tokenizer_folder: Path, tmp_path: Path
) -> None:
    saved = client.download_artifact("tokenizers", "tok-1", tmp_path / "tok.tar.gz")
    assert saved == tmp_path / "tok.tar.gz" and not (tmp_path / "tok.tar.gz.part").exists()
    with tarfile.open(saved, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            "tok-1",
            "tok-1/nested",
            "tok-1/nested/notes.txt",
            "tok-1/manifest.json",
            "tok-1/vocab.json",
        }
        manifest = tar.extractfile("tok-1/manifest.json")
        vocab = tar.extractfile("tok-1/vocab.json")
        assert manifest is not None and manifest.read() == b'{"id": "tok-1"}'
        assert vocab is not None
        assert vocab.read() == (tokenizer_folder / "vocab.json").read_bytes()
        assert members["tok-1/nested"].isdir()


def test_headers_and_the_async_client(
    live_api: LiveApi, tokenizer_folder: Path, tmp_path: Path
) -> None:
    response = httpx.get(f"{live_api.base_url}/artifacts/tokenizers/tok-1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"] == 'attachment; filename="tok-1.tar.gz"'

    async def download() -> Path:
        async with AsyncTrainerClient(live_api.base_url) as client:
            return await client.download_artifact("tokenizers", "tok-1", tmp_path / "a.tar.gz")

    with tarfile.open(asyncio.run(download())) as tar:
        assert "tok-1/manifest.json" in tar.getnames()


def test_a_large_file_streams_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "_READ_BLOCK", 10_000)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(300_000))  # random: deflate must emit
    chunks = list(archive.tar_gz(folder, "run"))
    assert len(chunks) > 2
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
        extracted = tar.extractfile("run/weights.bin")
        assert extracted is not None
        assert extracted.read() == (folder / "weights.bin").read_bytes()


def test_a_file_that_shrank_after_its_header_stops_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 10)
    # its header announced 2000 bytes: padding with zeros would hand out a corrupt file
    with pytest.raises(AppError, match="changed while it was archived"):
        list(archive._file_blocks(path, 2000))


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/artifacts/runs/missing", 404, "NOT_FOUND"),
        ("/artifacts/models/tok-1", 422, "INVALID_INPUT"),
        ("/artifacts/runs/..", 404, "NOT_FOUND"),  # normalised away by the URL: another path
        ("/artifacts/runs/..%2F..%2Fetc", 404, "NOT_FOUND"),  # decoded to more segments
        ("/artifacts/runs/%2Fetc", 404, "NOT_FOUND"),
        ("/artifacts/runs/.hidden", 422, "INVALID_INPUT"),
        ("/artifacts/runs/linked-out", 422, "PATH_OUTSIDE_DATA_ROOT"),
    ],
)
def test_paths_outside_the_data_root_are_refused(
    live_api: LiveApi, data_root: Path, tmp_path: Path, path: str, status: int, code: str
) -> None:
    (data_root / "runs").mkdir()
    os.symlink(tmp_path, data_root / "runs" / "linked-out")
    response = httpx.get(live_api.base_url + path)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_client_errors_leave_no_partial_file(client: TrainerClient, tmp_path: Path) -> None:
    with pytest.raises(ApiError) as missing:
        client.download_artifact("runs", "nothing", tmp_path / "x.tar.gz")
    assert (missing.value.status, missing.value.error_code) == (404, ErrorCode.NOT_FOUND)
    assert not list(tmp_path.glob("x.tar.gz*"))
