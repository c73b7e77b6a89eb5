"""API tokens: random, shown once, stored as SHA-256 hashes (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal, get_args

TokenKind = Literal["publisher", "enrollment", "device"]
# `read`: reads what any publisher reads (models, releases, devices, audit) and changes
# nothing: the release console for people who watch rollouts.
Scope = Literal["read", "publish", "release", "admin"]
PREFIX: dict[TokenKind, str] = {"publisher": "msp_", "enrollment": "mse_", "device": "msd_"}
SCOPES: tuple[Scope, ...] = get_args(Scope)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(kind: TokenKind) -> tuple[str, str]:
    """``(token, sha256 hex)``: 32 random bytes, url-safe base64, prefixed by kind."""
    token = PREFIX[kind] + secrets.token_urlsafe(32)
    return token, hash_token(token)


def kind_of(token: str) -> TokenKind | None:
    for kind, prefix in PREFIX.items():
        if token.startswith(prefix):
            return kind
    return None


def parse_scopes(text: str) -> list[str]:
    """Comma-separated scopes, validated; raises ValueError naming the bad one."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    for s in scopes:
        if s not in SCOPES:
            raise ValueError(f"unknown scope {s!r} (choose from {', '.join(SCOPES)})")
    if not scopes:
        raise ValueError("at least one scope is needed")
    return sorted(set(scopes), key=SCOPES.index)
