"""Tokenizers: train one, list them, describe one."""

from __future__ import annotations

from fastapi import APIRouter, status

from platform_core.api_models import JobAccepted, TokenizerCreate, TokenizerList, TokenizerPublic
from trainer_api.deps import DataRootDep, EventBusDep, IdempotencyKeyHeader, RedisDep, RunIdPath
from trainer_api.errors import OpenApiResponses, error_responses
from trainer_api.submissions import submit
from trainer_api.tokenizer_views import list_tokenizers, load_tokenizer

router = APIRouter(prefix="/tokenizers", tags=["tokenizers"], responses=error_responses(401))


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409, 413, 422),
)
def train_tokenizer(
    body: TokenizerCreate,
    client: RedisDep,
    data_root: DataRootDep,
    bus: EventBusDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobAccepted:
    """Queue a tokenizer training; its id (given or `tok-<hex>`) is its run id."""
    return submit(client, data_root, body, idempotency_key, bus)


TOKENIZER_LINKS: OpenApiResponses = {
    200: {
        "description": "Successful Response",
        "links": {
            "TokenizerArtifact": {
                "operationId": "download_artifact",
                "parameters": {
                    "kind": "tokenizers",
                    "artifact_id": "$response.body#/items/0/tokenizer_id",
                },
            }
        },
    }
}


@router.get("", responses=TOKENIZER_LINKS)
def get_tokenizers(client: RedisDep, data_root: DataRootDep) -> TokenizerList:
    """Trained tokenizers and those being trained, by id."""
    return list_tokenizers(client, data_root)


@router.get("/{tokenizer_id}", responses=error_responses(404, 422))
def get_tokenizer(
    tokenizer_id: RunIdPath, client: RedisDep, data_root: DataRootDep
) -> TokenizerPublic:
    """A tokenizer's kind, vocabulary size and holdout statistics, or its training status."""
    return load_tokenizer(client, data_root, tokenizer_id)
