"""`modelsync serve` as a real process on embedded defaults, with nothing set up but
`modelsync keys init`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_on_embedded_defaults(service_keys_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSYNC_")}
    cmd = [
        sys.executable,
        "-m",
        "packager.cli",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--root",
        str(service_keys_dir / "root.json"),
        "--index-key",
        str(service_keys_dir / "index.key"),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert r.status_code == 200
        root = httpx.get(f"http://127.0.0.1:{port}/v1/root/1.json")
        assert (
            root.status_code == 200
            and root.content == (service_keys_dir / "roots" / "1.root.json").read_bytes()
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in err
    assert (tmp_path / "data" / "modelsync.db").exists()
    assert "is empty: creating the schema" in err
    # keys init put root.key and publisher.key beside index.key: the service says so.
    assert "root.key sits beside the index key" in err
    assert "publisher.key sits beside the index key" in err


def test_serve_on_a_busy_port_is_one_line_and_exit_conflict(service_keys_dir: Path, tmp_path: Path) -> None:
    from packager import exit_codes

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSYNC_")}
        proc = subprocess.run(
            [sys.executable, "-m", "packager.cli", "serve", "--data-dir", str(tmp_path / "data"),
             "--root", str(service_keys_dir / "root.json"),
             "--index-key", str(service_keys_dir / "index.key"), "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == exit_codes.CONFLICT, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"port {port} on 127.0.0.1 is in use" in proc.stderr and "--port" in proc.stderr
    assert not (tmp_path / "data" / "modelsync.db").exists()  # refused before anything was made
