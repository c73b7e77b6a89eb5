"""The service's trust material: the newest root (to verify publisher signatures and to
hand devices the chain) and the online index key. It never holds root or publisher keys."""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from packager.errors import ModelSyncError
from packager.keys import describe_expiry, expires_soon, load_private_key, load_root
from packager.manifest import Root, keyid_of
from sync_service.errors import ServiceConfigError

log = logging.getLogger("modelsync.keys")
_ROOT_FILE = re.compile(r"^(\d+)\.root\.json$")
_OFFLINE_KEYS = ("root*.key", "publisher*.key")
OFFLINE_KEY_FILE = "offline.key"


def offline_keys_beside(index_key: Path) -> list[Path]:
    """Root or publisher private keys in the index key's directory: they belong offline."""
    found: list[Path] = []
    for pattern in _OFFLINE_KEYS:
        found += sorted(index_key.parent.glob(pattern))
    return found


class ServiceKeys:
    """Root reloaded when root.json changes on disk (a rotation needs no restart)."""

    def __init__(
        self,
        root_path: Path,
        index_key_path: Path,
        passphrase: bytes | None = None,
        *,
        offline_key_path: Path | None = None,
        offline_passphrase: bytes | None = None,
    ) -> None:
        self.root_path = Path(root_path)
        self.roots_dir = self.root_path.parent / "roots"
        self._lock = threading.Lock()
        self._mtime = 0.0
        try:
            self._root = load_root(self.root_path, check_expired=False)
            self.index_key: Ed25519PrivateKey = load_private_key(index_key_path, passphrase)
        except ModelSyncError as exc:
            raise ServiceConfigError(str(exc)) from None
        self._mtime = self.root_path.stat().st_mtime
        self.index_keyid = keyid_of(self.index_key.public_key())
        self._check_index_key(self._root)
        # The offline role's key signs pack snapshots (docs/offline.md); without it the
        # service serves devices as before and refuses pack exports.
        self.offline_key: Ed25519PrivateKey | None = None
        beside = Path(index_key_path).parent / OFFLINE_KEY_FILE
        path = offline_key_path if offline_key_path is not None else (beside if beside.is_file() else None)
        if path is not None:
            try:
                secret = offline_passphrase if offline_key_path else passphrase
                if offline_key_path is None and b"ENCRYPTED" not in Path(path).read_bytes()[:64]:
                    secret = None  # found beside the index key, and stored in the clear
                self.offline_key = load_private_key(path, secret)
            except ModelSyncError as exc:
                raise ServiceConfigError(f"offline key: {exc}") from None
        for p in offline_keys_beside(Path(index_key_path)):
            log.warning(
                "offline private key %s sits beside the index key: move root and publisher keys "
                "off the server", p
            )
        for warning in self.expiry_warnings():
            log.warning(warning["detail"])

    def _check_index_key(self, root: Root) -> None:
        if self.index_keyid not in root.roles["index"].keyids:
            raise ServiceConfigError(
                f"index key {self.index_keyid[:12]}… is not in root v{root.version}'s index role: "
                "devices would reject every index it signs"
            )

    def offline_keyid(self) -> str | None:
        return None if self.offline_key is None else keyid_of(self.offline_key.public_key())

    @property
    def root(self) -> Root:
        try:
            mtime = self.root_path.stat().st_mtime
        except OSError:
            return self._root
        if mtime != self._mtime:
            with self._lock:
                try:
                    new = load_root(self.root_path, check_expired=False)
                    if new.version >= self._root.version:
                        self._root = new
                    self._mtime = mtime
                except ModelSyncError as exc:
                    log.error("ignoring unreadable %s: %s", self.root_path, exc)
        return self._root

    def root_file(self, version: int) -> Path | None:
        """The signed root version ``version`` as written by ``modelsync keys``."""
        path = self.roots_dir / f"{version}.root.json"
        if path.is_file():
            return path
        if version == self.root.version:
            return self.root_path
        return None

    def expiry_warnings(self, now: datetime | None = None) -> list[dict[str, str]]:
        """What ``/readyz`` and the start-up log say when the trust material runs out soon.
        The index key carries no expiry of its own: devices accept what it signs only while
        a root listing it is valid, so the newest root's expiry is both deadlines."""
        root = self.root
        if not expires_soon(root.expires, now):
            return []
        when = describe_expiry(root.expires, now)
        return [{
            "code": "root_expires_soon",
            "detail": (
                f"root v{root.version} expires {when}, and with it the index key "
                f"{self.index_keyid[:12]}…: devices then refuse every index. Renew it: "
                "modelsync keys renew, then copy root.json and roots/ here (docs/operations.md, "
                "\"Yearly renewal\")"
            ),
        }]
