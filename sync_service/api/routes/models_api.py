"""GET /v1/models and /v1/models/{name}/versions/{version} (any publisher token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from packager.manifest import format_time
from sync_service import crud
from sync_service.api.deps import AnyPublisherDep, SessionDep
from sync_service.api.openapi import refusals
from sync_service.errors import NotFound

router = APIRouter(prefix="/v1/models", tags=["release engineers"])


class ModelSummary(BaseModel):
    name: str
    versions: list[int]
    latest: int


class ArtifactPublic(BaseModel):
    target: str
    sha256: str
    length: int
    precision: str


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    manifest_sha256: str
    manifest_length: int
    created: str
    artifacts: list[ArtifactPublic]


@router.get("", response_model=list[ModelSummary])
def list_models(_user: AnyPublisherDep, session: SessionDep) -> list[ModelSummary]:
    return [
        ModelSummary(name=name, versions=versions, latest=versions[-1])
        for name, versions in crud.list_model_versions(session=session).items()
    ]


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersionPublic,
    responses=refusals({NotFound: "no such model version"}),
)
def get_model_version(
    name: str,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],  # an INTEGER column: larger is 500 on SQL
    _user: AnyPublisherDep,
    session: SessionDep,
) -> ModelVersionPublic:
    mv = crud.get_model_version(session=session, name=name, version=version)
    if mv is None or mv.id is None:
        raise NotFound(f"no model {name} v{version}", code="model_version_not_found")
    artifacts = crud.list_artifacts(session=session, model_version_id=mv.id)
    return ModelVersionPublic(
        name=mv.name,
        version=mv.version,
        manifest_sha256=mv.manifest_sha256,
        manifest_length=mv.manifest_length,
        created=format_time(mv.created_at),
        artifacts=[
            ArtifactPublic(target=a.target, sha256=a.sha256, length=a.length, precision=a.precision)
            for a in artifacts
        ],
    )
