"""``/metrics`` behind MODELSYNC_METRICS_TOKEN: open without the setting, 401 without
or with a wrong bearer token when it is set."""

from __future__ import annotations

from pydantic import SecretStr
from starlette.testclient import TestClient

from sync_service.core.config import Settings
from sync_service.main import create_app


def test_metrics_open_without_a_token_setting(client: TestClient) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200 and "modelsync_http_requests_total" in r.text


def test_metrics_token_required_when_set(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr("scrape-me")}))
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-me"}):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["code"] in ("missing_token", "bad_auth_header", "invalid_token")
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and "modelsync_http_requests_total" in r.text
        assert client.get("/healthz").status_code == 200  # nothing else needs it


def test_readyz_has_no_warnings_for_a_fresh_root(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "warnings": []}
