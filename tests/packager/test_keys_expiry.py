"""A root's expiry, said before it bites: ``describe_expiry``/``expires_soon`` and
``renew`` (same keys, next version, a new expiry, signed by the old root keys)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from packager.errors import UsageError
from packager.keys import EXPIRY_WARNING, describe_expiry, expires_soon, init_keys, load_root, renew
from packager.manifest import format_time, utcnow, verify_root_signed_by


def test_describe_expiry_in_days_hours_and_past() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert describe_expiry("2026-12-31T00:00:00Z", now) == "2026-12-31T00:00:00Z (in 364 days)"
    assert describe_expiry("2026-01-01T05:30:00Z", now) == "2026-01-01T05:30:00Z (in 5 hours)"
    assert describe_expiry("2025-12-29T00:00:00Z", now) == "2025-12-29T00:00:00Z (expired 3 days ago)"
    assert expires_soon(format_time(now + EXPIRY_WARNING - dt.timedelta(seconds=1)), now)
    assert not expires_soon(format_time(now + EXPIRY_WARNING + dt.timedelta(seconds=1)), now)


def test_renew_keeps_the_keys_and_extends_the_expiry(tmp_path: Path) -> None:
    init_keys(tmp_path, lifetime=dt.timedelta(days=10))
    old = load_root(tmp_path / "root.json")
    assert expires_soon(old.expires)
    renew(tmp_path)
    new = load_root(tmp_path / "root.json")
    assert new.version == 2 and new.keys == old.keys and new.roles == old.roles
    assert not expires_soon(new.expires)
    assert (dt.timedelta(days=364) < dt.datetime.fromisoformat(new.expires.replace("Z", "+00:00")) - utcnow()
            <= dt.timedelta(days=365))
    verify_root_signed_by(old, json.loads((tmp_path / "roots" / "2.root.json").read_text()))
    with pytest.raises(UsageError):
        renew(tmp_path, lifetime=dt.timedelta(0))
