"""`serve` on its own for a small install: HTTPS from --ssl-certfile/--ssl-keyfile, one
clear line for a bad TLS setup, and a warning when plain HTTP is offered beyond loopback."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from packager.cli import main
from sync_service.core.config import Settings
from sync_service.listen import is_loopback, plain_http_warning
from tests.deploy.nginx_harness import free_port, make_tls


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("sync.example.com", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    warning = plain_http_warning(Settings(host=host), tls=False)
    assert (warning is None) is loopback
    assert plain_http_warning(Settings(host=host), tls=True) is None
    if warning is not None:
        assert "without TLS" in warning and "deploy/nginx" in warning


def _serve(keys_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["serve", "--data-dir", str(tmp_path / "data"), "--root", str(keys_dir / "root.json"),
            "--index-key", str(keys_dir / "index.key"), *extra]


def test_bad_tls_setup_is_one_usage_line(
    keys_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = make_tls(tmp_path / "tls")
    other = make_tls(tmp_path / "other")
    cases = [
        (("--ssl-certfile", str(tls.cert)), "needs both --ssl-certfile and --ssl-keyfile"),
        (("--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", str(tls.key)), "no such file"),
        (("--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(other.key)), "cannot load TLS certificate"),
    ]
    for extra, message in cases:
        assert main(_serve(keys_dir, tmp_path, "--port", "0", *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_serve_answers_https_with_its_own_certificate(keys_dir: Path, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSYNC_")}
    cmd = [sys.executable, "-m", "packager.cli",
           *_serve(keys_dir, tmp_path, "--port", str(port),
                   "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key))]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    context = ssl.create_default_context(cafile=str(tls.ca))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=context, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["warnings"] == []
        with pytest.raises(httpx.TransportError):  # TLS only: no plain HTTP on the port
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert f"serving on https://127.0.0.1:{port}" in err
    assert "without TLS" not in err
