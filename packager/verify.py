"""Verify a bundle on disk completely, stopping at the first failure with a precise message.

Steps (cited in the code; docs/packager.md lists them for release engineers):

1. ``manifest.json`` is a signed ``model-manifest`` meeting root's publisher threshold.
2. Every path in the manifest is a plain file name ``<sha256>.<format>`` naming its own hash.
3. The directory holds exactly ``manifest.json`` and those files: nothing missing, nothing
   extra, no subdirectories or links.
4. Every file has the manifest's length and sha256.
5. The golden vectors run through every artifact with onnxruntime within its tolerance.

The compressed (zstd) size and hash are not recomputed: another zstd library version may
compress the same bytes differently, and what a device checks is the decompressed sha256.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from packager.errors import BundleError, FormatError, ModelSyncError, UsageError
from packager.golden import Deviation, as_inputs, check_golden
from packager.manifest import ModelManifest, Root, verify_manifest
from packager.runtime import run_artifact

if TYPE_CHECKING:
    from rich.progress import Progress

MANIFEST = "manifest.json"
_NAME = re.compile(r"^(?P<sha>[0-9a-f]{64})\.(?P<ext>ort|onnx|joblib)$")
_CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class ArtifactCheck:
    target: str
    precision: str
    deviation: Deviation


@dataclass(frozen=True)
class BundleReport:
    manifest: ModelManifest
    checks: list[ArtifactCheck]


def read_manifest_json(bundle: Path) -> object:
    path = Path(bundle) / MANIFEST
    if not Path(bundle).is_dir():
        raise UsageError(f"{bundle}: not a directory (give the directory `modelsync package -o` wrote)")
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{bundle}: no {MANIFEST}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None


def load_manifest_unverified(bundle: Path) -> ModelManifest:
    """The manifest's contents without checking any signature: for ``inspect`` only."""
    from packager.manifest import _typed, parse_envelope

    manifest: ModelManifest = _typed(parse_envelope(read_manifest_json(bundle)), "model-manifest")
    return manifest


def verify_bundle(
    bundle: Path, root: Root, *, run_golden: bool = True, progress: Progress | None = None
) -> BundleReport:
    bundle = Path(bundle)
    manifest = verify_manifest(read_manifest_json(bundle), root)  # step 1
    files = _expected_files(manifest)  # step 2
    _check_listing(bundle, files)  # step 3
    for name, (sha, length) in _tracked(progress, list(files.items()), "checking files"):  # step 4
        _check_file(bundle / name, sha, length)
    checks: list[ArtifactCheck] = []
    if run_golden:  # step 5
        checks = check_artifacts(bundle, manifest, progress)
    return BundleReport(manifest, checks)


def check_artifacts(
    bundle: Path, manifest: ModelManifest, progress: Progress | None = None
) -> list[ArtifactCheck]:
    inputs = as_inputs(manifest.golden.inputs)
    n = len(manifest.golden.inputs)
    if len(manifest.golden.label) != n or len(manifest.golden.score) != n:
        raise BundleError("golden vectors: inputs, labels and scores differ in length")
    if inputs.shape[1] != len(manifest.model.features):
        raise BundleError(
            f"golden vectors have {inputs.shape[1]} features, the model card lists "
            f"{len(manifest.model.features)}"
        )
    checks = []
    for art in _tracked(progress, manifest.artifacts, "golden vectors"):
        what = f"{art.target} ({art.precision}, {art.path[:12]}…)"
        try:
            outputs = run_artifact(bundle / art.path, inputs)
        except ModelSyncError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types on a bad file
            raise BundleError(f"{what}: onnxruntime cannot run it: {_one_line(exc)}") from None
        deviation = check_golden(manifest.golden, art.golden_tolerance, outputs, what)
        checks.append(ArtifactCheck(art.target, art.precision, deviation))
    return checks


def _tracked(progress: Progress | None, items: Sequence[T], description: str) -> Iterable[T]:
    return items if progress is None else progress.track(items, description=description)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _expected_files(manifest: ModelManifest) -> dict[str, tuple[str, int]]:
    entries: list[tuple[str, str, int, str, str]] = [
        (a.path, a.sha256, a.length, a.format, a.target) for a in manifest.artifacts
    ]
    if manifest.reference is not None:
        r = manifest.reference
        entries.append((r.path, r.sha256, r.length, r.format, "reference"))
    files: dict[str, tuple[str, int]] = {}
    for path, sha, length, fmt, what in entries:
        m = _NAME.match(path)
        if m is None or m["sha"] != sha or m["ext"] != fmt:
            raise BundleError(f"{what}: path {path!r} is not '<its sha256>.{fmt}'")
        if path in files and files[path] != (sha, length):
            raise BundleError(f"{what}: {path} is listed twice with different lengths")
        files[path] = (sha, length)
    return files


def _check_listing(bundle: Path, files: dict[str, tuple[str, int]]) -> None:
    present = {}
    for entry in bundle.iterdir():
        if entry.is_symlink() or not entry.is_file():
            kind = "link" if entry.is_symlink() else "entry"
            raise BundleError(f"{bundle}: unexpected {kind} {entry.name!r} (bundles are flat)")
        present[entry.name] = entry
    missing = sorted(set(files) - set(present))
    if missing:
        raise BundleError(f"{bundle}: missing file {missing[0]}")
    extra = sorted(set(present) - set(files) - {MANIFEST})
    if extra:
        raise BundleError(f"{bundle}: unexpected file {extra[0]!r} (not in the manifest)")


def _check_file(path: Path, sha: str, length: int) -> None:
    size = path.stat().st_size
    if size != length:
        raise BundleError(f"{path.name}: length {size}, manifest says {length}")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != sha:
        raise BundleError(f"{path.name}: sha256 {digest.hexdigest()[:12]}…, manifest says {sha[:12]}…")
