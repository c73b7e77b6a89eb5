"""The files in deploy/ agree with the service they deploy: every ``MODELSYNC_*`` name is
a setting, the compose file is valid YAML wired the way docs/deploy.md says, and the
systemd unit, its environment file and nginx's upstream name the same address."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_service.core.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = DEPLOY.parent / "docs" / "deploy.md"
SETTINGS = {name.upper() for name in Settings.model_fields}


def _modelsync_names(env: dict[str, Any]) -> set[str]:
    return {k.removeprefix("MODELSYNC_") for k in env if k.startswith("MODELSYNC_")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_is_wired_to_real_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"modelsync", "migrate", "postgres", "minio", "minio-bucket"} <= set(services)
    env = services["modelsync"]["environment"]
    assert services["migrate"]["environment"] == env  # the same settings, migrate and serve
    unknown = _modelsync_names(env) - SETTINGS
    assert not unknown, f"compose names settings that do not exist: {unknown}"
    # Settings parse: the values are of the right type for the service.
    values = {k.removeprefix("MODELSYNC_").lower(): v for k, v in env.items()
              if k.startswith("MODELSYNC_") and "${" not in v}
    settings = Settings(**values)
    assert settings.storage_backend == "s3" and settings.s3_bucket
    assert env["MODELSYNC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["MODELSYNC_DATABASE_URL"]
    assert env["MODELSYNC_S3_ENDPOINT_URL"] == "http://minio:9000"
    bucket_cmd = " ".join(services["minio-bucket"]["entrypoint"])
    assert f"local/{settings.s3_bucket}" in bucket_cmd
    assert services["modelsync"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "minio-bucket": {"condition": "service_completed_successfully"},
    }
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Published on the host's loopback, where nginx's upstream points.
    assert services["modelsync"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "/etc/modelsync:ro" in services["modelsync"]["volumes"][0]
    assert (DEPLOY / compose["services"]["migrate"]["build"]["dockerfile"].removeprefix("deploy/")).is_file()


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip().lstrip("#").strip()
        if re.match(r"^[A-Z_]+=", line):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_systemd_unit_and_env_file_match_the_settings_and_nginx() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "modelsync.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[:2] == ["/opt/modelsync/venv/bin/modelsync", "serve"]
    assert service["EnvironmentFile"] == "/etc/modelsync/modelsync.env"
    assert service["User"] == "modelsync" and service["StateDirectory"] == "modelsync"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    env = _env_file(DEPLOY / "systemd" / "modelsync.env")
    unknown = _modelsync_names(env) - SETTINGS
    assert not unknown, f"modelsync.env names settings that do not exist: {unknown}"
    assert env["MODELSYNC_DATA_DIR"] == "/var/lib/modelsync"  # the unit's StateDirectory
    nginx = (DEPLOY / "nginx" / "modelsync.conf").read_text()
    assert f"server {env['MODELSYNC_HOST']}:{env['MODELSYNC_PORT']};" in nginx


def test_nginx_body_limit_is_the_upload_cap() -> None:
    nginx = (DEPLOY / "nginx" / "modelsync.conf").read_text()
    size = re.search(r"client_max_body_size (\d+)m;", nginx)
    assert size is not None
    assert int(size.group(1)) * 1024 * 1024 == Settings.model_fields["upload_max_bytes"].default


def test_deploy_doc_covers_every_file() -> None:
    text = DOCS.read_text()
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        assert f"deploy/{path.relative_to(DEPLOY)}" in text, f"docs/deploy.md does not mention {path.name}"
