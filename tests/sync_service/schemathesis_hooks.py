"""Hooks the schemathesis CLI loads (``SCHEMATHESIS_HOOKS``) in test_schemathesis_cli.py."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/x-tar")
def _tar_body(_ctx: Any, value: Any) -> bytes:
    """Bundle uploads are raw tar bytes: send whatever was generated as bytes (never a valid
    tar, which is the point: the service must refuse it with a documented 4xx)."""
    return value if isinstance(value, bytes) else str(value).encode()
