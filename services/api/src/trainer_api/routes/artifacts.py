"""Artifacts: a tokenizer's or a run's folder as a streamed tar.gz."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from platform_core.api_models import ArtifactKind
from platform_core.errors import AppError, ErrorCode
from platform_core.paths import resolve_inside
from trainer_api.archive import tar_gz
from trainer_api.deps import DataRootDep, RunIdPath
from trainer_api.errors import error_responses

router = APIRouter(prefix="/artifacts", tags=["artifacts"], responses=error_responses(401))
_GZIP_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "description": "the folder as tar.gz, its members under `<id>/`",
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/{kind}/{artifact_id}",
    response_class=StreamingResponse,
    responses={**_GZIP_RESPONSE, **error_responses(404, 422)},
    operation_id="download_artifact",  # a link target (GET /runs, GET /tokenizers)
)
def download_artifact(
    kind: ArtifactKind, artifact_id: RunIdPath, data_root: DataRootDep
) -> StreamingResponse:
    """`tokenizers/<id>/` or `runs/<id>/` as tar.gz; a folder that leads outside the data
    root (a symbolic link) is refused, and links inside it are left out."""
    folder = resolve_inside(data_root, f"{kind}/{artifact_id}")
    if not folder.is_dir():
        raise AppError(ErrorCode.NOT_FOUND, f"no artifact {kind}/{artifact_id}")
    return StreamingResponse(
        tar_gz(folder, artifact_id),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{artifact_id}.tar.gz"'},
    )
