"""``POST /v1/fleets/{fleet}/channels/{channel}/pack``: an offline pack of the channel's
current models (release scope; docs/offline.md, docs/protocol.md "Offline packs")."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from starlette.background import BackgroundTask

from packager.manifest import Target
from sync_service.api.deps import (
    KeysDep,
    ReleaseDep,
    SessionDep,
    SettingsDep,
    SignerDep,
    StorageDep,
    integral_number,
)
from sync_service.api.openapi import refusals
from sync_service.errors import (
    NoOfflineKey,
    NothingToPack,
    PackWindowTooLong,
    PayloadTooLarge,
    UnknownChannel,
    UnknownFleet,
    UnknownModel,
    UnknownRoot,
)
from sync_service.packs import PackSummary, export_pack

router = APIRouter(prefix="/v1/fleets", tags=["releases"])

NamePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
MEDIA_TYPE = "application/vnd.modelsync.pack"


class PackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
                              description="only this model (default: every model of the channel)")
    targets: list[Target] | None = Field(
        None, min_length=1, max_length=3, description="only these targets' artifacts (default: all)"
    )
    from_root: Annotated[int, Strict(), BeforeValidator(integral_number)] = Field(
        1, ge=1, le=2**31 - 1,
        description="the oldest root version the devices hold: the pack carries the chain from it",
    )
    valid_days: Annotated[int, Strict(), BeforeValidator(integral_number)] = Field(
        30, ge=1, le=365,
        description="how long the pack may be installed (at most the service's offline_max_days)",
    )


@router.post(
    "/{fleet}/channels/{channel}/pack",
    response_class=FileResponse,
    responses={
        200: {
            "content": {MEDIA_TYPE: {}},
            "description": "the .mspack file; X-Pack-Id, X-Pack-Index-Version and X-Pack-Expires "
            "say what it is",
        },
        **refusals({
            UnknownFleet: "unknown fleet",
            UnknownChannel: "unknown channel",
            UnknownModel: "the channel's index has no such model",
            UnknownRoot: "from_root beyond the newest root",
            NoOfflineKey: "the service holds no offline-role key, or root names no offline role with it",
            NothingToPack: "the channel (or model) has no active release",
            PayloadTooLarge: "the pack would exceed the service's pack_max_bytes",
            PackWindowTooLong: "valid_days beyond this service's offline_max_days",
        }),
    },
)
async def export(
    fleet: NamePath,
    channel: NamePath,
    body: PackRequest,
    session: SessionDep,
    storage: StorageDep,
    keys: KeysDep,
    signer: SignerDep,
    settings: SettingsDep,
    _user: ReleaseDep,
) -> FileResponse:
    if body.valid_days > settings.offline_max_days:
        raise PackWindowTooLong(
            f"valid_days {body.valid_days}: this service exports packs valid for at most "
            f"{settings.offline_max_days} days (offline_max_days)"
        )
    # Spooled in the system's temporary directory, removed once sent (or on a refusal).
    fd, name = tempfile.mkstemp(prefix="modelsync-pack-", suffix=".mspack")

    def build() -> PackSummary:
        with os.fdopen(fd, "wb") as out:
            return export_pack(
                out, session=session, storage=storage, keys=keys, signer=signer,
                fleet=fleet, channel=channel, model=body.model, targets=body.targets,
                from_root=body.from_root, valid_days=body.valid_days, max_bytes=settings.pack_max_bytes,
            )

    try:
        summary = await run_in_threadpool(build)
    except BaseException:
        os.unlink(name)
        raise
    headers = {
        "X-Pack-Id": summary.pack_id,
        "X-Pack-Index-Version": str(summary.index_version),
        "X-Pack-Expires": summary.expires,
        "Cache-Control": "no-store",
    }
    return FileResponse(
        name, media_type=MEDIA_TYPE, headers=headers,
        filename=f"{fleet}-{channel}-v{summary.index_version}.mspack",
        background=BackgroundTask(os.unlink, name),
    )
