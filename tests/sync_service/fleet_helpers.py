"""HTTP helpers for the release, index, device and health-gate tests: each call goes
through the real app (TestClient or a live server) and asserts the status it expects."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from packager.keys import load_root
from packager.manifest import ChannelIndex, Root, check_expiry, verify_index
from tests.sync_service.bundle_factory import tar_dir

Client = TestClient | httpx.Client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def publish(client: Client, auth: dict[str, str], bundle: Path) -> dict[str, Any]:
    r = client.post(
        "/v1/bundles", content=tar_dir(bundle), headers={**auth, "Content-Type": "application/x-tar"}
    )
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


def create_release(
    client: Client,
    auth: dict[str, str],
    *,
    model: str = "demo",
    version: int = 1,
    percent: float = 100,
    fleet: str = "field",
    channel: str = "stable",
    urgent: bool = False,
    expect: int = 201,
) -> dict[str, Any]:
    r = client.post(
        "/v1/releases",
        json={
            "fleet": fleet, "channel": channel, "model": model, "version": version,
            "percent": percent, "urgent": urgent,
        },
        headers=auth,
    )
    assert r.status_code == expect, r.text
    body: dict[str, Any] = r.json()
    return body


def register(client: Client, enrollment: str, device_id: str, platform: str = "linux") -> str:
    r = client.post(
        "/v1/devices/register",
        json={
            "device_id": device_id, "platform": platform, "app_version": "1.0",
            "ort_version": "1.24.3", "providers": ["CPUExecutionProvider"],
        },
        headers=bearer(enrollment),
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["device_token"]
    return token


def get_index(client: Client, device_token: str, channel: str = "stable") -> httpx.Response:
    return client.get(f"/v1/channels/{channel}/index", headers=bearer(device_token))


def fresh_index(raw: Any, root: Root) -> ChannelIndex:
    """A served index is signed by the index role and not expired (the schema layer checks
    the signature; freshness is the device's policy, asserted here on what the service sends)."""
    index = verify_index(raw, root)
    check_expiry(index.expires, None, f"channel index v{index.version}")
    return index


def verified_index(client: Client, device_token: str, root: Root, channel: str = "stable") -> ChannelIndex:
    r = get_index(client, device_token, channel)
    assert r.status_code == 200, r.text
    return fresh_index(json.loads(r.content), root)


def event(
    kind: str, model: str | None = "demo", version: int | None = 1, reason: str | None = None
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "kind": kind,
        "at": datetime.now(UTC).isoformat(),
        "model": model,
        "version": version,
        "reason": reason,
    }


def report(client: Client, device_token: str, device_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post(f"/v1/devices/{device_id}/reports", json={"events": events}, headers=bearer(device_token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def service_root(server_keys: Path) -> Root:
    return load_root(server_keys / "root.json")
