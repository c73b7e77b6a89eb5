"""The service's one settings class: every knob comes from a ``MODELSYNC_*`` environment
variable (or a CLI flag that overrides it), so replicas are configured the same way."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# PostgreSQL connections one replica opens at most (pool + overflow): what an operator
# sizes ``max_connections`` by (docs/operations.md quotes it; tests/sync_service/test_pool.py).
DATABASE_POOL_MAX = 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELSYNC_", extra="ignore")

    data_dir: Path = Field(Path("modelsync-data"), description="SQLite file and local blobs live here")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///DATA_DIR/modelsync.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db"
    )
    database_pool_max: int = Field(
        DATABASE_POOL_MAX, ge=10, le=1000, description="PostgreSQL connections per replica, at most"
    )

    storage_backend: Literal["local", "s3"] = "local"
    blob_dir: Path | None = Field(None, description="local backend; default DATA_DIR/blobs")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_presigned_downloads: bool = False
    s3_presign_expires_s: int = Field(900, ge=1)
    s3_multipart_threshold: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    s3_multipart_chunk: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)

    root_path: Path | None = Field(None, description="KEYS/root.json; roots/N.root.json beside it")
    index_key_path: Path | None = Field(None, description="the online index signing key (PEM)")
    index_key_passphrase: SecretStr | None = None
    index_lifetime: timedelta = timedelta(days=7)
    phase_interval_s: float = Field(5.0, gt=0, description="how often phased ramps are judged")
    console_session_lifetime: timedelta = Field(
        timedelta(hours=8), description="a release console login lasts this long (docs/console.md)"
    )
    # The offline role's key, for `pack export` (docs/offline.md). Unset: offline.key beside
    # the index key when one is there, else packs cannot be exported (409 no_offline_key).
    offline_key_path: Path | None = Field(None, description="the offline-pack signing key (PEM)")
    offline_key_passphrase: SecretStr | None = None
    offline_max_days: int = Field(
        90, ge=1, le=365, description="the longest validity window a pack may be exported with"
    )
    pack_max_bytes: int = Field(2 << 30, ge=1 << 20, description="an exported pack's size, at most")

    upload_max_bytes: int = Field(512 * 1024 * 1024, ge=1)
    stale_temp_s: float = Field(
        3600, gt=0, description="temporaries and upload directories older than this are litter"
    )
    sweep_interval_s: float = Field(600, gt=0, description="how often litter is swept")
    health_failure_rate: float = Field(0.05, gt=0, le=1)
    health_min_devices: int = Field(20, ge=1)
    # Only a brand-new, empty embedded SQLite file (no database_url) is migrated on its own.
    auto_migrate_empty_sqlite: bool = True

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # TLS terminated by uvicorn itself, for a small install without a reverse proxy
    # (deploy/nginx/ is the fronted setup): both or neither.
    ssl_certfile: Path | None = Field(None, description="PEM certificate chain served by `serve`")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile")
    metrics_token: SecretStr | None = Field(
        None, description="when set, GET /metrics needs `Authorization: Bearer <token>` (else 401)"
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'modelsync.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"
