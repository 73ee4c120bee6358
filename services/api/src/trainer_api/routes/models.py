"""The model registry: registered names, their versions and stages; register, promote and
roll back (each an atomic change with who and why in the history)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from fastapi import Path as PathParam

from platform_core.api_models import (
    ModelList,
    ModelVersionCreate,
    ModelVersionList,
    ModelVersionPublic,
    PromoteRequest,
    RegisteredModel,
    RollbackRequest,
)
from platform_core.errors import AppError
from platform_core.layout import DataLayout
from platform_core.model_registry import ModelRegistry, RegistryChange
from platform_core.specs import ID_REGEX, SEMVER_REGEX
from trainer_api.deps import DataRootDep, EventBusDep, RedisDep
from trainer_api.errors import error_responses

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401))
NamePath = Annotated[str, PathParam(pattern=ID_REGEX, description="a registered model's name")]
VersionPath = Annotated[str, PathParam(pattern=SEMVER_REGEX, description="MAJOR.MINOR.PATCH")]


@router.get("")
def list_models(client: RedisDep, data_root: DataRootDep) -> ModelList:
    """Every registered model with its production version."""
    registry = ModelRegistry(client, DataLayout(data_root))
    items = [
        RegisteredModel(
            name=name, production=registry.production(name), versions=len(registry.versions(name))
        )
        for name in registry.names()
    ]
    return ModelList(items=items)


@router.get("/{name}/versions", responses=error_responses(404, 422))
def list_versions(name: NamePath, client: RedisDep, data_root: DataRootDep) -> ModelVersionList:
    """A model's versions (stage and metadata), oldest first, and its history."""
    registry = ModelRegistry(client, DataLayout(data_root))
    items: list[ModelVersionPublic] = []
    for state in registry.versions(name):
        try:
            metadata = registry.metadata(name, state.version)
        except AppError:
            metadata = None
        items.append(
            ModelVersionPublic(
                name=name, version=state.version, stage=state.stage, metadata=metadata
            )
        )
    return ModelVersionList(
        name=name, production=registry.production(name), items=items, history=registry.history(name)
    )


@router.post(
    "/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(404, 409, 422),
)
def register_version(
    name: NamePath, body: ModelVersionCreate, client: RedisDep, data_root: DataRootDep
) -> ModelVersionPublic:
    """Register a run's saved transformers model as a new version, in staging."""
    registry = ModelRegistry(client, DataLayout(data_root))
    metadata = registry.register(
        name,
        body.version,
        source_run=body.source_run,
        dataset_id=body.dataset_id,
        actor=body.actor,
        reason=body.reason,
    )
    return ModelVersionPublic(
        name=name, version=metadata.version, stage="staging", metadata=metadata
    )


@router.post("/{name}/versions/{version}/promote", responses=error_responses(404, 409, 422))
def promote_version(
    name: NamePath,
    version: VersionPath,
    body: PromoteRequest,
    *,
    client: RedisDep,
    data_root: DataRootDep,
    bus: EventBusDep,
) -> RegistryChange:
    """Move a version to a stage; to production archives the version it replaces."""
    registry = ModelRegistry(client, DataLayout(data_root), bus=bus)
    return registry.promote(name, version, body.stage, actor=body.actor, reason=body.reason)


@router.post("/{name}/rollback", responses=error_responses(404, 409, 422))
def rollback(
    name: NamePath,
    body: RollbackRequest,
    *,
    client: RedisDep,
    data_root: DataRootDep,
    bus: EventBusDep,
) -> RegistryChange:
    """Put back the production version the current one replaced."""
    registry = ModelRegistry(client, DataLayout(data_root), bus=bus)
    return registry.rollback(name, actor=body.actor, reason=body.reason)
