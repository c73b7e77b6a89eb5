"""docs/quickstart.md works literally: its ```sh blocks, in order, in an empty directory,
against the real `modelsync serve` it starts on loopback (on a free port instead of the
page's 8765). `modelsync` and `python` are this checkout's, as the reader's activated venv
would give them."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "quickstart.md"
PAGE_PORT = "8765"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrappers(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, run in (("modelsync", "-m packager.cli"), ("python", "")):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" {run} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_guide_has_the_walk_through() -> None:
    blocks = sh_blocks(GUIDE.read_text())
    joined = "\n".join(blocks)
    for step in ("examples/train.py", "keys init", "package", "verify", "serve", "fleet create",
                 "token create", "publish", "release create", "device register", "device sync",
                 "device predict", "release set", "kill"):
        assert step in joined, step
    readme = (ROOT / "README.md").read_text()
    assert "docs/quickstart.md" in readme


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None:  # the page waits for the server with curl, as a reader would
        pytest.skip("curl is not installed")
    port = str(_free_port())
    script = "\n".join(b.replace(PAGE_PORT, port) for b in sh_blocks(GUIDE.read_text()))
    work = tmp_path / "quickstart"
    work.mkdir()
    _wrappers(tmp_path / "bin")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELSYNC_")},
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "MODELSYNC_REPO": str(ROOT),
        "MODELSYNC_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "160",
    }
    # The page's last step stops the server; the trap stops it too when a step fails.
    wrapped = f"set -euo pipefail\ntrap 'kill \"${{SERVE_PID:-}}\" 2>/dev/null || true' EXIT\n{script}\n"
    done = subprocess.run(["bash", "-c", wrapped], cwd=work, env=env, capture_output=True, text=True,
                          timeout=480, check=False)
    log = (work / "serve.log").read_text() if (work / "serve.log").exists() else ""
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{log[-2000:]}"
    out = done.stdout
    assert "registered dev-" in out and "in fleet field/stable" in out
    assert re.search(r"\d+ rows, \d+ anomalous", out)
    from device_sim.device import Device

    status = Device(work / "device-1").status()
    assert [(m.name, m.current, m.previous) for m in status.models] == [("quickstart", 2, 1)]
