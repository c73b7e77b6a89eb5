"""Run ``modelsync serve`` as a child process on a free loopback port, for the demo, the
fleet tests and benchmarks: a real server in its own process (its own GIL), so thousands
of simulated devices in this process measure the service, not a shared event loop.

The context manager always stops the child (terminate, then kill after a grace period),
on success, on error and on Ctrl-C, so nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from device_sim.errors import ServiceStartError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RunningService:
    url: str
    pid: int
    log_path: Path


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def running_service(
    data_dir: Path,
    root: Path,
    index_key: Path,
    *,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    log_path: Path | None = None,
) -> Iterator[RunningService]:
    port = free_port()
    log_path = log_path or data_dir.parent / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "packager.cli", "serve",
        "--data-dir", str(data_dir), "--root", str(root), "--index-key", str(index_key),
        "--host", "127.0.0.1", "--port", str(port), *extra_args,
    ]
    child_env = {**os.environ, **(env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, ready_timeout_s, log_path)
        yield RunningService(url=url, pid=proc.pid, log_path=log_path)
    finally:
        stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise ServiceStartError(
                    f"modelsync serve exited with status {code} before it was ready:\n{_log_tail(log_path)}"
                )
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise ServiceStartError(f"modelsync serve not ready after {timeout_s:.0f} s:\n{_log_tail(log_path)}")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # A second Ctrl-C while waiting must not leave the server behind.
        proc.kill()
        proc.wait(timeout=grace_s)
