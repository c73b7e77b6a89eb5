"""The service's zstd copy of a blob is made beside its target, named ``<name>.tmp-…`` like
every temporary of ours: a process killed in the middle of it leaves nothing in the
system's temp directory (before, a ``modelsync-zstd-*`` directory stayed there for good)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import os, signal, sys
from pathlib import Path
from sync_service.storage.local import LocalStorage
from sync_service import transfer

storage = LocalStorage(Path(sys.argv[1]))
data = os.urandom(3 << 20)
import hashlib
sha = hashlib.sha256(data).hexdigest()
storage.put_bytes(f"blobs/{sha}", data)
real_open = storage.open

class Dying:
    def __init__(self, fh):
        self.fh, self.reads = fh, 0
    def read(self, n=-1):
        self.reads += 1
        if self.reads == 2:  # the copy has begun: die as kill -9 would have it
            os.kill(os.getpid(), signal.SIGKILL)
        return self.fh.read(n)

from contextlib import contextmanager
@contextmanager
def dying_open(key):
    with real_open(key) as fh:
        yield Dying(fh)

storage.open = dying_open
transfer.ensure_zstd(storage, sha)
"""


def test_a_crash_while_caching_a_zstd_copy_leaves_nothing_in_the_temp_dir(tmp_path: Path) -> None:
    blobs, tmp = tmp_path / "blobs", tmp_path / "tmp"
    blobs.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(blobs)], env=env, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list(tmp.iterdir()) == []
    left = [p.name for p in blobs.rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert len(left) == 1  # beside its target, where the blob store's sweep finds it
