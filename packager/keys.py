"""Ed25519 key files and the root document's life cycle (init, rotate).

Layout of a keys directory::

    root.key  root.pub            root role (offline); root-2.key … when the role has several
    publisher.key publisher.pub   release engineer (offline)
    index.key index.pub           the service's online key
    offline.key offline.pub       signs offline packs' index snapshots (docs/offline.md)
    root.json                     newest signed root
    roots/1.root.json …           every version, so servers can hand devices the chain
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from packager.errors import KeyLoadError, UsageError
from packager.fsutil import write_atomic
from packager.manifest import (
    OPTIONAL_ROLES,
    ROLES,
    SPEC_VERSION,
    Role,
    Root,
    check_expiry,
    expiry_in,
    keyid_of,
    parse_time,
    public_raw,
    sign,
    utcnow,
    verify_root_self,
)

ROOT_LIFETIME = timedelta(days=365)
# How long before a root's expiry `keys show` and `serve` start to warn: a year's root is
# renewed in the month before it lapses (docs/operations.md, "Yearly renewal").
EXPIRY_WARNING = timedelta(days=30)


def time_left(expires: str, now: datetime | None = None) -> timedelta:
    return parse_time(expires) - (now or utcnow())


def describe_expiry(expires: str, now: datetime | None = None) -> str:
    """``2027-12-02T15:00:00Z (in 365 days)``, or ``(expired 3 days ago)``: for people."""
    left = time_left(expires, now)
    if left <= timedelta(0):
        return f"{expires} (expired {_span(-left)} ago)"
    return f"{expires} (in {_span(left)})"


def _span(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{round(delta.total_seconds() / 86400)} days"  # a year's root: "365", not "364"
    hours = int(delta.total_seconds() // 3600)
    return f"{hours} hours" if hours != 1 else "1 hour"


def expires_soon(expires: str, now: datetime | None = None) -> bool:
    return time_left(expires, now) < EXPIRY_WARNING


def private_pem(key: Ed25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def save_keypair(path: Path, key: Ed25519PrivateKey, passphrase: bytes | None = None) -> str:
    """Write ``path`` (PKCS#8 PEM, 0600) and ``path.with_suffix('.pub')`` (raw hex)."""
    write_atomic(path, private_pem(key, passphrase), mode=0o600)
    write_atomic(path.with_suffix(".pub"), (public_raw(key.public_key()).hex() + "\n").encode())
    return keyid_of(key.public_key())


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyLoadError(f"key file not found: {p}") from None
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {p}: {exc.strerror}") from None
    if b"ENCRYPTED" in data and not passphrase:
        raise KeyLoadError(
            f"{p} is encrypted: give its passphrase (--passphrase-env VAR or MODELSYNC_KEY_PASSPHRASE)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        raise KeyLoadError(f"{p}: {exc}") from None
    except ValueError:
        if passphrase:
            raise KeyLoadError(f"{p}: wrong passphrase or corrupt key file") from None
        raise KeyLoadError(f"{p}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyLoadError(f"{p}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    p = Path(path)
    try:
        raw = bytes.fromhex(p.read_text().strip())
        return Ed25519PublicKey.from_public_bytes(raw)
    except FileNotFoundError:
        raise KeyLoadError(f"public key not found: {p}") from None
    except ValueError:
        raise KeyLoadError(f"{p}: expected 64 hex characters of a raw Ed25519 key") from None


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"file not found: {p}") from None
    except IsADirectoryError:
        hint = f" (did you mean {p / 'root.json'}?)" if (p / "root.json").is_file() else ""
        raise UsageError(f"{p} is a directory, not a JSON file{hint}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not a JSON file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def load_root(path: str | Path, check_expired: bool = True) -> Root:
    """A local root file, self-signed. ``check_expired``: the packager's own refusal to
    build against a root devices would refuse (their check 1.6), not the device's policy."""
    root = verify_root_self(read_json(path))
    if check_expired:
        check_expiry(root.expires, None, f"root v{root.version}")
    return root


def _key_name(role: str, i: int) -> str:
    return f"{role}.key" if i == 0 else f"{role}-{i + 1}.key"


@dataclass(frozen=True)
class RoleSpec:
    count: int = 1
    threshold: int = 1


def build_root_signed(
    version: int,
    role_keys: dict[str, list[Ed25519PublicKey]],
    thresholds: dict[str, int],
    lifetime: timedelta = ROOT_LIFETIME,
) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    roles: dict[str, Any] = {}
    for role in ROLES + tuple(r for r in OPTIONAL_ROLES if role_keys.get(r)):
        ids = []
        for pub in role_keys[role]:
            kid = keyid_of(pub)
            keys[kid] = {"keytype": "ed25519", "scheme": "ed25519", "public": public_raw(pub).hex()}
            ids.append(kid)
        if thresholds[role] > len(ids):
            raise UsageError(f"{role}: threshold {thresholds[role]} exceeds its {len(ids)} key(s)")
        roles[role] = {"keyids": sorted(ids), "threshold": thresholds[role]}
    return {
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expiry_in(lifetime),
        "keys": keys,
        "roles": roles,
    }


def _save_root(directory: Path, envelope: dict[str, Any]) -> Path:
    text = json.dumps(envelope, indent=2, sort_keys=True) + "\n"
    (directory / "roots").mkdir(exist_ok=True)
    version = envelope["signed"]["version"]
    write_atomic(directory / "roots" / f"{version}.root.json", text.encode())
    write_atomic(directory / "root.json", text.encode())
    return directory / "root.json"


def init_keys(
    directory: str | Path,
    specs: dict[str, RoleSpec] | None = None,
    passphrase: bytes | None = None,
    force: bool = False,
    lifetime: timedelta = ROOT_LIFETIME,
) -> Path:
    """Generate every role's keys (the optional offline role's too) and a root v1 signed by
    the root keys."""
    d = Path(directory)
    specs = {r: (specs or {}).get(r, RoleSpec()) for r in ROLES + OPTIONAL_ROLES}
    if (d / "root.json").exists() and not force:
        raise UsageError(f"{d}/root.json already exists: refusing to overwrite keys (use --force)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {d}: {exc.strerror}") from None
    private: dict[str, list[Ed25519PrivateKey]] = {}
    for role, spec in specs.items():
        if spec.count < 1:
            raise UsageError(f"{role}: needs at least one key")
        private[role] = [Ed25519PrivateKey.generate() for _ in range(spec.count)]
    signed = build_root_signed(
        1,
        {r: [k.public_key() for k in ks] for r, ks in private.items()},
        {r: s.threshold for r, s in specs.items()},
        lifetime,
    )
    for role, ks in private.items():
        for i, k in enumerate(ks):
            save_keypair(d / _key_name(role, i), k, passphrase)
    return _save_root(d, sign(signed, private["root"]))


def role_key_files(directory: Path, role: str) -> list[Path]:
    return sorted(directory.glob(f"{role}.key")) + sorted(directory.glob(f"{role}-*.key"))


def rotate(
    directory: str | Path,
    role: Role,
    revoke: list[str] | None = None,
    add: int = 1,
    threshold: int | None = None,
    passphrase: bytes | None = None,
    lifetime: timedelta = ROOT_LIFETIME,
) -> Path:
    """Write root v(N+1): ``add`` new keys for ``role``, the key ids in ``revoke`` removed,
    signed by the current root keys and (when the root role changes) the new ones too.
    The new root expires ``lifetime`` from now."""
    d = Path(directory)
    current_env = read_json(d / "root.json")
    current = verify_root_self(current_env)
    old_root_keys = [load_private_key(p, passphrase) for p in role_key_files(d, "root")]
    role_pubs: dict[str, list[Ed25519PublicKey]] = {}
    present = [r for r in ROLES + OPTIONAL_ROLES if r in current.roles]
    for r in present:
        keys, _ = current.role_keys(r)
        role_pubs[r] = list(keys.values())
    # Rotating an optional role the root does not name yet adds it (an older keys
    # directory gains an offline role this way).
    role_pubs.setdefault(role, [])
    revoke = revoke or []
    known = {keyid_of(k) for k in role_pubs[role]}
    for kid in revoke:
        if not any(k.startswith(kid) for k in known):
            raise UsageError(f"no {role} key with id {kid}")
    role_pubs[role] = [k for k in role_pubs[role] if not any(keyid_of(k).startswith(r) for r in revoke)]
    new_private = [Ed25519PrivateKey.generate() for _ in range(add)]
    role_pubs[role] += [k.public_key() for k in new_private]
    thresholds: dict[str, int] = {r: current.roles[r].threshold for r in present}
    thresholds.setdefault(role, 1)
    if threshold is not None:
        thresholds[role] = threshold
    signed = build_root_signed(current.version + 1, role_pubs, thresholds, lifetime)
    signers = list(old_root_keys)
    if role == "root":
        signers += new_private
    envelope = sign(signed, signers)
    # Archive revoked key files rather than delete: an operator may still need them.
    existing = role_key_files(d, role)
    for p in existing:
        kid = keyid_of(load_private_key(p, passphrase).public_key())
        if any(kid.startswith(r) for r in revoke):
            p.rename(p.with_name(p.name + f".revoked-v{current.version + 1}"))
            pub = p.with_suffix(".pub")
            if pub.exists():
                pub.rename(pub.with_name(pub.name + f".revoked-v{current.version + 1}"))
    taken = {p.name for p in role_key_files(d, role)}
    i = 0
    for k in new_private:
        while _key_name(role, i) in taken:
            i += 1
        save_keypair(d / _key_name(role, i), k, passphrase)
        taken.add(_key_name(role, i))
    return _save_root(d, envelope)


def renew(
    directory: str | Path, passphrase: bytes | None = None, lifetime: timedelta = ROOT_LIFETIME
) -> Path:
    """Root v(N+1) with the same keys and a new expiry, signed by the current root keys:
    the yearly renewal. Devices reach it through the root chain (each version signed by
    its predecessor's keys) on their next sync, before the old one lapses."""
    if lifetime <= timedelta(0):
        raise UsageError("the renewed root's lifetime must be positive")
    return rotate(directory, "root", add=0, passphrase=passphrase, lifetime=lifetime)
