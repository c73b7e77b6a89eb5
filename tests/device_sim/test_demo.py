"""`modelsync demo` end to end in a subprocess, and the server never outlives it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Generous: each of the demo's three rollout stages waits for convergence up to its
# --deadline, so a busy machine makes the test slower, not red.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for every purpose that matters here
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _demo(workdir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "packager.cli", "demo", "--workdir", str(workdir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _server_pid(text: str) -> int:
    found = re.search(r"modelsync serve` \(pid (\d+)\)", text)
    assert found, text[-2000:]
    return int(found.group(1))


def test_demo_runs_end_to_end_and_stops_its_server(tmp_path: Path) -> None:
    proc = _demo(tmp_path / "demo", "--devices", "12", "--poll-interval", "0.5", "--deadline", "200")
    out, _ = proc.communicate(timeout=850)
    flat = " ".join(out.split())
    assert proc.returncode == 0, out[-3000:]
    v1 = re.search(r"v1 on (\d+)% of eligible devices", flat)
    assert v1 is not None and int(v1.group(1)) >= 95
    assert "devices outside it that moved: 0" in flat
    share = re.search(r"at 100%: v2 on (\d+)% of eligible devices", flat)
    assert share is not None and int(share.group(1)) >= 95
    assert "honest stand-in for NNAPI and CoreML" in flat
    assert "demo passed" in flat and "✗" not in flat
    assert flat.count("✓") == 6
    assert "halted after" in flat and "behaviour gate: anomaly rate" in flat
    plot = tmp_path / "demo" / "fleet" / "convergence.png"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "Rollout buckets" in (tmp_path / "demo" / "fleet" / "summary.md").read_text()
    assert not _alive(_server_pid(out))


def test_ctrl_c_mid_demo_leaves_nothing_running(tmp_path: Path) -> None:
    proc = _demo(tmp_path / "demo", "--devices", "5", "--poll-interval", "0.5")
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 240
    while "join the fleet" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "join the fleet" in seen, seen[-2000:]
    pid = _server_pid(seen)
    assert _alive(pid)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-2000:]
    assert "interrupted" in rest
    assert not _alive(pid)
