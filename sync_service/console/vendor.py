"""The browser runtime the console serves, vendored from npm with its version recorded.

``static/vendor/onnxruntime-web/VENDOR.json`` names the package, its version, the npm
tarball's integrity and each copied file's sha256; the service serves these files itself
(never a CDN). ``python -m sync_service.console.vendor --check`` verifies the files against
the record (tests/console/test_vendor.py runs it); ``--update VERSION`` fetches the tarball
with ``npm pack``, checks npm's integrity and copies the files again.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sync_service.console.render import STATIC

PACKAGE = "onnxruntime-web"
DIR = STATIC / "vendor" / PACKAGE
RECORD = DIR / "VENDOR.json"
# the wasm build alone: the WebGPU/JSEP builds cannot load ORT-format files, WebGL cannot
# run our models (docs/console.md)
FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORD.read_text(encoding="utf-8"))
    return data


def check() -> list[str]:
    """Problems with the vendored files; empty when each matches the record."""
    rec = record()
    problems = []
    for name in FILES:
        path = DIR / name
        want = rec["files"].get(name)
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif want is None:
            problems.append(f"{name}: not in VENDOR.json")
        elif sha256_file(path) != want:
            problems.append(f"{name}: sha256 differs from VENDOR.json")
    return problems


def update(version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{version}", "--json", "--pack-destination", tmp],
            check=True, capture_output=True, text=True,
        )
        info = json.loads(out.stdout)[0]
        tarball = Path(tmp) / info["filename"]
        algo, _, digest = info["integrity"].partition("-")
        if base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode() != digest:
            raise SystemExit(f"{tarball.name}: does not match npm's integrity {info['integrity']}")
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        DIR.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(Path(tmp) / "package" / "dist" / name, DIR / name)
        license_ = json.loads((Path(tmp) / "package" / "package.json").read_text())["license"]
    RECORD.write_text(json.dumps({
        "package": PACKAGE, "version": version, "license": license_,
        "source": f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{version}.tgz",
        "integrity": info["integrity"],
        "files": {name: sha256_file(DIR / name) for name in FILES},
    }, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sync_service.console.vendor", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="verify the vendored files (exit 1 if not)")
    group.add_argument("--update", metavar="VERSION", help="vendor this onnxruntime-web version from npm")
    args = parser.parse_args(argv)
    if args.update:
        update(args.update)
        print(f"vendored {PACKAGE} {args.update} into {DIR}")
        return 0
    problems = check()
    for p in problems:
        print(f"{PACKAGE}: {p}", file=sys.stderr)
    if not problems:
        print(f"{PACKAGE} {record()['version']}: {len(FILES)} files match VENDOR.json")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
