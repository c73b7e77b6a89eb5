"""Ingesting an uploaded bundle: safe extraction, trust checks, then storage and one
database transaction.

Order (each step raises before anything is recorded):
  1. tar: uncompressed, regular files only, flat names, no duplicates, member count capped
  2. manifest.json: JSON, then ``verify_manifest`` against the service's root (publisher
     role threshold): 403 untrusted_signature / bad_signature / unknown_key
  3. every manifest path is a plain file name (no ``..``, ``/``, absolute paths)
  4. the tar holds exactly manifest.json plus the files the manifest names, each with the
     manifest's length and sha256
  5. the same name+version already stored: identical manifest → unchanged (200), else 409
  6. blobs are written, content-addressed (deduplicated), then the Blob, ModelVersion and
     ModelArtifact rows are committed in ONE transaction.

A crash between 6's blob writes and its commit leaves only orphan blobs: harmless,
immutable, named by their hash, invisible without a ModelVersion row, and reused as-is by
the next upload of the same content. No half version can ever be visible.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from packager.manifest import ModelManifest, Root, parse_envelope, verify_manifest
from sync_service import crud
from sync_service.errors import (
    BadRequest,
    BundleRejected,
    ConcurrentUpload,
    PayloadTooLarge,
    Unprocessable,
    VersionExists,
)
from sync_service.models import BlobKind
from sync_service.storage import Storage, blob_key

MANIFEST = "manifest.json"
MAX_MEMBERS = 64
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StoredFile:
    path: Path
    sha256: str
    length: int


@dataclass
class IngestResult:
    name: str
    version: int
    manifest_sha256: str
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    created: bool = True

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "artifacts": self.artifacts,
        }


def _check_member_name(name: str) -> None:
    if name.startswith("/") or name.startswith("\\"):
        raise BundleRejected(f"tar member {name!r} has an absolute path", code="path_outside_bundle")
    if ".." in re.split(r"[/\\]", name):
        raise BundleRejected(f"tar member {name!r} points outside the bundle", code="path_outside_bundle")
    if "/" in name or "\\" in name:
        raise BundleRejected(
            f"tar member {name!r} is in a subdirectory: bundle files must be at the top level",
            code="path_outside_bundle",
        )
    if not _NAME.match(name):
        raise BundleRejected(f"tar member {name!r} is not a plain file name", code="bad_file_name")


def extract(tar_path: Path, dest: Path) -> dict[str, StoredFile]:
    """Step 1: copy each member to ``dest`` while hashing it; refuse anything but flat
    regular files. Never calls ``extractall``: names are checked before a byte is written."""
    files: dict[str, StoredFile] = {}
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                _check_member_name(member.name)
                # isreg() is true for GNU sparse members too, which expand on extraction.
                if not member.isreg() or member.issparse():
                    kind = (
                        "link" if member.issym() or member.islnk()
                        else "directory" if member.isdir()
                        else "sparse file" if member.issparse()
                        else "special file"
                    )
                    raise BundleRejected(
                        f"tar member {member.name!r} is a {kind}: only regular files are allowed",
                        code="bad_member_type",
                    )
                if member.name in files:
                    raise BundleRejected(
                        f"tar member {member.name!r} appears twice", code="duplicate_member"
                    )
                if len(files) >= MAX_MEMBERS:
                    raise BundleRejected(
                        f"more than {MAX_MEMBERS} files in the bundle", code="too_many_files"
                    )
                if member.name == MANIFEST and member.size > MAX_MANIFEST_BYTES:
                    raise PayloadTooLarge(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
                src = tar.extractfile(member)
                assert src is not None  # regular file
                out_path = dest / member.name
                digest = hashlib.sha256()
                length = 0
                with out_path.open("xb") as out:
                    while chunk := src.read(1024 * 1024):
                        digest.update(chunk)
                        length += len(chunk)
                        out.write(chunk)
                if length != member.size:
                    raise BadRequest(f"tar member {member.name!r} is truncated", code="truncated_tar")
                files[member.name] = StoredFile(out_path, digest.hexdigest(), length)
    except tarfile.ReadError as exc:
        # Covers "not a tar", compressed tars (mode "r:" reads uncompressed only) and data
        # ending inside a member.
        raise BadRequest(f"not a complete uncompressed tar archive: {exc}", code="bad_tar") from None
    except (tarfile.TarError, EOFError) as exc:
        raise BadRequest(f"bad tar archive: {exc}", code="bad_tar") from None
    if not files:
        raise BadRequest("empty tar archive", code="bad_tar")
    return files


def _load_manifest(files: dict[str, StoredFile], root: Root) -> tuple[ModelManifest, StoredFile]:
    stored = files.get(MANIFEST)
    if stored is None:
        raise BundleRejected(f"the bundle has no {MANIFEST}", code="missing_manifest")
    try:
        raw = json.loads(stored.path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Unprocessable(f"{MANIFEST} is not valid JSON: {exc}", code="malformed_manifest") from None
    # Step 2: packager errors (signature, format) are mapped to 403/422 in sync_service.errors.
    return verify_manifest(raw, root), stored


def expected_files(manifest: ModelManifest) -> dict[str, tuple[str, int]]:
    """Step 3: ``{path: (sha256, length)}`` for every file the manifest names."""
    wanted: dict[str, tuple[str, int]] = {}
    refs: list[tuple[str, str, int]] = [(a.path, a.sha256, a.length) for a in manifest.artifacts]
    if manifest.reference is not None:
        r = manifest.reference
        refs.append((r.path, r.sha256, r.length))
    for path, sha, length in refs:
        try:
            _check_member_name(path)
        except BundleRejected as exc:
            raise BundleRejected(
                f"manifest names {path!r}: {exc.detail.split(': ', 1)[-1]}", code=exc.code
            ) from None
        if path == MANIFEST:
            raise BundleRejected(f"manifest names {MANIFEST} as an artifact", code="bad_file_name")
        if path in wanted and wanted[path] != (sha, length):
            raise BundleRejected(
                f"manifest names {path!r} twice with different hashes", code="bad_manifest"
            )
        wanted[path] = (sha, length)
    return wanted


def check_files(files: dict[str, StoredFile], wanted: dict[str, tuple[str, int]]) -> None:
    """Step 4: exactly the named files, each with its length and sha256."""
    present = set(files) - {MANIFEST}
    missing = sorted(set(wanted) - present)
    if missing:
        raise BundleRejected(f"the bundle lacks {missing[0]!r}, named in the manifest", code="missing_file")
    extra = sorted(present - set(wanted))
    if extra:
        raise BundleRejected(f"{extra[0]!r} is in the bundle but not in the manifest", code="unexpected_file")
    for path, (sha, length) in sorted(wanted.items()):
        got = files[path]
        if got.length != length:
            raise BundleRejected(
                f"{path}: {got.length} bytes, the manifest says {length}", code="length_mismatch"
            )
        if got.sha256 != sha:
            raise BundleRejected(
                f"{path}: sha256 {got.sha256} does not match the manifest", code="hash_mismatch"
            )


def _result(manifest: ModelManifest, manifest_sha: str, *, created: bool) -> IngestResult:
    artifacts = [{"target": a.target, "sha256": a.sha256, "length": a.length} for a in manifest.artifacts]
    return IngestResult(manifest.name, manifest.version, manifest_sha, artifacts, created=created)


def _existing(session: Session, manifest: ModelManifest, manifest_sha: str) -> IngestResult | None:
    """Step 5."""
    mv = crud.get_model_version(session=session, name=manifest.name, version=manifest.version)
    if mv is None:
        return None
    if mv.manifest_sha256 != manifest_sha:
        raise VersionExists(
            f"{manifest.name} v{manifest.version} is already stored with a different manifest "
            f"({mv.manifest_sha256[:12]}…): publish a new version number"
        )
    return _result(manifest, manifest_sha, created=False)


def ingest(tar_path: Path, workdir: Path, *, engine: Engine, storage: Storage, root: Root) -> IngestResult:
    files = extract(tar_path, workdir)
    manifest, manifest_file = _load_manifest(files, root)
    wanted = expected_files(manifest)
    check_files(files, wanted)
    manifest_sha = manifest_file.sha256  # of the bytes as uploaded, which devices will fetch

    with Session(engine) as session:
        found = _existing(session, manifest, manifest_sha)
        if found is not None:
            return found

    # Step 6: blobs first (idempotent, content-addressed), rows last in one transaction.
    blobs: dict[str, tuple[StoredFile, BlobKind]] = {manifest_sha: (manifest_file, "manifest")}
    for path, (sha, _length) in wanted.items():
        is_reference = manifest.reference is not None and path == manifest.reference.path
        kind: BlobKind = "reference" if is_reference else "artifact"
        blobs.setdefault(sha, (files[path], kind))
    for sha, (stored, _kind) in blobs.items():
        if not storage.exists(blob_key(sha)):
            storage.put(blob_key(sha), stored.path)

    for _attempt in range(3):
        with Session(engine) as session:
            try:
                for sha, (stored, kind) in blobs.items():
                    crud.ensure_blob(session=session, sha256=sha, length=stored.length, kind=kind)
                crud.create_model_version(
                    session=session,
                    name=manifest.name,
                    version=manifest.version,
                    manifest_sha256=manifest_sha,
                    manifest_length=manifest_file.length,
                    artifacts=[(a.target, a.sha256, a.length, a.precision) for a in manifest.artifacts],
                )
                session.commit()
                return _result(manifest, manifest_sha, created=True)
            except IntegrityError:
                # A concurrent upload won a race: the same name+version (answer as step 5
                # does) or a shared blob row (try again: the row now exists).
                session.rollback()
                found = _existing(session, manifest, manifest_sha)
                if found is not None:
                    return found
    raise ConcurrentUpload("concurrent uploads kept colliding: retry")


def stored_manifest(storage: Storage, manifest_sha256: str) -> tuple[ModelManifest, list[str]]:
    """A published version's manifest as stored (verified when it was uploaded) and the key
    ids of its signatures."""
    envelope = parse_envelope(json.loads(storage.get(blob_key(manifest_sha256))))
    return ModelManifest.model_validate(envelope.signed), [s.keyid for s in envelope.signatures]
