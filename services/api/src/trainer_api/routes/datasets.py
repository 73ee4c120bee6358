"""Classification datasets: prepare one, list them, describe one."""

from __future__ import annotations

from fastapi import APIRouter, status

from platform_core.api_models import DatasetCreate, DatasetList, DatasetPublic, JobAccepted
from trainer_api.dataset_views import list_datasets, load_dataset
from trainer_api.deps import DataRootDep, EventBusDep, IdempotencyKeyHeader, RedisDep, RunIdPath
from trainer_api.errors import error_responses
from trainer_api.submissions import submit

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=error_responses(401))


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, responses=error_responses(404, 409, 413, 422)
)
def prepare_dataset(
    body: DatasetCreate,
    client: RedisDep,
    data_root: DataRootDep,
    bus: EventBusDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobAccepted:
    """Queue a dataset's preparation; its id (given or `ds-<hex>`) is its run id."""
    return submit(client, data_root, body, idempotency_key, bus)


@router.get("")
def get_datasets(client: RedisDep, data_root: DataRootDep) -> DatasetList:
    """Prepared datasets and those being prepared, by id."""
    return list_datasets(client, data_root)


@router.get("/{dataset_id}", responses=error_responses(404, 422))
def get_dataset(dataset_id: RunIdPath, client: RedisDep, data_root: DataRootDep) -> DatasetPublic:
    """A dataset's source, report (counts per class and split, rows removed) and baseline."""
    return load_dataset(client, data_root, dataset_id)
