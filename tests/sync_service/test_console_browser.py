"""The release console in a real browser: Debian's chromium driven by Playwright (never a
downloaded browser), against the service on a real uvicorn server, SQLite and PostgreSQL,
while the fleet simulator's devices sync.

Without chromium or Playwright these tests skip with the reason; under CI=true they fail
(`make test` installs Debian's chromium: the Makefile's system-deps).

MODELSYNC_SCREENSHOT_DIR=docs/console pytest tests/sync_service/test_console_browser.py
writes the screenshots docs/console.md shows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_sim.fleet import Fleet, FleetSpec, default_state_root
from packager.rollout import rollout_bucket
from tests.conftest import MakeBundle
from tests.sync_service.fleet_helpers import bearer, create_release, publish

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MODEL = "fleet-iforest"
CHROMIUM = os.environ.get("MODELSYNC_CHROMIUM", "/usr/bin/chromium")
DEADLINE = 90.0  # seconds, for conditions a busy machine may reach slowly


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: under CI=true the browser tests must run (make system-deps installs chromium)")
    pytest.skip(f"{why}: the console's browser tests skip (apt-get install chromium; CI=true fails instead)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Python playwright is not installed")
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        _missing(f"no chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected (none allowed)."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def login(self, token: str) -> None:
        self.page.goto("/console/login")
        self.page.fill("#token", token)
        self.page.keyboard.press("Enter")  # the form submits from the keyboard
        self.page.wait_for_url(re.compile(r".*/console/releases$"))

    def close(self) -> None:
        self.context.close()


def _until(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f} s: {what}")
        time.sleep(0.3)


class FleetThread:
    """The fleet simulator on its own event loop, while the test drives the browser."""

    def __init__(self, spec: FleetSpec) -> None:
        self.fleet = Fleet(spec)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        await self.fleet.start()
        try:
            await asyncio.to_thread(self._stop.wait)
        finally:
            await self.fleet.stop()

    def syncs(self) -> int:
        return len(self.fleet._sync_ms)  # completed syncs so far, as the fleet's report counts them

    def __enter__(self) -> FleetThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def _shot(page: Any, name: str, tmp: Path) -> None:
    out = Path(os.environ.get("MODELSYNC_SCREENSHOT_DIR") or tmp)
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def _legend(page: Any, series: str) -> int:
    return int(page.locator(f'[data-series="{series}"]').inner_text())


def test_console_in_chromium(
    browser: Any, live_server: str, auth: dict[str, str], make_token: Callable[..., str],
    enrollment_token: str, make_bundle: MakeBundle, server_keys: Path, tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as api:
        publish(api, auth, make_bundle(1))
        rel = create_release(api, auth, model=MODEL, version=1, percent=40)
    spec = FleetSpec(
        devices=16, server=live_server, enroll_token=enrollment_token,
        root_envelope=json.loads((server_keys / "root.json").read_text()), poll_interval_s=1.0, seed=5,
        networks={"wifi": 1.0}, old_runtime_share=0.0, offline_share=0.0, sample_every_s=0.2,
        state_root=default_state_root(), device_prefix="console",
    )
    engineer = Watched(browser, live_server)
    try:
        engineer.login(make_token(name="release engineer", scopes=("read", "release")))
        page = engineer.page
        release_path = f"/console/releases/{rel['id']}"
        page.goto(release_path)
        before = page.locator("polygon.area-installed").get_attribute("points")
        assert _legend(page, "installed") == 0

        with FleetThread(spec) as sim:
            bucket = {
                d.device_id for d in sim.fleet.devices if rollout_bucket(rel["salt"], d.device_id) < 4000
            }
            assert 0 < len(bucket) < spec.devices, "seed 5 must put some devices on each side of 40%"

            # the release converges on its bucket: the chart and the device list follow
            def converged() -> bool:
                page.goto(release_path)
                return _legend(page, "installed") == len(bucket)
            _until(converged, f"{len(bucket)} installs shown on the release page")
            assert page.locator("polygon.area-installed").get_attribute("points") != before
            assert _legend(page, "outside") == spec.devices - len(bucket)
            _shot(page, "release", tmp_path)
            page.goto("/console/devices?q=console")
            assert page.locator("#devices tbody tr").count() == spec.devices
            assert page.get_by_text(f"{MODEL} v1").count() == len(bucket)
            _shot(page, "devices", tmp_path)
            one = sorted(bucket)[0]
            page.get_by_role("link", name=one, exact=True).click()
            page.wait_for_url(re.compile(f".*/console/devices/{one}$"))
            assert page.locator("#history tbody tr.kind-installed").count() >= 1

            # halt it with the keyboard alone: focus, type, Tab to the button, Enter, Enter
            page.goto(release_path)
            page.focus("#reason")
            page.keyboard.type("watching the field")
            page.keyboard.press("Tab")
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r".*/halt$"))
            assert page.evaluate("document.activeElement.id") == "confirm"  # autofocus: Enter confirms
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r".*\?changed=\d+$"))
            notice = page.locator("#notice").inner_text()
            assert "Halted: watching the field" in notice and re.search(r"index v\d+ signed", notice)

            # a halted release reaches nobody new, even at 100%
            with httpx.Client(base_url=live_server, timeout=30) as api:
                assert api.patch(f"/v1/releases/{rel['id']}", json={"percent": 100}, headers=auth).is_success
            mark = sim.syncs()
            _until(lambda: sim.syncs() >= mark + 3 * spec.devices, "three more syncs per device")
            page.reload()
            assert _legend(page, "installed") == len(bucket)
            assert sum(d.installed.get(MODEL) == 1 for d in sim.fleet.devices) == len(bucket)

            # resume (by mouse this time): now everyone installs
            page.get_by_role("button", name="Resume…").click()
            page.get_by_role("button", name="Confirm").click()
            page.wait_for_url(re.compile(r".*\?changed=\d+$"))

            def everyone() -> bool:
                page.goto(release_path)
                return _legend(page, "installed") == spec.devices
            _until(everyone, "every device installed after resume")
        assert engineer.errors == []
    finally:
        engineer.close()

    # a read-only token sees no buttons, and the action endpoints answer 403
    reader = Watched(browser, live_server)
    try:
        reader.login(make_token(name="watcher", scopes=("read",)))
        page = reader.page
        page.goto(release_path)
        assert "read-only" in page.locator("header").inner_text()
        assert page.locator("main form").count() == 0 and page.locator("main button").count() == 0
        csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
        status = page.evaluate(
            """async ([path, csrf]) => (await fetch(path, {method: 'POST',
                 body: new URLSearchParams({csrf, percent: '5', confirm: 'yes'})})).status""",
            [f"{release_path}/percent", csrf],
        )
        assert status == 403
        with httpx.Client(base_url=live_server, timeout=30) as api:
            assert api.get(f"/v1/releases/{rel['id']}", headers=auth).json()["percent"] == 100
        reader.errors = [e for e in reader.errors if "403" not in e]  # the refused fetch is logged
        assert reader.errors == []
    finally:
        reader.close()


def test_try_it_runs_the_golden_vectors_in_wasm(
    browser: Any, live_server: str, auth: dict[str, str], publisher_token: str, fleet: str,
    make_bundle: MakeBundle, tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as api:
        publish(api, auth, make_bundle(1))
        python = api.get(f"/v1/models/{MODEL}/versions/1/parity", headers=bearer(publisher_token)).json()
    watched = Watched(browser, live_server)
    try:
        watched.login(publisher_token)
        page = watched.page
        page.goto("/console/models")
        _shot(page, "models", tmp_path)
        page.goto(f"/console/models/{MODEL}/1")
        assert "wasm" in page.locator("#tryit").inner_text()
        page.focus("#tryit-run")
        page.keyboard.press("Enter")
        page.wait_for_selector("#tryit[data-done]", timeout=DEADLINE * 1000)
        assert page.get_attribute("#tryit", "data-done") == "agrees", page.inner_text("#tryit-state")
        row = page.locator('#tryit-parity tr[data-runtime="browser"]')
        diff = float(row.get_attribute("data-max-diff") or "inf")
        assert diff <= python["tolerance"]["score_atol"]
        assert int(row.get_attribute("data-flips") or -1) <= python["tolerance"]["max_label_mismatches"]
        assert page.locator("#tryit-rows tbody tr").count() == len(python["rows"])
        # the browser and the service's onnxruntime run the same kernels on the same float32 file
        cells = page.locator("#tryit-rows tbody tr td:nth-child(4)").all_inner_texts()
        browser_scores = [float(t) for t in cells]
        worst = max(abs(b - r["python_score"]) for b, r in zip(browser_scores, python["rows"], strict=True))
        assert worst <= max(1e-5, python["tolerance"]["score_atol"])
        page.locator("#tryit").scroll_into_view_if_needed()
        _shot(page, "try-it", tmp_path)
        assert watched.errors == []
    finally:
        watched.close()
