"""The schemathesis CLI, every check, against a real ``modelsync serve`` on loopback (SQLite
and PostgreSQL): status codes, content types, headers and bodies as /openapi.json documents
them (issue 8, item 7: the schema listed FastAPI's default validation error and missed
401/403 on most operations).

Each operation is exercised with a token that passes authentication for it (a publisher's,
a device's, the enrollment token for registration), so the checks reach the validation and
the logic behind it; ``ignored_auth`` then checks each refuses a missing or wrong token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from device_sim.service_process import running_service
from tests.sync_service.fleet_helpers import create_release, publish, register

CONFIG = Path(__file__).with_name("schemathesis.toml")
REPO = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 8
SEED = 8
REGISTER = r"^/v1/devices/register$"
DEVICE = r"^/v1/(channels|devices)/"
REVOKE = r"/revoke$"
# (include, exclude, whose token): registration needs the enrollment token, a device's own
# routes its device token, everything else a publisher token with every scope. Revocation
# runs last: schemathesis takes token ids from GET /v1/admin/tokens and revokes the tokens
# the other runs use.
RUNS = (
    (REGISTER, (), "enrollment"),
    (DEVICE, (REGISTER,), "device"),
    (None, (REGISTER, DEVICE, REVOKE), "publisher"),
    (REVOKE, (), "publisher"),
)


def _schemathesis(
    schema_url: str, base_url: str, token: str, include: str | None, exclude: tuple[str, ...], report: Path
) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        schema_url,
        "--url",
        base_url,
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-redirects",
        "0",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-shrink",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    if include is not None:
        cmd += ["--include-path-regex", include]
    if exclude:  # the option does not add up when given twice: the last one wins
        cmd += ["--exclude-path-regex", "|".join(f"({p})" for p in exclude)]
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "SCHEMATHESIS_HOOKS": "tests.sync_service.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    # Run in the report's directory: the CLI keeps a cache (.schemathesis/) where it runs.
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=report.parent)


@pytest.mark.slow
def test_schemathesis_all_checks(
    tmp_path: Path,
    client: TestClient,
    auth: dict[str, str],
    fleet: str,
    enrollment_token: str,
    bundle_factory: Callable[..., Path],
    database_url: str | None,
    server_keys: Path,
) -> None:
    publish(client, auth, bundle_factory(version=1))
    create_release(client, auth, version=1, percent=50)
    tokens = {
        "publisher": auth["Authorization"].removeprefix("Bearer "),
        "enrollment": enrollment_token,
        "device": register(client, enrollment_token, "dev-1"),
    }
    env = {"MODELSYNC_DATABASE_URL": database_url} if database_url else {}
    with running_service(
        tmp_path / "data", server_keys / "root.json", server_keys / "index.key", env=env
    ) as service:
        outcomes = []
        started = time.monotonic()
        for i, (include, exclude, who) in enumerate(RUNS):
            report = tmp_path / f"schemathesis-{i}.ndjson"
            done = _schemathesis(
                f"{service.url}/openapi.json", service.url, tokens[who], include, exclude, report
            )
            outcomes.append((include, done))
        elapsed = time.monotonic() - started
    counts = [re.search(r"(\d+) generated", d.stdout) for _, d in outcomes]
    print(f"schemathesis cases per run: {[int(m.group(1)) if m else None for m in counts]}")
    failed = [(inc, d) for inc, d in outcomes if d.returncode != 0 or "Tested: 0" in d.stdout]
    summary = "\n\n".join(
        f"--- {inc or 'publisher routes'} (exit {d.returncode})\n{d.stdout[-6000:]}{d.stderr[-2000:]}"
        for inc, d in failed
    )
    assert not failed, summary
    print(f"schemathesis: {len(RUNS)} runs in {elapsed:.0f} s")
