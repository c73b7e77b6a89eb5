"""Write a bundle: the signed ``manifest.json`` and content-addressed artifacts
(docs/protocol.md, "Bundles on disk").

Everything is written into a temporary directory beside the output, fsynced, and renamed
into place at the very end; any failure (including Ctrl-C) removes the temporary
directory, so there is never a partial bundle at ``out_dir``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray
from pydantic import ValidationError

from packager.behaviour import profile
from packager.compression import ZSTD_LEVEL, zstd_copy
from packager.errors import BundleError, KeyLoadError, UsageError, VerificationError
from packager.fsutil import fsync_dir, write_new
from packager.golden import golden_deviation, select_golden_rows, tolerance_for
from packager.manifest import (
    MAX_MANIFEST_BYTES,
    SPEC_VERSION,
    Artifact,
    Compressed,
    ModelManifest,
    Reference,
    Root,
    RowSource,
    format_time,
    keyid_of,
    sha256_hex,
    sign,
    utcnow,
    verify_manifest,
)
from packager.runtime import run_artifact
from packager.verify import MANIFEST

if TYPE_CHECKING:
    from rich.progress import Progress

    from packager.pipeline import BuildResult



def check_publisher_keys(keys: Sequence[Ed25519PrivateKey], root: Root) -> None:
    """Refuse, before any work, keys the root does not trust to publish."""
    trusted, threshold = root.role_keys("publisher")
    ids = [keyid_of(k.public_key()) for k in keys]
    for kid in ids:
        if kid not in trusted:
            raise KeyLoadError(f"key {kid[:12]}… is not a publisher key of root v{root.version}")
    if len(set(ids)) < threshold:
        raise KeyLoadError(
            f"{len(set(ids))} publisher key(s) given, root v{root.version} needs {threshold}"
        )


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Fail early (before building) on an output that cannot be replaced."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UsageError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UsageError(f"{out_dir} is not empty: refusing to overwrite (use --force)")


def write_bundle(
    result: BuildResult,
    *,
    name: str,
    version: int,
    keys: Sequence[Ed25519PrivateKey],
    out_dir: Path,
    golden_rows: NDArray[np.floating],
    golden_source: RowSource = "calibration",
    golden_note: str = "",
    description: str = "",
    force: bool = False,
    root: Root | None = None,
    progress: Progress | None = None,
    expected_band: tuple[float, float] | None = None,
) -> Path:
    """Write ``out_dir`` as a bundle of ``result``, signed by ``keys``; returns ``out_dir``.

    ``golden_rows`` is the pool the golden vectors are picked from (calibration or
    held-out data, or the rows the pipeline drew: ``golden_source`` says which). With
    ``root``, the keys must meet its publisher threshold.
    """
    out_dir = Path(out_dir)
    if not keys:
        raise KeyLoadError("no publisher key given")
    if root is not None:
        check_publisher_keys(keys, root)
    check_out_dir(out_dir, force)
    card = result.card.model_copy(update={"description": description}) if description else result.card
    golden = select_golden_rows(
        golden_rows, result.reference_outputs, card.threshold, source=golden_source, note=golden_note
    )
    inputs = np.asarray(golden.inputs, dtype=np.float32)
    task = progress.add_task("writing bundle", total=len(result.artifacts) + 2) if progress else None

    def advance() -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    with _staging(out_dir) as tmp:
        artifacts: list[dict[str, Any]] = []
        for built in result.artifacts:
            source = Path(built.path)
            data = source.read_bytes()
            digest = sha256_hex(data)
            if not (tmp / f"{digest}.ort").exists():  # two targets may share identical bytes
                write_new(tmp / f"{digest}.ort", data)
            compressed = zstd_compress_file(source)
            measured = golden_deviation(golden, run_artifact(source, inputs))
            tolerance = tolerance_for(golden, built.precision, measured, card.threshold)
            artifact = Artifact.model_validate(
                {
                    "target": built.target,
                    "path": f"{digest}.ort",
                    "sha256": digest,
                    "length": len(data),
                    "format": "ort",
                    "precision": built.precision,
                    "ort_version": built.ort_version,
                    "optimization_style": built.optimization_style,
                    "input_shape": list(built.input_shape),
                    "quantization": built.quantization,
                    "ep_plan": built.ep_plan,
                    "parity": built.parity,
                    "golden_tolerance": tolerance,
                    "compressed": Compressed(
                        level=ZSTD_LEVEL, length=len(compressed), sha256=sha256_hex(compressed)
                    ),
                }
            )
            artifacts.append(artifact.model_dump(mode="json", by_alias=True))
            advance()

        reference = _write_reference(tmp, result.reference)
        signed = {
            "_type": "model-manifest",
            "spec_version": SPEC_VERSION,
            "name": name,
            "version": version,
            "created": format_time(utcnow()),
            "model": card.model_dump(mode="json", by_alias=True),
            "artifacts": artifacts,
            "reference": reference.model_dump(mode="json", by_alias=True),
            "golden": golden.model_dump(mode="json", by_alias=True),
            "behaviour": profile(*result.reference_outputs(golden_rows)).model_copy(
                update={"expected_band": expected_band}).model_dump(mode="json"),
        }
        try:
            ModelManifest.model_validate(signed)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise UsageError(f"cannot write manifest: {where}: {err['msg']}") from None
        envelope = sign(signed, keys)
        if root is not None:
            try:
                verify_manifest(envelope, root)
            except VerificationError as exc:
                raise KeyLoadError(f"signed manifest does not verify against root: {exc}") from None
        manifest_bytes = (json.dumps(envelope, indent=2) + "\n").encode()
        if len(manifest_bytes) > MAX_MANIFEST_BYTES:  # a device would refuse it (check 3.1)
            raise UsageError(f"cannot write manifest: {len(manifest_bytes)} bytes, more than the "
                             f"{MAX_MANIFEST_BYTES} a device reads (fewer golden rows or artifacts)")
        write_new(tmp / MANIFEST, manifest_bytes)
        advance()
        fsync_dir(tmp)
        _install(tmp, out_dir)
        advance()
    return out_dir


def zstd_compress_file(path: Path) -> bytes:
    """zstd frame of ``path`` with its content size and checksum (simple decoders, such as
    the TypeScript client's, need the size in the frame)."""
    out = io.BytesIO()
    with path.open("rb") as src:
        zstd_copy(src, out, path.stat().st_size)
    return out.getvalue()


def _write_reference(tmp: Path, reference: object) -> Reference:
    import joblib

    scratch = tmp / "reference.joblib.partial"
    joblib.dump(reference, scratch)
    data = scratch.read_bytes()
    scratch.unlink()
    digest = sha256_hex(data)
    write_new(tmp / f"{digest}.joblib", data)
    return Reference(path=f"{digest}.joblib", sha256=digest, length=len(data))


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    parent = out_dir.absolute().parent
    tmp = parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        # Created inside the try: a Ctrl-C right after mkdir still reaches the cleanup.
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as exc:
            raise UsageError(f"cannot write bundle to {out_dir}: {exc.strerror or exc}") from None
        yield tmp
    except OSError as exc:
        raise BundleError(f"writing {out_dir} failed: {exc.strerror or exc}") from None
    finally:
        # Reached after a successful install too: then tmp no longer exists.
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done: the renames below must not be cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _install(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` onto ``out_dir``; a non-empty existing one (already allowed by
    ``check_out_dir``) is moved aside first and removed once the new bundle is in place."""
    with _interrupts_deferred():
        if out_dir.is_dir() and any(out_dir.iterdir()):
            aside = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out_dir, aside)
            try:
                os.rename(tmp, out_dir)
            except OSError:
                os.rename(aside, out_dir)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            # rename(2) replaces an empty directory atomically.
            os.replace(tmp, out_dir)
        fsync_dir(out_dir.absolute().parent)
