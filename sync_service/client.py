"""HTTP client helpers for the publisher-side commands (`publish`, `release`): where the
server and token come from, one request function that turns refusals into one-line
errors, and the streamed bundle upload.

Token, first found wins: ``--token-file``, ``MODELSYNC_TOKEN``, ``token`` in
``~/.config/modelsync/config.toml`` (or ``$MODELSYNC_CONFIG``). Server: ``--server``,
``MODELSYNC_SERVER``, ``server`` in the same file.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from packager import exit_codes
from packager.errors import ModelSyncError, UnreachableError, UsageError

CHUNK = 256 * 1024


def exit_code_for_status(status: int) -> int:
    """The CLI's exit code for a refusal with HTTP ``status`` (docs/cli.md)."""
    if status in (401, 403):
        return exit_codes.UNAUTHORIZED
    if status in (404, 410):
        return exit_codes.NOT_FOUND
    if status == 409:
        return exit_codes.CONFLICT
    if status >= 500:
        return exit_codes.UNREACHABLE
    return exit_codes.USAGE


class ApiError(ModelSyncError):
    """The server refused a request: status, its snake_case code and its one-line detail."""

    def __init__(self, status: int, code: str, detail: str, method: str, url: str) -> None:
        super().__init__(f"{method} {url}: {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.exit_code = exit_code_for_status(status)


def config_path() -> Path:
    env = os.environ.get("MODELSYNC_CONFIG")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "modelsync" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    p = path or config_path()
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {p}: {exc.strerror}") from None


def resolve_token(token_file: Path | None = None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise UsageError(f"token file {token_file} is empty")
        return token
    token = os.environ.get("MODELSYNC_TOKEN", "").strip() or str(load_config().get("token", "")).strip()
    if not token:
        raise UsageError(
            f'no API token: set MODELSYNC_TOKEN, pass --token-file, or put token = "…" in {config_path()}'
        )
    return token


def resolve_server(server: str | None) -> str:
    url = server or os.environ.get("MODELSYNC_SERVER") or str(load_config().get("server", ""))
    if not url:
        raise UsageError(
            f'no server: pass --server URL, set MODELSYNC_SERVER, or put server = "…" in {config_path()}'
        )
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"server URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


class ServiceClient:
    """A thin wrapper over httpx.Client; ``transport`` lets tests hand it the app in-process."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "modelsync-cli"},
            transport=transport,
            timeout=timeout,
        )

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise UnreachableError(
                f"cannot reach {self.server}: {exc} (is `modelsync serve` running there?)"
            ) from None
        if response.status_code >= 400:
            raise _api_error(response, method, path)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def publish(self, bundle: Path, on_progress: Callable[[int, int], None] | None = None) -> tuple[int, Any]:
        """Upload a bundle directory; returns (status 201 or 200, the server's answer)."""
        with tempfile.TemporaryDirectory(prefix="modelsync-publish-") as tmp:
            tar_path = Path(tmp) / "bundle.tar"
            write_bundle_tar(bundle, tar_path)
            size = tar_path.stat().st_size
            response = self.request(
                "POST",
                "/v1/bundles",
                content=_read_chunks(tar_path, size, on_progress),
                headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
            )
        return response.status_code, response.json()


def _api_error(response: httpx.Response, method: str, path: str) -> ApiError:
    try:
        body = response.json()
        detail, code = str(body.get("detail", "")), str(body.get("code", "error"))
    except (ValueError, AttributeError):
        detail, code = response.text.strip()[:200] or response.reason_phrase, "error"
    return ApiError(response.status_code, code, detail, method, path)


def _read_chunks(path: Path, size: int, on_progress: Callable[[int, int], None] | None) -> Iterator[bytes]:
    sent = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sent += len(chunk)
            if on_progress is not None:
                on_progress(sent, size)
            yield chunk


def write_bundle_tar(bundle: Path, dest: Path) -> None:
    """The bundle's files, flat, as an uncompressed POSIX tar (docs/protocol.md)."""
    if not bundle.is_dir():
        raise UsageError(f"not a bundle directory: {bundle}")
    if not (bundle / "manifest.json").is_file():
        raise UsageError(f"{bundle} has no manifest.json: is it a bundle written by `modelsync package`?")
    entries = sorted(bundle.iterdir())
    odd = [p.name for p in entries if not p.is_file() or p.is_symlink()]
    if odd:
        raise UsageError(f"{bundle}: bundles hold plain files only, found {odd[0]!r}")
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in entries:
            info = tar.gettarinfo(str(p), arcname=p.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with p.open("rb") as fh:
                tar.addfile(info, fh)
