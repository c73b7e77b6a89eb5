"""A zstd bomb costs the device no more memory than a normal install (docs/device.md 4.1).

Each sync runs in a child process of its own (tests/device_sim/memory_child.py) so peak
RSS is that sync's alone. Before the decompressor's output was capped per piece, the 8 KiB
bomb took the child to 357 MiB against 99 MiB for a normal install.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SLACK_KIB = 16 << 10


def _child(mode: str, state: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "tests.device_sim.memory_child", mode, str(state)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_zstd_bomb_is_refused_within_the_memory_of_a_normal_install(tmp_path: Path) -> None:
    normal = _child("normal", tmp_path / "normal")
    assert normal["installed"] == [1]
    bomb = _child("bomb", tmp_path / "bomb")
    assert bomb["reasons"] == ["length_mismatch"]
    assert bomb["models"] == {} and bomb["partials"] == []  # refused, nothing kept
    assert bomb["maxrss_kib"] <= normal["maxrss_kib"] + SLACK_KIB, (normal, bomb)
