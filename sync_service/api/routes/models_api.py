"""GET /v1/models, /v1/models/{name}/versions/{version} (the manifest card) and its
``/parity`` (golden vectors scored by the service's onnxruntime): any publisher token."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from packager.manifest import (
    EpPlan,
    GoldenTolerance,
    ModelCard,
    Parity,
    Quantization,
    format_time,
)
from sync_service import crud, parity
from sync_service.api.deps import AnyPublisherDep, SessionDep, StorageDep
from sync_service.api.openapi import refusals
from sync_service.bundles import stored_manifest
from sync_service.errors import ArtifactNotRunnable, NotFound
from sync_service.models import ModelVersion
from sync_service.storage import Storage

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
    format: str
    ort_version: str = Field(description="onnxruntime version that wrote the file")
    quantization: Quantization
    ep_plan: EpPlan
    parity: Parity = Field(description="the packager's measurement: this artifact against the reference")
    golden_tolerance: GoldenTolerance


class GoldenSummary(BaseModel):
    rows: int
    normal: int | None = Field(description="rows the reference calls normal (null: an older bundle)")
    anomalous: int | None
    boundary: int | None = Field(description="rows a float32 step either side of the threshold")
    source: str | None


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    manifest_sha256: str
    manifest_length: int
    created: str
    publisher_keyids: list[str] = Field(description="the keys whose signatures the manifest carries")
    rollback_of: int | None = Field(None, description="the version whose artifacts this one re-releases")
    model: ModelCard
    golden: GoldenSummary
    artifacts: list[ArtifactPublic]


class ParityRow(BaseModel):
    reference_score: float
    reference_label: int
    python_score: float
    python_label: int


class ParityCheck(BaseModel):
    name: str
    version: int
    target: str
    artifact_sha256: str
    input_name: str
    input_shape: list[int | None]
    threshold: float
    tolerance: GoldenTolerance
    onnxruntime_version: str = Field(description="the service's onnxruntime, which scored python_score")
    inputs: list[list[float]] = Field(description="the manifest's golden vectors")
    rows: list[ParityRow]
    max_abs_diff: float
    label_mismatches: int
    within_tolerance: bool


@router.get("", response_model=list[ModelSummary])
def list_models(_user: AnyPublisherDep, session: SessionDep) -> list[ModelSummary]:
    return [
        ModelSummary(name=name, versions=versions, latest=versions[-1])
        for name, versions in crud.list_model_versions(session=session).items()
    ]


VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]  # an INTEGER column: larger is 500 on SQL
_NO_VERSION = refusals({NotFound: "no such model version"})


def _model_version(session: SessionDep, name: str, version: int) -> ModelVersion:
    mv = crud.get_model_version(session=session, name=name, version=version)
    if mv is None or mv.id is None:
        raise NotFound(f"no model {name} v{version}", code="model_version_not_found")
    return mv


def version_card(session: SessionDep, storage: Storage, mv: ModelVersion) -> ModelVersionPublic:
    manifest, keyids = stored_manifest(storage, mv.manifest_sha256)
    stored = {a.target: a for a in crud.list_artifacts(session=session, model_version_id=mv.id or 0)}
    selection = manifest.golden.selection
    extra = manifest.model_extra or {}
    return ModelVersionPublic(
        name=mv.name,
        version=mv.version,
        manifest_sha256=mv.manifest_sha256,
        manifest_length=mv.manifest_length,
        created=format_time(mv.created_at),
        publisher_keyids=keyids,
        rollback_of=extra.get("rollback_of") if isinstance(extra.get("rollback_of"), int) else None,
        model=manifest.model,
        golden=GoldenSummary(
            rows=len(manifest.golden.inputs),
            normal=selection.normal if selection else None,
            anomalous=selection.anomalous if selection else None,
            boundary=selection.boundary if selection else None,
            source=str(selection.source) if selection else None,
        ),
        artifacts=[
            ArtifactPublic(
                target=a.target, sha256=a.sha256, length=a.length, precision=a.precision,
                format=a.format, ort_version=a.ort_version, quantization=a.quantization,
                ep_plan=a.ep_plan, parity=a.parity, golden_tolerance=a.golden_tolerance,
            )
            for a in sorted(manifest.artifacts, key=lambda a: a.target)
            if a.target in stored
        ],
    )


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic, responses=_NO_VERSION)
def get_model_version(
    name: str, version: VersionNumber, _user: AnyPublisherDep, session: SessionDep, storage: StorageDep
) -> ModelVersionPublic:
    """The manifest card: the model, its artifacts per target with their execution-provider
    plan and parity figures, the golden set, the keys that signed it."""
    return version_card(session, storage, _model_version(session, name, version))


@router.get(
    "/{name}/versions/{version}/parity",
    response_model=ParityCheck,
    responses=refusals({
        NotFound: "no such model version, or no artifact for the target",
        ArtifactNotRunnable: "the service's onnxruntime cannot run the artifact",
    }),
)
def check_parity(
    name: str,
    version: VersionNumber,
    _user: AnyPublisherDep,
    session: SessionDep,
    storage: StorageDep,
    target: Annotated[Literal["cpu", "android-nnapi", "ios-coreml"], Query()] = "cpu",
) -> ParityCheck:
    """The manifest's golden vectors scored now by the service's own onnxruntime on the
    target's artifact, beside the reference model's scores the manifest signs: what the
    console's try-it panel compares the browser's onnxruntime-web against."""
    mv = _model_version(session, name, version)
    manifest, _ = stored_manifest(storage, mv.manifest_sha256)
    artifact = manifest.artifact_for(target)
    if artifact is None:
        raise NotFound(f"{name} v{version} has no {target} artifact", code="artifact_not_found")
    result = parity.score_golden(storage, manifest, artifact)
    return ParityCheck.model_validate(result)
