"""The release console over HTTP (sync_service/console/), on SQLite and PostgreSQL: the
login and its cookie, every page, the two-step CSRF-checked actions, read-only tokens,
escaping; and GET /v1/models/{name}/versions/{v}/parity, the try-it panel's Python figures.
The browser scenarios are in test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col, select

from sync_service import crud
from sync_service.console import sessions
from sync_service.models import ApiToken, AuditEvent, ConsoleSession, Device, Fleet, now
from tests.sync_service.bundle_factory import manifest_signed, tiny_onnx, write_bundle
from tests.sync_service.fleet_helpers import bearer, create_release, event, publish, register, report

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def login(client: TestClient, token: str, next_path: str | None = None) -> TestClient:
    data = {"token": token, **({"next": next_path} if next_path else {})}
    r = client.post("/console/login", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def csrf_of(client: TestClient, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    found = CSRF.search(r.text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@pytest.fixture
def published(
    client: TestClient, auth: dict[str, str], fleet: str, bundle_factory: Callable[..., Path]
) -> None:
    for v in (1, 2, 3):
        publish(client, auth, bundle_factory(version=v, seed=v))


@pytest.fixture
def release(client: TestClient, auth: dict[str, str], published: None) -> dict[str, Any]:
    return create_release(client, auth, version=2, percent=10)


# --------------------------------------------------------------------------- login


def test_pages_need_a_login_and_the_cookie_is_strict(client: TestClient, publisher_token: str) -> None:
    r = client.get("/console/devices", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/login?next=/console/devices")
    form = client.get("/console/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    assert "default-src 'self'" in form.headers["content-security-policy"]

    r = client.post("/console/login", data={"token": publisher_token, "next": "/console/devices"},
                    follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/devices")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    for part in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age=28800"):
        assert part.lower() in cookie.lower(), cookie
    assert publisher_token not in cookie
    page = client.get("/console/devices")
    assert page.status_code == 200
    assert publisher_token not in page.text
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("next_path", ["//evil.example/", "https://evil.example/", "/v1/admin/tokens"])
def test_login_never_redirects_off_the_console(
    client: TestClient, publisher_token: str, next_path: str
) -> None:
    r = client.post("/console/login", data={"token": publisher_token, "next": next_path},
                    follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/releases")


def test_bad_logins_say_why_and_open_nothing(
    client: TestClient, app: FastAPI, make_token: Callable[..., str], enrollment_token: str
) -> None:
    device = register(client, enrollment_token, "dev-1")
    cases = {
        "msp_nope": "Unknown or revoked token.",
        "": "Unknown or revoked token.",
        "x" * 5000: "Unknown or revoked token.",
        device: "publisher token",
        enrollment_token: "publisher token",
    }
    for token, message in cases.items():
        r = client.post("/console/login", data={"token": token}, follow_redirects=False)
        assert r.status_code == 401, token
        assert message in r.text
        assert "set-cookie" not in r.headers
    with Session(app.state.engine) as session:
        assert session.exec(select(ConsoleSession)).all() == []


def test_logout_expiry_and_revocation_end_the_session(
    client: TestClient, app: FastAPI, make_token: Callable[..., str]
) -> None:
    token = make_token(scopes=("read",))
    login(client, token)
    assert client.get("/console/models").status_code == 200
    # logging out needs the session's CSRF token
    assert client.post("/console/logout", data={"csrf": "wrong"}, follow_redirects=False).status_code == 403
    csrf = csrf_of(client, "/console/models")
    cookie = client.cookies.get(sessions.COOKIE)
    r = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/login")
    # the old cookie value is worthless on the server, not just cleared in this browser
    client.cookies.set(sessions.COOKIE, cookie or "", path="/console")
    assert client.get("/console/models", follow_redirects=False).status_code == 303

    login(client, token)
    with Session(app.state.engine) as session:
        session.exec(update(ConsoleSession).values(expires_at=now() - timedelta(seconds=1)))  # type: ignore[call-overload]
        session.commit()
    assert client.get("/console/models", follow_redirects=False).status_code == 303

    login(client, token)
    assert client.get("/console/models").status_code == 200
    with Session(app.state.engine) as session:
        row = crud.get_token(session=session, plain=token)
        assert row is not None and row.id is not None
        crud.revoke_token(session=session, token_id=row.id)
        session.commit()
    assert client.get("/console/models", follow_redirects=False).status_code == 303


# --------------------------------------------------------------------------- pages


def test_every_page_renders_the_service_data(
    client: TestClient, publisher_token: str, release: dict[str, Any], enrollment_token: str
) -> None:
    device = register(client, enrollment_token, "dev-a1", platform="android")
    report(client, device, "dev-a1", [event("installed", model="demo", version=2)])
    register(client, enrollment_token, "dev-b2")
    login(client, publisher_token)

    models = client.get("/console/models").text
    assert 'href="/console/models/demo/3"' in models
    card = client.get("/console/models/demo/2").text
    assert "android-nnapi" in card and "cpu" in card and "Golden set" in card
    assert f'/console/releases/{release["id"]}' in card

    rel = client.get(f"/console/releases/{release['id']}").text
    assert "10%" in rel and "<svg" in rel and 'data-series="installed">1<' in rel
    assert "Health gate" in rel and "Change percent" in rel

    devices = client.get("/console/devices").text
    assert "dev-a1" in devices and "dev-b2" in devices and "demo v2" in devices
    only = client.get("/console/devices", params={"q": "a1"}).text
    assert "dev-a1" in only and "dev-b2" not in only

    history = client.get("/console/devices/dev-a1").text
    assert "installed" in history and "demo v2" in history

    log = client.get("/console/audit").text
    assert "create" in log and f"#{release['id']}" in log


def test_unknown_and_malformed_paths_are_404_pages(
    client: TestClient, publisher_token: str, fleet: str
) -> None:
    login(client, publisher_token)
    for path in ("/console/releases/999", "/console/releases/x", "/console/releases/99999999999",
                 "/console/devices/nope", "/console/devices/a%3Cb", "/console/models/nope/1",
                 "/console/models/demo/0", "/console/models/demo/1/artifacts/" + "0" * 64):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "text/html" in r.headers["content-type"]
    assert client.get("/console/devices", params={"q": "<script>"}).status_code == 422
    # an unknown fleet filter is ignored where it is a filter, and named where it is a page
    assert client.get("/console/releases", params={"fleet": "<b>"}).status_code == 200


def test_device_list_pages_by_id(client: TestClient, publisher_token: str, enrollment_token: str) -> None:
    ids = [f"pg-{i:03d}" for i in range(57)]
    for device_id in ids:
        register(client, enrollment_token, device_id)
    login(client, publisher_token)
    seen: list[str] = []
    path: str | None = "/console/devices"
    while path:
        text = client.get(path).text
        seen += re.findall(r'href="/console/devices/(pg-\d+)"', text)
        found = re.search(r'href="(/console/devices\?[^"]*after=[^"]+)" rel="next"', text)
        path = found.group(1).replace("&amp;", "&") if found else None
    assert seen == ids


def test_output_is_escaped(
    client: TestClient, app: FastAPI, auth: dict[str, str], publisher_token: str, fleet_row: Fleet,
    tmp_path: Path, publisher_keys: list[Any],
) -> None:
    data = tiny_onnx(7)
    signed = manifest_signed("demo", 1, {"cpu": data})
    signed["model"]["description"] = "<script>alert('model')</script>"
    publish(client, auth, write_bundle(tmp_path / "evil", signed, [data], publisher_keys))
    rel = create_release(client, auth, version=1, percent=100)
    halt = {"reason": "<img src=x onerror=alert(1)>"}
    assert client.post(f"/v1/releases/{rel['id']}/halt", json=halt, headers=auth).is_success
    login(client, publisher_token)
    for path in ("/console/models/demo/1", f"/console/releases/{rel['id']}", "/console/audit"):
        text = client.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
    assert "&lt;script&gt;alert(&#39;model&#39;)&lt;/script&gt;" in client.get("/console/models/demo/1").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in client.get(f"/console/releases/{rel['id']}").text
    # the API refuses such a device id; one that got into the database still renders as text
    with Session(app.state.engine) as session:
        evil = "<script>alert('device')</script>"
        session.add(Device(id=evil, fleet_id=fleet_row.id or 0, platform="linux"))
        session.commit()
    text = client.get("/console/devices").text
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#39;device&#39;)&lt;/script&gt;" in text


# --------------------------------------------------------------------------- actions


def _index_version(client: TestClient, device: str) -> int:
    r = client.get("/v1/channels/stable/index", headers=bearer(device))
    assert r.status_code == 200, r.text
    version: int = r.json()["signed"]["version"]
    return version


def test_percent_change_asks_first_then_signs_and_audits(
    client: TestClient, app: FastAPI, make_token: Callable[..., str], release: dict[str, Any],
    enrollment_token: str,
) -> None:
    device = register(client, enrollment_token, "dev-1")
    before = _index_version(client, device)
    login(client, make_token(name="carol", scopes=("release",)))
    path = f"/console/releases/{release['id']}"
    csrf = csrf_of(client, path)

    ask = client.post(f"{path}/percent", data={"csrf": csrf, "percent": "25"})
    assert ask.status_code == 200
    assert "from 10% to 25%" in ask.text and f"index <strong>v{before + 1}</strong>" in ask.text
    assert client.get(f"/v1/releases/{release['id']}", headers=bearer(make_token())).json()["percent"] == 10

    done = client.post(f"{path}/percent", data={"csrf": csrf, "percent": "25", "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith(f"{path}?changed=")
    shown = client.get(done.headers["location"]).text
    assert "Percent changed from 10% to 25%" in shown
    assert f"index <strong>v{before + 1}</strong> signed" in shown
    assert _index_version(client, device) == before + 1
    with Session(app.state.engine) as session:
        last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc())).first()
        token = session.exec(select(ApiToken).where(ApiToken.name == "carol")).one()
    assert last is not None
    assert (last.actor, last.actor_token_id, last.index_version) == ("carol", token.id, before + 1)


def test_halt_resume_and_rollback(
    client: TestClient, publisher_token: str, auth: dict[str, str], release: dict[str, Any],
) -> None:
    login(client, publisher_token)
    path = f"/console/releases/{release['id']}"
    csrf = csrf_of(client, path)
    r = client.post(f"{path}/halt", data={"csrf": csrf, "reason": "spike in field failures",
                                          "confirm": "yes"})
    assert r.status_code == 200 and "Halted: spike in field failures" in r.text
    assert client.get(f"/v1/releases/{release['id']}", headers=auth).json()["state"] == "halted"
    assert "Resume…" in r.text and "Change percent" not in r.text
    r = client.post(f"{path}/resume", data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 200 and "Resumed." in r.text

    # v3 is published and above every released version: the console can release it
    assert 'option value="3"' in client.get(path).text
    ask = client.post(f"{path}/rollback", data={"csrf": csrf, "version": "3"})
    assert "Release demo v3 to 100%" in ask.text
    done = client.post(f"{path}/rollback", data={"csrf": csrf, "version": "3", "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303
    new = client.get("/v1/releases", headers=auth).json()[0]
    assert (new["version"], new["percent"], new["urgent"]) == (3, 100, True)
    assert done.headers["location"].startswith(f"/console/releases/{new['id']}?changed=")
    # a version that is not a candidate is refused, nothing created
    r = client.post(f"/console/releases/{new['id']}/rollback",
                    data={"csrf": csrf, "version": "1", "confirm": "yes"})
    assert r.status_code == 422 and len(client.get("/v1/releases", headers=auth).json()) == 2


@pytest.mark.parametrize(
    ("form", "status", "text"),
    [
        ({"percent": "101"}, 422, "from 0 to 100"),
        ({"percent": "nan"}, 422, "from 0 to 100"),
        ({"percent": ""}, 422, "from 0 to 100"),
        ({"percent": "-1"}, 422, "from 0 to 100"),
    ],
)
def test_bad_action_values_change_nothing(
    client: TestClient, publisher_token: str, auth: dict[str, str], release: dict[str, Any],
    form: dict[str, str], status: int, text: str,
) -> None:
    login(client, publisher_token)
    path = f"/console/releases/{release['id']}"
    csrf = csrf_of(client, path)
    r = client.post(f"{path}/percent", data={"csrf": csrf, "confirm": "yes", **form})
    assert r.status_code == status and text in r.text
    r = client.post(f"{path}/halt", data={"csrf": csrf, "confirm": "yes", "reason": "a\x00b"})
    assert r.status_code == 422
    assert client.get(f"/v1/releases/{release['id']}", headers=auth).json()["percent"] == 10
    assert len(client.get("/v1/audit", headers=auth).json()) == 1


def test_actions_refuse_forged_forms(
    client: TestClient, publisher_token: str, auth: dict[str, str], release: dict[str, Any],
) -> None:
    login(client, publisher_token)
    path = f"/console/releases/{release['id']}"
    csrf = csrf_of(client, path)
    forged = [
        ({"percent": "50", "confirm": "yes"}, {}),  # no CSRF token
        ({"percent": "50", "confirm": "yes", "csrf": csrf[:-1] + "x"}, {}),
        ({"percent": "50", "confirm": "yes", "csrf": csrf}, {"Origin": "https://evil.example"}),
        ({"percent": "50", "confirm": "yes", "csrf": csrf}, {"Origin": "null"}),
    ]
    for form, headers in forged:
        r = client.post(f"{path}/percent", data=form, headers=headers)
        assert r.status_code == 403, (form, headers)
    client.cookies.clear()
    r = client.post(f"{path}/percent", data={"percent": "50", "confirm": "yes", "csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert client.get(f"/v1/releases/{release['id']}", headers=auth).json()["percent"] == 10


def test_a_read_only_token_sees_no_action_and_is_refused(
    client: TestClient, make_token: Callable[..., str], auth: dict[str, str], release: dict[str, Any],
) -> None:
    reader = make_token(name="watcher", scopes=("read",))
    login(client, reader)
    path = f"/console/releases/{release['id']}"
    text = client.get(path).text
    assert "read-only" in text
    for action in ("percent", "halt", "resume", "rollback"):
        assert f"/{action}\"" not in text
    csrf = csrf_of(client, "/console/models")  # the logout form's
    for action, form in (("percent", {"percent": "50"}), ("halt", {"reason": "x"}), ("resume", {}),
                         ("rollback", {"version": "3"})):
        r = client.post(f"{path}/{action}", data={"csrf": csrf, "confirm": "yes", **form})
        assert r.status_code == 403 and "release" in r.text, action
    # and the API refuses it too; it may read
    patch = client.patch(f"/v1/releases/{release['id']}", json={"percent": 50}, headers=bearer(reader))
    assert patch.status_code == 403
    assert client.get(f"/v1/releases/{release['id']}/status", headers=bearer(reader)).status_code == 200
    assert client.get("/v1/releases", headers=auth).json()[0]["percent"] == 10


# --------------------------------------------------------------------------- parity


def test_parity_endpoint_scores_golden_vectors_with_onnxruntime(
    client: TestClient, auth: dict[str, str], fleet: str, small_bundle: Path,
) -> None:
    publish(client, auth, small_bundle)
    name = "fleet-iforest"
    card = client.get(f"/v1/models/{name}/versions/1", headers=auth).json()
    cpu = next(a for a in card["artifacts"] if a["target"] == "cpu")
    assert cpu["parity"]["rows"] > 0 and card["publisher_keyids"] and card["golden"]["rows"] > 0
    r = client.get(f"/v1/models/{name}/versions/1/parity", headers=auth)
    assert r.status_code == 200, r.text
    check = r.json()
    assert check["artifact_sha256"] == cpu["sha256"] and len(check["rows"]) == card["golden"]["rows"]
    worst = max(abs(row["python_score"] - row["reference_score"]) for row in check["rows"])
    assert worst == check["max_abs_diff"] <= check["tolerance"]["score_atol"]
    assert check["within_tolerance"] is True
    bad = client.get(f"/v1/models/{name}/versions/1/parity", params={"target": "x"}, headers=auth)
    assert bad.status_code == 422
    assert client.get(f"/v1/models/{name}/versions/9/parity", headers=auth).status_code == 404


def test_parity_of_an_artifact_onnxruntime_cannot_run_is_409(
    client: TestClient, auth: dict[str, str], published: None
) -> None:
    # the service tests' tiny model has no `label` output: the artifact contract's runner refuses it
    r = client.get("/v1/models/demo/versions/1/parity", headers=auth)
    assert (r.status_code, r.json()["code"]) == (409, "artifact_not_runnable")
    assert client.get("/v1/models/demo/versions/1/parity", params={"target": "ios-coreml"},
                      headers=auth).json()["code"] == "artifact_not_found"


# --------------------------------------------------------------------------- static files


def test_the_vendored_runtime_matches_its_record_and_is_served(client: TestClient) -> None:
    import onnxruntime

    from sync_service.console import vendor

    assert vendor.check() == []
    record = vendor.record()
    # the browser runs the same minor as the device and the service (ORT-format compatibility)
    assert record["version"].split(".")[:2] == onnxruntime.__version__.split(".")[:2]
    assert record["integrity"].startswith("sha512-")
    wasm = client.get("/console/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    script = client.get("/console/static/tryit.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
